//! What can go wrong talking to Genesys Cloud, after the retry policy has had its say.

use std::time::Duration;

use super::model::ErrorBody;

/// A failed Genesys call. Cheap to clone, so one failed token grant can answer many waiters.
#[derive(Debug, Clone)]
pub enum GenesysError {
    /// The login service rejected the client credentials, or the API rejected a fresh token.
    Auth {
        status: u16,
        correlation_id: Option<String>,
    },
    /// Still 429 after the retries allowed, or a Retry-After too long to wait.
    RateLimited {
        retry_after: Option<Duration>,
        correlation_id: Option<String>,
    },
    /// A 4xx that no retry can mend.
    Rejected {
        status: u16,
        code: Option<String>,
        message: Option<String>,
        correlation_id: Option<String>,
    },
    /// Still 5xx after the retries allowed.
    Server {
        status: u16,
        correlation_id: Option<String>,
    },
    /// No answer in time, after the retries allowed.
    Timeout,
    /// The connection failed, after the retries allowed.
    Transport(String),
    /// An answer Patchbay cannot make sense of.
    InvalidResponse(String),
}

/// `; correlation id X` when Genesys sent one, nothing otherwise: a log line says what is known,
/// never Rust's `None`.
pub(crate) struct Correlation<'a>(pub(crate) &'a Option<String>);

impl std::fmt::Display for Correlation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(id) => write!(f, "; correlation id {id}"),
            None => Ok(()),
        }
    }
}

impl std::fmt::Display for GenesysError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenesysError::Auth {
                status,
                correlation_id,
            } => write!(
                f,
                "Genesys rejected the client credentials (HTTP {status}{})",
                Correlation(correlation_id)
            ),
            GenesysError::RateLimited {
                retry_after,
                correlation_id,
            } => {
                write!(f, "Genesys is rate limiting (")?;
                match retry_after {
                    Some(wait) => write!(f, "retry after {} s", wait.as_secs_f64().ceil())?,
                    None => write!(f, "no Retry-After")?,
                }
                write!(f, "{})", Correlation(correlation_id))
            }
            GenesysError::Rejected {
                status,
                code,
                message,
                correlation_id,
            } => {
                write!(f, "Genesys answered HTTP {status}")?;
                match (code, message) {
                    (Some(code), Some(message)) => write!(f, " ({code}: {message}")?,
                    (Some(one), None) | (None, Some(one)) => write!(f, " ({one}")?,
                    (None, None) => write!(f, " (no error body")?,
                }
                write!(f, "{})", Correlation(correlation_id))
            }
            GenesysError::Server {
                status,
                correlation_id,
            } => write!(
                f,
                "Genesys answered HTTP {status} (after retries{})",
                Correlation(correlation_id)
            ),
            GenesysError::Timeout => write!(f, "Genesys did not answer in time"),
            GenesysError::Transport(e) => write!(f, "could not reach Genesys: {e}"),
            GenesysError::InvalidResponse(e) => {
                write!(f, "Genesys sent an answer that makes no sense: {e}")
            }
        }
    }
}

impl std::error::Error for GenesysError {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reads_as_a_sentence_without_rusts_debug_form() {
        let bare = [
            GenesysError::Rejected {
                status: 404,
                code: None,
                message: None,
                correlation_id: None,
            },
            GenesysError::RateLimited {
                retry_after: None,
                correlation_id: None,
            },
            GenesysError::Auth {
                status: 401,
                correlation_id: None,
            },
            GenesysError::Server {
                status: 503,
                correlation_id: None,
            },
        ];
        for e in &bare {
            let text = e.to_string();
            assert!(!text.contains("None") && !text.contains("Some("), "{text}");
        }
        assert_eq!(
            bare[0].to_string(),
            "Genesys answered HTTP 404 (no error body)"
        );
        let full = GenesysError::Rejected {
            status: 404,
            code: Some("not.found".into()),
            message: Some("gone".into()),
            correlation_id: Some("c-1".into()),
        };
        assert_eq!(
            full.to_string(),
            "Genesys answered HTTP 404 (not.found: gone; correlation id c-1)"
        );
        let limited = GenesysError::RateLimited {
            retry_after: Some(Duration::from_secs(3)),
            correlation_id: Some("c-2".into()),
        };
        assert_eq!(
            limited.to_string(),
            "Genesys is rate limiting (retry after 3 s; correlation id c-2)"
        );
    }
}
