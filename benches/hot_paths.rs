//! Micro-benchmarks of the hot pure code: request parsing and validation, route mapping, signature
//! verification and attribute coercion. `cargo bench --bench hot_paths`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use patchbay::api::body;
use patchbay::api::hooks::auth::{HookAuth, Inbound};
use patchbay::api::hooks::mapping::Mapping;
use patchbay::api::request::{AttributesRequest, REQUEST_SHAPE};
use patchbay::config::hooks::hooks_from_toml;
use patchbay::domain::AttributeMap;
use serde_json::json;

const BODY: &str = r#"{"conversationId":"6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01","purpose":"customer",
"attributes":{"vip":true,"crmCaseId":"00012345","openCases":3,"tier":"gold","note":"called twice"}}"#;

const ROUTE: &str = r#"
[hooks.zendesk]
conversation_id = "/ticket/genesys_conversation_id"
purpose = "customer"
[hooks.zendesk.attributes]
zendeskTicket = "/ticket/id"
ticketPriority = { pointer = "/ticket/priority", optional = true }
requester = "/ticket/requester/name"
source = { value = "zendesk" }
[hooks.zendesk.auth]
scheme = "hmac"
header = "X-Sig"
secrets = ["old-secret", "new-secret"]
encoding = "hex"
"#;

fn parsing(c: &mut Criterion) {
    c.bench_function("parse and validate a /v1/attributes body", |b| {
        b.iter(|| {
            let request: AttributesRequest =
                body::parse(black_box(BODY.as_bytes()), &REQUEST_SHAPE).unwrap();
            request.parse().unwrap()
        })
    });
}

fn coercion(c: &mut Criterion) {
    let object =
        json!({"vip": true, "openCases": 3, "score": 4.5, "tier": "gold", "note": "called twice"});
    let object = object.as_object().unwrap();
    c.bench_function("coerce five attribute values", |b| {
        b.iter(|| AttributeMap::from_json(black_box(object)).unwrap())
    });
}

fn mapping(c: &mut Criterion) {
    let hooks = hooks_from_toml(ROUTE).unwrap();
    let mapping = Mapping::compile(&hooks["zendesk"]).unwrap();
    let event = json!({"ticket": {"genesys_conversation_id": "6f1d8c62-3b3e-4f0a-9a57-2d4c8e1b7a01",
        "id": 4711, "priority": "urgent", "requester": {"name": "Ada"}, "description": "x".repeat(2000)}});
    c.bench_function("map a webhook event with JSON Pointers", |b| {
        b.iter(|| mapping.apply(black_box(&event)).unwrap())
    });
}

fn signature(c: &mut Criterion) {
    use hmac::Mac;
    let hooks = hooks_from_toml(ROUTE).unwrap();
    let auth = HookAuth::compile(hooks["zendesk"].auth.as_ref(), &[]).unwrap();
    let body = BODY.repeat(8);
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"new-secret").unwrap();
    mac.update(body.as_bytes());
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        "x-sig",
        hex::encode(mac.finalize().into_bytes()).parse().unwrap(),
    );
    let method = axum::http::Method::POST;
    c.bench_function(
        "verify an HMAC-SHA256 signature (two live secrets, 1.5 KiB)",
        |b| {
            b.iter(|| {
                let inbound = Inbound {
                    method: &method,
                    path_and_query: "/v1/hooks/zendesk",
                    headers: &headers,
                    body: body.as_bytes(),
                };
                // Released at once, as after a failed delivery, so the replay guard lets the next one in.
                if let Some(ticket) = auth.verify(black_box(&inbound)).unwrap() {
                    ticket.release();
                }
            })
        },
    );
}

criterion_group!(benches, parsing, coercion, mapping, signature);
criterion_main!(benches);
