//! What the kernel reports: the decision ring buffer becomes audit events (and ends the
//! tasks whose last process exited), and the programs' own log records reach tracing.

use std::{
    collections::HashMap,
    sync::{Arc, atomic::Ordering},
};

use anyhow::Context as _;
use leash_common::{Action, Reason, Verdict};
use serde_json::json;
use tokio::{io::unix::AsyncFd, task::JoinHandle};

use super::{Daemon, lifecycle::Stopping, metrics_http::Readiness, policy, registry};
use crate::{
    Enforcer,
    grants::exec_role::{ExecRole, checked_file},
    kernel::events::{Decision, Decoded, EventReader, Target},
    protocol::{AuditEvent, EndReason, GrantKind, TaskId, TaskState},
};

impl Daemon {
    /// Turns one kernel record into audit events and lifecycle actions.
    pub fn on_kernel_events(&self, batch: Vec<Decision>) {
        super::fault::before_events();
        let mut exits = Vec::new();
        // Task metadata looked up once per task per batch, under one lock.
        let mut meta: HashMap<u64, TaskMeta> = HashMap::new();
        {
            let inner = self.lock();
            for d in &batch {
                meta.entry(d.task).or_insert_with(|| {
                    inner.tasks.get(d.task).map_or_else(
                        || ("unknown".to_owned(), String::new(), None, Vec::new(), None),
                        |t| {
                            (
                                t.agent.clone(),
                                t.spiffe_id(&self.limits.trust_domain),
                                t.intent.clone(),
                                // Grants awaiting approval, to label their denials.
                                t.grants
                                    .iter()
                                    .filter(|g| g.pending_ns != 0)
                                    .cloned()
                                    .collect(),
                                // The kernel no longer knows an ended task; its record
                                // says why it ended.
                                t.end_reason.filter(|_| t.state == TaskState::Ended),
                            )
                        },
                    )
                });
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        for d in batch {
            if d.kind == Action::Exit {
                exits.push(d.task);
                continue;
            }
            if let Target::Escape {
                moved_pid,
                killed_at_move: false,
                ..
            } = d.target
            {
                self.kill_escaped(d.task, moved_pid);
            }
            if d.kind == Action::Exec && d.verdict == Verdict::Allowed && !self.log_allowed_exec {
                continue;
            }
            let (agent, spiffe_id, intent, pending, ended) =
                meta.get(&d.task).cloned().unwrap_or_default();
            let reason = match (d.reason, ended) {
                _ if d.verdict == Verdict::Denied
                    && policy::is_pending_target(&pending, &d.target) =>
                {
                    "pending_approval"
                }
                // A process outliving its task: say why the task is gone.
                (Decoded::Known(Reason::UnknownTask), Some(EndReason::Expired)) => {
                    Reason::TaskExpired.as_str()
                }
                (Decoded::Known(Reason::UnknownTask), Some(_)) => Reason::TaskEnded.as_str(),
                _ => d.reason.as_str(),
            };
            let mut target = target_json(&d.target);
            let reason = self
                .exec_checked(&d, &mut target)
                .or_else(|| self.absent_unix_socket(&d))
                .unwrap_or(reason);
            self.recorded
                .count_denial(d.kind.as_str(), d.verdict.as_str(), reason);
            events.push(AuditEvent {
                ts: registry::wall_of_boot_ns(d.ts_ns),
                task: TaskId(d.task).to_string(),
                agent,
                spiffe_id,
                intent,
                pid: Some(d.pid),
                comm: d.comm,
                kind: d.kind.as_str().into(),
                verdict: d.verdict.as_str().into(),
                target,
                reason: reason.into(),
                chain: Vec::new(),
            });
        }
        self.audit.emit_all(events);
        if !exits.is_empty() {
            self.end_exited(&exits);
        }
    }
}

impl Daemon {
    /// The fallback where the kernel cannot kill a tagged process moved out of its
    /// leash cgroups at the move (no `bpf_send_signal_task`): kill it now. Only while
    /// the thread is still tagged with that task, so a recycled pid is never hit.
    fn kill_escaped(&self, task: u64, tid: u32) {
        if self.lock().enforcer.maps().tag_of(tid) != Some(task) {
            return;
        }
        // SAFETY: kill(2) on a thread id signals its whole process.
        let rc = unsafe { libc::kill(tid as libc::pid_t, libc::SIGKILL) };
        if rc == 0 {
            tracing::warn!(task = %TaskId(task), pid = tid, "killed a tagged process moved out of its leash cgroups");
        } else {
            tracing::warn!(task = %TaskId(task), pid = tid, "cannot kill a tagged process moved out of its leash cgroups: {}", std::io::Error::last_os_error());
        }
    }
}

/// The reason of an exec refused because the `#!` interpreter of the named file is not
/// granted (the script may well be).
const INTERPRETER_NOT_GRANTED: &str = "interpreter_not_granted";

impl Daemon {
    /// For a refused (or audited) exec, adds to `target` the file the kernel checked,
    /// its `role` and `real` path. An interpreter refused for a script gets its own
    /// reason, so the report names the file to grant, not the script, and says whether
    /// the script is granted (`script_granted`): the portable backend checks the
    /// script's path only once the interpreter passed, so a learning run would not
    /// otherwise learn it. Allowed execs are not looked at: this reads files.
    fn exec_checked(&self, d: &Decision, target: &mut serde_json::Value) -> Option<&'static str> {
        let Target::Exec { path, dev, ino } = &d.target else {
            return None;
        };
        if d.verdict == Verdict::Allowed {
            return None;
        }
        let cwd = std::fs::read_link(format!("/proc/{}/cwd", d.pid)).ok();
        let checked = checked_file(path, cwd.as_deref(), *dev, *ino)?;
        target["role"] = checked.role.as_str().into();
        target["real"] = checked.real.to_string_lossy().into_owned().into();
        if checked.role != ExecRole::Interpreter {
            return None;
        }
        let canonical = std::fs::canonicalize(path).ok();
        let named = |p: &str| p == path || canonical.as_deref() == Some(std::path::Path::new(p));
        let script_granted = self.lock().tasks.get(d.task).is_some_and(|t| {
            t.grants
                .iter()
                .filter(|g| g.kind == GrantKind::Exec)
                .any(|g| named(&g.spec) || g.files.iter().any(|f| f.script && named(&f.path)))
        });
        target["script_granted"] = script_granted.into();
        (d.reason == Decoded::Known(Reason::NotGranted)).then_some(INTERPRETER_NOT_GRANTED)
    }
}

/// The reason of a refused connect or send to a unix path where no socket is bound, as
/// glibc's probe for nscd does on every lookup: refused all the same (and counted), but
/// told apart so that dashboards and alerts can leave it out.
const UNIX_SOCKET_ABSENT: &str = "unix_socket_absent";

impl Daemon {
    /// [`UNIX_SOCKET_ABSENT`] for a refused unix connect or send to a path that is
    /// nothing in the process's own view: its root from `/proc`, or, once it is gone (a
    /// short-lived child), that of a process attached to the task, or the root the
    /// task's first process had at attach. With no such root, or for an abstract name,
    /// nothing is claimed.
    fn absent_unix_socket(&self, d: &Decision) -> Option<&'static str> {
        let Target::Unix { path } = &d.target else {
            return None;
        };
        if d.verdict == Verdict::Allowed
            || d.reason != Decoded::Known(Reason::NotGranted)
            || !path.starts_with('/')
        {
            return None;
        }
        let attached = self
            .lock()
            .tasks
            .get(d.task)
            .map(|t| t.attached_pids.clone())
            .unwrap_or_default();
        let root = std::iter::once(d.pid)
            .chain(attached)
            .map(|pid| format!("/proc/{pid}/root"))
            .find(|root| std::fs::metadata(root).is_ok());
        let found = match root {
            Some(root) => std::fs::symlink_metadata(format!("{root}{path}")),
            // Every process gone: the root the task's first process had at attach.
            None => self.roots.symlink_metadata(d.task, path)?,
        };
        match found {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(UNIX_SOCKET_ABSENT),
            _ => None,
        }
    }
}

