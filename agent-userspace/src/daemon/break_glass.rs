//! Break-glass: an approver of an agent's rule starts an emergency task for that agent.
//! The policy's ceilings do not apply to it, but its grants are explicit and enforced
//! in the kernel like any task's; its TTL is capped (`tasks.break_glass_max_ttl`), and
//! it is loud: a `break_glass` record with the approver and the justification, and
//! `leash_break_glass_total`.

use std::time::Duration;

use serde_json::json;

use super::{Daemon, RegistryError, approval::approver_of, policy::forbidden, registry};
use crate::{
    auth::{Caller, Standing},
    protocol::{self, BreakGlass, BreakGlassInfo, TaskId},
};

/// Longest justification kept.
const JUSTIFICATION_MAX: usize = 4096;

impl Daemon {
    /// `POST /v1/tasks` with `break_glass`: checks the caller is an approver of the
    /// agent's rule, outside every task, and caps the TTL; then creates the task
    /// outside the ceilings and announces it.
    pub(super) fn create_break_glass(
        &self,
        caller: &Caller,
        mut req: protocol::CreateTask,
        asked: &BreakGlass,
    ) -> Result<protocol::Task, RegistryError> {
        let justification = asked.justification.trim();
        if justification.is_empty() || justification.len() > JUSTIFICATION_MAX {
            return Err(RegistryError::BadRequest(format!(
                "break_glass.justification must say why, in 1 to {JUSTIFICATION_MAX} bytes"
            )));
        }
        if req.delegate || caller.standing != Standing::Host {
            return Err(forbidden(
                "a break-glass task is started from outside every task, never delegated",
            ));
        }
        let Some(policy) = self.gate.current() else {
            return Err(forbidden(
                "break-glass takes an approver of the node policy, and no policy is loaded (policy.file)",
            ));
        };
        if !policy.may_approve(&approver_of(caller), &req.agent) {
            return Err(forbidden(format!(
                "{} is not an approver of agent {:?}'s rule: only its approvers may start a break-glass task",
                caller.describe(),
                req.agent
            )));
        }
        let cap = self.limits.break_glass_ttl;
        match req.ttl_seconds {
            Some(s) if Duration::from_secs(s) > cap => {
                return Err(forbidden(format!(
                    "ttl_seconds {s} exceeds the break-glass cap of {} s (tasks.break_glass_max_ttl)",
                    cap.as_secs()
                )));
            }
            Some(_) => {}
            None => req.ttl_seconds = Some(self.limits.default_ttl.min(cap).as_secs().max(1)),
        }
        let info = BreakGlassInfo {
            justification: justification.to_owned(),
            approver: caller.describe(),
        };
        let origin = registry::Origin {
            break_glass: Some(info.clone()),
            ..registry::Origin::default()
        };
        let task = self.create_task(&req, caller.pid, origin)?;
        self.recorded.break_glass.inc();
        let id = task.id.parse::<TaskId>()?.0;
        if let Some(rec) = self.lock().tasks.get(id).cloned() {
            self.lifecycle_event_by(
                &rec,
                "break_glass",
                json!({
                    "approver": info.approver,
                    "justification": info.justification,
                    "grants": req.grants,
                    "expires_at": task.expires_at,
                }),
                "break_glass",
                caller.pid,
            );
        }
        tracing::warn!(task = %task.id, agent = %task.agent, approver = %info.approver, "break-glass task started: {}", info.justification);
        Ok(task)
    }
}
