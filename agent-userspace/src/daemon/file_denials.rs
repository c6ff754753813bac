//! File denials: Landlock's audit records ([`crate::files::audit_records`]) of tasks'
//! domains become `file` events and `leash_decisions_total{action="file"}`. Only while
//! the kernel's audit is on; leash never turns it on (docs/grants.md).
//!
//! A record names a Landlock domain, not a task. The domain's first denial brings the
//! pid that created it: a `leash run` that joined a task (an attached pid), or any
//! tagged process that made a nested domain. Denials of a domain seen before that
//! record wait for it; domains of untagged processes are remembered as nobody's.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use serde_json::json;
use tokio::io::unix::AsyncFd;

use super::{Daemon, lifecycle::Stopping, registry};
use crate::{
    clock,
    files::audit_records::{AuditLog, Record},
    protocol::{AuditEvent, TaskId},
};

/// Domains remembered at most (a domain is forgotten when it is freed).
const MAX_DOMAINS: usize = 4096;
/// Denials kept waiting for their domain's record, at most.
const MAX_WAITING: usize = 1024;

/// Which task each Landlock domain belongs to (`None`: no task's).
#[derive(Default)]
pub(super) struct Domains {
    owner: HashMap<u64, Option<u64>>,
    waiting: VecDeque<(u64, String, Option<String>)>,
}

impl Domains {
    /// Feeds one record; returns the denials now known to be a task's: (task, rights,
    /// path). `task_of` finds the task of the pid that created a domain.
    pub(super) fn feed(
        &mut self,
        record: Record,
        task_of: impl FnOnce(u32) -> Option<u64>,
    ) -> Vec<(u64, String, Option<String>)> {
        match record {
            Record::Access {
                domain,
                blockers,
                path,
            } => match self.owner.get(&domain) {
                Some(Some(task)) => vec![(*task, blockers, path)],
                Some(None) => Vec::new(),
                None => {
                    if self.waiting.len() == MAX_WAITING {
                        self.waiting.pop_front();
                    }
                    self.waiting.push_back((domain, blockers, path));
                    Vec::new()
                }
            },
            Record::Allocated { domain, pid } => {
                if self.owner.len() >= MAX_DOMAINS {
                    self.owner.clear();
                }
                let task = task_of(pid);
                self.owner.insert(domain, task);
                let (mine, rest): (Vec<_>, Vec<_>) =
                    self.waiting.drain(..).partition(|(d, _, _)| *d == domain);
                self.waiting = rest.into();
                match task {
                    Some(task) => mine.into_iter().map(|(_, b, p)| (task, b, p)).collect(),
                    None => Vec::new(),
                }
            }
            Record::Freed { domain } => {
                self.owner.remove(&domain);
                Vec::new()
            }
        }
    }
}

impl Daemon {
    /// The task a Landlock domain's creator is in: the kernel's tag of the process
    /// while it runs, else the newest task the pid was attached to (the `leash run`
    /// whose pid the command kept), ended or not: a command that exits at once ends
    /// its task before the record is read.
    fn task_of_domain_pid(&self, pid: u32) -> Option<u64> {
        self.task_of(pid).or_else(|| {
            self.lock()
                .tasks
                .tasks
                .values()
                .filter(|t| t.attached_pids.contains(&pid))
                .max_by(|a, b| a.created_at.cmp(&b.created_at))
                .map(|t| t.id)
        })
    }

    /// A `file` event of task `task`, counted in `leash_decisions_total`.
    fn file_denied(&self, task: u64, blockers: &str, path: Option<&str>) {
        let (t, label) = {
            let inner = self.lock();
            let Some(t) = inner.tasks.get(task).cloned() else {
                return;
            };
            let label = inner.tasks.agent_label(&t.agent);
            (t, label)
        };
        self.recorded.count_file_denial(&label);
        let mut target = json!({ "access": blockers });
        if let Some(path) = path {
            target["path"] = path.into();
        }
        self.audit.emit(AuditEvent {
            ts: registry::wall_of_boot_ns(clock::boottime_ns()),
            task: TaskId(task).to_string(),
            agent: t.agent.clone(),
            spiffe_id: t.spiffe_id(&self.limits.trust_domain),
            intent: t.intent.clone(),
            // The record names the domain, not the process that was refused.
            pid: None,
            comm: String::new(),
            kind: "file".into(),
            verdict: "denied".into(),
            target,
            reason: "not_granted".into(),
            chain: Vec::new(),
        });
    }

