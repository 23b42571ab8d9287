//! OpenTelemetry traces: real gateway processes export over OTLP/HTTP to a receiver inside the
//! test, which decodes what they send with `opentelemetry-proto`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use patchbay::sim::{Control, Op, Simulator};
use prost::Message;
use serde_json::json;

use crate::helpers::*;

/// What a receiver got: every span, and every resource's attributes.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<Span>>>,
    resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
}

/// An OTLP/HTTP receiver on port 0; its base URL is the collector endpoint a gateway is given.
async fn receiver() -> (String, Received) {
    let received = Received::default();
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let keep = keep.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for rs in request.resource_spans {
                    if let Some(r) = rs.resource {
                        keep.resources.lock().unwrap().push(r.attributes);
                    }
                    for ss in rs.scope_spans {
                        keep.spans.lock().unwrap().extend(ss.spans);
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

impl Received {
    fn all(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `done` holds of the spans received, for at most 15 s (export batches a second).
    async fn until(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let give_up = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.all();
            if done(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < give_up,
                "never received {what}; got: {:?}",
                spans.iter().map(|s| s.name.clone()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn text(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| text(&kv.value))
}

/// An attribute that must be an integer, as OpenTelemetry's conventions type it (a status code, a
/// resend count): `None` when it is absent or of another type.
fn int_attr(span: &Span, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Any::IntValue(i) => Some(*i),
            _ => None,
        })
}

fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The request span whose `request_id` is `id`.
fn request_span<'a>(spans: &'a [Span], id: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| attr(s, "request_id").as_deref() == Some(id))
}

fn children<'a>(spans: &'a [Span], parent: &Span, name: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.name == name)
        .collect()
}

fn traced_gateway(sim_url: &str, collector: &str, extra: &[(&str, &str)]) -> Gateway {
    let mut env = vec![("PATCHBAY__TELEMETRY__OTLP_ENDPOINT", collector)];
    env.extend_from_slice(extra);
    Gateway::in_front_of(sim_url, &env)
}

async fn sim() -> (Control, String) {
    let server = Simulator::new();
    let sim = server.control();
    let url = server.spawn(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    (sim, url)
}

async fn post_json(
    url: String,
    body: serde_json::Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("x-api-key", API_KEY)
        .json(&body);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    request.send().await.unwrap()
}

fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-request-id"].to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_synchronous_update_is_one_trace_from_the_request_to_each_genesys_call() {
    let (_sim, sim_url) = sim().await;
    let (collector, received) = receiver().await;
    let mut gateway = traced_gateway(
        &sim_url,
        &collector,
        &[("PATCHBAY__LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    );
    gateway.start();
    gateway.ready().await;
    let answer = post_json(
        format!("{}/v1/attributes", gateway.address),
        json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"vip": "true"}}),
        &[],
    )
    .await;
    assert_eq!(answer.status(), 200);
    let id = request_id(&answer);
    let spans = received
        .until("the request and its round", |spans| {
            request_span(spans, &id).is_some() && spans.iter().any(|s| s.name == "verification")
        })
        .await;
    let request = request_span(&spans, &id).unwrap();
    assert_eq!(request.name, "POST /v1/attributes");
    assert_eq!(request.kind, 2, "a server span");
    assert_eq!(
        attr(request, "http.route").as_deref(),
        Some("/v1/attributes")
    );
    assert_eq!(int_attr(request, "http.response.status_code"), Some(200));
    assert!(
        request.parent_span_id.is_empty(),
        "no traceparent: a new trace"
    );
    let trace = &request.trace_id;
    assert!(spans.iter().filter(|s| &s.trace_id == trace).count() >= 5);

    // The read that found the customer, then the lane's round with the PATCH and the read back.
    let resolve: Vec<_> = children(&spans, request, "genesys call")
        .into_iter()
        .filter(|s| attr(s, "genesys.operation").as_deref() == Some("get_conversation"))
        .collect();
    assert_eq!(resolve.len(), 1, "{resolve:?}");
    assert_eq!(resolve[0].kind, 3, "a client span");
    assert_eq!(
        attr(resolve[0], "url.template").as_deref(),
        Some("/api/v2/conversations/{id}")
    );
    let admission = children(&spans, request, "admission");
    assert_eq!(admission.len(), 1);
    let round = children(&spans, request, "lane round");
    assert_eq!(round.len(), 1, "the round is a span of the request's trace");
    let patch = children(&spans, round[0], "genesys call");
    assert_eq!(patch.len(), 1);
    assert_eq!(
        attr(patch[0], "http.request.method").as_deref(),
        Some("PATCH")
    );
    assert_eq!(
        attr(patch[0], "url.template").as_deref(),
        Some("/api/v2/conversations/{id}/participants/{id}/attributes")
    );
    assert_eq!(
        int_attr(patch[0], "http.response.status_code"),
        Some(202),
        "an integer, so a collector's `>= 500` finds Genesys's failures"
    );
    assert_eq!(int_attr(patch[0], "http.request.resend_count"), Some(0));
    assert!(attr(patch[0], "genesys.correlation_id").is_some_and(|c| !c.is_empty()));
    let verification = children(&spans, round[0], "verification");
    assert_eq!(verification.len(), 1);
    assert_eq!(
        children(&spans, verification[0], "genesys call").len(),
        1,
        "the read back"
    );

    // Log lines carry the trace.
    gateway.terminate();
    let logs = gateway.log_text();
    let line = logs
        .lines()
        .find(|l| l.contains("attributes updated"))
        .expect("the update's log line");
    assert!(
        line.contains(&format!("\"trace_id\":\"{}\"", hex(trace))),
        "{line}"
    );
    assert!(
        line.contains(&format!("\"span_id\":\"{}\"", hex(&request.span_id))),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_traceparent_continues_the_callers_trace_and_shutdown_flushes_it() {
    let (_sim, sim_url) = sim().await;
    let (collector, received) = receiver().await;
    let mut gateway = traced_gateway(&sim_url, &collector, &[]);
    gateway.start();
    gateway.ready().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    let answer = post_json(
        format!("{}/v1/attributes", gateway.address),
        json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}}),
        &[("traceparent", &format!("00-{trace}-{parent}-01")), ("x-request-id", "caller-chosen-id")],
    )
    .await;
    assert_eq!(answer.status(), 200);
    assert_eq!(
        request_id(&answer),
        "caller-chosen-id",
        "x-request-id stays as it is"
    );
    // Stopped at once, before a batch is due: the spans arrive by the shutdown's flush.
    gateway.terminate();
    let spans = received
        .until("the request", |s| {
            request_span(s, "caller-chosen-id").is_some()
        })
        .await;
    let request = request_span(&spans, "caller-chosen-id").unwrap();
    assert_eq!(hex(&request.trace_id), trace);
    assert_eq!(hex(&request.parent_span_id), parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_and_metrics_scrapes_make_no_span() {
    let (_sim, sim_url) = sim().await;
    let (collector, received) = receiver().await;
    let mut gateway = traced_gateway(&sim_url, &collector, &[]);
    gateway.start();
    gateway.ready().await;
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz", "/metrics", "/healthz"] {
        let answer = http
            .get(format!("{}{path}", gateway.address))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
    }
    let answer = post_json(
        format!("{}/v1/attributes", gateway.address),
        json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"a": "b"}}),
        &[("x-request-id", "after-the-probes")],
    )
    .await;
    assert_eq!(answer.status(), 200);
    gateway.terminate();
    let spans = received
        .until("the update", |s| {
            request_span(s, "after-the-probes").is_some()
        })
        .await;
    let probes: Vec<_> = spans
        .iter()
        .filter(|s| {
            ["/healthz", "/readyz", "/metrics"]
                .iter()
                .any(|p| s.name.ends_with(p))
        })
        .map(|s| s.name.clone())
        .collect();
    assert!(probes.is_empty(), "probe spans: {probes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_applied_after_a_restart_is_in_the_trace_of_the_request_that_queued_it() {
    let (sim, sim_url) = sim().await;
    let (collector, received) = receiver().await;
    let mut gateway = traced_gateway(
        &sim_url,
        &collector,
        &[
            ("PATCHBAY__GENESYS__RETRY__MAX_ATTEMPTS", "1"),
            ("PATCHBAY__QUEUE__BACKOFF_BASE_MS", "200"),
            ("PATCHBAY__QUEUE__BACKOFF_MAX_MS", "400"),
        ],
    );
    gateway.start();
    gateway.ready().await;
    sim.fail_next(Op::PatchAttributes, 503, 10_000);
    let answer = post_json(
        format!("{}/v1/attributes", gateway.address),
        json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"later": "yes"}}),
        &[("prefer", "respond-async")],
    )
    .await;
    assert_eq!(answer.status(), 202);
    let id = request_id(&answer);
    let job: serde_json::Value = answer.json().await.unwrap();
    let job_id = job["jobId"].as_str().unwrap().to_string();
    received
        .until("a failed attempt", |s| {
            s.iter().any(|s| s.name == "job attempt")
        })
        .await;
    gateway.terminate();

    sim.clear_faults();
    gateway.start();
    gateway.ready().await;
    wait_all_succeeded(
        &reqwest::Client::new(),
        std::slice::from_ref(&gateway.address),
        std::slice::from_ref(&job_id),
        Duration::from_secs(20),
    )
    .await;
    let spans = received
        .until("the succeeding attempt", |s| {
            s.iter().filter(|s| s.name == "job attempt").any(|a| {
                children(s, a, "lane round").iter().any(|r| {
                    !children(s, r, "genesys call").is_empty() && attr(r, "verified_by").is_some()
                })
            })
        })
        .await;
    gateway.terminate();
    let request = request_span(&spans, &id).expect("the request's span");
    let attempts: Vec<_> = spans.iter().filter(|s| s.name == "job attempt").collect();
    assert!(
        attempts.len() >= 2,
        "a failed attempt, then the one after the restart"
    );
    for attempt in attempts {
        assert_eq!(attempt.trace_id, request.trace_id, "in the request's trace");
        assert_eq!(
            attempt.parent_span_id, request.span_id,
            "a child of the request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_coalesced_into_one_round_are_linked_to_it() {
    let (sim, sim_url) = sim().await;
    let (collector, received) = receiver().await;
    let mut gateway = traced_gateway(
        &sim_url,
        &collector,
        &[("PATCHBAY__DELIVERY__LINGER_MS", "100")],
    );
    gateway.start();
    gateway.ready().await;
    sim.set_latency(Duration::from_millis(50));
    let url = format!("{}/v1/attributes", gateway.address);
    let answers = futures::future::join_all((0..4).map(|n| {
        post_json(
            url.clone(),
            json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {format!("k{n}"): "v"}}),
            &[],
        )
    }))
    .await;
    let ids: Vec<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status(), 200);
            request_id(a)
        })
        .collect();
    let spans = received
        .until("every request and a round with links", |s| {
            ids.iter().all(|id| request_span(s, id).is_some())
                && s.iter()
                    .any(|r| r.name == "lane round" && r.links.len() >= 2)
        })
        .await;
    gateway.terminate();
    let requests: HashMap<Vec<u8>, &Span> = ids
        .iter()
        .map(|id| {
            let s = request_span(&spans, id).unwrap();
            (s.span_id.clone(), s)
        })
        .collect();
    let shared = spans
        .iter()
        .filter(|r| r.name == "lane round")
        .max_by_key(|r| r.links.len())
        .unwrap();
    assert!(shared.links.len() >= 2, "coalesced updates share a round");
    for link in &shared.links {
        let request = requests
            .get(&link.span_id)
            .expect("a link to an update's request");
        assert_eq!(link.trace_id, request.trace_id);
        // And back: each update's own trace leads to the round that carried it.
        assert!(
            request
                .links
                .iter()
                .any(|l| l.span_id == shared.span_id && l.trace_id == shared.trace_id),
            "the update's span does not link its round"
        );
    }
    assert_eq!(
        attr(shared, "updates").as_deref(),
        Some(shared.links.len().to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_number_key_or_value_reaches_a_span() {
    let (sim, sim_url) = sim().await;
    sim.add_caller_call();
    let (collector, received) = receiver().await;
    let mut gateway = traced_gateway(
        &sim_url,
        &collector,
        &[(
            "PATCHBAY__TELEMETRY__RESOURCE_ATTRIBUTES",
            "deployment.environment=test",
        )],
    );
    gateway.start();
    gateway.ready().await;
    let url = format!("{}/v1/attributes", gateway.address);
    let found = post_json(
        url.clone(),
        json!({"lookup": {"ani": "+1 317 555 0123"}, "attributes": {"note": "value-personal-8c1e"}}),
        &[],
    )
    .await;
    assert_eq!(found.status(), 200);
    let missing = post_json(
        url.clone(),
        json!({"lookup": {"ani": "+1 317 555 0164"}, "attributes": {"note": "value-personal-8c1e"}}),
        &[],
    )
    .await;
    assert_eq!(missing.status(), 404);
    let refused = reqwest::Client::new()
        .post(url)
        .header("x-api-key", "wrong-key-31aa")
        .json(&json!({"conversationId": SEED_ACTIVE_CALL, "attributes": {"a": "b"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let ids = [request_id(&found), request_id(&missing)];
    let spans = received
        .until("both lookups", |s| {
            ids.iter().all(|id| request_span(s, id).is_some())
                && s.iter().filter(|s| s.name == "lookup").count() >= 2
        })
        .await;
    gateway.terminate();
    let lookup = spans.iter().find(|s| s.name == "lookup").unwrap();
    assert_eq!(attr(lookup, "lookup.kind").as_deref(), Some("ani"));
    let mut texts: Vec<String> = Vec::new();
    for s in &spans {
        texts.push(s.name.clone());
        texts.extend(
            s.attributes
                .iter()
                .map(|kv| format!("{}={}", kv.key, text(&kv.value))),
        );
        for e in &s.events {
            texts.push(e.name.clone());
            texts.extend(
                e.attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, text(&kv.value))),
            );
        }
    }
    let resources = received.resources.lock().unwrap().clone();
    for r in &resources {
        texts.extend(r.iter().map(|kv| format!("{}={}", kv.key, text(&kv.value))));
    }
    assert!(
        texts.iter().any(|t| t == "deployment.environment=test"),
        "the resource attributes are sent"
    );
    assert!(texts.iter().any(|t| t == "service.name=patchbay"));
    for secret in [
        patchbay::sim::DEFAULT_CLIENT_SECRET,
        API_KEY,
        "wrong-key-31aa",
        "5550123",
        "5550164",
        "value-personal-8c1e",
    ] {
        if let Some(t) = texts.iter().find(|t| t.contains(secret)) {
            panic!("`{secret}` reached a span: {t}");
        }
    }
    for token in sim.issued_tokens() {
        assert!(
            !texts.iter().any(|t| t.contains(&token)),
            "a token in a span"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_no_update_and_its_dropped_spans_are_counted() {
    let (_sim, sim_url) = sim().await;
    // Nothing listens there: every export fails.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let mut gateway = traced_gateway(
        &sim_url,
        &closed,
        &[
            ("PATCHBAY__TELEMETRY__MAX_QUEUE_SIZE", "4"),
            ("PATCHBAY__TELEMETRY__EXPORT_TIMEOUT_MS", "200"),
        ],
    );
    gateway.start();
    gateway.ready().await;
    let url = format!("{}/v1/attributes", gateway.address);
    for n in 0..20 {
        let answer = post_json(
            url.clone(),
            json!({"conversationId": SEED_ACTIVE_CALL, "participantId": SEED_ACTIVE_CALL_AGENT, "attributes": {"n": n.to_string()}}),
            &[],
        )
        .await;
        assert_eq!(answer.status(), 200, "update {n}");
    }
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(format!("{}/metrics", gateway.address))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let dropped: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("patchbay_trace_spans_dropped_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if dropped > 0.0 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "no dropped span was counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Shutdown still ends in its time: the flush is bounded.
    let stopping = Instant::now();
    gateway.terminate();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
}
