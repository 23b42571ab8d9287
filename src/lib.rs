//! Patchbay's server: the `patchbay` binary's library. It puts an HTTP API, an operator console and
//! telemetry around the core (`patchbay-core`), and one startup module builds it all from settings.
//!
//! Map of the crate:
//! - [`startup`]: builds every part from settings, binds both listeners, runs until shutdown.
//! - [`app`]: `router(state)`, pure, and the middleware in its order.
//! - [`api`]: inbound HTTP: handlers, authentication, problem+json, webhook routes, OpenAPI.
//! - [`console`]: the operator console at `/console`.
//! - [`telemetry`]: logging, and OpenTelemetry traces exported over OTLP/HTTP.
//! - [`metrics`]: the Prometheus recorder and the HTTP middleware that counts requests.
//! - [`demo`]: the self-contained demonstration (with the `simulator` feature).
//!
//! The core's modules are re-exported under their own names (`patchbay::config`, …), so the
//! server's code and its tests name them as one vocabulary.

pub mod api;
pub mod app;
pub mod console;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod doctor;
pub mod metrics;
pub mod startup;
pub mod telemetry;

pub use patchbay_core::{
    config, custom, domain, engine, genesys, journal, lane, lookup, mirror, org, seal, secure,
    service, store, trace, worker,
};
#[cfg(feature = "simulator")]
pub use patchbay_sim as sim;

pub use app::{router, AppState};
pub use config::Settings;
pub use startup::Application;
