//! The root directory of each task's first attached process, held open from attach,
//! for the tasks attached last. A refused unix connect names a path in the process's
//! own view; when the daemon reads the refusal after the process (and the task's
//! other processes) exited, as with glibc's nscd probe from a short-lived child, it
//! still looks the path up where the process saw it, instead of claiming nothing.

use std::{
    collections::VecDeque,
    fs::{File, Metadata},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    sync::{Mutex, PoisonError},
};

/// Roots held at most (one descriptor each); the oldest attach goes first.
const KEPT: usize = 256;

#[derive(Default)]
pub struct TaskRoots(Mutex<VecDeque<(u64, File)>>);

impl TaskRoots {
    /// Holds the root of `pid`, just attached to `task`, unless the task's is held.
    pub fn note(&self, task: u64, pid: u32) {
        let mut roots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if roots.iter().any(|(t, _)| *t == task) {
            return;
        }
        let Ok(dir) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(format!("/proc/{pid}/root"))
        else {
            return;
        };
        if roots.len() == KEPT {
            roots.pop_front();
        }
        roots.push_back((task, dir));
    }

    /// The metadata of absolute `path` (not following a last symlink) in `task`'s held
    /// root; `None` when no root of the task is held.
    pub fn symlink_metadata(&self, task: u64, path: &str) -> Option<std::io::Result<Metadata>> {
        let roots = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (_, dir) = roots.iter().find(|(t, _)| *t == task)?;
        // The descriptor's magic link leads into that root, as /proc/<pid>/root does.
        Some(std::fs::symlink_metadata(format!(
            "/proc/self/fd/{}{path}",
            dir.as_raw_fd()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_root_answers_after_its_process_is_gone() {
        let roots = TaskRoots::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        roots.note(7, child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(roots.symlink_metadata(7, "/proc").unwrap().is_ok());
        assert!(
            roots
                .symlink_metadata(7, "/no/such/socket")
                .unwrap()
                .is_err()
        );
        assert!(roots.symlink_metadata(8, "/proc").is_none());
        for t in 0..=(KEPT as u64) {
            roots.note(100 + t, std::process::id());
        }
        assert!(roots.symlink_metadata(7, "/proc").is_none(), "evicted");
    }
}
