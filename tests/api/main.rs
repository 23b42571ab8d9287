//! Integration tests: the real app on port 0, with the built-in simulator as Genesys Cloud.

mod architect;
mod asynchronous;
mod attributes;
mod auth;
mod budget;
mod coalescing;
mod crash;
mod deploy;
mod helpers;
mod hooks;
mod logs;
mod lookup;
mod notifications_sim;
mod operations;
mod queue_contract;
mod redis_deployment;
mod redis_restart;
mod replicas;
mod schemathesis;
mod sdk_conformance;
mod simulator;
mod startup;
mod token;
mod upstream_failures;
mod validation;
mod verification;
