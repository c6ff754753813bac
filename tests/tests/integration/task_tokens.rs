//! Task identity tokens on a real daemon: a process inside a task gets a JWT-SVID for
//! its own task that a stock JWT library verifies against the node's JWKS; `exp` is
//! capped by the task; an untagged caller gets none; a rotated key is published before
//! it signs and the old one is kept while its tokens live.

use std::time::Duration;

use harness::daemon::{DaemonGuard, stderr, stdout, task_json};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};

/// `leash token --audience AUD --json` inside a new task of TTL `ttl`.
fn token_in_task(d: &DaemonGuard, ttl: &str, aud: &str) -> serde_json::Value {
    let leash = harness::daemon::leash_bin().display().to_string();
    let o = d.run(&[
        "run",
        "--ttl",
        ttl,
        "--allow-exec",
        &leash,
        "--",
        &leash,
        "token",
        "--audience",
        aud,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap()
}

fn jwks(d: &DaemonGuard) -> JwkSet {
    let (code, body) = d.metrics_get("/.well-known/jwks.json");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Verifies `token` with the JWKS as any service would; the claims.
fn verify(set: &JwkSet, token: &str, aud: &str) -> Result<serde_json::Value, String> {
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or(format!("kid {kid} not in the JWKS"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[aud]);
    v.set_issuer(&["spiffe://leash.local"]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .map(|t| t.claims)
        .map_err(|e| e.to_string())
}

#[test]
fn a_task_proves_who_it_is_with_a_token_a_stock_verifier_accepts() {
    let d = DaemonGuard::start(
        "task-tokens",
        "task_tokens:\n  ttl: 30s\n  rotate_every: 4s\n  publish_ahead: 1s\n",
    );
    let a = token_in_task(&d, "2m", "svc-a");
    let token = a["token"].as_str().unwrap();
    let set = jwks(&d);
    let claims = verify(&set, token, "svc-a").unwrap();
    let task = claims["leash"]["task"].as_str().unwrap();
    assert_eq!(claims["sub"], task_json(&d, task)["spiffe_id"]);
    assert_eq!(claims["sub"], a["spiffe_id"]);
    assert_eq!(claims["leash"]["agent"], "cli");
    let life = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(life, 30, "the token TTL, the task having longer");
    assert!(verify(&set, token, "svc-b").is_err(), "another audience");
    let record = d.audit().into_iter().find(|e| e["kind"] == "token_issued");
    let record = record.expect("a token_issued record");
    assert_eq!(record["target"]["audience"], "svc-a");
    assert_eq!(record["task"], task);

    // exp never passes the task's expiry.
    let short = token_in_task(&d, "10s", "svc-a");
    let c = verify(&set, short["token"].as_str().unwrap(), "svc-a").unwrap();
    let life = c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap();
    assert!(life <= 10, "{life}");

    // Outside every task: none.
    let o = d.run(&["token", "--audience", "svc-a"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("outside every task"), "{}", stderr(&o));

    // OIDC discovery points at the JWKS.
    let (code, body) = d.metrics_get("/.well-known/openid-configuration");
    assert_eq!(code, 200, "{body}");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["issuer"], "spiffe://leash.local");
    assert!(
        doc["jwks_uri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/.well-known/jwks.json")),
        "{doc}"
    );

    // Rotation: once due, the next key is in the JWKS before it signs anything ...
    std::thread::sleep(Duration::from_millis(4500));
    let before = jwks(&d);
    assert!(before.keys.len() >= 2, "{before:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let later = token_in_task(&d, "2m", "svc-a");
    let kid = jsonwebtoken::decode_header(later["token"].as_str().unwrap())
        .unwrap()
        .kid
        .unwrap();
    assert_ne!(kid, a["key_id"].as_str().unwrap(), "the new key signs");
    assert!(before.find(&kid).is_some(), "published before it signed");
    // ... and the old key stays while its tokens live.
    verify(&jwks(&d), token, "svc-a").expect("a token of the old key still verifies");
}
