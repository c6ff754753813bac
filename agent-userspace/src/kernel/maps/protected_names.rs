//! The daemon's API socket and the directories above it, which a tagged process may
//! not unlink or rename: by path for the portable backend's syscall tracepoints, by
//! identity for the lsm backend's inode hooks (`hooks/mounts.rs`).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, MapData};
use leash_common::{ExecKey, grant::UNIX_PATH_LEN, maps as names};

use super::{Maps, MapsError, op_err, removed};

/// The two maps.
pub(crate) struct ProtectedNames {
    names: HashMap<MapData, [u8; UNIX_PATH_LEN], u8>,
    inodes: HashMap<MapData, ExecKey, u8>,
}

impl ProtectedNames {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, MapsError> {
        Ok(Self {
            names: super::take(ebpf, names::PROTECTED_NAMES)?,
            inodes: super::take(ebpf, names::PROTECTED_INODES)?,
        })
    }
}

/// `path` and every directory above it but `/`, as named and as resolved.
fn chain(path: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let canonical = std::fs::canonicalize(path).ok();
    for start in std::iter::once(path).chain(canonical.as_deref()) {
        for p in start.ancestors() {
            if p.parent().is_some() && !p.as_os_str().is_empty() && !out.iter().any(|o| o == p) {
                out.push(p.to_path_buf());
            }
        }
    }
    out
}

/// The NUL-padded key of `path`, if it fits.
fn name_key(path: &Path) -> Option<[u8; UNIX_PATH_LEN]> {
    let bytes = path.as_os_str().as_encoded_bytes();
    let mut key = [0u8; UNIX_PATH_LEN];
    (bytes.len() < UNIX_PATH_LEN).then(|| {
        key[..bytes.len()].copy_from_slice(bytes);
        key
    })
}

impl Maps {
    /// Protects the API socket at `socket` (absolute) and the directories above it,
    /// forgetting earlier entries (a previous daemon's socket, an inode number since
    /// reused). The entries themselves, not what a symlink among them points to, are
    /// named (`lstat`); the resolved path is protected as well.
    pub fn protect_socket_only(&mut self, socket: &Path) -> Result<(), MapsError> {
        let p = &mut self.protected_names;
        let old: Vec<_> = p.names.keys().filter_map(Result::ok).collect();
        for k in old {
            removed(p.names.remove(&k), names::PROTECTED_NAMES)?;
        }
        let old: Vec<_> = p.inodes.keys().filter_map(Result::ok).collect();
        for k in old {
            removed(p.inodes.remove(&k), names::PROTECTED_INODES)?;
        }
        for path in chain(socket) {
            if let Some(key) = name_key(&path) {
                p.names
                    .insert(key, 1, 0)
                    .map_err(op_err("insert", names::PROTECTED_NAMES))?;
            }
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                let key = ExecKey {
                    task: 0,
                    ino: meta.ino(),
                    dev: crate::grants::kernel_dev(meta.dev()),
                    _pad: 0,
                };
                p.inodes
                    .insert(key, 1, 0)
                    .map_err(op_err("insert", names::PROTECTED_INODES))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_and_every_directory_above_it_but_the_root() {
        let c = chain(Path::new("/nonexistent-leash/run/api.sock"));
        assert_eq!(
            c,
            [
                "/nonexistent-leash/run/api.sock",
                "/nonexistent-leash/run",
                "/nonexistent-leash"
            ]
            .map(PathBuf::from)
        );
        assert!(name_key(Path::new(&"/x".repeat(60))).is_none(), "too long");
        assert_eq!(&name_key(Path::new("/run")).unwrap()[..5], b"/run\0");
    }
}
