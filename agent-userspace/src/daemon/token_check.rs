//! The Workload API's `ValidateJWTSVID`: a token is valid when one of this node's
//! published keys signed it, it names the audience, it has not expired, and the task it
//! names is still live here. The last check is what a verifier holding only the JWKS
//! cannot make: a token of a task that has ended fails here at once, while offline it
//! stays valid until its `exp` (at most `task_tokens.ttl`).

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::Daemon;
use crate::{clock, protocol::TaskId};

/// A token that passed, with its subject and claims.
#[derive(Debug)]
pub struct Validated {
    pub spiffe_id: String,
    pub claims: Map<String, Value>,
}

impl Daemon {
    /// Checks `token` for `audience`; the error says why it is not valid.
    pub fn validate_token(&self, audience: &str, token: &str) -> Result<Validated, String> {
        if audience.is_empty() {
            return Err("an audience is required".into());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("not a JWT: {e}"))?;
        if header.alg != Algorithm::ES256 {
            return Err(format!(
                "algorithm {:?}: this node signs with ES256",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the token has no key id (kid)")?;
        let jwks = self.tokens.jwks()?;
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("key {kid} is not one of this node's published keys"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key {kid}: {e}"))?;
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[audience]);
        v.set_issuer(&[&self.tokens.issuer]);
        v.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v)
            .map_err(|e| format!("invalid token: {e}"))?;
        let claims = data.claims;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let task = claims
            .get("leash")
            .and_then(|l| l.get("task"))
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<TaskId>().ok())
            .ok_or("the token names no leash task")?;
        let rec = self
            .lock()
            .tasks
            .get(task.0)
            .cloned()
            .ok_or_else(|| format!("task {task} is not known on this node"))?;
        let now = clock::boottime_ns();
        if !rec.is_live() || (rec.expires_ns != 0 && rec.expires_ns <= now) {
            let at = rec
                .ended_at
                .as_deref()
                .map(|t| format!(" at {t}"))
                .unwrap_or_default();
            return Err(format!(
                "task {task} has ended{at}: its tokens are no longer valid"
            ));
        }
        if rec.spiffe_id(&self.limits.trust_domain) != sub {
            return Err(format!(
                "the token's subject {sub} is not task {task}'s SPIFFE ID"
            ));
        }
        Ok(Validated {
            spiffe_id: sub,
            claims,
        })
    }
}
