//! Task identity tokens (docs/identity.md).

use serde::{Deserialize, Serialize};

/// `GET /v1/self/token?audience=X`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenQuery {
    pub audience: String,
}

/// A JWT-SVID for the caller's own task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskToken {
    /// The compact JWT, signed with ES256.
    pub token: String,
    /// Its `sub`.
    pub spiffe_id: String,
    /// Its `exp`, RFC 3339.
    pub expires_at: String,
    /// The `kid` of the key that signed it (in the JWKS).
    pub key_id: String,
}
