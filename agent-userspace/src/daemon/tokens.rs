//! Task identity tokens: a JWT-SVID for the caller's own task, whose identity comes from
//! the kernel's tag of the connecting process, never from the request. `exp` is at most
//! `task_tokens.ttl` away and never past the task's expiry; no token is issued to an
//! untagged process or for an ended task.

use std::{
    sync::{Mutex, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, Header, jwk::JwkSet};
use serde::Serialize;
use serde_json::json;

use super::{Daemon, RegistryError, registry::wall_of_boot_ns};
use crate::{
    auth::{Caller, Standing, keys::KeyRing},
    clock,
    config::Config,
    protocol::{TaskId, TaskToken},
};

/// The refusal code for a caller with no live task of its own.
pub const NO_TASK: &str = "no_task";

/// Audiences one token may name at most.
const MAX_AUDIENCES: usize = 8;

/// The node's keys and the tokens' settings.
pub struct Issuer {
    /// `Err`: why no key could be opened (every token request says so).
    keys: Mutex<Result<KeyRing, String>>,
    ttl: Duration,
    pub issuer: String,
    /// How often a `FetchJWTBundles` stream looks for a changed JWKS: a quarter of the
    /// rotation period, within 250 ms and 30 s (a key also leaves the JWKS when the
    /// last token it signed expires).
    pub bundle_poll: Duration,
}

impl Issuer {
    #[must_use]
    pub fn new(config: &Config) -> Self {
        let t = &config.task_tokens;
        let keys = KeyRing::open(
            &config.state_dir,
            t.rotate_every,
            t.publish_ahead,
            t.ttl,
            unix_now(),
        )
        .map_err(|e| {
            tracing::error!("no task identity tokens: {e}");
            e.to_string()
        });
        let issuer = if t.issuer.is_empty() {
            format!("spiffe://{}", config.trust_domain)
        } else {
            t.issuer.clone()
        };
        Self {
            keys: Mutex::new(keys),
            ttl: t.ttl,
            issuer,
            bundle_poll: (t.rotate_every / 4)
                .clamp(Duration::from_millis(250), Duration::from_secs(30)),
        }
    }

    /// Every published key.
    pub fn jwks(&self) -> Result<JwkSet, String> {
        let mut keys = self.keys.lock().unwrap_or_else(PoisonError::into_inner);
        let ring = keys.as_mut().map_err(|e| e.clone())?;
        ring.jwks(unix_now()).map_err(|e| e.to_string())
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    /// One audience as a string, several as an array (RFC 7519 allows both).
    aud: serde_json::Value,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: String,
    leash: LeashClaims,
}

/// What leash adds: which task, agent and chain of parents, and why.
#[derive(Serialize)]
struct LeashClaims {
    task: String,
    agent: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    chain: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    intent: Option<String>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn refused(message: String) -> RegistryError {
    RegistryError::Refused {
        code: NO_TASK,
        message,
    }
}

impl Daemon {
    /// `GET /v1/self/token?audience=X`: a JWT-SVID for the caller's own task.
    pub fn issue_token(&self, caller: &Caller, audience: &str) -> Result<TaskToken, RegistryError> {
        self.issue_token_for(caller, &[audience])
    }

    /// A JWT-SVID for the caller's own task, for one or more audiences (the Workload
    /// API's `FetchJWTSVID`).
    pub fn issue_token_for(
        &self,
        caller: &Caller,
        audiences: &[&str],
    ) -> Result<TaskToken, RegistryError> {
        if audiences.is_empty() || audiences.len() > MAX_AUDIENCES {
            return Err(RegistryError::BadRequest(format!(
                "give 1 to {MAX_AUDIENCES} audiences: the services the token is for"
            )));
        }
        if let Some(bad) = audiences
            .iter()
            .find(|a| a.is_empty() || a.len() > 256 || a.chars().any(char::is_control))
        {
            return Err(RegistryError::BadRequest(format!(
                "audience {bad:?} is not 1 to 256 printable characters: the service the token is for"
            )));
        }
        let audience = if let [one] = audiences {
            json!(one)
        } else {
            json!(audiences)
        };
        let Standing::InTask(id) = caller.standing else {
            return Err(refused(
                "a task identity token is issued only to a process inside a task, for its own task; this caller runs outside every task (or its process is gone)".into(),
            ));
        };
        let rec = self
            .lock()
            .tasks
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))?;
        let now_ns = clock::boottime_ns();
        let left = rec.expires_ns.saturating_sub(now_ns) / 1_000_000_000;
        if !rec.is_live() || (rec.expires_ns != 0 && left == 0) {
            return Err(refused(format!(
                "task {} has ended: no token is issued for it",
                rec.id_string()
            )));
        }
        let lifetime = if rec.expires_ns == 0 {
            self.tokens.ttl.as_secs()
        } else {
            self.tokens.ttl.as_secs().min(left)
        };
        let now = unix_now();
        let spiffe_id = rec.spiffe_id(&self.limits.trust_domain);
        let mut jti = [0u8; 16];
        getrandom::fill(&mut jti)
            .map_err(|e| RegistryError::BadRequest(format!("no randomness: {e}")))?;
        let jti = hex::encode(jti);
        let claims = Claims {
            iss: &self.tokens.issuer,
            sub: &spiffe_id,
            aud: audience.clone(),
            iat: now,
            nbf: now,
            exp: now + lifetime,
            jti: jti.clone(),
            leash: LeashClaims {
                task: rec.id_string(),
                agent: rec.agent.clone(),
                chain: rec.chain_strings(),
                intent: rec.intent.clone(),
            },
        };
        let (kid, key) = {
            let mut keys = self
                .tokens
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let ring = keys.as_mut().map_err(|e| {
                RegistryError::Conflict(format!("no task identity tokens on this node: {e}"))
            })?;
            ring.signer(now)
                .map_err(|e| RegistryError::Conflict(format!("cannot sign: {e}")))?
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        header.typ = Some("JWT".into());
        let token = jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| RegistryError::Conflict(format!("cannot sign: {e}")))?;
        let expires_at = wall_of_boot_ns(now_ns + lifetime * 1_000_000_000);
        self.lifecycle_event_by(
            &rec,
            "token_issued",
            json!({ "audience": audience, "jti": jti, "key_id": kid, "expires_at": expires_at }),
            "requested",
            caller.pid,
        );
        Ok(TaskToken {
            token,
            spiffe_id,
            expires_at,
            key_id: kid,
        })
    }
}
