//! Patchbay's core: everything that sets Genesys Cloud participant attributes and proves they
//! landed, without a web server. The server crate (`patchbay`) puts HTTP, the console and
//! telemetry export around it; nothing here knows of them.
//!
//! Map of the crate, from the bottom up:
//! - [`domain`]: ids, purposes, attribute maps and lookup keys, valid by construction.
//! - [`config`]: layered, validated settings, every problem reported at once.
//! - [`genesys`]: the Genesys Cloud client: token cache, retry policy, wire models, errors, and the
//!   [`genesys::CallContext`] every call takes (its deadline and budget in, what it spent out).
//! - [`service`]: the Genesys operations an update is made of: resolve, write, explain, compare.
//! - [`secure`]: the conversation's secure attributes: written, read back, never shown.
//! - [`engine`]: the delivery engine: one lane per conversation, coalescing, shared reads, admission.
//! - [`mirror`]: the newest snapshot of each conversation the notifications feed showed, and the
//!   feed that keeps it.
//! - [`lookup`]: finding the live conversation from a user id, a caller's number or an external
//!   contact.
//! - [`org`]: one Genesys org as one value: its settings, client, token, budget, engine, mirror and
//!   feed, and lookups.
//! - [`worker`]: the asynchronous mode's workers: they run the queue's jobs through the engine.
//! - [`journal`]: recent updates (what each became, what it cost) and the minute figures behind the
//!   console.
//! - [`store`]: what is kept, by concern (queue, journal, budget, token, channel slots, finds), each
//!   in this process or on Redis for several replicas, behind one trait.
//! - [`metrics`]: the metrics' names and the helpers that record them.
//! - [`trace`]: trace context across hops (a caller's `traceparent`, a job's kept context).

pub mod config;
pub mod custom;
pub mod domain;
pub mod engine;
pub mod genesys;
pub mod journal;
pub mod lane;
pub mod lookup;
pub mod metrics;
pub mod mirror;
pub mod org;
pub mod seal;
pub mod secure;
pub mod service;
pub mod store;
pub mod trace;
pub mod worker;
