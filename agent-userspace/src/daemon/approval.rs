//! Grants that wait for an approver, and who may decide on them, end tasks or revoke
//! grants. An approval takes a second party: the requester's identity is recorded on
//! the pending grant (and persisted with it), and an approver who is the same party is
//! refused. A deny only narrows, so the requester may withdraw its own request.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    Daemon, Inner, RegistryError,
    policy::{NO_POLICY, forbidden},
    registry,
};
use crate::{
    auth::Caller,
    clock,
    policy::{Approver, Policy},
    protocol::{self, TaskId},
};

/// Who asked for, or decided on, a grant: the caller's uid and its token's subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Identity {
    #[must_use]
    pub fn of(caller: &Caller) -> Self {
        Self {
            uid: caller.uid,
            subject: caller.subject.clone(),
        }
    }

    /// Whether two identities are one party: the same token subject when both sent a
    /// token, else the same uid (leaving the token off does not make a uid someone
    /// else).
    #[must_use]
    pub fn same_party(&self, other: &Self) -> bool {
        match (&self.subject, &other.subject) {
            (Some(a), Some(b)) => a == b,
            _ => self.uid == other.uid,
        }
    }

    /// `uid 0` or `uid 0, sub spiffe://...`, as [`Caller::describe`].
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.subject {
            Some(s) => format!("uid {}, sub {s}", self.uid),
            None => format!("uid {}", self.uid),
        }
    }
}

/// The refusal code of a self-approval.
pub const SELF_APPROVAL: &str = "self_approval";

pub(super) fn approver_of(caller: &Caller) -> Approver {
    Approver {
        uid: caller.uid,
        subject: caller.subject.clone(),
    }
}

impl Daemon {
    /// With tokens on, ending a task or revoking one of its grants takes a token for the
    /// task's agent, an approver of that agent, or root (uid 0, which administers the
    /// daemon anyway). Without tokens every allowed caller may: it only narrows.
    pub fn check_narrowing(&self, caller: &Caller, id: u64) -> Result<(), RegistryError> {
        if !self.gate.auth.tokens_on() {
            return Ok(());
        }
        let agent = self.agent_of(id)?;
        if caller.agent.as_deref() == Some(agent.as_str()) || caller.uid == 0 {
            return Ok(());
        }
        if self
            .gate
            .current()
            .is_some_and(|p| p.may_approve(&approver_of(caller), &agent))
        {
            return Ok(());
        }
        Err(forbidden(format!(
            "{} may not end tasks or revoke grants of agent {agent:?}: that takes a token for \
             the agent (`Authorization: Bearer <token>`), an approver of its rule, or root",
            caller.describe()
        )))
    }

    /// Records a grant pending approval: resolved, not in the kernel, with who asked.
    pub(super) fn add_pending(
        &self,
        caller: &Caller,
        id: u64,
        req: &protocol::AddGrant,
        wait: Duration,
    ) -> Result<String, RegistryError> {
        let root = self.caller_root(
            caller.pid,
            super::caller_root::names_paths(req.exec.is_some(), req.connect.iter()),
        )?;
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let task_expiry = tasks.get(id).map_or(0, |t| t.expires_ns);
        let mut until = clock::expiry_after(Some(wait));
        if task_expiry != 0 {
            until = until.min(task_expiry);
        }
        let gid = tasks.add_grant(
            enforcer.maps_mut(),
            id,
            req,
            &self.limits,
            &root.resolve_in(),
            until,
        )?;
        if let Some(g) = tasks
            .tasks
            .get_mut(&id)
            .and_then(|t| t.grants.iter_mut().find(|g| g.id == gid))
        {
            g.requested_by = Some(Identity::of(caller));
        }
        let rec = tasks.get(id).cloned();
        self.save(&inner, id);
        drop(inner);
        if let Some(rec) = rec
            && let Some(g) = rec.grants.iter().find(|g| g.id == gid)
        {
            self.lifecycle_event(
                &rec,
                "grant_pending",
                json!({ "grant_id": gid, "kind": g.kind, "spec": g.spec,
                        "pending_until": registry::wall_of_boot_ns(until), "requested_by": caller.describe() }),
                "approval required by policy",
            );
        }
        Ok(gid)
    }

