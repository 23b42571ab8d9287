//! What can go wrong talking to Genesys Cloud, after the retry policy has had its say.

use std::time::Duration;

use super::model::ErrorBody;

/// A failed Genesys call. Cheap to clone, so one failed token grant can answer many waiters.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GenesysError {
    /// The login service rejected the client credentials, or the API rejected a fresh token.
    #[error("Genesys rejected the client credentials (HTTP {status}, correlation id {correlation_id:?})")]
    Auth {
        status: u16,
        correlation_id: Option<String>,
    },
    /// Still 429 after the retries allowed, or a Retry-After too long to wait.
    #[error(
        "Genesys is rate limiting (retry after {retry_after:?}, correlation id {correlation_id:?})"
    )]
    RateLimited {
        retry_after: Option<Duration>,
        correlation_id: Option<String>,
    },
    /// A 4xx that no retry can mend.
    #[error(
        "Genesys answered HTTP {status} ({code:?}: {message:?}, correlation id {correlation_id:?})"
    )]
    Rejected {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        correlation_id: Option<String>,
    },
    /// Still 5xx after the retries allowed.
    #[error("Genesys answered HTTP {status} after retries (correlation id {correlation_id:?})")]
    Server {
        status: u16,
        correlation_id: Option<String>,
    },
    /// No answer in time, after the retries allowed.
    #[error("Genesys did not answer in time")]
    Timeout,
    /// The connection failed, after the retries allowed.
    #[error("could not reach Genesys: {0}")]
    Transport(String),
    /// An answer Patchbay cannot make sense of.
    #[error("Genesys sent an answer that makes no sense: {0}")]
    InvalidResponse(String),
}

impl GenesysError {
    pub(crate) fn rejected(
        status: u16,
        body: Option<ErrorBody>,
        correlation_id: Option<String>,
    ) -> Self {
        let body = body.unwrap_or_default();
        GenesysError::Rejected {
            status,
            code: body.code,
            message: body.message,
            correlation_id,
        }
    }

    /// The HTTP status Genesys gave, when it gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            GenesysError::Auth { status, .. }
            | GenesysError::Rejected { status, .. }
            | GenesysError::Server { status, .. } => Some(*status),
            GenesysError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }
}
