//! Bearer tokens: JWT-SVIDs or OIDC ID tokens, verified against a JWKS (file or
//! directory): signature (`RS256`, `ES256`, `EdDSA`), issuer, audience and expiry.

use std::path::{Path, PathBuf};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet},
};

/// Algorithms accepted; `none` and HMAC never are (a shared secret is not an identity).
pub const ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the JWKS {}: {message}", path.display())]
    Jwks { path: PathBuf, message: String },
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token algorithm {0:?} is not accepted (RS256, ES256 or EdDSA)")]
    Algorithm(Algorithm),
    #[error("no key in the JWKS matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("token rejected: {0}")]
    Invalid(String),
    #[error("token claim {claim:?}: {message}")]
    Claim { claim: String, message: String },
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    decoding: DecodingKey,
}

/// Verified claims.
#[derive(Clone, Debug)]
pub struct Verified {
    pub subject: String,
    /// The value of the agent claim, when the token has it as a string.
    pub agent_claim: Option<String>,
    /// Every claim, for the approver mapping (`auth.tokens.approvers`).
    pub claims: serde_json::Value,
}

pub struct Verifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    agent_claim: String,
}

fn alg_of(jwk: &Jwk) -> Option<Algorithm> {
    if let Some(a) = jwk.common.key_algorithm {
        // KeyAlgorithm and Algorithm share their names (RS256, ES256, EdDSA, ...).
        return format!("{a:?}").parse().ok();
    }
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            Some(Algorithm::ES256)
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Some(Algorithm::EdDSA)
        }
        _ => None,
    }
}

impl Verifier {
    /// Loads every key of the JWKS file, or of every `*.json` file in the directory.
    pub fn load(
        jwks: &Path,
        issuer: &str,
        audience: &str,
        agent_claim: &str,
    ) -> Result<Self, TokenError> {
        let err = |path: &Path, message: String| TokenError::Jwks {
            path: path.to_owned(),
            message,
        };
        let files: Vec<PathBuf> = if jwks.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(jwks)
                .map_err(|e| err(jwks, e.to_string()))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            v.sort();
            v
        } else {
            vec![jwks.to_owned()]
        };
        let mut keys = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).map_err(|e| err(f, e.to_string()))?;
            let set: JwkSet = serde_json::from_str(&text).map_err(|e| err(f, e.to_string()))?;
            for jwk in &set.keys {
                let kid = jwk.common.key_id.clone();
                let Some(alg) = alg_of(jwk).filter(|a| ALGORITHMS.contains(a)) else {
                    return Err(err(
                        f,
                        format!("key {kid:?}: unsupported key type or algorithm"),
                    ));
                };
                let key =
                    DecodingKey::from_jwk(jwk).map_err(|e| err(f, format!("key {kid:?}: {e}")))?;
                keys.push(Key {
                    kid,
                    alg,
                    decoding: key,
                });
            }
        }
        if keys.is_empty() {
            return Err(err(jwks, "no keys".into()));
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            agent_claim: agent_claim.to_owned(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Algorithm(header.alg));
        }
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| header.kid.is_none() || k.kid == header.kid)
            .collect();
        if candidates.is_empty() {
            return Err(TokenError::UnknownKey(header.kid));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut last = None;
        for k in candidates {
            match decode::<serde_json::Value>(token, &k.decoding, &validation) {
                Ok(data) => return self.claims(&data.claims),
                Err(e) => last = Some(e),
            }
        }
        Err(TokenError::Invalid(
            last.map(|e| e.to_string()).unwrap_or_default(),
        ))
    }

    fn claims(&self, claims: &serde_json::Value) -> Result<Verified, TokenError> {
        let get = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        Ok(Verified {
            subject: get("sub").ok_or_else(|| TokenError::Claim {
                claim: "sub".to_owned(),
                message: "missing or not a string".into(),
            })?,
            agent_claim: get(&self.agent_claim),
            claims: claims.clone(),
        })
    }
}

/// The agent a verified token names: `spiffe://<trust_domain>/agent/NAME[/...]` gives
/// NAME (other trust domains are refused); any other value is the name itself.
pub fn agent_of(value: &str, trust_domain: &str) -> Result<String, TokenError> {
    let claim_err = |message: String| TokenError::Claim {
        claim: "agent".into(),
        message,
    };
    let Some(rest) = value.strip_prefix("spiffe://") else {
        return Ok(value.to_owned());
    };
    let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
    if td != trust_domain {
        return Err(claim_err(format!(
            "{value} is not in the trust domain {trust_domain}"
        )));
    }
    path.strip_prefix("agent/")
        .and_then(|p| p.split('/').next())
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| claim_err(format!("{value} is not spiffe://{trust_domain}/agent/NAME")))
}

#[cfg(test)]
pub mod tests;
