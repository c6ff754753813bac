//! Whole tasks against the policy in force. A reload (and a daemon start) checks each
//! live task's agent, mode, intent, remaining TTL, file mode and file grants as a new
//! task request would be checked; a task the policy no longer allows is ended
//! (`revoked`, with the rule), and joining a task (`attach`) is checked the same way.

use serde_json::json;

use super::{Daemon, RegistryError, registry::TaskRecord};
use crate::{
    clock,
    policy::{Policy, Verdict},
    protocol::{EndReason, FileMode, FileRules, TaskId, TaskState},
};

/// Why `policy` no longer allows `task` at `now_ns`: (the rule governing its agent,
/// the refusal), or `None` when it does.
fn refusal(policy: &Policy, task: &TaskRecord, now_ns: u64) -> Option<(Option<String>, String)> {
    // A break-glass task stands outside the ceilings by design.
    if task.break_glass.is_some() {
        return None;
    }
    // What the task still has: its remaining TTL, rounded up to a second.
    let left_ns = task.expires_ns.saturating_sub(now_ns);
    let ttl = std::time::Duration::from_secs(left_ns.div_ceil(1_000_000_000).max(1));
    let has_intent = task.intent.as_deref().is_some_and(|i| !i.trim().is_empty());
    let verdict = match policy.check_task(&task.agent, ttl, task.mode, has_intent) {
        Verdict::Allow | Verdict::Pending => file_refusal(policy, task),
        deny @ Verdict::Deny(_) => deny,
    };
    match verdict {
        Verdict::Deny(m) => Some((policy.rule_for(&task.agent).map(|r| r.file.name.clone()), m)),
        Verdict::Allow | Verdict::Pending => None,
    }
}

/// The task's file mode and file grants against `policy` (a task recorded before file
/// rules is `open`).
fn file_refusal(policy: &Policy, task: &TaskRecord) -> Verdict {
    let open = FileRules {
        mode: FileMode::Open,
        ..FileRules::default()
    };
    let files = task.files.as_ref().unwrap_or(&open);
    let grants: Vec<String> = files
        .read
        .iter()
        .map(|p| format!("read:{p}"))
        .chain(files.write.iter().map(|p| format!("write:{p}")))
        .collect();
    policy.check_files(&task.agent, files.mode, grants.iter().map(String::as_str))
}

impl Daemon {
    /// Ends every live task `policy` no longer allows; returns how many.
    pub(super) fn end_refused_tasks(&self, policy: &Policy) -> usize {
        let now = clock::boottime_ns();
        let refused: Vec<(u64, Option<String>, String)> = self
            .lock()
            .tasks
            .tasks
            .values()
            .filter(|t| t.state != TaskState::Ended)
            .filter_map(|t| refusal(policy, t, now).map(|(rule, why)| (t.id, rule, why)))
            .collect();
        let mut ended = 0;
        for (id, rule, why) in refused {
            let note = json!({ "rule": rule, "policy": why });
            let note = note.as_object().cloned().unwrap_or_default();
            match self.end_task_noting(id, EndReason::Revoked, note) {
                Ok(_) => {
                    ended += 1;
                    tracing::warn!(task = %TaskId(id), "task ended by the policy: {why}");
                }
                Err(e) => {
                    tracing::error!(task = %TaskId(id), "cannot end a task the policy refuses: {e}");
                }
            }
        }
        ended
    }

    /// Refuses joining task `id` when the policy in force no longer allows it (even
    /// one already ended, so the caller hears why).
    pub(super) fn check_joinable(&self, id: u64) -> Result<(), RegistryError> {
        let Some(policy) = self.gate.current() else {
            return Ok(());
        };
        let task = self
            .lock()
            .tasks
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))?;
        match refusal(&policy, &task, clock::boottime_ns()) {
            Some((_, why)) => Err(RegistryError::Forbidden(format!(
                "task {} may not be joined: the policy in force does not allow it: {why}",
                task.id_string()
            ))),
            None => Ok(()),
        }
    }
}
