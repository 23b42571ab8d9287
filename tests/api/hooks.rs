//! Webhook routes: configured mappings, and every inbound scheme with good, bad, missing, replayed
//! and expired credentials. A refused request reaches neither the JSON parser nor Genesys.

use base64::Engine;
use serde_json::json;

use crate::helpers::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn crm_event() -> serde_json::Value {
    json!({"ticket": {"conversation": SEED_ACTIVE_CALL, "id": 981, "tier": "gold", "vip": true}})
}

const MAPPING: &str = r#"
conversation_id = "/ticket/conversation"
participant_id = "/ticket/participant"
purpose = "customer"
[hooks.ROUTE.attributes]
ticketId = "/ticket/id"
tier = "/ticket/tier"
vip = { pointer = "/ticket/vip", optional = true }
note = { pointer = "/ticket/note", optional = true }
source = { value = "crm" }
"#;

/// A route named `name` with the standard mapping and the given `[auth]` lines.
fn route(name: &str, auth: &str) -> String {
    format!(
        "[hooks.{name}]\n{}\n[hooks.{name}.auth]\n{auth}\n",
        MAPPING.replace("ROUTE", name)
    )
}

async fn post(app: &TestApp, name: &str, body: &str, headers: &[(&str, &str)]) -> Answer {
    app.post_raw(&format!("/v1/hooks/{name}"), body.to_string(), headers)
        .await
}

