//! Conversation custom attributes: checked against their schema before any write, coerced where
//! unambiguous, written to the conversation's one record per schema, kept under concurrent
//! writers, and verified by what Genesys shows of the record: the write's answer, or a read back.

use serde_json::{json, Value};

use crate::helpers::*;
use patchbay::sim::{Simulator, SEED_SCHEMA_ID, SEED_SCHEMA_NAME};

fn case(values: Value) -> Value {
    json!({
        "conversationId": SEED_ACTIVE_CALL,
        "customSchema": SEED_SCHEMA_NAME,
        "customAttributes": values
    })
}

/// The active call's record of the seeded schema: its id, the same on every replica.
fn record_id() -> String {
    let cid: patchbay::domain::ConversationId = SEED_ACTIVE_CALL.parse().unwrap();
    patchbay::custom::record_id(&cid, SEED_SCHEMA_ID)
}

/// That record as the simulator holds it now: its values, divisions and version.
fn record(app: &TestApp) -> (serde_json::Map<String, Value>, Vec<String>, i64) {
    app.sim
        .custom_record(SEED_ACTIVE_CALL, &record_id())
        .expect("the record exists")
}

/// The ops of the calls made, without token grants, with their status.
fn calls_with_status(app: &TestApp) -> Vec<(String, u16)> {
    app.sim
        .calls()
        .into_iter()
        .filter(|c| c.op != "token")
        .map(|c| (c.op.to_string(), c.status))
        .collect()
}

#[tokio::test]
async fn a_custom_write_creates_the_record_with_coerced_values_and_its_answer_verifies_it() {
    let app = spawn_app().await;
    let mut body = case(json!({"caseNumber": "C-1001", "priority": "3", "vip": "true"}));
    body["participantId"] = json!(SEED_ACTIVE_CALL_AGENT);
    body["attributes"] = json!({"crmCase": "C-1001"});
    let answer = app.post_attributes(body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["customVerified"], true);
    assert_eq!(
        answer.body["customKeys"],
        json!(["caseNumber", "priority", "vip"])
    );
    assert_eq!(answer.body["customUnconfirmed"], json!([]));
    assert_eq!(answer.body["customRecordId"], record_id().as_str());
    // The participant's part is answered as before.
    assert_eq!(answer.body["verified"], true);
    let (values, divisions, version) = record(&app);
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-1001", "priority": 3, "vip": true}),
        "the strings were coerced to the schema's types"
    );
    assert_eq!(divisions, Vec::<String>::new());
    assert_eq!(version, 1);
    assert_eq!(
        app.api_calls()
            .into_iter()
            .filter(|c| c.contains("custom"))
            .collect::<Vec<_>>(),
        [
            "list_custom_schemas",
            "get_custom_attributes",
            "put_custom_attributes_bulk"
        ],
        "the schema by name, a read that finds no record, the create, whose answer shows it"
    );
}

#[tokio::test]
async fn a_write_whose_answer_does_not_show_the_record_is_read_back() {
    let app = spawn_app().await;
    app.sim.custom_answers_hold_records(false);
    let answer = app
        .post_attributes(case(json!({"caseNumber": "C-1002"})))
        .await;
    assert_eq!(answer.body["customVerified"], true, "{}", answer.body);
    assert_eq!(
        record_calls(&app.sim),
        [
            "get_custom_attributes",
            "put_custom_attributes_bulk",
            "get_custom_attributes"
        ]
    );
    // Unverified, nothing is read: the next write cannot trust a version it never saw, and reads
    // the record first.
    let mut unverified = case(json!({"caseNumber": "C-1002", "priority": 2}));
    unverified["verify"] = json!(false);
    let answer = app.post_attributes(unverified).await;
    assert_eq!(answer.body["customVerified"], false, "{}", answer.body);
    assert_eq!(
        answer.body["customUnconfirmed"],
        json!(["caseNumber", "priority"])
    );
    let before = record_calls(&app.sim).len();
    app.sim.custom_answers_hold_records(true);
    let answer = app
        .post_attributes(case(json!({"caseNumber": "C-1002", "vip": true})))
        .await;
    assert_eq!(answer.body["customVerified"], true, "{}", answer.body);
    assert_eq!(
        record_calls(&app.sim)[before..],
        ["get_custom_attributes", "patch_custom_attributes_bulk"]
    );
    // Asked not to verify, a write whose answer shows it is verified all the same, at no cost.
    let mut unasked = case(json!({"caseNumber": "C-1002", "tier": "gold"}));
    unasked["verify"] = json!(false);
    let before = record_calls(&app.sim).len();
    let answer = app.post_attributes(unasked).await;
    assert_eq!(answer.body["customVerified"], true, "{}", answer.body);
    assert_eq!(
        record_calls(&app.sim)[before..],
        ["patch_custom_attributes_bulk"]
    );
}

