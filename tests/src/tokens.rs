//! Bearer tokens for the daemon's token authentication, signed with a fresh key, and
//! the temporary files (policy, JWKS) the tests hand the daemon.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk};

/// A file removed when the test ends.
pub struct TempFile(pub PathBuf);

impl TempFile {
    #[must_use]
    pub fn new(name: &str, text: &str) -> Self {
        let path = std::env::temp_dir().join(format!("leash-it-{name}-{}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        // The daemon refuses a policy or JWKS that others can write, whatever the umask.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        Self(path)
    }

    pub fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub struct Signer {
    key: EncodingKey,
    pub jwks: TempFile,
}

impl Signer {
    /// A fresh Ed25519 key and its JWKS, kid `k1`. The key is 32 random bytes in a
    /// PKCS#8 wrapper, so no tool is needed (the VM guest has none).
    #[must_use]
    pub fn new(name: &str) -> Self {
        use std::io::Read as _;
        const PKCS8_ED25519: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = PKCS8_ED25519.to_vec();
        let mut seed = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .unwrap();
        der.extend_from_slice(&seed);
        let key = EncodingKey::from_ed_der(&der);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::EdDSA).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = TempFile::new(
            &format!("{name}-jwks.json"),
            &serde_json::json!({ "keys": [jwk] }).to_string(),
        );
        Self { key, jwks }
    }

    /// A token for `sub` with audience `aud`, expiring in `exp_in` seconds (issuer
    /// `https://issuer.test`).
    #[must_use]
    pub fn token(&self, sub: &str, aud: &str, exp_in: i64) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .cast_signed();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some("k1".into());
        let claims = serde_json::json!({ "sub": sub, "iss": "https://issuer.test", "aud": aud, "exp": now + exp_in });
        encode(&h, &claims, &self.key).unwrap()
    }

    /// The daemon config's `auth.tokens` for this key, audience `leash`.
    #[must_use]
    pub fn auth_config(&self) -> String {
        format!(
            "auth:\n  tokens:\n    jwks: {}\n    issuer: https://issuer.test\n    audience: leash\n",
            path(&self.jwks.0)
        )
    }
}

#[must_use]
pub fn path(p: &Path) -> String {
    p.display().to_string()
}
