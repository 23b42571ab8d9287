//! Patchbay: set Genesys Cloud participant attributes on live conversations, and prove they landed.
//!
//! A caller (an Architect data action, a CRM webhook, an internal service) POSTs an update. Patchbay
//! finds the participant, PATCHes its attributes with a cached OAuth token, reads the conversation
//! back, and answers with what was verified.
//!
//! Map of the crate:
//! - [`config`]: layered, validated settings.
//! - [`domain`]: ids, purposes and attribute maps, valid by construction.
//! - [`genesys`]: the Genesys Cloud client (token cache, retry policy, wire models, errors).
//! - [`service`]: the Genesys operations an update is made of: resolve, write, explain, compare.
//! - [`engine`]: the delivery engine: one lane per conversation, coalescing, shared reads, admission.
//! - [`lookup`]: finding the live conversation from a user id, a caller's number or an external contact.
//! - [`mirror`]: the newest snapshot of each conversation the notifications feed showed, indexed for
//!   lookups, with the trust a gap in the feed leaves it.
//! - [`api`]: inbound HTTP: the state handlers share, handlers, authentication, problem+json, and
//!   configured webhook routes (`api::hooks`: JSON Pointer mapping and per-route authentication).
//! - [`cluster`]: several replicas on Redis: shared queue, shared token, shared rate budget.
//! - [`queue`]: the asynchronous mode: durable jobs, workers, idempotency keys, dead letters.
//! - [`journal`]: recent updates (what each became, what it cost) and the minute figures behind
//!   the console.
//! - [`console`]: the operator console at `/console`, in the HTTP layer beside [`api`].
//! - [`app`]: `router(state)` and `serve(listener, router, shutdown)`.
//! - [`sim`]: an in-memory Genesys Cloud for `sim`, `demo` and the tests.
//! - [`demo`]: the self-contained demonstration.
//! - [`telemetry`]: logging, and OpenTelemetry traces over OTLP/HTTP with their context across hops.
//! - [`metrics`]: Prometheus metrics.

pub mod api;
pub mod app;
pub mod cluster;
pub mod config;
pub mod console;
pub mod demo;
pub mod domain;
pub mod engine;
pub mod genesys;
pub mod journal;
pub mod lookup;
pub mod metrics;
pub mod mirror;
pub mod queue;
pub mod service;
pub mod sim;
pub mod telemetry;

pub use app::{router, serve, AppState};
pub use config::Settings;