#[tokio::test]
async fn a_schema_violation_is_refused_naming_each_field_and_nothing_is_written() {
    let app = spawn_app().await;
    let mut body = case(json!({"priority": "9", "vip": "yes", "colour": "crimson-x"}));
    body["attributes"] = json!({"crmCase": "C-1"});
    let answer = app.post_attributes(body).await;
    answer.assert_problem(422, "custom_invalid");
    let detail = answer.body["detail"].as_str().unwrap();
    for named in [
        "`priority`: ",
        "at most 5",
        "`vip`: ",
        "boolean",
        "`colour`: not a field",
        "`caseNumber`: required",
    ] {
        assert!(detail.contains(named), "{named} missing from: {detail}");
    }
    assert!(
        !detail.contains("crimson-x") && !detail.contains("yes"),
        "{detail}"
    );
    // Only the schema was read: no record, no participant, no write of any kind.
    assert_eq!(app.api_calls(), ["list_custom_schemas"]);
}

#[tokio::test]
async fn an_unknown_schema_is_refused_before_any_write() {
    let app = spawn_app().await;
    let mut body = case(json!({"caseNumber": "C-1"}));
    body["customSchema"] = json!("no_such_schema");
    app.post_attributes(body)
        .await
        .assert_problem(422, "custom_schema_not_found");
    assert_eq!(app.api_calls(), ["list_custom_schemas"]);
}

#[tokio::test]
async fn a_schema_is_read_once_then_a_known_record_costs_one_patch() {
    let app = spawn_app().await;
    let mut body = case(json!({"caseNumber": "C-1"}));
    body["customSchema"] = json!(SEED_SCHEMA_ID);
    assert_eq!(app.post_attributes(body.clone()).await.status, 200);
    let before = app.api_calls().len();
    body["customAttributes"] = json!({"caseNumber": "C-1", "priority": 2});
    let answer = app.post_attributes(body).await;
    assert_eq!(answer.body["customVerified"], true, "{}", answer.body);
    assert_eq!(app.api_calls()[before..], ["patch_custom_attributes_bulk"]);
    assert_eq!(app.sim.count("get_custom_schema"), 1);
}

#[tokio::test]
async fn a_concurrent_write_by_another_replica_or_a_flow_is_kept_and_a_conflict_is_retried() {
    let sim = Simulator::new();
    let first = spawn_app_on(sim.clone(), |_| {}).await;
    let second = spawn_app_on(sim.clone(), |_| {}).await;
    let a = first
        .post_attributes(case(json!({"caseNumber": "C-7", "priority": 2})))
        .await;
    assert_eq!(a.body["customVerified"], true, "{}", a.body);
    // The other replica amends the same record: it reads it first, knowing nothing of it.
    let b = second
        .post_attributes(case(json!({"caseNumber": "C-7", "tier": "gold"})))
        .await;
    assert_eq!(b.body["customVerified"], true, "{}", b.body);
    // A flow sets a field too.
    assert!(first.sim.amend_custom_record(
        SEED_ACTIVE_CALL,
        &record_id(),
        [("amount".to_string(), json!(12.5))].into()
    ));
    // The first replica's version is stale now: Genesys refuses it (409, in the write's answer),
    // it reads and retries.
    let before = record_calls(&first.sim).len();
    let again = first
        .post_attributes(case(json!({"caseNumber": "C-7", "priority": 4})))
        .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["customVerified"], true, "{}", again.body);
    assert_eq!(
        record_calls(&first.sim)[before..],
        [
            "patch_custom_attributes_bulk",
            "get_custom_attributes",
            "patch_custom_attributes_bulk"
        ]
    );
    let (values, _, _) = record(&first);
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-7", "priority": 4, "tier": "gold", "amount": 12.5}),
        "every writer's fields are kept"
    );
}

