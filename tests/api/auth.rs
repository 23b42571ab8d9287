//! Inbound authentication: the configured keys, and nothing else, get in.

use serde_json::json;

use crate::helpers::*;

fn body() -> String {
    json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}}).to_string()
}

#[tokio::test]
async fn a_key_is_accepted_as_bearer_or_x_api_key() {
    let app = spawn_app().await;
    let bearer = format!("Bearer {API_KEY}");
    assert_eq!(
        app.post_raw("/v1/attributes", body(), &[("authorization", &bearer)])
            .await
            .status,
        200
    );
    assert_eq!(
        app.post_raw("/v1/attributes", body(), &[("x-api-key", API_KEY)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_missing_or_wrong_key_is_a_401_problem_and_nothing_goes_upstream() {
    let app = spawn_app().await;
    for headers in [
        vec![],
        vec![("x-api-key", "wrong")],
        vec![("authorization", "Bearer wrong")],
        vec![("authorization", "Basic dGVzdDp0ZXN0")],
    ] {
        let answer = app.post_raw("/v1/attributes", body(), &headers).await;
        answer.assert_problem(401, "unauthorized");
        assert_eq!(
            answer.header("www-authenticate"),
            r#"Bearer realm="patchbay""#
        );
    }
    assert!(app.sim.calls().is_empty(), "{:?}", app.sim.calls());
}

#[tokio::test]
async fn a_webhook_route_asks_for_its_own_scheme() {
    let app = spawn_app_with_hooks(
        r#"
[hooks.basic]
conversation_id = "/c"
attributes_from = "/a"
[hooks.basic.auth]
scheme = "basic"
username = "u"
password = "p"

[hooks.keyed]
conversation_id = "/c"
attributes_from = "/a"

[hooks.signed]
conversation_id = "/c"
attributes_from = "/a"
[hooks.signed.auth]
scheme = "hmac"
header = "X-Sig"
secrets = ["s"]
"#,
    )
    .await;
    for (route, challenge) in [
        ("basic", r#"Basic realm="patchbay", charset="UTF-8""#),
        ("keyed", r#"Bearer realm="patchbay""#),
        ("signed", r#"Signature realm="patchbay""#),
    ] {
        let answer = app
            .post_raw(&format!("/v1/hooks/{route}"), "{}".into(), &[])
            .await;
        answer.assert_problem(401, "unauthorized");
        assert_eq!(answer.header("www-authenticate"), challenge, "{route}");
    }
}

#[tokio::test]
async fn without_an_admin_key_the_gateway_says_so_at_start_and_on_each_refusal() {
    let server = patchbay::sim::Simulator::new();
    let sim_url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    let mut gateway = Gateway::in_front_of(&sim_url, &[("RUST_LOG", "info")]);
    gateway.start();
    gateway.ready().await;
    let refused = reqwest::Client::new()
        .get(format!("{}/v1/dead-letters", gateway.address))
        .header("x-api-key", "admin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    gateway.terminate();
    let log = gateway.log_text();
    assert!(
        log.contains("no admin key is configured: the dead-letter endpoints answer 401 until auth.admin_keys is set"),
        "{log}"
    );
    assert!(
        log.contains("no key is configured for this endpoint: set auth.admin_keys"),
        "{log}"
    );
}

#[tokio::test]
async fn anonymous_access_works_only_when_allowed() {
    let app = spawn_app_with(|s| {
        s.auth.api_keys.clear();
        s.auth.allow_anonymous = true;
    })
    .await;
    assert_eq!(
        app.post_raw("/v1/attributes", body(), &[]).await.status,
        200
    );
}
