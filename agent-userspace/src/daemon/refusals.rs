//! What each task was refused, one entry per distinct action, kept as the events are
//! emitted: `GET /v1/tasks/{id}/suggestion`, `leash suggest` and `leash run`'s report
//! read it, so none of them depends on the recent events still being in memory.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, PoisonError},
};

use crate::{
    grants::remedy::{describe, grant_and_note, remedy},
    protocol::{AuditEvent, Refusal, Refusals, SuggestedGrant},
};

/// Distinct refusals kept per task; beyond, they are counted as dropped.
pub const PER_TASK: usize = 256;
/// Tasks whose refusals are kept; the oldest first seen goes first.
pub const TASKS: usize = 4096;
/// Programs named per refusal.
const BY: usize = 4;

#[derive(Debug, Default)]
pub struct RefusalBook(Mutex<Book>);

#[derive(Debug, Default)]
struct Book {
    tasks: HashMap<String, Refusals>,
    order: VecDeque<String>,
    /// Per task, the exec grant suggested for each file (device, inode): the kernel
    /// checks a program by its inode, so a second path to it (a hard link, as
    /// `git-core/git` is of `git`) needs no grant of its own.
    files: HashMap<String, HashMap<(String, u64), String>>,
}

impl RefusalBook {
    /// Counts `e` if it refused (or audited) an action; for an interpreter refused for
    /// a script that is not granted either, the script too (the portable backend
    /// checks the script only once the interpreter passed).
    pub fn record(&self, e: &AuditEvent) {
        if e.verdict != "denied" && e.verdict != "audited" {
            return;
        }
        self.count(e, describe(e), grant_and_note(remedy(e)));
        if e.target.get("script_granted") == Some(&serde_json::Value::Bool(false))
            && let Some(script) = e.target.get("path").and_then(serde_json::Value::as_str)
            && script.starts_with('/')
        {
            let grant = SuggestedGrant {
                list: "exec".into(),
                spec: script.into(),
            };
            // lsm refuses the script itself first, as its own refusal: not twice.
            let known = self
                .of(&e.task)
                .refusals
                .iter()
                .any(|r| r.grant.as_ref() == Some(&grant) && r.reason != "script_not_granted");
            if !known {
                let mut script_event = e.clone();
                script_event.reason = "script_not_granted".into();
                self.count(&script_event, script.into(), (Some(grant), None));
            }
        }
    }

    fn count(
        &self,
        e: &AuditEvent,
        what: String,
        (mut grant, note): (Option<SuggestedGrant>, Option<String>),
    ) {
        let mut book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !book.tasks.contains_key(&e.task) {
            if book.order.len() >= TASKS
                && let Some(old) = book.order.pop_front()
            {
                book.tasks.remove(&old);
                book.files.remove(&old);
            }
            book.order.push_back(e.task.clone());
        }
        if let (Some(g), Some(file)) = (&mut grant, checked_by_inode(e)) {
            let files = book.files.entry(e.task.clone()).or_default();
            g.spec = files.entry(file).or_insert_with(|| g.spec.clone()).clone();
        }
        let task = book
            .tasks
            .entry(e.task.clone())
            .or_insert_with(|| Refusals {
                task: e.task.clone(),
                ..Refusals::default()
            });
        if let Some(r) = task.refusals.iter_mut().find(|r| {
            r.what == what && r.reason == e.reason && r.kind == e.kind && r.verdict == e.verdict
        }) {
            r.count += 1;
            if r.by.len() < BY && !e.comm.is_empty() && !r.by.contains(&e.comm) {
                r.by.push(e.comm.clone());
            }
            return;
        }
        if task.refusals.len() >= PER_TASK {
            task.dropped += 1;
            return;
        }
        task.refusals.push(Refusal {
            verdict: e.verdict.clone(),
            kind: e.kind.clone(),
            what,
            reason: e.reason.clone(),
            count: 1,
            grant,
            note,
            by: (!e.comm.is_empty())
                .then(|| e.comm.clone())
                .into_iter()
                .collect(),
        });
    }

    /// The refusals of `task`; empty when it had none (or they were let go).
    #[must_use]
    pub fn of(&self, task: &str) -> Refusals {
        let book = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        book.tasks.get(task).cloned().unwrap_or_else(|| Refusals {
            task: task.to_owned(),
            ..Refusals::default()
        })
    }
}

