//! Kernel filesystems leash needs, mounted when missing.

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::mount::{MsFlags, mount};

pub use leash_common::maps::BPFFS;
pub const SECURITYFS: &str = "/sys/kernel/security";
/// Where leash mounts cgroup2 when the host has no cgroup2 mount at all.
pub const OWN_CGROUP2: &str = "/run/leash/cgroup2";

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot read /proc/self/mountinfo: {0}")]
    MountInfo(#[source] std::io::Error),
    #[error(
        "cannot mount {fstype} at {target}: {source}; run leash as root (CAP_SYS_ADMIN) or mount it yourself: mount -t {fstype} {fstype} {target}"
    )]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: nix::Error,
    },
}

/// Mount points of a filesystem type, from `/proc/self/mountinfo`.
pub fn mounts_of(fstype: &str) -> Result<Vec<PathBuf>, MountError> {
    let info = fs::read_to_string("/proc/self/mountinfo").map_err(MountError::MountInfo)?;
    Ok(info
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fs = post.split_whitespace().next()?;
            let mnt = pre.split_whitespace().nth(4)?;
            (fs == fstype).then(|| PathBuf::from(unescape(mnt)))
        })
        .collect())
}

/// mountinfo escapes spaces and a few others as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(u8::is_ascii_digit)
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(char::from(v));
            i += 4;
            continue;
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

fn ensure(fstype: &'static str, target: &'static str) -> Result<PathBuf, MountError> {
    let target_path = Path::new(target);
    if mounts_of(fstype)?.iter().any(|m| m == target_path) {
        return Ok(target_path.to_owned());
    }
    let err = |source| MountError::Mount {
        fstype,
        target,
        source,
    };
    fs::create_dir_all(target_path)
        .map_err(|e| err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    mount(
        Some(fstype),
        target_path,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(err)?;
    tracing::info!(fstype, target, "mounted");
    Ok(target_path.to_owned())
}

/// bpffs for pinning.
pub fn ensure_bpffs() -> Result<PathBuf, MountError> {
    ensure("bpf", BPFFS)
}

/// securityfs, to read the active LSMs.
pub fn ensure_securityfs() -> Result<PathBuf, MountError> {
    ensure("securityfs", SECURITYFS)
}

/// tracefs, where the syscall tracepoints are named (aya also looks under debugfs).
pub fn ensure_tracefs() -> Result<PathBuf, MountError> {
    if let Some(m) = mounts_of("tracefs")?.into_iter().next() {
        return Ok(m);
    }
    ensure("tracefs", "/sys/kernel/tracing")
}

/// The cgroup2 hierarchy the network hooks attach to: the host's if it has one.
pub fn cgroup2_root() -> Result<PathBuf, MountError> {
    if let Some(m) = mounts_of("cgroup2")?.into_iter().next() {
        return Ok(m);
    }
    ensure("cgroup2", OWN_CGROUP2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape("/sys/fs/cgroup"), "/sys/fs/cgroup");
    }

    #[test]
    fn finds_proc_mount() {
        assert!(
            mounts_of("proc")
                .unwrap()
                .iter()
                .any(|m| m == Path::new("/proc"))
        );
    }
}
