//! What an exec grant records about its file besides (device, inode): the inode's
//! change time and generation, so that the kernel can tell the granted content from
//! anything written, linked or created at that identity later.

use std::{fs, os::fd::AsRawFd as _, os::unix::fs::MetadataExt as _};

use leash_common::{
    ExecFileGrant,
    grant::{CHECK_CTIME, CHECK_GENERATION},
};
use serde::{Deserialize, Serialize};

/// `FS_IOC_GETVERSION`: `_IOR('v', 1, long)`. The request's type is `c_ulong` with
/// glibc and `c_int` with musl; the bits are the same.
#[allow(
    clippy::cast_possible_wrap,
    clippy::cast_lossless,
    reason = "a 32-bit request number, widened (glibc) or reinterpreted (musl)"
)]
const FS_IOC_GETVERSION: libc::Ioctl = 0x8008_7601_u32 as libc::Ioctl;

/// The state of a granted file, as the kernel compares it at exec.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// The inode's change time: no call can set it, and every write, chmod, chown and
    /// new link moves it.
    pub ctime_sec: i64,
    pub ctime_nsec: u32,
    /// `i_generation`, where the file system reports it (ext4, btrfs, xfs; not tmpfs):
    /// a new inode that got a freed number has another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
}

impl FileState {
    /// Reads the state of an open file. `file` may be an `O_PATH` fd, which has no
    /// generation to ask for.
    #[must_use]
    pub fn of(file: &fs::File, meta: &fs::Metadata) -> Self {
        Self {
            ctime_sec: meta.ctime(),
            // stat's nanoseconds are below 10^9.
            ctime_nsec: u32::try_from(meta.ctime_nsec()).unwrap_or_default(),
            generation: generation(file),
        }
    }

    /// The kernel's value for an exec grant of this file.
    #[must_use]
    pub const fn grant(&self, expires_ns: u64) -> ExecFileGrant {
        let (generation, checks) = match self.generation {
            Some(g) => (g, CHECK_CTIME | CHECK_GENERATION),
            None => (0, CHECK_CTIME),
        };
        ExecFileGrant {
            expires_ns,
            ctime_sec: self.ctime_sec,
            ctime_nsec: self.ctime_nsec,
            generation,
            checks,
            _pad: 0,
        }
    }
}

/// A grant of a file whose state was never recorded (a daemon from before this
/// record existed): identity only.
#[must_use]
pub const fn unchecked(expires_ns: u64) -> ExecFileGrant {
    ExecFileGrant {
        expires_ns,
        ctime_sec: 0,
        ctime_nsec: 0,
        generation: 0,
        checks: 0,
        _pad: 0,
    }
}

fn generation(file: &fs::File) -> Option<u32> {
    let mut version: libc::c_long = 0;
    // SAFETY: FS_IOC_GETVERSION writes one `long` through the pointer, which lives
    // for the call; a file system without it fails with ENOTTY and writes nothing.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_GETVERSION, &raw mut version) };
    // The kernel stores a u32 and widens it; the truncation gives it back.
    (rc == 0).then_some(version as u32)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn a_write_changes_the_state() {
        let dir = std::env::temp_dir().join(format!("leash-file-state-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x");
        fs::write(&path, b"one").unwrap();
        let f = fs::File::open(&path).unwrap();
        let before = FileState::of(&f, &f.metadata().unwrap());
        assert_eq!(before.grant(7).checks & CHECK_CTIME, CHECK_CTIME);
        assert_eq!(before.grant(7).expires_ns, 7);
        // Coarse timestamps tick every few ms: wait one out so the write shows.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all(b"two")
            .unwrap();
        let f = fs::File::open(&path).unwrap();
        let after = FileState::of(&f, &f.metadata().unwrap());
        assert_ne!(before, after);
        assert_eq!(before.generation, after.generation, "same inode");
        fs::remove_dir_all(&dir).unwrap();
    }
}