#[tokio::test]
async fn a_records_divisions_are_never_cleared_by_an_update() {
    const DIVISION: &str = "0d1c2b3a-4f5e-4d6c-8b7a-9e8f7a6b5c4d";
    let app = spawn_app_with(|s| s.custom.divisions = vec![DIVISION.into()]).await;
    for priority in [1, 2, 3] {
        let answer = app
            .post_attributes(case(json!({"caseNumber": "C-9", "priority": priority})))
            .await;
        assert_eq!(answer.body["customVerified"], true, "{}", answer.body);
    }
    let (_, divisions, version) = record(&app);
    assert_eq!(divisions, [DIVISION]);
    assert_eq!(version, 3);
}

#[tokio::test]
async fn an_asynchronous_custom_write_is_checked_at_intake_then_delivered() {
    let app = spawn_app().await;
    app.post_async(case(json!({"priority": "high"})), &[])
        .await
        .assert_problem(422, "custom_invalid");
    let accepted = app
        .post_async(case(json!({"caseNumber": "C-5", "amount": "19.90"})), &[])
        .await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let job = app
        .wait_for_job(accepted.body["jobId"].as_str().unwrap(), "succeeded")
        .await;
    assert_eq!(job["customSchema"], SEED_SCHEMA_NAME);
    assert_eq!(job["customAttributes"]["amount"], 19.9, "stored coerced");
    assert_eq!(job["result"]["customVerified"], true, "{job}");
    assert_eq!(job["result"]["participantId"], "");
    let (values, _, _) = record(&app);
    assert_eq!(values["amount"], 19.9);
}

#[tokio::test]
async fn a_webhook_route_maps_the_senders_fields_to_a_custom_record_keeping_their_types() {
    let app = spawn_app_with_hooks(
        r#"
        [hooks.crm]
        conversation_id = "/call/id"
        custom_schema = "crm_case"
        [hooks.crm.custom_attributes]
        caseNumber = "/case/number"
        priority = "/case/priority"
        vip = { pointer = "/case/vip", optional = true }
        "#,
    )
    .await;
    let event =
        json!({"call": {"id": SEED_ACTIVE_CALL}, "case": {"number": "C-77", "priority": 5}});
    let answer = app
        .post_raw(
            "/v1/hooks/crm",
            event.to_string(),
            &[("x-api-key", API_KEY)],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["customKeys"], json!(["caseNumber", "priority"]));
    assert_eq!(answer.body["customVerified"], true);
    assert_eq!(
        app.sim.count("patch_attributes"),
        0,
        "no participant was mapped"
    );
    let (values, _, _) = record(&app);
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-77", "priority": 5})
    );
}

#[tokio::test]
async fn a_permission_the_role_lacks_is_an_honest_refusal_not_a_success() {
    let app = spawn_app().await;
    app.sim.revoke("conversation:customAttributes:edit");
    let answer = app
        .post_attributes(case(json!({"caseNumber": "C-3"})))
        .await;
    answer.assert_problem(502, "upstream_auth_failed");
    assert!(calls_with_status(&app).contains(&("put_custom_attributes_bulk".into(), 403)));
}

#[tokio::test]
async fn a_burst_of_custom_updates_to_one_record_shares_one_write_and_one_read() {
    let app = spawn_app().await;
    let fields = ["priority", "amount", "vip", "tier"];
    let values = [json!(4), json!(7.5), json!(true), json!("silver")];
    let answers = futures::future::join_all(fields.iter().zip(values).map(|(field, value)| {
        app.post_attributes(case(json!({"caseNumber": "C-2", *field: value})))
    }))
    .await;
    for (answer, field) in answers.iter().zip(fields) {
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["customVerified"], true, "{}", answer.body);
        let mut own = vec!["caseNumber", field];
        own.sort();
        assert_eq!(
            answer.body["customKeys"],
            json!(own),
            "each is answered for its own keys"
        );
    }
    let writes =
        app.sim.count("put_custom_attributes_bulk") + app.sim.count("patch_custom_attributes_bulk");
    assert_eq!(writes, 1, "{:?}", app.api_calls());
    let (values, _, _) = record(&app);
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-2", "priority": 4, "amount": 7.5, "vip": true, "tier": "silver"})
    );
}

