//! The workspace `leash run` makes writable: the directory it was started in, or
//! `--workspace DIR`. `/`, a system directory or a home directory as a whole is
//! refused: a task must not be able to write host state that untagged processes run
//! (`/etc/ld.so.preload`, cron tables, units, shell profiles).

use std::path::{Path, PathBuf};

/// Directories refused as a workspace, and everything beneath them.
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
    "/sbin", "/sys", "/usr",
];

/// Directories refused as a workspace themselves (what is beneath them is fine).
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/home",
    "/root",
    "/opt",
    "/srv",
    "/var",
    "/var/lib",
    "/var/spool",
    "/tmp",
    "/var/tmp",
    "/mnt",
    "/media",
];

/// The private tmp directory of one `leash run` (pid `pid`) of task `task`, in the
/// system tmp directory: `leash-<task>-<pid>`.
#[must_use]
pub fn tmpdir_for(task: &str, pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("leash-{task}-{pid}"))
}

/// Removes the tmp directories `leash run` made for task `task` in this process's system
/// tmp directory (the daemon's, when the task ends). Symbolic links are not followed.
/// Returns how many were removed.
pub fn remove_tmpdirs(task: &str) -> usize {
    let prefix = format!("leash-{task}-");
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if is_dir && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(
                    "cannot remove the task's tmp directory {}: {e}",
                    entry.path().display()
                ),
            }
        }
    }
    removed
}

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("cannot use {0} as the workspace: {1}")]
    Missing(PathBuf, #[source] std::io::Error),
    #[error(
        "refusing {0} as the task's writable workspace: it is {1}; run leash run from a project directory, or name one with --workspace DIR (or use --files open)"
    )]
    System(PathBuf, &'static str),
}

/// `dir` canonicalized, or why it cannot be the workspace. `home`: the caller's `HOME`.
pub fn check_workspace(dir: &Path, home: Option<&Path>) -> Result<PathBuf, WorkspaceError> {
    let canonical =
        std::fs::canonicalize(dir).map_err(|e| WorkspaceError::Missing(dir.to_owned(), e))?;
    let refuse = |why| Err(WorkspaceError::System(canonical.clone(), why));
    if SYSTEM_TREES.iter().any(|t| canonical.starts_with(t)) {
        return refuse("a system directory");
    }
    if SYSTEM_DIRS.iter().any(|d| canonical == Path::new(d)) {
        return refuse("the root or a system directory");
    }
    if let Some(home) = home.and_then(|h| std::fs::canonicalize(h).ok())
        && canonical == home
    {
        return refuse("the home directory (shell profiles, ~/.ssh)");
    }
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_system_directories_and_home() {
        for dir in ["/", "/etc", "/usr/lib", "/tmp", "/root", "/proc/self"] {
            let err = check_workspace(Path::new(dir), None).unwrap_err();
            assert!(matches!(err, WorkspaceError::System(..)), "{dir}: {err}");
            assert!(err.to_string().contains("--workspace DIR"), "{err}");
        }
        let dir = std::env::temp_dir().join(format!("leash-ws-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(
            check_workspace(&dir, None).unwrap(),
            std::fs::canonicalize(&dir).unwrap()
        );
        assert!(matches!(
            check_workspace(&dir, Some(&dir)),
            Err(WorkspaceError::System(..))
        ));
        std::fs::remove_dir(&dir).unwrap();
        assert!(matches!(
            check_workspace(&dir, None),
            Err(WorkspaceError::Missing(..))
        ));
    }

    #[test]
    fn tmpdirs_of_a_task_are_removed_and_nothing_else() {
        let task = format!("ffff{:012x}", std::process::id());
        let mine = tmpdir_for(&task, 12);
        std::fs::create_dir_all(mine.join("sub")).unwrap();
        std::fs::write(mine.join("sub/f"), "x").unwrap();
        let other = std::env::temp_dir().join(format!("leash-{task}-x1"));
        std::fs::create_dir_all(&other).unwrap();
        assert_eq!(remove_tmpdirs(&task), 1);
        assert!(!mine.exists());
        assert!(other.exists(), "not a pid: left alone");
        std::fs::remove_dir(&other).unwrap();
    }
}
