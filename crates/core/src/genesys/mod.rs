//! The Genesys Cloud side: wire models, the client with its token cache and retry policy, and errors.

pub mod client;
pub mod error;
pub mod model;
pub mod notifications;
pub mod retry;
pub mod stream;
pub mod token;

pub use client::{
    CallContext, GenesysClient, CORRELATION_HEADER, RATELIMIT_ALLOWED, RATELIMIT_COUNT,
    RATELIMIT_RESET,
};
pub use error::GenesysError;
