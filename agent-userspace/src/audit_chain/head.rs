//! Signed heads: the daemon's Ed25519 key under its state directory signs the `seq`
//! and hash of the chain's last record. Each signature goes into the log as an
//! `audit_head` record and into `audit.head` beside the key, which a cut tail cannot
//! take with it.

use std::{
    fs::{OpenOptions, Permissions},
    io::{self, Read as _, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::Hash;

/// The private key, 32 bytes, mode 0600.
pub const KEY_FILE: &str = "audit-key";
/// The public key, hex, for `leash audit verify --key`.
pub const PUB_FILE: &str = "audit-key.pub";
/// The last signed head.
pub const HEAD_FILE: &str = "audit.head";

/// What a signature covers: a domain tag, then `seq` (big-endian) and the hash.
fn message(seq: u64, head: &Hash) -> Vec<u8> {
    let mut m = b"leash audit head v1\0".to_vec();
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(head);
    m
}

#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} is mode {mode:04o}: the audit signing key must be readable by its owner only \
         (chmod 600 it, or remove it and the daemon makes a new one)"
    )]
    Exposed { path: String, mode: u32 },
    #[error("{path} is not an audit key: {why}")]
    Malformed { path: String, why: String },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> HeadError {
    let path = path.display().to_string();
    move |source| HeadError::Io { what, path, source }
}

/// The last signed head, as kept in [`HEAD_FILE`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadFile {
    /// The `seq` of the signed record.
    pub seq: u64,
    /// Its hash, hex.
    pub head: String,
    /// The signature, hex.
    pub sig: String,
    /// The first 8 bytes of the public key's SHA-256, hex.
    pub key_id: String,
}

impl HeadFile {
    pub fn read(path: &Path) -> Result<Self, HeadError> {
        let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
        serde_json::from_str(&text).map_err(|e| HeadError::Malformed {
            path: path.display().to_string(),
            why: e.to_string(),
        })
    }

    /// Whether the signature holds under `key`, and the hash it signs.
    #[must_use]
    pub fn check(&self, key: &VerifyingKey) -> Option<Hash> {
        check(key, self.seq, &self.head, &self.sig)
    }
}

/// The hash `head` (hex) if `sig` (hex) signs it at `seq` under `key`.
#[must_use]
pub(super) fn check(key: &VerifyingKey, seq: u64, head: &str, sig: &str) -> Option<Hash> {
    let head: Hash = hex::decode(head).ok()?.try_into().ok()?;
    let sig = Signature::from_slice(&hex::decode(sig).ok()?).ok()?;
    key.verify(&message(seq, &head), &sig).ok()?;
    Some(head)
}

/// The daemon's signing key and where it keeps its last signed head.
pub struct HeadSigner {
    key: SigningKey,
    head_path: PathBuf,
}

impl HeadSigner {
    /// Loads the key from `dir`, making one (and its `.pub`) on first start.
    pub fn load_or_create(dir: &Path) -> Result<Self, HeadError> {
        std::fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = dir.join(KEY_FILE);
        let seed = match OpenOptions::new().read(true).open(&path) {
            Ok(mut f) => {
                let mode = f.metadata().map_err(io_err("stat", &path))?.mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(HeadError::Exposed {
                        path: path.display().to_string(),
                        mode,
                    });
                }
                let mut seed = Vec::new();
                f.read_to_end(&mut seed).map_err(io_err("read", &path))?;
                <[u8; 32]>::try_from(seed.as_slice()).map_err(|_| HeadError::Malformed {
                    path: path.display().to_string(),
                    why: format!("{} bytes, not 32", seed.len()),
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(&path)?,
            Err(e) => return Err(io_err("open", &path)(e)),
        };
        let key = SigningKey::from_bytes(&seed);
        let public = dir.join(PUB_FILE);
        write_atomic(
            &public,
            format!("{}\n", hex::encode(key.verifying_key().to_bytes())).as_bytes(),
        )?;
        Ok(Self {
            key,
            head_path: dir.join(HEAD_FILE),
        })
    }

    #[must_use]
    pub fn key_id(&self) -> String {
        key_id(&self.key.verifying_key())
    }

    /// Signs `head` at `seq` and keeps it as the last signed head.
    pub fn sign(&self, seq: u64, head: &Hash) -> Result<HeadFile, HeadError> {
        let sig = self.key.sign(&message(seq, head));
        let file = HeadFile {
            seq,
            head: hex::encode(head),
            sig: hex::encode(sig.to_bytes()),
            key_id: self.key_id(),
        };
        let text = serde_json::to_vec(&file).unwrap_or_default();
        write_atomic(&self.head_path, &text)?;
        Ok(file)
    }
}

/// The first 8 bytes of the public key's SHA-256, hex: names a key in a record.
#[must_use]
pub(super) fn key_id(key: &VerifyingKey) -> String {
    hex::encode(&super::line_hash(&key.to_bytes())[..8])
}

/// Reads a public key written as hex (the daemon's [`PUB_FILE`]).
pub fn load_public_key(path: &Path) -> Result<VerifyingKey, HeadError> {
    let text = std::fs::read_to_string(path).map_err(io_err("read", path))?;
    let malformed = |why: String| HeadError::Malformed {
        path: path.display().to_string(),
        why,
    };
    let bytes: [u8; 32] = hex::decode(text.trim())
        .map_err(|e| malformed(e.to_string()))?
        .try_into()
        .map_err(|_| malformed("not 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| malformed(e.to_string()))
}

fn create_key(path: &Path) -> Result<[u8; 32], HeadError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| io_err("make", path)(io::Error::other(e)))?;
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(&seed).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))?;
    Ok(seed)
}

/// Writes through a temporary file and a rename: a reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HeadError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    f.set_permissions(Permissions::from_mode(0o644))
        .map_err(io_err("chmod", &tmp))?;
    f.write_all(bytes).map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("rename to", path))
}