/// An event's `target` object.
fn target_json(target: &Target) -> serde_json::Value {
    match target {
        Target::Exec { path, dev, ino } => {
            json!({ "path": path, "dev": crate::grants::dev_text(*dev), "ino": ino })
        }
        Target::Net {
            addr,
            port,
            protocol,
        } => {
            json!({ "addr": addr.to_string(), "port": port, "protocol": protocol })
        }
        Target::Unix { path } => json!({ "unix": path }),
        Target::Socket {
            family,
            socket_type,
            protocol,
        } => json!({ "family": family, "type": socket_type, "protocol": protocol }),
        Target::Guard { call, target_pid } => {
            json!({ "call": call, "target_pid": target_pid })
        }
        Target::Compat { call, syscall } => json!({ "call": call, "syscall": syscall }),
        Target::Escape {
            moved_pid,
            cgroup_id,
            killed_at_move,
        } => json!({
            "moved_pid": moved_pid,
            "cgroup_id": cgroup_id,
            "killed_at_move": killed_at_move,
        }),
        Target::Process {} => json!({}),
    }
}

/// Agent, SPIFFE ID, intent, grants awaiting approval, and how the task ended if it has.
type TaskMeta = (
    String,
    String,
    Option<String>,
    Vec<registry::GrantRecord>,
    Option<EndReason>,
);