/// The (device, inode) an exec refusal's grant is checked by: a program or an
/// interpreter, not a script (checked by its path on the portable backend).
fn checked_by_inode(e: &AuditEvent) -> Option<(String, u64)> {
    if e.kind != "exec" || !matches!(e.reason.as_str(), "not_granted" | "interpreter_not_granted") {
        return None;
    }
    let dev = e.target.get("dev")?.as_str()?.to_owned();
    Some((dev, e.target.get("ino")?.as_u64()?))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(task: &str, verdict: &str, port: u64) -> AuditEvent {
        AuditEvent {
            ts: String::new(),
            task: task.into(),
            agent: "cli".into(),
            spiffe_id: String::new(),
            intent: None,
            pid: Some(1),
            comm: "curl".into(),
            kind: "connect".into(),
            verdict: verdict.into(),
            target: json!({"addr": "10.0.0.1", "port": port, "protocol": "tcp"}),
            reason: "not_granted".into(),
            chain: Vec::new(),
        }
    }

    #[test]
    fn distinct_refusals_are_counted_and_bounded() {
        let book = RefusalBook::default();
        book.record(&event("a", "denied", 443));
        book.record(&event("a", "denied", 443));
        book.record(&event("a", "allowed", 80));
        book.record(&event("a", "audited", 443));
        let a = book.of("a");
        assert_eq!(a.refusals.len(), 2);
        assert_eq!(a.refusals[0].count, 2);
        assert_eq!(a.refusals[0].what, "10.0.0.1:443/tcp");
        assert_eq!(a.refusals[0].by, ["curl"]);
        let g = a.refusals[0].grant.as_ref().unwrap();
        assert_eq!(
            (g.list.as_str(), g.spec.as_str()),
            ("connect", "10.0.0.1:443/tcp")
        );
        for port in 0..(PER_TASK as u64 + 5) {
            book.record(&event("b", "denied", 1000 + port));
        }
        let b = book.of("b");
        assert_eq!((b.refusals.len(), b.dropped), (PER_TASK, 5));
        assert_eq!(b.total(), PER_TASK as u64 + 5);
        assert_eq!(book.of("nope").total(), 0);
    }

    #[test]
    fn an_ungranted_script_behind_an_ungranted_interpreter_is_counted_too() {
        let book = RefusalBook::default();
        let mut e = event("a", "audited", 1);
        e.kind = "exec".into();
        e.reason = "interpreter_not_granted".into();
        e.target = json!({"path": "/w/s.sh", "role": "interpreter", "real": "/usr/bin/env",
            "script_granted": false});
        book.record(&e);
        book.record(&e);
        let grants: Vec<_> = book
            .of("a")
            .refusals
            .iter()
            .map(|r| (r.grant.clone().unwrap().spec, r.reason.clone(), r.count))
            .collect();
        assert_eq!(
            grants,
            [
                ("/usr/bin/env".into(), "interpreter_not_granted".into(), 2),
                ("/w/s.sh".into(), "script_not_granted".into(), 2)
            ]
        );
        e.target["script_granted"] = true.into();
        e.task = "b".into();
        book.record(&e);
        assert_eq!(book.of("b").refusals.len(), 1);
    }

    #[test]
    fn two_paths_to_one_program_need_one_grant() {
        let book = RefusalBook::default();
        let mut e = event("a", "audited", 1);
        e.kind = "exec".into();
        for path in ["/usr/bin/git", "/usr/libexec/git-core/git"] {
            e.target = json!({"path": path, "real": path, "dev": "8:1", "ino": 42});
            book.record(&e);
        }
        let specs: Vec<_> = book
            .of("a")
            .refusals
            .iter()
            .map(|r| r.grant.clone().unwrap().spec)
            .collect();
        assert_eq!(specs, ["/usr/bin/git", "/usr/bin/git"]);
    }

    #[test]
    fn the_oldest_task_goes_first() {
        let book = RefusalBook::default();
        for t in 0..=TASKS {
            book.record(&event(&t.to_string(), "denied", 1));
        }
        assert_eq!(book.of("0").total(), 0);
        assert_eq!(book.of("1").total(), 1);
        assert_eq!(book.of(&TASKS.to_string()).total(), 1);
    }
}