#[tokio::test]
async fn a_mapped_event_becomes_a_verified_write_with_the_same_answer() {
    let app = spawn_app_with_hooks(&route("crm", "scheme = \"api_key\"")).await;
    let answer = post(
        &app,
        "crm",
        &crm_event().to_string(),
        &[("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["participantId"], SEED_ACTIVE_CALL_CUSTOMER);
    assert_eq!(answer.body["verified"], true);
    assert_eq!(answer.body["mismatchCount"], 0);
    let stored = app
        .sim
        .stored_attributes(SEED_ACTIVE_CALL, SEED_ACTIVE_CALL_CUSTOMER)
        .unwrap();
    for (k, v) in [
        ("ticketId", "981"),
        ("tier", "gold"),
        ("vip", "true"),
        ("source", "crm"),
    ] {
        assert!(stored.contains(&(k.into(), v.into())), "{k}: {stored:?}");
    }
    // The optional pointer that found nothing left its attribute out.
    assert!(!stored.iter().any(|(k, _)| k == "note"));
}

#[tokio::test]
async fn a_participant_pointer_and_a_purpose_pointer_select_the_target() {
    let app = spawn_app_with_hooks(
        r#"
        [hooks.ops]
        conversation_id = "/c"
        participant_id = "/p"
        purpose = "/who"
        [hooks.ops.attributes]
        x = { value = "1" }
        "#,
    )
    .await;
    let by_id = post(
        &app,
        "ops",
        &json!({"c": SEED_ACTIVE_CALL, "p": SEED_ACTIVE_CALL_AGENT}).to_string(),
        &[("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(by_id.body["participantId"], SEED_ACTIVE_CALL_AGENT);
    let by_purpose = post(
        &app,
        "ops",
        &json!({"c": SEED_TRANSFER, "p": "", "who": "agent"}).to_string(),
        &[("x-api-key", API_KEY)],
    )
    .await;
    assert_eq!(by_purpose.body["participantId"], SEED_TRANSFER_AGENT_NEW);
    post(
        &app,
        "ops",
        &json!({"c": SEED_ACTIVE_CALL, "who": "boss"}).to_string(),
        &[("x-api-key", API_KEY)],
    )
    .await
    .assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app_with_hooks(&route("crm", "scheme = \"api_key\"")).await;
    post(&app, "nope", "{}", &[("x-api-key", API_KEY)])
        .await
        .assert_problem(404, "not_found");
}

#[tokio::test]
async fn a_required_pointer_that_finds_nothing_is_a_400_naming_it() {
    let app = spawn_app_with_hooks(&route("crm", "scheme = \"api_key\"")).await;
    let event = json!({"ticket": {"conversation": SEED_ACTIVE_CALL, "id": 1}});
    let answer = post(&app, "crm", &event.to_string(), &[("x-api-key", API_KEY)]).await;
    answer.assert_problem(400, "invalid_request");
    assert!(
        answer.body["detail"]
            .as_str()
            .unwrap()
            .contains("/ticket/tier"),
        "{}",
        answer.body
    );
    assert!(app.sim.calls().is_empty());
}

#[tokio::test]
async fn the_same_problem_codes_apply() {
    let app = spawn_app_with_hooks(&route("crm", "scheme = \"api_key\"")).await;
    let mut event = crm_event();
    event["ticket"]["conversation"] = json!(SEED_ENDED);
    post(&app, "crm", &event.to_string(), &[("x-api-key", API_KEY)])
        .await
        .assert_problem(409, "conversation_ended");
    event["ticket"]["tier"] = json!("x".repeat(3000));
    post(&app, "crm", &event.to_string(), &[("x-api-key", API_KEY)])
        .await
        .assert_problem(422, "attributes_too_large");
}

// ----- api_key -----

#[tokio::test]
async fn api_key_routes_take_their_own_keys_or_the_global_ones() {
    let app = spawn_app_with_hooks(&format!(
        "{}{}",
        route(
            "own",
            "scheme = \"api_key\"\nkeys = [\"route-key-1\", \"route-key-2\"]"
        ),
        route("global", "scheme = \"api_key\"")
    ))
    .await;
    let body = crm_event().to_string();
    // Good: the route's key; the global one on the global route.
    assert_eq!(
        post(
            &app,
            "own",
            &body,
            &[("authorization", "Bearer route-key-2")]
        )
        .await
        .status,
        200
    );
    assert_eq!(
        post(&app, "global", &body, &[("x-api-key", API_KEY)])
            .await
            .status,
        200
    );
    // Bad: the global key is not one of the route's own.
    post(&app, "own", &body, &[("x-api-key", API_KEY)])
        .await
        .assert_problem(401, "unauthorized");
    // Missing.
    post(&app, "own", &body, &[])
        .await
        .assert_problem(401, "unauthorized");
    // A key is a standing credential: a repeat is a new request, and there is no expiry to check.
    assert_eq!(
        post(&app, "own", &body, &[("x-api-key", "route-key-1")])
            .await
            .status,
        200
    );
}

// ----- basic -----

#[tokio::test]
async fn basic_accepts_the_configured_pair_only() {
    let app = spawn_app_with_hooks(&route(
        "architect",
        "scheme = \"basic\"\nusername = \"architect\"\npassword = \"pa:ss-w0rd\"",
    ))
    .await;
    let body = crm_event().to_string();
    let basic = |u: &str, p: &str| format!("Basic {}", B64.encode(format!("{u}:{p}")));
    assert_eq!(
        post(
            &app,
            "architect",
            &body,
            &[("authorization", &basic("architect", "pa:ss-w0rd"))]
        )
        .await
        .status,
        200
    );
    for bad in [
        basic("architect", "wrong"),
        basic("other", "pa:ss-w0rd"),
        "Basic !!!".into(),
        format!("Bearer {API_KEY}"),
    ] {
        post(&app, "architect", &body, &[("authorization", &bad)])
            .await
            .assert_problem(401, "unauthorized");
    }
    post(&app, "architect", &body, &[])
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(app.sim.count("patch_attributes"), 1);
}

// ----- hmac -----

const GITHUB: &str = "scheme = \"hmac\"\nheader = \"X-Hub-Signature-256\"\nprefix = \"sha256=\"\nencoding = \"hex\"\nsecrets = [\"old-secret\", \"new-secret\"]";

#[tokio::test]
async fn hmac_github_style_checks_the_body_signature() {
    let app = spawn_app_with_hooks(&route("gh", GITHUB)).await;
    let body = crm_event().to_string();
    let sign = |secret: &str, body: &str| {
        format!(
            "sha256={}",
            hex::encode(hmac_sha256(secret, body.as_bytes()))
        )
    };
    // Good, with either live secret.
    assert_eq!(
        post(
            &app,
            "gh",
            &body,
            &[("x-hub-signature-256", &sign("new-secret", &body))]
        )
        .await
        .status,
        200
    );
    let other = json!({"ticket": {"conversation": SEED_ACTIVE_CALL, "id": 2, "tier": "silver"}})
        .to_string();
    assert_eq!(
        post(
            &app,
            "gh",
            &other,
            &[("x-hub-signature-256", &sign("old-secret", &other))]
        )
        .await
        .status,
        200
    );
    // Replayed: an exact copy of a delivery that succeeded.
    post(
        &app,
        "gh",
        &body,
        &[("x-hub-signature-256", &sign("new-secret", &body))],
    )
    .await
    .assert_problem(401, "unauthorized");
    // Bad: a wrong secret, a tampered body, a missing prefix, garbage.
    post(
        &app,
        "gh",
        &body,
        &[("x-hub-signature-256", &sign("guess", &body))],
    )
    .await
    .assert_problem(401, "unauthorized");
    let tampered = body.replace("gold", "platinum");
    post(
        &app,
        "gh",
        &tampered,
        &[("x-hub-signature-256", &sign("new-secret", &body))],
    )
    .await
    .assert_problem(401, "unauthorized");
    let no_prefix = hex::encode(hmac_sha256("new-secret", body.as_bytes()));
    post(&app, "gh", &body, &[("x-hub-signature-256", &no_prefix)])
        .await
        .assert_problem(401, "unauthorized");
    post(&app, "gh", &body, &[("x-hub-signature-256", "sha256=zz")])
        .await
        .assert_problem(401, "unauthorized");
    // Missing.
    post(&app, "gh", &body, &[])
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(app.sim.count("patch_attributes"), 2);
}

#[tokio::test]
async fn a_bad_signature_never_reaches_the_json_parser_or_genesys() {
    let app = spawn_app_with_hooks(&route("gh", GITHUB)).await;
    // Not JSON at all: with a bad signature the answer is 401, not a parse error.
    let answer = post(
        &app,
        "gh",
        "{not json",
        &[("x-hub-signature-256", "sha256=00")],
    )
    .await;
    answer.assert_problem(401, "unauthorized");
    assert!(app.sim.calls().is_empty());
    // The same body correctly signed does reach the parser.
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256("new-secret", b"{not json"))
    );
    post(&app, "gh", "{not json", &[("x-hub-signature-256", &sig)])
        .await
        .assert_problem(400, "invalid_request");
}

#[tokio::test]
async fn a_retry_of_a_failed_delivery_is_not_taken_for_a_replay() {
    let app = spawn_app_with_hooks(&route("gh", GITHUB)).await;
    // Every attempt of the first delivery fails (four attempts by default).
    app.sim
        .fail_next(patchbay::sim::Op::PatchAttributes, 500, 4);
    let body = crm_event().to_string();
    let sig = format!(
        "sha256={}",
        hex::encode(hmac_sha256("new-secret", body.as_bytes()))
    );
    post(&app, "gh", &body, &[("x-hub-signature-256", &sig)])
        .await
        .assert_problem(502, "upstream_error");
    // The sender retries the very same signed delivery, and it lands.
    let retry = post(&app, "gh", &body, &[("x-hub-signature-256", &sig)]).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    // A copy of the delivery that succeeded is a replay.
    post(&app, "gh", &body, &[("x-hub-signature-256", &sig)])
        .await
        .assert_problem(401, "unauthorized");
}

/// Zendesk signs base64(HMAC-SHA256(secret, timestamp + body)), with an RFC 3339 timestamp.
const ZENDESK: &str = "scheme = \"hmac\"\nheader = \"X-Zendesk-Webhook-Signature\"\ntimestamp_header = \"X-Zendesk-Webhook-Signature-Timestamp\"\nencoding = \"base64\"\nsigned = [\"timestamp\", \"body\"]\nsecrets = \"zendesk-signing-secret\"";

fn zendesk_headers(body: &str, at: i64) -> (String, String) {
    let ts = time::OffsetDateTime::from_unix_timestamp(at)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let sig = B64.encode(hmac_sha256(
        "zendesk-signing-secret",
        format!("{ts}{body}").as_bytes(),
    ));
    (sig, ts)
}

#[tokio::test]
async fn hmac_zendesk_style_signs_timestamp_and_body_and_refuses_old_or_replayed_ones() {
    let app = spawn_app_with_hooks(&route("zendesk", ZENDESK)).await;
    let body = crm_event().to_string();
    let send = |sig: String, ts: String| {
        let app = &app;
        let body = body.clone();
        async move {
            post(
                app,
                "zendesk",
                &body,
                &[
                    ("x-zendesk-webhook-signature", &sig),
                    ("x-zendesk-webhook-signature-timestamp", &ts),
                ],
            )
            .await
        }
    };
    let (sig, ts) = zendesk_headers(&body, now());
    assert_eq!(send(sig.clone(), ts.clone()).await.status, 200);
    // Replayed.
    send(sig.clone(), ts.clone())
        .await
        .assert_problem(401, "unauthorized");
    // Expired: signed ten minutes ago, and from the future.
    let (old_sig, old_ts) = zendesk_headers(&body, now() - 600);
    send(old_sig, old_ts)
        .await
        .assert_problem(401, "unauthorized");
    let (f_sig, f_ts) = zendesk_headers(&body, now() + 600);
    send(f_sig, f_ts).await.assert_problem(401, "unauthorized");
    // Bad: a signature over another timestamp.
    let (other_sig, _) = zendesk_headers(&body, now() - 1);
    let (_, fresh_ts) = zendesk_headers(&body, now());
    send(other_sig, fresh_ts)
        .await
        .assert_problem(401, "unauthorized");
    // Missing timestamp, missing signature.
    post(
        &app,
        "zendesk",
        &body,
        &[("x-zendesk-webhook-signature", &sig)],
    )
    .await
    .assert_problem(401, "unauthorized");
    post(
        &app,
        "zendesk",
        &body,
        &[("x-zendesk-webhook-signature-timestamp", &ts)],
    )
    .await
    .assert_problem(401, "unauthorized");
    assert_eq!(app.sim.count("patch_attributes"), 1);
}

/// HubSpot v3 signs base64(HMAC-SHA256(secret, method + uri + body + timestamp)), timestamp in ms.
const HUBSPOT: &str = "scheme = \"hmac\"\nheader = \"X-HubSpot-Signature-v3\"\ntimestamp_header = \"X-HubSpot-Request-Timestamp\"\nencoding = \"base64\"\nsigned = [\"method\", \"uri\", \"body\", \"timestamp\"]\npublic_url = \"https://patchbay.example.com\"\nsecrets = [\"hubspot-app-secret\"]";

#[tokio::test]
async fn hmac_hubspot_v3_signs_method_uri_body_and_timestamp() {
    let app = spawn_app_with_hooks(&route("hubspot", HUBSPOT)).await;
    let body = crm_event().to_string();
    let sign = |uri: &str, at_ms: i64| {
        let message = format!("POST{uri}{body}{at_ms}");
        (
            B64.encode(hmac_sha256("hubspot-app-secret", message.as_bytes())),
            at_ms.to_string(),
        )
    };
    let send = |(sig, ts): (String, String), path: &'static str| {
        let app = &app;
        let body = body.clone();
        async move {
            app.post_raw(
                path,
                body,
                &[
                    ("x-hubspot-signature-v3", &sig),
                    ("x-hubspot-request-timestamp", &ts),
                ],
            )
            .await
        }
    };
    let uri = "https://patchbay.example.com/v1/hooks/hubspot?portal=42";
    let good = sign(uri, now() * 1000);
    assert_eq!(
        send(good.clone(), "/v1/hooks/hubspot?portal=42")
            .await
            .status,
        200
    );
    send(good, "/v1/hooks/hubspot?portal=42")
        .await
        .assert_problem(401, "unauthorized");
    // Bad: signed for another URI. Expired: six minutes old.
    send(
        sign("https://evil.example.com/v1/hooks/hubspot", now() * 1000),
        "/v1/hooks/hubspot",
    )
    .await
    .assert_problem(401, "unauthorized");
    send(
        sign(
            "https://patchbay.example.com/v1/hooks/hubspot",
            (now() - 360) * 1000,
        ),
        "/v1/hooks/hubspot",
    )
    .await
    .assert_problem(401, "unauthorized");
    post(&app, "hubspot", &body, &[])
        .await
        .assert_problem(401, "unauthorized");
    assert_eq!(app.sim.count("patch_attributes"), 1);
}

// ----- standard_webhooks -----

const SW_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_NEW: &str = "whsec_dGhpcyBpcyB0aGUgbmV3IHNlY3JldCEh";

fn sw_headers(secret: &str, id: &str, at: i64, body: &str) -> Vec<(&'static str, String)> {
    let signature = standardwebhooks::Webhook::new(secret)
        .unwrap()
        .sign(id, at, body.as_bytes())
        .unwrap();
    vec![
        ("webhook-id", id.to_string()),
        ("webhook-timestamp", at.to_string()),
        ("webhook-signature", signature),
    ]
}

#[tokio::test]
async fn standard_webhooks_verify_with_any_live_secret_and_refuse_the_rest() {
    let app = spawn_app_with_hooks(&route(
        "sw",
        &format!("scheme = \"standard_webhooks\"\nsecrets = [\"{SW_OLD}\", \"{SW_NEW}\"]"),
    ))
    .await;
    let body = crm_event().to_string();
    let send = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        let body = body.clone();
        async move {
            let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            post(app, "sw", &body, &refs).await
        }
    };
    // Good, under the old and the new secret: rotation without downtime.
    assert_eq!(
        send(sw_headers(SW_OLD, "msg_1", now(), &body)).await.status,
        200
    );
    let at = now();
    assert_eq!(
        send(sw_headers(SW_NEW, "msg_2", at, &body)).await.status,
        200
    );
    // Replayed: the same id and timestamp again (the same clock second, whenever it is sent).
    send(sw_headers(SW_NEW, "msg_2", at, &body))
        .await
        .assert_problem(401, "unauthorized");
    // Expired.
    send(sw_headers(SW_NEW, "msg_3", now() - 600, &body))
        .await
        .assert_problem(401, "unauthorized");
    // Bad: an unknown secret, a signature for another message id.
    send(sw_headers(
        "whsec_c29tZW9uZSBlbHNlcyBzZWNyZXQ=",
        "msg_4",
        now(),
        &body,
    ))
    .await
    .assert_problem(401, "unauthorized");
    let mut moved = sw_headers(SW_NEW, "msg_5", now(), &body);
    moved[0].1 = "msg_6".into();
    send(moved).await.assert_problem(401, "unauthorized");
    // Missing.
    send(vec![]).await.assert_problem(401, "unauthorized");
    assert_eq!(app.sim.count("patch_attributes"), 2);
}

// ----- start-up -----

#[test]
fn a_broken_mapping_fails_start_up_naming_the_route() {
    for (toml, why) in [
        ("[hooks.crm]\nconversation_id = \"ticket\"\n[hooks.crm.attributes]\na = \"/a\"", "start with `/`"),
        ("[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\n", "empty"),
        ("[hooks.crm]\nconversation_id = \"/c\"\nmode = \"async\"\n[hooks.crm.secure_attributes]\ndob = \"/dob\"", "secure.keys is empty"),
        ("[hooks.crm]\nconversation_id = \"/c\"\nmode = \"sync_or_async\"\n[hooks.crm.secure_attributes]\ndob = \"/dob\"", "mode \"sync\""),
        ("[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\na = \"/a\"\n[hooks.crm.auth]\nscheme = \"standard_webhooks\"\nsecrets = [\"nope\"]", "whsec_"),
        ("[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\na = \"/a\"\n[hooks.crm.auth]\nscheme = \"hmac\"\nheader = \"X-Sig\"\nsecrets = [\"s\"]\nsigned = [\"uri\", \"body\"]", "public_url"),
    ] {
        let mut settings = patchbay::demo::settings_for_simulator("http://127.0.0.1:1", API_KEY);
        settings.hooks = hooks_from_toml(toml);
        settings.validate().expect("the rest is valid");
        let e = patchbay::startup::build_state(settings).err().expect("start-up fails").to_string();
        assert!(e.contains("hooks.crm") && e.contains(why), "{toml}: {e}");
    }
}

#[test]
fn a_duplicate_attribute_fails_start_up_naming_the_route() {
    let dir = std::env::temp_dir().join(format!("patchbay-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hooks.toml");
    std::fs::write(
        &file,
        "[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\na = \"/a\"\na = \"/b\"\n",
    )
    .unwrap();
    let env = [
        ("PATCHBAY__GENESYS__CLIENT_ID", "id"),
        ("PATCHBAY__GENESYS__CLIENT_SECRET", "s"),
        ("PATCHBAY__AUTH__API_KEYS", "k"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()));
    let e = patchbay::Settings::load_with_env(Some(&file), env)
        .unwrap_err()
        .to_string();
    assert!(e.contains("hooks.crm") && e.contains("duplicate"), "{e}");
}
