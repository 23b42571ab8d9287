//! Inbound HTTP: routes, authentication and the problem+json error shape.

pub mod attributes;
pub mod auth;
pub mod body;
pub mod exchange;
pub mod health;
pub mod hooks;
pub mod intake;
pub mod jobs;
pub mod openapi;
pub mod problem;
pub mod request;
pub mod responses;
pub mod state;

pub use problem::ApiError;
