//! Where a caller's exec paths are resolved: its own root (`/proc/<pid>/root`), so a
//! containerised agent's `/bin/sh` means its own file, but only in a mount namespace
//! the caller cannot have arranged. An unprivileged user can `unshare -Urm` and
//! bind-mount any file over a path a ceiling allows; the name would pass the ceiling
//! and the grant would name the other file. Container runtimes create pods' mount
//! namespaces in the initial user namespace, so those still resolve.

use std::{
    fs::File,
    ops::Deref,
    os::{
        fd::{AsRawFd as _, FromRawFd as _},
        unix::fs::MetadataExt as _,
    },
    path::{Path, PathBuf},
};

use super::{Daemon, RegistryError, registry::ResolveIn};
use crate::grants::UnixView;

/// `NS_GET_USERNS` (`_IO(0xb7, 0x1)`, Linux 4.9): the user namespace owning a namespace.
const NS_GET_USERNS: libc::Ioctl = 0xb701;

/// The config key that trusts mount namespaces of other user namespaces.
pub(super) const TRUST_KEY: &str = "policy.trust_userns_mounts";

/// A caller's root, held open while its grants are resolved (the path is
/// `/proc/self/fd/N`), or the daemon's own `/` for requests with no path to resolve;
/// with the caller's mount namespace and root, where its `unix:` path grants hold.
pub(super) struct CallerRoot {
    _dir: Option<File>,
    path: PathBuf,
    view: Option<UnixView>,
}

impl CallerRoot {
    /// Where the request's grants are resolved.
    pub(super) fn resolve_in(&self) -> ResolveIn<'_> {
        ResolveIn {
            root: &self.path,
            view: self.view,
        }
    }
}

/// Whether a request's grants name paths to resolve in the caller's root: an exec
/// grant, or a `unix:` path.
pub(super) fn names_paths<'a>(exec: bool, mut connect: impl Iterator<Item = &'a String>) -> bool {
    exec || connect.any(|c| c.trim().starts_with("unix:/"))
}

impl Deref for CallerRoot {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// (device, inode) of the user namespace owning `pid`'s mount namespace.
fn mount_ns_owner(pid: u32) -> std::io::Result<(u64, u64)> {
    let mnt = File::open(format!("/proc/{pid}/ns/mnt"))?;
    // SAFETY: an ioctl without argument on an fd we own; it returns a new fd or -1.
    let fd = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd returned by the kernel, owned by nobody else.
    let owner = unsafe { File::from_raw_fd(fd) }.metadata()?;
    Ok((owner.dev(), owner.ino()))
}

/// (device, inode) of the daemon's own user namespace: the initial one where it runs as
/// the node's agent. (pid 1's may be out of reach, and a caller that can arrange mounts
/// in a namespace the daemon's user namespace owns is as privileged as the daemon.)
fn own_user_ns() -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata("/proc/self/ns/user")?;
    Ok((m.dev(), m.ino()))
}

fn refused(pid: u32, why: &str) -> RegistryError {
    RegistryError::Forbidden(format!(
        "exec grants are resolved in the caller's mount namespace, and that of pid {pid} {why}: \
         mounts made there (e.g. after `unshare -Urm`) could put another file under a granted \
         path. Ask from the host's user namespace (as container runtimes set up pods), or set \
         {TRUST_KEY}: true in the daemon config to trust such namespaces"
    ))
}

impl Daemon {
    /// The root `pid`'s exec paths (and `unix:` paths) are resolved in; `exec`: the
    /// request names one ([`names_paths`]).
    /// The root is opened before the namespace is checked, so a caller that moves to
    /// a namespace of its own after the check still resolves in the checked one.
    pub(super) fn caller_root(
        &self,
        pid: Option<u32>,
        exec: bool,
    ) -> Result<CallerRoot, RegistryError> {
        let (Some(pid), true) = (pid, exec) else {
            let path = PathBuf::from("/");
            return Ok(CallerRoot {
                _dir: None,
                view: UnixView::of(None, &path).ok(),
                path,
            });
        };
        let dir = File::open(format!("/proc/{pid}/root")).map_err(|e| {
            RegistryError::BadRequest(format!("cannot open the root of the caller {pid}: {e}"))
        })?;
        if !self.trust_userns_mounts {
            let owner = mount_ns_owner(pid)
                .map_err(|e| refused(pid, &format!("could not be checked ({e})")))?;
            let own =
                own_user_ns().map_err(|e| refused(pid, &format!("could not be checked ({e})")))?;
            if owner != own {
                return Err(refused(
                    pid,
                    "belongs to a user namespace other than the daemon's (the initial one)",
                ));
            }
        }
        let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        Ok(CallerRoot {
            view: UnixView::of(Some(pid), &path).ok(),
            _dir: Some(dir),
            path,
        })
    }
}
