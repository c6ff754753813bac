//! `task_tokens:` the identity tokens (JWT-SVIDs) the daemon issues to tasks
//! (docs/identity.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid, tasks::duration_serde};

/// `task_tokens:` lifetimes and key rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskTokensConfig {
    /// A token's lifetime (never past its task's expiry).
    #[serde(with = "duration_serde")]
    pub ttl: Duration,
    /// A new signing key this often.
    #[serde(with = "duration_serde")]
    pub rotate_every: Duration,
    /// A new key is published this long before it signs.
    #[serde(with = "duration_serde")]
    pub publish_ahead: Duration,
    /// The tokens' `iss`; empty: `spiffe://<trust_domain>`. Set it to the URL verifiers
    /// reach the metrics listener at for OIDC discovery.
    pub issuer: String,
}

/// Default: 5-minute tokens, a new key every day, published 10 minutes ahead.
impl Default for TaskTokensConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_mins(5),
            rotate_every: Duration::from_hours(24),
            publish_ahead: Duration::from_mins(10),
            issuer: String::new(),
        }
    }
}

impl TaskTokensConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.ttl.is_zero() || self.ttl > Duration::from_hours(1) {
            return Err(invalid(
                "task_tokens.ttl",
                "must be between 1s and 1h: task tokens are short-lived",
            ));
        }
        if self.rotate_every.is_zero() {
            return Err(invalid(
                "task_tokens.rotate_every",
                "is 0: give a positive duration, like 24h",
            ));
        }
        if self.issuer.chars().any(char::is_control) {
            return Err(invalid("task_tokens.issuer", "has a control character"));
        }
        Ok(())
    }
}
