//! The node's keys for task identity tokens: P-256 (ES256, the algorithm SPIFFE's
//! JWT-SVIDs and every JWT library support), made at first start and
//! kept mode 0600 in the state directory (`token-keys.json`). A new key is made every
//! `rotate_every`, published at once and used to sign only `publish_ahead` later, so
//! verifiers that cache the JWKS see it before any token it signed; a key that stopped
//! signing stays published until the last token it signed has expired.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use jsonwebtoken::{
    Algorithm, EncodingKey,
    jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use serde::{Deserialize, Serialize};

/// The PKCS #8 DER of a P-256 private key (RFC 5915, without the optional public key)
/// up to its 32-byte scalar, which follows.
const P256_PKCS8: [u8; 35] = [
    0x30, 0x41, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x04, 0x27, 0x30, 0x25, 0x02, 0x01,
    0x01, 0x04, 0x20,
];

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the token keys {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the token keys {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the token keys {path} are {why}: they sign every task's identity, so leash refuses them; remove the file to make new keys"
    )]
    Unsafe { path: PathBuf, why: String },
    #[error("the token keys {path} do not parse: {why}; remove the file to make new keys")]
    Corrupt { path: PathBuf, why: String },
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// One key as kept on disk. Times are Unix seconds.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// The P-256 private scalar, hex.
    seed: String,
    created: u64,
    /// It signs from then on (until a newer key does).
    signs_from: u64,
    /// Dropped from the JWKS after this (0: still current).
    #[serde(default)]
    retire_after: u64,
}

/// The node's signing keys.
pub struct KeyRing {
    path: PathBuf,
    keys: Vec<StoredKey>,
    rotate_every: Duration,
    publish_ahead: Duration,
    token_ttl: Duration,
}