/// Forwards kernel-side log records (only emitted at the configured level) until the
/// daemon stops.
pub(super) fn spawn_kernel_log(
    enforcer: &mut Enforcer,
    mut stopping: Stopping,
) -> Option<JoinHandle<()>> {
    let mut logger = enforcer.take_logger()?;
    // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd lives.
    let fd = unsafe {
        AsyncFd::register_with_interest(
            std::os::fd::AsRawFd::as_raw_fd(&logger),
            tokio::io::Interest::READABLE,
        )
    };
    match fd {
        Ok(fd) => Some(tokio::spawn(async move {
            loop {
                let readable = tokio::select! {
                    r = fd.readable() => r,
                    () = stopping.wait() => break,
                };
                let Ok(mut guard) = readable else {
                    break;
                };
                logger.flush();
                guard.clear_ready();
            }
        })),
        Err(e) => {
            tracing::warn!("kernel log records unavailable: {e}");
            None
        }
    }
}

/// Clears the event reader's readiness when the pump stops, however it stops.
struct Running(Arc<Readiness>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.events_running.store(false, Ordering::Release);
    }
}

/// Drains the decision ring buffer into the audit trail until the daemon stops.
pub(super) async fn pump_events(
    reader: EventReader,
    daemon: Arc<Daemon>,
    ready: Arc<Readiness>,
    mut stopping: Stopping,
) -> anyhow::Result<()> {
    // SAFETY: the reader owns the ring buffer fd for as long as the AsyncFd lives.
    let mut fd = unsafe { AsyncFd::register_with_interest(reader, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot watch the event ring buffer: {e}"))?;
    ready.events_running.store(true, Ordering::Release);
    // Not ready again if this loop ever ends.
    let _running = Running(ready);
    loop {
        let (batch, synced) = tokio::select! {
            r = fd.readable_mut() => {
                let mut guard = r.context("event ring buffer")?;
                let batch = guard.get_inner_mut().drain();
                guard.clear_ready();
                (batch, None)
            }
            // Drained whether or not the ring buffer woke us: a record committed
            // without a wakeup must still be seen by whoever waits.
            () = daemon.events_sync.requested() => {
                let upto = daemon.events_sync.begin();
                (fd.get_mut().drain(), Some(upto))
            }
            () = stopping.wait() => return Ok(()),
        };
        if !batch.is_empty() {
            // In place (the other tasks move to the second worker): no hand-off to the
            // blocking pool and back between an exit and the task's teardown.
            tokio::task::block_in_place(|| daemon.on_kernel_events(batch));
        }
        if let Some(upto) = synced {
            daemon.events_sync.done(upto);
        }
    }
}
