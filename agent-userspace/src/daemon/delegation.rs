//! Delegation at the daemon: who may change a child task, and what follows a parent.
//! A process of task T may create children of T (`"delegate": true`) and change its
//! descendants, never T itself or any other task; ending T ends its descendants, and
//! revoking a grant of T revokes the grants derived from it (docs/identity.md).

use serde_json::json;

use super::{Daemon, RegistryError, policy::forbidden};
use crate::{
    auth::{Caller, Standing},
    protocol::{EndReason, TaskId},
};

impl Daemon {
    /// The task a create request delegates from: the caller's own, by its kernel tag.
    #[must_use]
    pub fn delegating_parent(caller: &Caller, delegate: bool) -> Option<u64> {
        match caller.standing {
            Standing::InTask(t) if delegate => Some(t),
            _ => None,
        }
    }

    /// Whether a caller inside task `t` may change task `id`: only a descendant of `t`.
    pub fn check_descendant(&self, t: u64, id: u64) -> Result<(), RegistryError> {
        if self.lock().tasks.descends_from(id, t) {
            return Ok(());
        }
        Err(RegistryError::Refused {
            code: "caller_in_task",
            message: format!(
                "the caller runs inside task {}, which may change only the tasks it delegated (its descendants), and task {} is not one: call from outside the task",
                TaskId(t),
                TaskId(id)
            ),
        })
    }

    /// Whether a caller inside task `t` may read task `id`: itself or a descendant.
    #[must_use]
    pub fn sees_from(&self, t: u64, id: u64) -> bool {
        t == id || self.lock().tasks.descends_from(id, t)
    }

    /// Ends the live children of a task that just ended, and theirs in turn.
    pub(super) fn end_children(&self, id: u64) {
        let children = self.lock().tasks.children_of(id);
        for child in children {
            let mut note = serde_json::Map::new();
            note.insert("parent".into(), TaskId(id).to_string().into());
            if let Err(e) = self.end_task_noting(child, EndReason::ParentEnded, note) {
                tracing::error!(task = %TaskId(child), parent = %TaskId(id), "cannot end a child of an ended task: {e}");
            }
        }
    }

    /// Revokes the grants of the children of `id` derived from its grant `gid`.
    pub(super) fn revoke_derived(&self, id: u64, gid: &str) {
        let derived = self.lock().tasks.derived_from(id, gid);
        for (child, g) in derived {
            let from = format!("{}/{gid}", TaskId(id));
            if let Err(e) = self.remove_grant_noting(
                child,
                &g,
                "grant_revoked",
                "parent_grant_revoked",
                json!({ "parent_grant": from }),
            ) {
                tracing::error!(task = %TaskId(child), "cannot revoke a grant derived from the revoked {from}: {e}");
            }
        }
    }

    /// With tokens on, a child's agent is the token's, as for any task; without, a
    /// child named no agent takes its parent's.
    pub(super) fn child_agent(&self, parent: u64, asked: &str) -> Result<String, RegistryError> {
        if !asked.is_empty() {
            return Ok(asked.to_owned());
        }
        self.agent_of(parent)
            .map_err(|_| forbidden(format!("the parent task {} is gone", TaskId(parent))))
    }
}
