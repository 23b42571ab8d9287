//! `patchbay demo`: the simulator and the gateway in one process, fed the events real callers send.

use std::io::Write;
use std::time::Duration;

use secrecy::SecretString;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::api::hooks::settings::hooks_from_toml;
use crate::config::Settings;
use crate::sim::{self, Control, Simulator};
use crate::startup::Application;
use crate::store::queue::sqlite::IN_MEMORY_STORE;

/// One sample event and what a correct gateway answers.
struct Event {
    caller: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Value,
    expect_status: u16,
}

/// The secret the demo's Zendesk webhook is signed with: the recipe's example secret.
const ZENDESK_SECRET: &str = "recipe-zendesk-secret-c04e";

/// The route the demo serves Zendesk's webhook with: the recipe a user copies, as it is.
const ZENDESK_ROUTE_FILE: &str = "recipes/zendesk/route.toml";
const ZENDESK_ROUTE: &str = include_str!("../recipes/zendesk/route.toml");

/// Zendesk's signature headers for `body`: base64 HMAC-SHA256 over an RFC 3339 timestamp and the body.
fn zendesk_signature(body: &str) -> anyhow::Result<Vec<(&'static str, String)>> {
    use base64::Engine;
    use hmac::Mac;
    let timestamp = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(ZENDESK_SECRET.as_bytes())?;
    mac.update(timestamp.as_bytes());
    mac.update(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok(vec![
        ("x-zendesk-webhook-signature", signature),
        ("x-zendesk-webhook-signature-timestamp", timestamp),
    ])
}

/// How a request named its conversation and participant, in the caller's words.
fn addressed_by(sent: &Value, answer: &Value) -> String {
    let conversation = match answer["foundBy"].as_str() {
        Some("conversationId") | None => "the conversationId it sent".to_string(),
        Some("mirror") => "a lookup, answered by the mirror (no call)".into(),
        Some("cache") => "a lookup, answered by the recent finds".into(),
        Some(other) => format!("a lookup, answered by {other}"),
    };
    let participant = if sent.get("participantId").is_some() {
        "the participantId it sent".to_string()
    } else {
        match sent.get("purpose").and_then(Value::as_str) {
            Some(purpose) => format!("the {purpose} by purpose"),
            None => "the customer (the default purpose)".into(),
        }
    };
    format!("{conversation}; {participant}")
}

/// A Zendesk ticket event in Zendesk's own shape, carrying the Genesys conversation id.
fn zendesk_ticket(conversation: &str) -> Value {
    json!({"ticket": {"id": 4711, "priority": "urgent", "genesys_conversation_id": conversation}})
}

/// Settings for a gateway in front of the simulator at `sim_url`, accepting `api_key`.
pub fn settings_for_simulator(sim_url: &str, api_key: &str) -> Settings {
    let mut s = Settings::defaults();
    s.server.listen = "127.0.0.1:0".parse().expect("valid address");
    s.genesys.login_url = Some(sim_url.parse().expect("simulator URL"));
    s.genesys.api_url = Some(sim_url.parse().expect("simulator URL"));
    s.genesys.client_id = sim::DEFAULT_CLIENT_ID.into();
    s.genesys.client_secret = SecretString::from(sim::DEFAULT_CLIENT_SECRET);
    s.auth.api_keys = vec![SecretString::from(api_key.to_string())];
    // A store of its own, so runs never share jobs or idempotency keys.
    s.queue.path = std::env::temp_dir()
        .join(format!("patchbay-{}", uuid::Uuid::new_v4().simple()))
        .join("queue.sqlite3");
    s
}

/// How long the demo's simulator holds a write back from reads, as Genesys's asynchronous apply does.
const VISIBILITY_DELAY: Duration = Duration::from_millis(120);

/// Runs the demonstration, writing a readable account to `out`. `Ok(true)` when every event got the
/// answer it should.
pub async fn run(out: &mut impl Write) -> anyhow::Result<bool> {
    let simulator = Simulator::new();
    let control = simulator.control();
    // Genesys reads are eventually consistent: make the demo show verification waiting for it.
    control.set_visibility_delay(VISIBILITY_DELAY);
    let sim_url = simulator.spawn(TcpListener::bind("127.0.0.1:0").await?);

    let api_key = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let mut settings = settings_for_simulator(&sim_url, &api_key);
    settings.hooks = hooks_from_toml(ZENDESK_ROUTE)?;
    // A key of its own for the run, so secure attributes could be queued sealed as in production.
    settings.secure.keys = format!(
        "demo:{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            uuid::Uuid::new_v4().as_bytes().repeat(2)
        )
    )
    .into();
    // The demo keeps its store in memory: it leaves nothing behind and runs in a read-only container.
    settings.queue.path = IN_MEMORY_STORE.into();
    settings.validate()?;
    let application = Application::build(settings).await?;
    let gateway = format!("http://{}", application.address());
    let mirror = application.state().org.mirror().cloned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async {
        let _ = stopped.await;
    }));

    writeln!(out, "Patchbay demo")?;
    writeln!(out, "  simulated Genesys Cloud at {sim_url}")?;
    writeln!(out, "  gateway at {gateway}")?;
    // The live mirror follows the queues' conversations over a notification channel.
    let feed_live = match &mirror {
        Some(mirror) => {
            let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
            while !mirror.is_live() && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            mirror.is_live()
        }
        None => false,
    };
    // API calls only: the grant and the socket's own upgrade are not among them.
    let feed_calls: usize = control
        .counts()
        .iter()
        .filter(|(op, _)| !matches!(**op, "token" | "other"))
        .map(|(_, n)| n)
        .sum();
    if feed_live {
        writeln!(
            out,
            "  live mirror: connected. Genesys now pushes each queue's calls to Patchbay, so updates \
             for them need no lookup and no read ({feed_calls} calls to set up: list the queues, open \
             a notification channel, subscribe to it)"
        )?;
    } else {
        writeln!(
            out,
            "  live mirror: not connected; every update goes by REST"
        )?;
    }
    // A call comes in; its queue pushes it to the mirror. The seeded calls started before the
    // feed, so the mirror has not seen them: they go by REST.
    control.add_caller_call();
    if let Some(mirror) = &mirror {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
        while mirror.get(sim::SEED_CALLER_CALL).is_none() && tokio::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    writeln!(
        out,
        "  a call comes in from +1 317 555 0123: its queue pushes it to the mirror"
    )?;
    writeln!(out)?;

    let events = [
        Event {
            caller: "Architect data action: mark the caller VIP (participant found by purpose)",
            path: "/v1/attributes",
            headers: vec![("x-api-key", api_key.clone())],
            body: json!({"conversationId": sim::SEED_ACTIVE_CALL, "purpose": "customer",
                         "attributes": {"vip": true, "crmCaseId": "00012345"}}),
            expect_status: 200,
        },
        Event {
            caller: "Salesforce webhook: account details for the agent's script",
            path: "/v1/attributes",
            headers: vec![("authorization", format!("Bearer {api_key}"))],
            body: json!({"conversationId": sim::SEED_ACTIVE_CALL, "participantId": sim::SEED_ACTIVE_CALL_AGENT,
                         "attributes": {"accountTier": "gold", "openCases": 3}}),
            expect_status: 200,
        },
        Event {
            caller:
                "HubSpot workflow: mark the caller VIP, knowing only the number they called from",
            path: "/v1/attributes",
            headers: vec![("x-api-key", api_key.clone())],
            body: json!({"lookup": {"ani": "+1 317 555 0123"},
                         "attributes": {"vip": true, "hubspotContact": "901"}}),
            expect_status: 200,
        },
        Event {
            caller: "Internal service: tag a transferred call's current agent",
            path: "/v1/attributes",
            headers: vec![("x-api-key", api_key.clone())],
            body: json!({"conversationId": sim::SEED_TRANSFER, "purpose": "agent",
                         "attributes": {"transferReason": "billing"}}),
            expect_status: 200,
        },
        Event {
            caller: "Zendesk webhook, signed, through the TOML-configured route /v1/hooks/zendesk",
            path: "/v1/hooks/zendesk",
            headers: zendesk_signature(&zendesk_ticket(sim::SEED_CHAT).to_string())?,
            body: zendesk_ticket(sim::SEED_CHAT),
            expect_status: 200,
        },
        Event {
            caller: "The same Zendesk webhook with a forged signature",
            path: "/v1/hooks/zendesk",
            headers: vec![
                (
                    "x-zendesk-webhook-signature",
                    "Zm9yZ2VkIHNpZ25hdHVyZQ==".into(),
                ),
                (
                    "x-zendesk-webhook-signature-timestamp",
                    "2026-11-24T09:00:00Z".into(),
                ),
            ],
            body: zendesk_ticket(sim::SEED_CHAT),
            expect_status: 401,
        },
        Event {
            caller: "Internal service: an update for a call that already ended",
            path: "/v1/attributes",
            headers: vec![("x-api-key", api_key.clone())],
            body: json!({"conversationId": sim::SEED_ENDED, "purpose": "customer",
                         "attributes": {"ticket": "ZD-981"}}),
            expect_status: 409,
        },
    ];

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()?;
    let mut all_ok = true;
    let mut written = 0;
    let api_calls = |sim: &Control| {
        sim.count("patch_attributes") + sim.count("get_conversation") + sim.count("analytics_query")
    };
    let before_events = api_calls(&control);
    for (n, event) in events.iter().enumerate() {
        let before = api_calls(&control);
        // Sent as the exact bytes that were signed.
        let mut request = http
            .post(format!("{gateway}{}", event.path))
            .header("content-type", "application/json")
            .body(event.body.to_string());
        for (k, v) in &event.headers {
            request = request.header(*k, v);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let ok = status == event.expect_status;
        all_ok &= ok;
        writeln!(out, "{}. {}", n + 1, event.caller)?;
        writeln!(out, "   sent:         {} {}", event.path, event.body)?;
        if status == 200 {
            written += 1;
            writeln!(
                out,
                "   conversation: {}",
                body["conversationId"].as_str().unwrap_or("?")
            )?;
            writeln!(
                out,
                "   participant:  {}",
                body["participantId"].as_str().unwrap_or("?")
            )?;
            writeln!(
                out,
                "   now on it:    {} (the participant's attributes, as Genesys shows them)",
                body["attributes"]
            )?;
            writeln!(out, "   addressed by: {}", addressed_by(&event.body, &body))?;
            writeln!(
                out,
                "   confirmed by: {}",
                match body["verifiedBy"].as_str().unwrap_or("?") {
                    "queueEvent" | "detailEvent" => "an event Genesys pushed (no call)",
                    "read" => "reading the conversation back",
                    other => other,
                }
            )?;
            writeln!(
                out,
                "   verified:     {}{}",
                body["verified"],
                if body["verified"] == json!(true) {
                    ""
                } else {
                    " (mismatches below)"
                }
            )?;
            if body["verified"] != json!(true) {
                writeln!(out, "   mismatches:   {}", body["mismatches"])?;
                all_ok = false;
            }
        } else {
            writeln!(
                out,
                "   answer:       {} {} ({})",
                status,
                body["code"].as_str().unwrap_or("?"),
                body["detail"].as_str().unwrap_or("")
            )?;
        }
        writeln!(out, "   Genesys calls: {}", api_calls(&control) - before)?;
        writeln!(
            out,
            "   outcome:      {}",
            if ok { "as expected" } else { "UNEXPECTED" }
        )?;
        writeln!(out)?;
    }

    let patches = control.count("patch_attributes");
    let reads = control.count("get_conversation");
    let queries = control.count("analytics_query");
    let calls = api_calls(&control) - before_events;
    writeln!(
        out,
        "Genesys calls: {calls} for {updates} written update(s), {per_update:.1} per update \
         ({patches} attribute PATCH(es), {reads} conversation GET(s), {queries} analytics query(ies)), \
         and {grants} token grant(s)",
        updates = written,
        per_update = calls as f64 / written.max(1) as f64,
        grants = control.grants(),
    )?;
    writeln!(
        out,
        "  A call the mirror saw start costs one call, its PATCH; the others add a read to find the \
         participant and to confirm the write (Genesys applies a PATCH {} ms later here, so a read \
         too early polls again).",
        VISIBILITY_DELAY.as_millis(),
    )?;
    writeln!(
        out,
        "  The Zendesk webhook was served by the route in {ZENDESK_ROUTE_FILE}."
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Next: wire your CRM. Copy its route from recipes/ (Salesforce, HubSpot, Zendesk, GitHub, \
         Standard Webhooks), send its event.json with its send.sh against `patchbay sim`, then point \
         Patchbay at your org and run `patchbay doctor`: book/src/guides/recipes.md."
    )?;
    let _ = stop.send(());
    server.await??;
    writeln!(
        out,
        "{}",
        if all_ok {
            "Demo finished: every event got the right answer."
        } else {
            "Demo FAILED."
        }
    )?;
    Ok(all_ok)
}