/// The seeded schema with `priority` at most `max`, and a new description: an admin's edit.
fn edited_schema(max: u32) -> Value {
    json!({
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": SEED_SCHEMA_NAME,
        "description": "A CRM case, edited",
        "type": "object",
        "required": ["caseNumber"],
        "properties": {
            "caseNumber": {"type": "string", "maxLength": 32},
            "priority": {"type": "integer", "minimum": 1, "maximum": max},
            "amount": {"type": "number", "minimum": 0},
            "vip": {"type": "boolean"},
            "tier": {"type": "string", "enum": ["gold", "silver", "bronze"]}
        },
        "additionalProperties": false
    })
}

#[tokio::test]
async fn a_schema_is_read_again_once_a_record_shows_its_new_version() {
    let app = spawn_app().await;
    let write = |priority: u32| {
        app.post_attributes(case(json!({"caseNumber": "C-4", "priority": priority})))
    };
    assert_eq!(write(1).await.body["customVerified"], true);
    assert!(app.sim.edit_custom_schema(SEED_SCHEMA_ID, edited_schema(5)));
    // Written under the new version, the record's read-back shows it: the cached copy is dropped.
    assert_eq!(write(2).await.body["customVerified"], true);
    assert_eq!(app.sim.count("list_custom_schemas"), 1);
    assert_eq!(write(3).await.body["customVerified"], true);
    assert_eq!(app.sim.count("list_custom_schemas"), 2, "read again");
}

#[tokio::test]
async fn a_write_genesys_refuses_as_invalid_makes_the_next_one_read_the_schema_again() {
    let app = spawn_app().await;
    let write = |priority: u32| {
        app.post_attributes(case(json!({"caseNumber": "C-8", "priority": priority})))
    };
    assert_eq!(write(1).await.body["customVerified"], true);
    // The schema tightens: the cached copy still allows 4, Genesys does not.
    assert!(app.sim.edit_custom_schema(SEED_SCHEMA_ID, edited_schema(3)));
    assert_ne!(write(4).await.status, 200);
    assert_eq!(app.sim.count("list_custom_schemas"), 1);
    // The next write reads the schema again and refuses 4 itself, before any write.
    let writes = app.sim.count("patch_custom_attributes_bulk");
    write(4).await.assert_problem(422, "custom_invalid");
    assert_eq!(app.sim.count("list_custom_schemas"), 2);
    assert_eq!(app.sim.count("patch_custom_attributes_bulk"), writes);
}

/// A request to all three targets: the agent's participant data, the secure attributes and the
/// seeded schema's record.
fn to_every_target(case_number: &str) -> Value {
    let mut body = case(json!({"caseNumber": case_number}));
    body["participantId"] = json!(SEED_ACTIVE_CALL_AGENT);
    body["attributes"] = json!({"crmCase": case_number});
    body["secureAttributes"] = json!({"dob": "1970-07-04"});
    body
}

