//! Attach scope: where the network hooks are attached.
//!
//! `root` attaches them at the cgroup2 root: every connect and sendmsg of the machine
//! runs them (an untagged one pays one hash lookup). `task` attaches them to a leash
//! cgroup created under the cgroup a task's process was in (`<cgroup>/leash`), and
//! moves the process there: processes outside pay nothing, and the parent's resource
//! limits still apply to the child cgroup. The kernel program `scope_cgroup_attach`
//! kills a tagged process moved out (at the move with `bpf_send_signal_task`, else the
//! daemon does on its event); `guard_cgroup` kills a tagged mover.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

/// Name of the cgroup leash creates under a task process's cgroup.
pub(crate) const LEASH_CGROUP: &str = "leash";

/// The cgroup2 cgroup of `pid`, as a path under `root` (the cgroup2 mount).
pub(crate) fn cgroup_of(root: &Path, pid: u32) -> io::Result<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or_else(|| io::Error::other(format!("process {pid} has no cgroup2 cgroup")))?;
    Ok(root.join(rel.trim_start_matches('/')))
}

/// The leash cgroup for a process in `cur`: `cur` itself when it already is one;
/// `cur/leash` when `cur` may hold processes next to a child; `cur` when it has
/// controllers enabled for its children (cgroup2's "no internal processes" rule would
/// refuse a process in a child next to processes in `cur`; the root is exempt).
pub(crate) fn leash_cgroup_for(root: &Path, cur: &Path) -> PathBuf {
    if cur.file_name().is_some_and(|n| n == LEASH_CGROUP) {
        return cur.to_owned();
    }
    let controllers = fs::read_to_string(cur.join("cgroup.subtree_control")).unwrap_or_default();
    if cur != root && !controllers.trim().is_empty() {
        tracing::warn!(
            cgroup = %cur.display(),
            "cgroup delegates controllers to its children: network hooks attached to it, not to a leash child"
        );
        return cur.to_owned();
    }
    cur.join(LEASH_CGROUP)
}

/// The cgroup id (the kernfs id, which is the directory's inode number).
pub(crate) fn cgroup_id(path: &Path) -> io::Result<u64> {
    Ok(fs::metadata(path)?.ino())
}

/// Moves the whole process `pid` into `cgroup`.
pub(crate) fn move_into(cgroup: &Path, pid: u32) -> io::Result<()> {
    fs::write(cgroup.join("cgroup.procs"), pid.to_string())
}

/// Whether no process is left in `cgroup` or below.
#[must_use]
pub(crate) fn is_empty(cgroup: &Path) -> bool {
    fs::read_to_string(cgroup.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l == "populated 0"))
}

/// The cgroup under `root` whose id is `id`, by walking the tree.
#[must_use]
pub(crate) fn find_cgroup(root: &Path, id: u64) -> Option<PathBuf> {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        if cgroup_id(&dir).ok() == Some(id) {
            return Some(dir);
        }
        if let Ok(entries) = fs::read_dir(&dir) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

/// Whether leash can make cgroups under the cgroup2 mount `root` (a read-only or
/// undelegated cgroup file system cannot): a probe cgroup is made and removed.
pub(crate) fn layout_allows_children(root: &Path) -> Result<(), String> {
    fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|e| format!("{} is no cgroup2 file system: {e}", root.display()))?;
    let probe = root.join(format!("leash-probe-{}", std::process::id()));
    fs::create_dir(&probe)
        .map_err(|e| format!("cannot make a cgroup under {}: {e}", root.display()))?;
    let _ = fs::remove_dir(&probe);
    Ok(())
}

/// Why attach scope `task` cannot work for a process.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    #[error("cgroup of the process: {0}")]
    CgroupOf(#[source] io::Error),
    #[error("cannot create {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup id: {0}")]
    CgroupId(#[source] io::Error),
    #[error("cannot move {pid} into {}: {source}", cgroup.display())]
    Move {
        pid: u32,
        cgroup: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leash_cgroup_is_its_own_scope() {
        let root = Path::new("/sys/fs/cgroup");
        let cur = root.join("a/leash");
        assert_eq!(leash_cgroup_for(root, &cur), cur);
    }
}