impl KeyRing {
    /// Opens the keys in `dir` (`token-keys.json`), making the first one if none.
    pub fn open(
        dir: &Path,
        rotate_every: Duration,
        publish_ahead: Duration,
        token_ttl: Duration,
        now: u64,
    ) -> Result<Self, KeyError> {
        let path = dir.join("token-keys.json");
        let keys = match fs::metadata(&path) {
            Ok(meta) => {
                if meta.mode() & 0o077 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
                    return Err(KeyError::Unsafe {
                        path,
                        why: format!(
                            "mode {:o}, owner uid {}: others may read or replace them",
                            meta.mode() & 0o777,
                            meta.uid()
                        ),
                    });
                }
                let text = fs::read(&path).map_err(|source| KeyError::Read {
                    path: path.clone(),
                    source,
                })?;
                serde_json::from_slice(&text).map_err(|e| KeyError::Corrupt {
                    path: path.clone(),
                    why: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(KeyError::Read { path, source }),
        };
        let mut ring = Self {
            path,
            keys,
            rotate_every,
            publish_ahead,
            token_ttl,
        };
        if ring.keys.is_empty() {
            ring.keys.push(new_key(now, now)?);
            ring.save()?;
        }
        Ok(ring)
    }

    /// Rotates as due at `now`, then returns the key that signs now.
    pub fn signer(&mut self, now: u64) -> Result<(String, EncodingKey), KeyError> {
        self.rotate(now)?;
        let k = self
            .keys
            .iter()
            .filter(|k| k.signs_from <= now)
            .max_by_key(|k| k.signs_from)
            .or_else(|| self.keys.first())
            .ok_or_else(|| KeyError::Random("no key".into()))?;
        Ok((k.kid.clone(), encoding_key(&k.seed)?))
    }

    /// Every published key, for verifiers.
    pub fn jwks(&mut self, now: u64) -> Result<JwkSet, KeyError> {
        self.rotate(now)?;
        let mut keys = Vec::new();
        for k in &self.keys {
            let mut jwk = Jwk::from_encoding_key(&encoding_key(&k.seed)?, Algorithm::ES256)
                .map_err(|e| KeyError::Corrupt {
                    path: self.path.clone(),
                    why: e.to_string(),
                })?;
            jwk.common.key_id = Some(k.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
            keys.push(jwk);
        }
        Ok(JwkSet { keys })
    }

    /// Makes the next key when the newest is `rotate_every` old, marks the keys a newer
    /// one has replaced, and drops those whose tokens have all expired.
    fn rotate(&mut self, now: u64) -> Result<(), KeyError> {
        let mut changed = false;
        let newest = self.keys.iter().map(|k| k.created).max().unwrap_or(0);
        if now >= newest.saturating_add(self.rotate_every.as_secs()) {
            let from = now + self.publish_ahead.as_secs();
            self.keys.push(new_key(now, from)?);
            changed = true;
        }
        // A key stops signing when a newer key starts; its tokens end `token_ttl` later.
        let starts: Vec<u64> = self.keys.iter().map(|k| k.signs_from).collect();
        for k in &mut self.keys {
            let replaced = starts
                .iter()
                .filter(|&&s| s > k.signs_from && s <= now)
                .min();
            if let Some(&at) = replaced
                && k.retire_after == 0
            {
                k.retire_after = at + self.token_ttl.as_secs() + 1;
                changed = true;
            }
        }
        let before = self.keys.len();
        self.keys
            .retain(|k| k.retire_after == 0 || k.retire_after > now);
        changed |= self.keys.len() != before;
        if changed {
            self.save()?;
        }
        Ok(())
    }

    /// Writes the keys through a new file of mode 0600, renamed into place.
    fn save(&self) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.new");
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        let text = serde_json::to_vec_pretty(&self.keys).map_err(|e| err(e.into()))?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        fs::rename(&tmp, &self.path).map_err(err)
    }
}

fn new_key(now: u64, signs_from: u64) -> Result<StoredKey, KeyError> {
    // 32 random bytes are a valid scalar unless 0 or >= the group order (about 2^-32):
    // try again then.
    let seed = loop {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        let key = encoding_key(&hex::encode(seed))?;
        if Jwk::from_encoding_key(&key, Algorithm::ES256).is_ok() {
            break seed;
        }
    };
    let mut id = [0u8; 8];
    getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
    Ok(StoredKey {
        kid: hex::encode(id),
        seed: hex::encode(seed),
        created: now,
        signs_from,
        retire_after: 0,
    })
}

fn encoding_key(seed_hex: &str) -> Result<EncodingKey, KeyError> {
    let seed = hex::decode(seed_hex)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| KeyError::Corrupt {
            path: PathBuf::from("token-keys.json"),
            why: "a seed is not 32 bytes of hex".into(),
        })?;
    let mut der = P256_PKCS8.to_vec();
    der.extend_from_slice(&seed);
    Ok(EncodingKey::from_ec_der(&der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(dir: &Path, now: u64) -> KeyRing {
        KeyRing::open(
            dir,
            Duration::from_secs(100),
            Duration::from_secs(10),
            Duration::from_secs(30),
            now,
        )
        .unwrap()
    }

    #[test]
    fn a_new_key_is_published_before_it_signs_and_the_old_kept_until_its_tokens_end() {
        let dir = std::env::temp_dir().join(format!("leash-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut r = ring(&dir, 1000);
        let mode = fs::metadata(dir.join("token-keys.json")).unwrap().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (k1, _) = r.signer(1000).unwrap();
        assert_eq!(r.jwks(1050).unwrap().keys.len(), 1);
        // Due at 1100: the next key is published, but k1 still signs.
        assert_eq!(r.signer(1100).unwrap().0, k1);
        let jwks = r.jwks(1100).unwrap();
        assert_eq!(jwks.keys.len(), 2);
        let k2 = jwks.keys[1].common.key_id.clone().unwrap();
        // From 1110 k2 signs; k1 stays published until its last token (30 s) is over.
        assert_eq!(r.signer(1110).unwrap().0, k2);
        assert_eq!(r.jwks(1140).unwrap().keys.len(), 2);
        // A reopened ring keeps all of it.
        let mut again = ring(&dir, 1141);
        assert_eq!(again.signer(1141).unwrap().0, k2);
        assert_eq!(
            again.jwks(1142).unwrap().keys.len(),
            1,
            "k1 retired at 1141"
        );
        fs::set_permissions(
            dir.join("token-keys.json"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let e = KeyRing::open(
            &dir,
            Duration::from_secs(1),
            Duration::ZERO,
            Duration::ZERO,
            0,
        );
        assert!(matches!(e, Err(KeyError::Unsafe { .. })));
        let _ = fs::remove_dir_all(&dir);
    }
}
