//! The conversation's secure attributes: written with PATCH, verified by reading them back, and
//! never shown: the answer names their keys, and nothing stores them.

use serde_json::json;

use crate::helpers::*;

const DOB: &str = "1970-07-04";
const ACCOUNT: &str = "88172635";

fn with_the_agent() -> serde_json::Value {
    json!({
        "conversationId": SEED_ACTIVE_CALL,
        "participantId": SEED_ACTIVE_CALL_AGENT,
        "attributes": {"vip": true},
        "secureAttributes": {"dob": DOB, "account": 88172635}
    })
}

#[tokio::test(start_paused = true)]
async fn a_secure_write_is_read_back_and_the_answer_names_its_keys_never_its_values() {
    let app = spawn_app().await;
    let answer = app.post_attributes(with_the_agent()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["secureKeys"], json!(["account", "dob"]));
    assert_eq!(answer.body["secureVerified"], true);
    assert_eq!(answer.body["secureUnconfirmed"], json!([]));
    // The participant's part is answered as before.
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["attributes"]["vip"], "true");
    let text = answer.body.to_string();
    assert!(!text.contains(DOB) && !text.contains(ACCOUNT), "{text}");
    // What a secure flow reads: the values, numbers coerced to their text.
    let held = app.sim.secure_attributes(SEED_ACTIVE_CALL).unwrap();
    assert_eq!(held.get("dob").map(String::as_str), Some(DOB));
    assert_eq!(held.get("account").map(String::as_str), Some(ACCOUNT));
    assert_eq!(app.sim.count("patch_secure_attributes"), 1);
    assert_eq!(
        app.sim.count("get_secure_attributes"),
        1,
        "one read showed both"
    );
}

#[tokio::test(start_paused = true)]
async fn secure_attributes_alone_write_no_participant_and_cost_a_patch_and_a_read() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(
            json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {"dob": DOB}}),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["secureVerified"], true);
    assert_eq!(answer.body["participantId"], "");
    assert_eq!(app.sim.count("patch_attributes"), 0);
    assert_eq!(
        app.api_calls(),
        ["patch_secure_attributes", "get_secure_attributes"]
    );
}

#[tokio::test(start_paused = true)]
async fn unverified_the_answer_says_which_secure_keys_no_read_showed() {
    let app = spawn_app().await;
    let mut body = with_the_agent();
    body["verify"] = json!(false);
    let answer = app.post_attributes(body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["secureVerified"], false);
    assert_eq!(answer.body["secureUnconfirmed"], json!(["account", "dob"]));
    assert_eq!(app.sim.count("get_secure_attributes"), 0);
}

#[tokio::test(start_paused = true)]
async fn secure_attributes_are_never_stored_so_a_request_that_would_be_is_refused_before_any_call()
{
    let app = spawn_app().await;
    for headers in [
        vec![("prefer", "respond-async")],
        vec![("idempotency-key", "crm-retry-1")],
    ] {
        let mut all = vec![("x-api-key", API_KEY)];
        all.extend(headers);
        app.post_raw("/v1/attributes", with_the_agent().to_string(), &all)
            .await
            .assert_problem(422, "secure_not_stored");
    }
    assert!(app.api_calls().is_empty(), "{:?}", app.api_calls());
    assert!(app.sim.secure_attributes(SEED_ACTIVE_CALL).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_refused_secure_value_is_named_by_its_key_never_shown() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(
            json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {"dob": {"v": DOB}}}),
        )
        .await;
    answer.assert_problem(400, "invalid_request");
    let text = answer.body.to_string();
    assert!(text.contains("dob") && !text.contains(DOB), "{text}");
    // Neither part, nothing to write.
    app.post_attributes(json!({"conversationId": SEED_ACTIVE_CALL}))
        .await
        .assert_problem(400, "invalid_request");
}

#[tokio::test(start_paused = true)]
async fn an_ended_conversations_secure_attributes_are_not_written() {
    let app = spawn_app().await;
    let answer = app
        .post_attributes(json!({"conversationId": SEED_ENDED, "secureAttributes": {"dob": DOB}}))
        .await;
    answer.assert_problem(409, "conversation_ended");
    assert!(app.sim.secure_attributes(SEED_ENDED).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_webhook_route_maps_the_senders_fields_to_the_secure_attributes_too() {
    let app = spawn_app_with(|s| {
        s.hooks = hooks_from_toml(
            r#"
            [hooks.kyc]
            conversation_id = "/call/id"
            [hooks.kyc.secure_attributes]
            dob = "/customer/birthDate"
            account = "/customer/account"
            "#,
        );
    })
    .await;
    let event = json!({"call": {"id": SEED_ACTIVE_CALL}, "customer": {"birthDate": DOB, "account": 88172635}});
    let answer = app
        .post_raw(
            "/v1/hooks/kyc",
            event.to_string(),
            &[("x-api-key", API_KEY)],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["secureKeys"], json!(["account", "dob"]));
    assert_eq!(answer.body["secureVerified"], true);
    assert!(!answer.body.to_string().contains(DOB));
    let held = app.sim.secure_attributes(SEED_ACTIVE_CALL).unwrap();
    assert_eq!(held.get("account").map(String::as_str), Some(ACCOUNT));
    assert_eq!(
        app.sim.count("patch_attributes"),
        0,
        "no participant attribute was mapped"
    );
    // A sender's field missing is refused by its pointer, before any call.
    let before = app.api_calls().len();
    app.post_raw(
        "/v1/hooks/kyc",
        json!({"call": {"id": SEED_ACTIVE_CALL}, "customer": {"account": 1}}).to_string(),
        &[("x-api-key", API_KEY)],
    )
    .await
    .assert_problem(400, "invalid_request");
    assert_eq!(app.api_calls().len(), before);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_secure_writes_to_one_conversation_shares_one_patch_and_one_read() {
    let app = spawn_app().await;
    let keys = ["dob", "account", "answer"];
    let answers = futures::future::join_all(keys.iter().map(|key| {
        app.post_attributes(
            json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {*key: format!("v-{key}")}}),
        )
    }))
    .await;
    for (answer, key) in answers.iter().zip(keys) {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            answer.body["secureKeys"],
            json!([key]),
            "answered for its own key"
        );
        assert_eq!(answer.body["secureVerified"], true);
    }
    assert_eq!(
        app.api_calls(),
        ["patch_secure_attributes", "get_secure_attributes"]
    );
    let held = app.sim.secure_attributes(SEED_ACTIVE_CALL).unwrap();
    assert_eq!(held.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_secure_write_that_comes_while_the_last_waits_for_its_read_is_patched_first_and_shares_it(
) {
    // The first read 400 ms after the PATCH, far longer than the calls.
    let app = spawn_app_with(|s| s.verify.poll_initial_ms = 400).await;
    let first = app.post_attributes(
        json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {"dob": DOB}}),
    );
    let second = async {
        // After the first's linger (150 ms) and PATCH, well before its first read.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        app.post_attributes(
            json!({"conversationId": SEED_ACTIVE_CALL, "secureAttributes": {"account": ACCOUNT}}),
        )
        .await
    };
    let (first, second) = tokio::join!(first, second);
    for (answer, key) in [(first, "dob"), (second, "account")] {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["secureKeys"], json!([key]));
        assert_eq!(answer.body["secureVerified"], true, "{}", answer.body);
    }
    assert_eq!(
        app.api_calls(),
        [
            "patch_secure_attributes",
            "patch_secure_attributes",
            "get_secure_attributes"
        ],
        "the second write goes before the first's read, which verifies both"
    );
}
