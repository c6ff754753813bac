//! A task's life matches how it was made (`end_when`).
//!
//! A `command_exits` task (made by `leash run`) ends when its command exits: the first
//! process attached to it is the command, and the daemon watches that process through a
//! pidfd, so the task ends whether `leash run` returned, was killed, or never got to
//! exec. `leash run` execs the command in place, so the process the daemon watches is
//! the command and its exit status and signals reach `leash run`'s parent untouched.
//! Survivors (background processes the command left) then lose every grant, and are
//! killed under `tasks.kill_on_end`.
//!
//! An `ended_or_expired` task (`leash task create`, `POST /v1/tasks`) lives until its
//! TTL, `leash task end` or revocation, whatever its processes do, and may be joined any
//! number of times.

use std::os::fd::{FromRawFd as _, OwnedFd};

use serde::{Deserialize, Serialize};

use super::{Daemon, Inner, RegistryError};
use crate::protocol::{EndReason, EndWhen, TaskId, TaskState};

/// The process a `command_exits` task ends with: its pid and start time (clock ticks
/// after boot, `/proc/<pid>/stat` field 22), so a recycled pid is never taken for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    pub pid: u32,
    pub start_ticks: u64,
}

/// `end_when` of a task record written before the field existed. Every task of those
/// daemons ended when its last process exited, which is what a `command_exits` task
/// without a recorded command still does here: an adopted task never lives longer than
/// the rule it was created under (an `ended_or_expired` default would keep a task alive
/// past the exit that used to end it).
#[must_use]
pub const fn legacy_end_when() -> EndWhen {
    EndWhen::CommandExits
}

/// A process's start time, or `None` when it is gone.
#[must_use]
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field 22 is the 20th after the name.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A pidfd for `pid` (Linux ≥ 5.3).
///
/// # Errors
/// `pidfd_open`'s: `ESRCH` when no such process runs.
pub fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| std::io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a pidfd on the process `rec` names; `None` when that process is gone (its pid
/// free or recycled). The start time is checked after the pidfd is open, so the pidfd
/// cannot refer to a later process of the same pid.
fn open_command(rec: CommandRecord) -> Option<OwnedFd> {
    let fd = pidfd_open(rec.pid).ok()?;
    (start_ticks(rec.pid) == Some(rec.start_ticks)).then_some(fd)
}

/// Before a process joins task `id`: a `command_exits` task takes one process, its
/// command. Returns the command to record, with its pidfd, when this is it.
pub(super) fn command_for(
    inner: &Inner,
    id: u64,
    pid: u32,
) -> Result<Option<(CommandRecord, OwnedFd)>, RegistryError> {
    let Some(task) = inner.tasks.get(id) else {
        return Err(RegistryError::NoTask(TaskId(id).to_string()));
    };
    if task.end_when != EndWhen::CommandExits {
        return Ok(None);
    }
    if task.command.is_some() || task.state == TaskState::Active {
        return Err(RegistryError::Forbidden(format!(
            "task {} ends when its command exits (end_when: command_exits) and already \
                 runs it; to run several commands in one task, create it with `leash task \
                 create` (end_when: ended_or_expired) and join it with `leash run --task ID`",
            task.id_string()
        )));
    }
    let gone = || RegistryError::BadRequest(format!("process {pid} exited before it joined"));
    let fd = pidfd_open(pid).map_err(|_| gone())?;
    let start_ticks = start_ticks(pid).ok_or_else(gone)?;
    Ok(Some((CommandRecord { pid, start_ticks }, fd)))
}

impl Daemon {
    /// Ends task `id` when the process behind `fd` exits. Without an async runtime
    /// (never in the daemon) the sweep's check below still ends it.
    pub(super) fn watch_command(&self, id: u64, fd: OwnedFd) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(task = %TaskId(id), "no runtime to watch the command; the sweep ends the task within 2 s of its exit");
            return;
        };
        let me = self.me.clone();
        runtime.spawn(async move {
            // A pidfd turns readable when its process has exited (every thread).
            // SAFETY: `fd` is an open pidfd that the AsyncFd owns until it is dropped;
            // nothing else closes or replaces it.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            match registered {
                Ok(afd) => {
                    if let Err(e) = afd.readable().await {
                        tracing::error!(task = %TaskId(id), "cannot wait on the command's pidfd ({e}); ending the task");
                    }
                }
                Err(e) => {
                    tracing::error!(task = %TaskId(id), "cannot watch the command's pidfd ({e}); ending the task");
                }
            }
            if let Some(daemon) = me.upgrade()
                && let Err(e) = tokio::task::spawn_blocking(move || daemon.command_exited(id)).await
            {
                tracing::error!(task = %TaskId(id), "ending the task of an exited command failed: {e}");
            }
        });
    }

    /// Re-watches the commands of adopted `command_exits` tasks; ends those whose
    /// command exited while no daemon ran.
    pub(super) fn watch_adopted(&self) {
        let commands: Vec<(u64, CommandRecord)> = {
            let inner = self.lock();
            inner
                .tasks
                .tasks
                .values()
                .filter(|t| t.state != TaskState::Ended)
                .filter_map(|t| t.command.map(|c| (t.id, c)))
                .collect()
        };
        for (id, command) in commands {
            match open_command(command) {
                Some(fd) => self.watch_command(id, fd),
                None => self.command_exited(id),
            }
        }
    }

    /// Ends a `command_exits` task whose command is gone.
    pub fn command_exited(&self, id: u64) {
        let live =
            self.lock().tasks.get(id).is_some_and(|t| {
                t.state != TaskState::Ended && t.end_when == EndWhen::CommandExits
            });
        if live && let Err(e) = self.end_task(id, EndReason::Exited) {
            tracing::error!(task = %TaskId(id), "cannot end a task whose command exited: {e}");
        }
    }

    /// The sweep's backstop: live tasks whose recorded command is gone (by pid and
    /// start time), in case a watch was lost.
    pub(super) fn commands_gone(&self) -> Vec<u64> {
        self.lock()
            .tasks
            .tasks
            .values()
            .filter(|t| t.state != TaskState::Ended)
            .filter_map(|t| t.command.map(|c| (t.id, c)))
            .filter(|(_, c)| start_ticks(c.pid) != Some(c.start_ticks))
            .map(|(id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    use super::*;

    fn is_open(fd: &OwnedFd) -> bool {
        // SAFETY: F_GETFD on an fd we own.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) >= 0 }
    }

    #[test]
    fn start_ticks_skip_names_with_spaces_and_parens() {
        let stat = "1234 (a b) c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(parse_start_ticks("garbage"), None);
        let me = std::process::id();
        assert!(start_ticks(me).is_some());
    }

    #[test]
    fn a_recorded_command_is_found_only_while_it_runs() {
        let me = std::process::id();
        let rec = CommandRecord {
            pid: me,
            start_ticks: start_ticks(me).unwrap(),
        };
        let fd = open_command(rec).expect("this process runs");
        assert!(is_open(&fd));
        // Another start time is another process that had this pid.
        assert!(
            open_command(CommandRecord {
                start_ticks: rec.start_ticks + 1,
                ..rec
            })
            .is_none()
        );
        let mut child = std::process::Command::new("/bin/true").spawn().unwrap();
        let pid = child.id();
        let ticks = start_ticks(pid);
        child.wait().unwrap();
        if let Some(start_ticks) = ticks {
            assert!(open_command(CommandRecord { pid, start_ticks }).is_none());
        }
    }
}