#[tokio::test(start_paused = true)]
async fn a_request_to_every_target_lingers_once_and_the_participant_is_written_once_the_others_are()
{
    // A linger far longer than the calls: a second one would show between the writes.
    let linger = std::time::Duration::from_millis(2_000);
    let app = spawn_app_with(|s| s.delivery.linger_ms = linger.as_millis() as u64).await;
    let answer = app.post_attributes(to_every_target("C-77")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for verified in ["verified", "secureVerified", "customVerified"] {
        assert_eq!(answer.body[verified], true, "{verified}: {}", answer.body);
    }
    let at = |op: &str| app.sim.call_times(op)[0];
    let participant = at("patch_attributes");
    for own in ["patch_secure_attributes", "put_custom_attributes_bulk"] {
        assert!(
            at(own) <= participant,
            "{own} is accepted before the participant is written"
        );
        assert!(
            participant - at(own) < linger,
            "the participant's write did not linger again after {own}: {:?}",
            participant - at(own)
        );
    }
}

#[tokio::test]
async fn a_refusal_of_the_conversations_own_target_leaves_the_participant_unwritten() {
    let app = spawn_app().await;
    app.sim.revoke("conversation:customAttributes:edit");
    app.post_attributes(to_every_target("C-78"))
        .await
        .assert_problem(502, "upstream_auth_failed");
    assert_eq!(
        app.sim.count("patch_attributes"),
        0,
        "{:?}",
        app.api_calls()
    );
    // Asynchronously alike: the attempt fails (to be retried, as a permission may be granted)
    // and the participant stays unwritten.
    let mut body = to_every_target("C-79");
    body.as_object_mut().unwrap().remove("secureAttributes");
    let accepted = app.post_async(body, &[]).await;
    assert_eq!(accepted.status, 202, "{}", accepted.body);
    let job = format!("/v1/jobs/{}", accepted.body["jobId"].as_str().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let tried = loop {
        let job = app.get_with(&job, API_KEY).await.body;
        if job["lastError"].is_string() {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job never failed: {job}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    };
    assert!(
        tried["lastError"].as_str().unwrap().contains("403"),
        "{tried}"
    );
    assert_eq!(
        app.sim.count("patch_attributes"),
        0,
        "{:?}",
        app.api_calls()
    );
}

/// The record operations the simulator saw, in order (schema reads left out).
pub(crate) fn record_calls(sim: &patchbay::sim::Control) -> Vec<String> {
    sim.calls()
        .into_iter()
        .filter(|c| c.op.contains("_custom_attributes"))
        .map(|c| c.op.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_redis_amend_a_record_another_made_with_its_version_without_reading_it_first() {
    let (sim, apps) = crate::redis_deployment::replicas(2, |_| {}).await;
    let made = apps[0]
        .post_attributes(case(json!({"caseNumber": "C-90"})))
        .await;
    assert_eq!(made.body["customVerified"], true, "{}", made.body);
    let before = record_calls(&sim).len();
    // The load balancer sends the CRM's next update to the other replica.
    let amended = apps[1]
        .post_attributes(case(json!({"caseNumber": "C-90", "priority": "2"})))
        .await;
    assert_eq!(amended.body["customVerified"], true, "{}", amended.body);
    assert_eq!(
        record_calls(&sim)[before..],
        ["patch_custom_attributes_bulk"],
        "the version the first replica learnt serves the second"
    );
    let (values, _, version) = sim.custom_record(SEED_ACTIVE_CALL, &record_id()).unwrap();
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-90", "priority": 2})
    );
    assert_eq!(version, 2);
    // Back on the first replica, which on its own would still hold version 1: it takes the
    // version from Redis and amends at once, with no conflict.
    let before = record_calls(&sim).len();
    let again = apps[0]
        .post_attributes(case(json!({"caseNumber": "C-90", "vip": "true"})))
        .await;
    assert_eq!(again.body["customVerified"], true, "{}", again.body);
    assert_eq!(
        record_calls(&sim)[before..],
        ["patch_custom_attributes_bulk"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_redis_that_both_find_a_record_absent_never_create_it_over_each_other() {
    let (sim, apps) = crate::redis_deployment::replicas(2, |_| {}).await;
    // Each call takes long enough that the second replica reads the record absent before the
    // first has created it, and would create it after: its PUT would replace the first's fields.
    sim.set_latency(std::time::Duration::from_millis(200));
    let mut first = case(json!({"caseNumber": "C-91", "priority": "1"}));
    // Unverified, so no read of its own would notice its fields gone and write them back.
    first["verify"] = json!(false);
    let second = async {
        tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        apps[1]
            .post_attributes(case(json!({"caseNumber": "C-91", "vip": "true"})))
            .await
    };
    let (first, second) = tokio::join!(apps[0].post_attributes(first), second);
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(second.body["customVerified"], true, "{}", second.body);
    let (values, _, _) = sim.custom_record(SEED_ACTIVE_CALL, &record_id()).unwrap();
    assert_eq!(
        Value::Object(values),
        json!({"caseNumber": "C-91", "priority": 1, "vip": true}),
        "both replicas' fields are kept"
    );
    assert_eq!(
        sim.count("put_custom_attributes_bulk"),
        1,
        "one replica created the record, the other amended it: {:?}",
        record_calls(&sim)
    );
}
