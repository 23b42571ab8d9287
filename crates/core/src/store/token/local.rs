//! The token for this process alone: the client's own cache already holds it, and its single flight
//! already makes concurrent misses one grant, so this store keeps nothing and runs the grant.

use std::time::Duration;

use secrecy::SecretString;

use super::{usable, Grant, TokenError, TokenStore};
use crate::store::StoreError;

/// No shared token: every miss of the client's cache is a grant for this process.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalToken;

#[async_trait::async_trait]
impl TokenStore for LocalToken {
    async fn get<'a>(
        &self,
        margin: Duration,
        grant: Grant<'a>,
    ) -> Result<(SecretString, Duration), TokenError> {
        let (token, expires_in) = grant.await.map_err(TokenError::Grant)?;
        Ok((token, usable(expires_in, margin)))
    }

    async fn invalidate(&self, _stale: &str) -> Result<(), StoreError> {
        Ok(())
    }
}
