//! Unix path grants as the kernel checks them: the view of the file systems the name
//! was granted in (a mount namespace and a root, [`UnixView`]) and the socket file the
//! name named then ([`SocketFile`]). A path is only bytes: in another mount namespace,
//! under another root, or after a symlink, a hard link or a mount was put on it, it
//! names another socket. Both backends refuse a granted path outside its view; the lsm
//! backend also refuses a peer that is not the socket file recorded here.

use std::{
    fs::File,
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::Path,
};

use leash_common::{ExecKey, UnixScope};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use serde::{Deserialize, Serialize};

use super::kernel_dev;

/// A mount namespace and a root directory: where a unix path grant holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnixView {
    /// The mount namespace's inode number (`/proc/<pid>/ns/mnt`).
    pub mnt_ns: u32,
    /// The root directory's device (kernel `s_dev` encoding) and inode.
    pub root_dev: u32,
    pub root_ino: u64,
}

impl UnixView {
    /// The view of process `pid` (`None`: this process), whose root is `root` (a path
    /// to the same directory as `/proc/<pid>/root`, e.g. an fd of it held open).
    pub fn of(pid: Option<u32>, root: &Path) -> io::Result<Self> {
        let proc = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
        let ns = std::fs::metadata(format!("{proc}/ns/mnt"))?.ino();
        let mnt_ns = u32::try_from(ns)
            .map_err(|_| io::Error::other(format!("mount namespace inode {ns} is not 32-bit")))?;
        let root = std::fs::metadata(root)?;
        Ok(Self {
            mnt_ns,
            root_dev: kernel_dev(root.dev()),
            root_ino: root.ino(),
        })
    }

    /// The kernel's form.
    #[must_use]
    pub const fn scope(self) -> UnixScope {
        UnixScope {
            root_ino: self.root_ino,
            root_dev: self.root_dev,
            mnt_ns: self.mnt_ns,
        }
    }
}

/// A socket file by identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SocketFile {
    /// Kernel `s_dev` encoding.
    pub dev: u32,
    pub ino: u64,
}

impl SocketFile {
    /// The socket file `path` (absolute) names under `root`, resolved as the kernel
    /// resolves the caller's name (symlinks stay inside the root); `None` when there is
    /// none yet, or the name is not a socket.
    #[must_use]
    pub fn at(root: &Path, path: &str) -> Option<Self> {
        let dir = File::open(root).ok()?;
        let rel = path.trim_start_matches('/');
        if rel.is_empty() {
            return None;
        }
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT);
        let file: File = nix::fcntl::openat2(&dir, rel, how).ok()?.into();
        let meta = file.metadata().ok()?;
        meta.file_type().is_socket().then(|| Self {
            dev: kernel_dev(meta.dev()),
            ino: meta.ino(),
        })
    }

    /// The kernel's key for `task` (0: every task).
    #[must_use]
    pub const fn key(self, task: u64) -> ExecKey {
        ExecKey {
            task,
            ino: self.ino,
            dev: self.dev,
            _pad: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_is_found_by_identity_and_other_files_are_not_sockets() {
        let dir = std::env::temp_dir().join(format!("leash-unix-view-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("s.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        let found = SocketFile::at(Path::new("/"), sock.to_str().unwrap()).unwrap();
        assert_eq!((found.dev, found.ino), (kernel_dev(meta.dev()), meta.ino()));
        std::fs::write(dir.join("plain"), "").unwrap();
        assert!(SocketFile::at(Path::new("/"), dir.join("plain").to_str().unwrap()).is_none());
        assert!(SocketFile::at(Path::new("/"), dir.join("absent").to_str().unwrap()).is_none());
        // A symlink to the socket names the same file.
        std::os::unix::fs::symlink(&sock, dir.join("link")).unwrap();
        assert_eq!(
            SocketFile::at(Path::new("/"), dir.join("link").to_str().unwrap()),
            Some(found)
        );
        let view = UnixView::of(None, Path::new("/")).unwrap();
        assert_ne!(view.mnt_ns, 0);
        assert_eq!(view.root_ino, std::fs::metadata("/").unwrap().ino());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
