//! No secret ever reaches a log: not the client secret, a token, an API key or a Basic credential.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use patchbay::sim::Op;
use serde_json::json;
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Runs a good request, a refused token, a wrong inbound key, upstream failures and a rejected
/// client, all at TRACE level, in both log formats, and searches everything logged for secrets.
#[tokio::test]
async fn no_secret_appears_in_the_logs_at_any_level() {
    for json_format in [false, true] {
        let captured = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(captured.clone());
        // The test runs on a current-thread runtime, so the thread's default subscriber sees the
        // server's, the client's and the simulator's events alike.
        let _guard = if json_format {
            tracing::subscriber::set_default(
                builder
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .finish(),
            )
        } else {
            tracing::subscriber::set_default(builder.finish())
        };

        let app = spawn_app().await;
        let ok = json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}});
        assert_eq!(app.post_attributes(ok.clone()).await.status, 200);
        app.sim.revoke_tokens();
        assert_eq!(app.post_attributes(ok.clone()).await.status, 200);
        app.sim.fail_next(Op::PatchAttributes, 503, 1);
        app.sim.rate_limit_next(Op::GetConversation, 1, 1);
        assert_eq!(app.post_attributes(ok.clone()).await.status, 200);
        let wrong_key = "wrong-key-6d1e0a";
        app.post_raw(
            "/v1/attributes",
            ok.to_string(),
            &[("x-api-key", wrong_key)],
        )
        .await
        .assert_problem(401, "unauthorized");

        let hooks = spawn_app_with_hooks(
            "[hooks.crm]\nconversation_id = \"/c\"\n[hooks.crm.attributes]\na = \"/a\"\n[hooks.crm.auth]\nscheme = \"basic\"\nusername = \"u\"\npassword = \"basic-pass-51ab\"\n\
             [hooks.gh]\nconversation_id = \"/c\"\n[hooks.gh.attributes]\na = \"/a\"\n[hooks.gh.auth]\nscheme = \"hmac\"\nheader = \"X-Sig\"\nsecrets = [\"hmac-secret-77fe\"]\n",
        )
        .await;
        let event = json!({"c": SEED_ACTIVE_CALL, "a": "x"}).to_string();
        let good_basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:basic-pass-51ab")
        );
        let bad_basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:basic-guess-0c1d")
        );
        assert_eq!(
            hooks
                .post_raw(
                    "/v1/hooks/crm",
                    event.clone(),
                    &[("authorization", &good_basic)]
                )
                .await
                .status,
            200
        );
        hooks
            .post_raw(
                "/v1/hooks/crm",
                event.clone(),
                &[("authorization", &bad_basic)],
            )
            .await
            .assert_problem(401, "unauthorized");
        let signature = hex::encode(hmac_sha256("hmac-secret-77fe", event.as_bytes()));
        assert_eq!(
            hooks
                .post_raw("/v1/hooks/gh", event.clone(), &[("x-sig", &signature)])
                .await
                .status,
            200
        );
        hooks
            .post_raw("/v1/hooks/gh", event.clone(), &[("x-sig", &signature)])
            .await
            .assert_problem(401, "unauthorized");

        let denied =
            spawn_app_with(|s| s.genesys.client_secret = "not-the-secret-9f2c".to_string().into())
                .await;
        denied
            .post_attributes(ok.clone())
            .await
            .assert_problem(502, "upstream_auth_failed");

        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(
            logs.contains("Genesys call failed; retrying"),
            "the capture saw the server's logs"
        );
        let basic = |secret: &str| {
            base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{secret}", patchbay::sim::DEFAULT_CLIENT_ID))
        };
        let mut secrets = vec![
            patchbay::sim::DEFAULT_CLIENT_SECRET.to_string(),
            "not-the-secret-9f2c".to_string(),
            basic(patchbay::sim::DEFAULT_CLIENT_SECRET),
            basic("not-the-secret-9f2c"),
            API_KEY.to_string(),
            wrong_key.to_string(),
            "basic-pass-51ab".to_string(),
            "basic-guess-0c1d".to_string(),
            good_basic.trim_start_matches("Basic ").to_string(),
            bad_basic.trim_start_matches("Basic ").to_string(),
            "hmac-secret-77fe".to_string(),
            signature.clone(),
        ];
        secrets.extend(hooks.sim.issued_tokens());
        secrets.extend(app.sim.issued_tokens());
        assert!(app.sim.issued_tokens().len() >= 2);
        for secret in secrets {
            assert!(
                !logs.contains(&secret),
                "`{secret}` leaked into the logs (json: {json_format})"
            );
        }
    }
}
