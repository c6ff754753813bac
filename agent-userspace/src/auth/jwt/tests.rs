//! Token verification against keys generated here (openssl CLI) for each algorithm.

use std::{path::Path, process::Command};

use jsonwebtoken::{EncodingKey, Header, encode, jwk::Jwk};
use serde_json::json;

use super::*;

const ISS: &str = "https://issuer.test";
const AUD: &str = "leash";

/// A fresh private key in PEM, made by `openssl genpkey`.
fn genpkey(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let out = Command::new("openssl")
        .arg("genpkey")
        .args(args)
        .arg("-out")
        .arg(&path)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

struct Keys {
    dir: PathBuf,
    signers: Vec<(String, Algorithm, EncodingKey)>,
}

impl Keys {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("leash-jwt-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let specs: [(&str, Algorithm, &[&str]); 3] = [
            (
                "rsa",
                Algorithm::RS256,
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
            (
                "ec",
                Algorithm::ES256,
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            ("ed", Algorithm::EdDSA, &["-algorithm", "ED25519"]),
        ];
        let signers = specs
            .iter()
            .map(|(name, alg, args)| {
                let pem = genpkey(&dir, name, args);
                let key = match alg {
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                    Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                    _ => EncodingKey::from_ed_pem(&pem),
                }
                .unwrap();
                ((*name).to_owned(), *alg, key)
            })
            .collect();
        Self { dir, signers }
    }

    /// Writes the public keys as a JWKS; returns its path.
    fn jwks(&self, only: &[&str]) -> PathBuf {
        let keys: Vec<Jwk> = self
            .signers
            .iter()
            .filter(|(n, ..)| only.contains(&n.as_str()))
            .map(|(name, alg, key)| {
                let mut jwk = Jwk::from_encoding_key(key, *alg).unwrap();
                jwk.common.key_id = Some(name.clone());
                jwk
            })
            .collect();
        let path = self.dir.join("jwks.json");
        std::fs::write(&path, serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap();
        path
    }

    fn token(&self, name: &str, claims: &serde_json::Value) -> String {
        let (_, alg, key) = self.signers.iter().find(|(n, ..)| n == name).unwrap();
        let mut header = Header::new(*alg);
        header.kid = Some(name.to_owned());
        encode(&header, claims, key).unwrap()
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn claims(sub: &str, iss: &str, aud: &str, exp: i64) -> serde_json::Value {
    json!({ "sub": sub, "iss": iss, "aud": aud, "exp": exp, "iat": now() })
}

const SUB: &str = "spiffe://leash.local/agent/ci-bot";

#[test]
fn every_case_of_token() {
    let keys = Keys::new("cases");
    let v = Verifier::load(&keys.jwks(&["rsa", "ec", "ed"]), ISS, AUD, "sub").unwrap();
    let good = claims(SUB, ISS, AUD, now() + 300);
    for alg in ["rsa", "ec", "ed"] {
        let got = v.verify(&keys.token(alg, &good)).unwrap();
        assert_eq!(got.subject, SUB, "{alg}");
        let claim = got.agent_claim.as_deref().unwrap();
        assert_eq!(agent_of(claim, "leash.local").unwrap(), "ci-bot");
    }
    let refused = |token: &str| v.verify(token).unwrap_err().to_string();
    let e = refused(&keys.token("rsa", &claims(SUB, ISS, AUD, now() - 3600)));
    assert!(e.contains("ExpiredSignature"), "{e}");
    let e = refused(&keys.token("ec", &claims(SUB, ISS, "other", now() + 300)));
    assert!(e.contains("InvalidAudience"), "{e}");
    let e = refused(&keys.token("ed", &claims(SUB, "https://evil.test", AUD, now() + 300)));
    assert!(e.contains("InvalidIssuer"), "{e}");
    // Signed by one key, presented as another's.
    let mut forged = keys.token("rsa", &good);
    let other = keys.token(
        "rsa",
        &claims("spiffe://leash.local/agent/root", ISS, AUD, now() + 300),
    );
    let sig = forged.rsplit_once('.').unwrap().1.to_owned();
    forged = format!("{}.{sig}", other.rsplit_once('.').unwrap().0);
    let e = refused(&forged);
    assert!(e.contains("InvalidSignature"), "{e}");
    assert!(refused("not-a-token").contains("malformed"));
    let mut early = good.clone();
    early["nbf"] = json!(now() + 3600);
    let e = refused(&keys.token("ed", &early));
    assert!(e.contains("ImmatureSignature"), "{e}");
}

#[test]
fn unknown_key_is_refused() {
    let keys = Keys::new("unknown");
    let v = Verifier::load(&keys.jwks(&["rsa"]), ISS, AUD, "sub").unwrap();
    let token = keys.token("ec", &claims(SUB, ISS, AUD, now() + 300));
    let e = v.verify(&token).unwrap_err();
    assert!(
        matches!(e, TokenError::UnknownKey(Some(ref k)) if k == "ec"),
        "{e}"
    );
    // A kid the JWKS has, but the signature of another key.
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa".into());
    let keys2 = Keys::new("unknown2");
    let (_, _, other) = keys2.signers.iter().find(|(n, ..)| n == "rsa").unwrap();
    let token = encode(&header, &claims(SUB, ISS, AUD, now() + 300), other).unwrap();
    assert!(
        v.verify(&token)
            .unwrap_err()
            .to_string()
            .contains("InvalidSignature")
    );
}

#[test]
fn agent_names_from_claims() {
    assert_eq!(agent_of("spiffe://td/agent/a/x", "td").unwrap(), "a");
    assert!(agent_of("spiffe://other/agent/a", "td").is_err());
    assert!(agent_of("spiffe://td/workload/a", "td").is_err());
    assert_eq!(agent_of("plain-name", "td").unwrap(), "plain-name");
}

#[test]
fn bad_jwks_is_refused() {
    let dir = std::env::temp_dir().join(format!("leash-jwks-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("k.json");
    std::fs::write(&f, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).unwrap();
    let e = Verifier::load(&f, ISS, AUD, "sub")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("unsupported"), "{e}");
    std::fs::write(&f, "{").unwrap();
    assert!(matches!(
        Verifier::load(&dir, ISS, AUD, "sub"),
        Err(TokenError::JwksParse { path, .. }) if path == f
    ));
    std::fs::write(&f, r#"{"keys":[]}"#).unwrap();
    assert!(matches!(
        Verifier::load(&f, ISS, AUD, "sub"),
        Err(TokenError::JwksEmpty { .. })
    ));
    assert!(matches!(
        Verifier::load(&dir.join("missing.json"), ISS, AUD, "sub"),
        Err(TokenError::JwksRead { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}