    fn on_landlock_records(&self, domains: &mut Domains, records: Vec<Record>) {
        // Signal, ptrace and socket scopes are not file denials (and the eBPF guards
        // report attempts on leash themselves).
        for r in records
            .into_iter()
            .filter(|r| r.is_file_access() || !matches!(r, Record::Access { .. }))
        {
            for (task, blockers, path) in domains.feed(r, |pid| self.task_of_domain_pid(pid)) {
                self.file_denied(task, &blockers, path.as_deref());
            }
        }
    }
}

/// Reads Landlock's audit records until the daemon stops. Without the audit group
/// (no `CAP_AUDIT_READ`, not the initial network namespace) it says so and ends.
pub(super) async fn pump(daemon: Arc<Daemon>, mut stopping: Stopping) {
    let log = match AuditLog::open()
        .map_err(std::io::Error::from)
        .and_then(|l| {
            // SAFETY: the AsyncFd owns the socket, so the fd lives as long as it is registered.
            unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)
        }) {
        Ok(log) => log,
        Err(e) => {
            tracing::warn!(
                "file denials are not counted: cannot join the kernel audit log's read group: {e}"
            );
            return;
        }
    };
    let mut domains = Domains::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let readable = tokio::select! {
            r = log.readable() => r,
            () = stopping.wait() => return,
        };
        let Ok(mut guard) = readable else { return };
        loop {
            match guard.get_inner().read(&mut buf) {
                Ok(records) if records.is_empty() => {}
                // Task lookups take the daemon's lock: off the async workers.
                Ok(records) => tokio::task::block_in_place(|| {
                    daemon.on_landlock_records(&mut domains, records);
                }),
                Err(nix::errno::Errno::EAGAIN) => {
                    guard.clear_ready();
                    break;
                }
                Err(nix::errno::Errno::ENOBUFS) => {
                    tracing::warn!(
                        "audit records were dropped (the read group's buffer overflowed): some file denials are not counted"
                    );
                }
                Err(e) => {
                    tracing::error!(
                        "reading the kernel audit log: {e}; file denials are no longer counted"
                    );
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(domain: u64, path: &str) -> Record {
        Record::Access {
            domain,
            blockers: "fs.read_file".into(),
            path: Some(path.into()),
        }
    }

    #[test]
    fn denials_wait_for_their_domain_and_untagged_domains_are_nobodys() {
        let mut d = Domains::default();
        let never = |_| panic!("no domain record here");
        // The access record comes first; the domain record names the creator's pid.
        assert!(d.feed(access(1, "/k"), never).is_empty());
        assert!(d.feed(access(2, "/other"), never).is_empty());
        let got = d.feed(Record::Allocated { domain: 1, pid: 40 }, |pid| {
            (pid == 40).then_some(7)
        });
        assert_eq!(got, [(7, "fs.read_file".to_owned(), Some("/k".to_owned()))]);
        // Later denials of the domain map at once.
        assert_eq!(d.feed(access(1, "/k2"), never).len(), 1);
        // A domain of an untagged process: its denials are dropped.
        assert!(
            d.feed(Record::Allocated { domain: 2, pid: 41 }, |_| None)
                .is_empty()
        );
        assert!(d.feed(access(2, "/x"), never).is_empty());
        assert!(d.waiting.is_empty());
        // Freed: forgotten.
        assert!(d.feed(Record::Freed { domain: 1 }, never).is_empty());
        assert!(d.feed(access(1, "/k3"), never).is_empty());
        assert_eq!(d.waiting.len(), 1);
    }
}
