//! Bearer tokens: JWT-SVIDs or OIDC ID tokens, verified against a JWKS (file or
//! directory): signature (`RS256`, `ES256`, `EdDSA`), issuer, audience and expiry.

use std::{
    io,
    path::{Path, PathBuf},
};

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
    #[error("cannot read the JWKS {}: {source}", path.display())]
    JwksRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the JWKS {}: {source}", path.display())]
    JwksParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot read the JWKS {}: key {kid:?}: unsupported key type or algorithm", path.display())]
    JwksUnsupportedKey { path: PathBuf, kid: Option<String> },
    #[error("cannot read the JWKS {}: key {kid:?}: {source}", path.display())]
    JwksKey {
        path: PathBuf,
        kid: Option<String>,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
    #[error("cannot read the JWKS {}: no keys", path.display())]
    JwksEmpty { path: PathBuf },
    #[error("malformed token: {0}")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("token algorithm {0:?} is not accepted (RS256, ES256 or EdDSA)")]
    Algorithm(Algorithm),
    #[error("no key in the JWKS matches the token (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("token rejected: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
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
        let files: Vec<PathBuf> = if jwks.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(jwks)
                .map_err(|source| TokenError::JwksRead {
                    path: jwks.to_owned(),
                    source,
                })?
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
            let text = std::fs::read_to_string(f).map_err(|source| TokenError::JwksRead {
                path: f.clone(),
                source,
            })?;
            let set: JwkSet =
                serde_json::from_str(&text).map_err(|source| TokenError::JwksParse {
                    path: f.clone(),
                    source,
                })?;
            for jwk in &set.keys {
                let kid = jwk.common.key_id.clone();
                let Some(alg) = alg_of(jwk).filter(|a| ALGORITHMS.contains(a)) else {
                    return Err(TokenError::JwksUnsupportedKey {
                        path: f.clone(),
                        kid,
                    });
                };
                let key = DecodingKey::from_jwk(jwk).map_err(|source| TokenError::JwksKey {
                    path: f.clone(),
                    kid: kid.clone(),
                    source,
                })?;
                keys.push(Key {
                    kid,
                    alg,
                    decoding: key,
                });
            }
        }
        if keys.is_empty() {
            return Err(TokenError::JwksEmpty {
                path: jwks.to_owned(),
            });
        }
        Ok(Self {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            agent_claim: agent_claim.to_owned(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        let header = decode_header(token).map_err(TokenError::Malformed)?;
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
        // `candidates` is not empty, so some key was tried.
        Err(last.map_or(TokenError::UnknownKey(header.kid), TokenError::Invalid))
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