    /// Checks `caller` may decide on a pending grant `gid` of task `id`; an approval
    /// also takes another party than the one who asked.
    fn check_approver(
        &self,
        caller: &Caller,
        id: u64,
        gid: &str,
        approve: bool,
    ) -> Result<(), RegistryError> {
        let policy = self
            .gate
            .current()
            .ok_or_else(|| forbidden(format!("{NO_POLICY}; no grant is ever pending")))?;
        let inner = self.lock();
        let task = inner
            .tasks
            .get(id)
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))?;
        if task.state == protocol::TaskState::Ended {
            return Err(RegistryError::Ended(task.id_string()));
        }
        let g = task
            .grants
            .iter()
            .find(|g| g.id == gid)
            .ok_or_else(|| RegistryError::NoGrant {
                task: task.id_string(),
                grant: gid.to_owned(),
            })?;
        if g.pending_ns == 0 {
            return Err(RegistryError::BadRequest(format!(
                "grant {gid} of task {} is not pending approval",
                task.id_string()
            )));
        }
        if caller.agent.as_deref() == Some(task.agent.as_str()) {
            return Err(forbidden(
                "an agent cannot approve or reject its own grants",
            ));
        }
        if approve {
            check_second_party(g, caller, &task.id_string())?;
        }
        check_listed(&policy, caller, &task.agent)
    }

    /// `POST /v1/tasks/{id}/grants/{gid}/approve`: the grant goes into the kernel.
    pub fn approve(&self, caller: &Caller, id: u64, gid: &str) -> Result<(), RegistryError> {
        self.check_approver(caller, id, gid, true)?;
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let Some(task) = tasks.tasks.get_mut(&id) else {
            return Err(RegistryError::NoTask(TaskId(id).to_string()));
        };
        let Some(g) = task.grants.iter_mut().find(|g| g.id == gid) else {
            return Err(RegistryError::NoGrant {
                task: task.id_string(),
                grant: gid.to_owned(),
            });
        };
        let was = std::mem::take(&mut g.pending_ns);
        if let Err(e) = tasks.sync(enforcer.maps_mut(), id) {
            if let Some(g) = tasks
                .tasks
                .get_mut(&id)
                .and_then(|t| t.grants.iter_mut().find(|g| g.id == gid))
            {
                g.pending_ns = was;
            }
            if let Err(undo) = tasks.sync(enforcer.maps_mut(), id) {
                tracing::error!(task = %TaskId(id), "cannot restore the grants after a failed approval: {undo}");
            }
            return Err(e);
        }
        let rec = tasks.get(id).cloned();
        self.save(&inner, id);
        drop(inner);
        if let Some(rec) = rec
            && let Some(g) = rec.grants.iter().find(|g| g.id == gid)
        {
            self.lifecycle_event(
                &rec,
                "grant_approved",
                json!({ "grant_id": gid, "kind": g.kind, "spec": g.spec, "by": caller.describe(),
                        "requested_by": g.requested_by.as_ref().map(Identity::describe) }),
                "approved",
            );
        }
        Ok(())
    }

    /// `POST /v1/tasks/{id}/grants/{gid}/deny`: the pending grant is dropped.
    pub fn reject(&self, caller: &Caller, id: u64, gid: &str) -> Result<(), RegistryError> {
        self.check_approver(caller, id, gid, false)?;
        self.drop_pending(id, gid, "grant_rejected", &caller.describe())
    }

    fn drop_pending(&self, id: u64, gid: &str, kind: &str, by: &str) -> Result<(), RegistryError> {
        let reason = if kind == "grant_rejected" {
            "rejected"
        } else {
            "approval expired"
        };
        self.remove_grant(id, gid, kind, reason, Some(by))
    }

    /// Drops grants whose wait for approval is over.
    pub fn sweep_pending(&self, now_ns: u64) {
        for (id, _, g) in self.live_grants() {
            if g.pending_ns != 0
                && now_ns >= g.pending_ns
                && let Err(e) = self.drop_pending(id, &g.id, "grant_expired", "leash")
            {
                tracing::error!(task = %TaskId(id), grant = g.id, "cannot drop a lapsed pending grant: {e}");
            }
        }
    }
}

/// Refuses an approval by the party that asked for the grant.
fn check_second_party(
    g: &registry::GrantRecord,
    caller: &Caller,
    task: &str,
) -> Result<(), RegistryError> {
    let Some(requester) = &g.requested_by else {
        // Recorded by a daemon before requesters were: no second party can be told
        // apart, so the grant cannot be approved (fail closed).
        return Err(RegistryError::Refused {
            code: SELF_APPROVAL,
            message: format!(
                "grant {} of task {task} does not record who asked for it, so a second party \
                 cannot be told apart: deny it and ask for it again",
                g.id
            ),
        });
    };
    if requester.same_party(&Identity::of(caller)) {
        return Err(RegistryError::Refused {
            code: SELF_APPROVAL,
            message: format!(
                "{} asked for grant {} of task {task}, and an approval takes another party \
                 (separation of duties: another uid, or another token subject when both \
                 sent tokens): ask another approver of the rule",
                caller.describe(),
                g.id
            ),
        });
    }
    Ok(())
}

fn check_listed(policy: &Policy, caller: &Caller, agent: &str) -> Result<(), RegistryError> {
    if policy.may_approve(&approver_of(caller), agent) {
        return Ok(());
    }
    Err(forbidden(format!(
        "{} may not approve grants of agent {agent:?}: not among the approvers of its rule in {}",
        caller.describe(),
        policy.origin
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(uid: u32, subject: Option<&str>) -> Identity {
        Identity {
            uid,
            subject: subject.map(str::to_owned),
        }
    }

    #[test]
    fn one_party_is_the_same_subject_when_both_have_tokens_else_the_same_uid() {
        let sub = Some("spiffe://leash.local/agent/bot");
        let human = Some("spiffe://leash.local/human/oncall");
        assert!(id(0, None).same_party(&id(0, None)));
        assert!(!id(0, None).same_party(&id(1000, None)));
        // The token left off: the uid decides.
        assert!(id(0, sub).same_party(&id(0, None)));
        assert!(id(0, None).same_party(&id(0, sub)));
        // Both with tokens: the subject decides, whatever the uid.
        assert!(id(0, sub).same_party(&id(1000, sub)));
        assert!(!id(0, sub).same_party(&id(0, human)));
        assert_eq!(
            id(0, sub).describe(),
            "uid 0, sub spiffe://leash.local/agent/bot"
        );
    }

    #[test]
    fn a_pending_grant_keeps_its_requester_in_the_state_file() {
        let mut g = registry::resolve(
            protocol::GrantKind::Connect,
            "127.0.0.1:1",
            "g1".into(),
            0,
            &registry::ResolveIn::own(),
        )
        .unwrap();
        let line = serde_json::to_string(&g).unwrap();
        assert!(!line.contains("requested_by"), "{line}");
        g.requested_by = Some(id(1000, Some("s")));
        let back: registry::GrantRecord =
            serde_json::from_str(&serde_json::to_string(&g).unwrap()).unwrap();
        assert_eq!(back.requested_by, Some(id(1000, Some("s"))));
    }
}
