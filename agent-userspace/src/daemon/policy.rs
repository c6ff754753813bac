//! Identity and policy in the daemon: who may create which task with which grants
//! (the node policy's ceilings, evaluated by Cedar), and atomic policy reloads that
//! revoke what the new policy no longer allows. Pending grants: `approval.rs`.

use std::{
    path::PathBuf,
    sync::{Arc, PoisonError, RwLock},
    time::Duration,
};

use super::{Daemon, RegistryError, registry};
use crate::{
    auth::{Authenticator, Caller},
    config::Config,
    grants,
    kernel::events::Target,
    policy::{GrantSpec, Kind, PENDING_TTL, Policy, Verdict},
    protocol::{self, EndReason, GrantKind, TaskId},
};

/// The policy in force and the caller authenticator.
pub struct Gate {
    policy: RwLock<Option<Arc<Policy>>>,
    file: Option<PathBuf>,
    pub auth: Authenticator,
}

/// Said in the log and `leash status` when no policy is configured.
pub const NO_POLICY: &str = "no policy: any authorized caller may grant anything";

impl Gate {
    /// Loads the policy and the token keys; a bad file stops the daemon from starting.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let policy = config
            .policy
            .file
            .as_deref()
            .map(Policy::load)
            .transpose()?
            .map(Arc::new);
        let socket_gid = config
            .socket
            .group
            .as_ref()
            .map(crate::config::SocketGroup::resolve)
            .transpose()?;
        let auth = Authenticator::new(&config.auth, socket_gid, &config.trust_domain)?;
        let gate = Self {
            policy: RwLock::new(policy),
            file: config.policy.file.clone(),
            auth,
        };
        if gate.current().is_some() {
            tracing::info!("{}", gate.describe());
        } else {
            tracing::warn!("{NO_POLICY}");
        }
        Ok(gate)
    }

    #[must_use]
    pub fn current(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    #[must_use]
    pub fn describe(&self) -> String {
        self.current().map_or_else(
            || NO_POLICY.to_owned(),
            |p| format!("policy {} ({} rules)", p.origin, p.rules.len()),
        )
    }
}

/// The policy's verdict on one grant as the API names it: `unix:` names arrive in the
/// connect list but have ceilings of their own.
fn check_grant(policy: &Policy, agent: &str, kind: GrantKind, spec: &str) -> Verdict {
    let (kind, spec) = match kind {
        GrantKind::Exec => (Kind::Exec, spec),
        GrantKind::Connect => match spec.strip_prefix("unix:") {
            Some(name) => (Kind::Unix, name),
            None if spec.starts_with("socket:") => {
                return Verdict::Deny(format!(
                    "grant connect:{spec}: socket-family grants are outside every policy \
                     ceiling (a node policy cannot allow them yet)"
                ));
            }
            None => (Kind::Connect, spec),
        },
    };
    policy.check_grant(
        agent,
        &GrantSpec {
            kind,
            spec: spec.to_owned(),
        },
    )
}

pub(super) fn forbidden(m: impl Into<String>) -> RegistryError {
    RegistryError::Forbidden(m.into())
}

/// The one grant of an `AddGrant` request, when it names exactly one.
fn requested(req: &protocol::AddGrant) -> Option<(GrantKind, &str)> {
    match (&req.exec, &req.connect) {
        (Some(e), None) => Some((GrantKind::Exec, e)),
        (None, Some(c)) => Some((GrantKind::Connect, c)),
        _ => None,
    }
}

impl Daemon {
    /// With tokens on, widening a task (grants, attaching) takes a token for its agent.
    fn check_acting(&self, caller: &Caller, agent: &str) -> Result<(), RegistryError> {
        if !self.gate.auth.tokens_on() {
            return Ok(());
        }
        match &caller.agent {
            Some(a) if a == agent => Ok(()),
            Some(a) => Err(forbidden(format!(
                "the token is for agent {a:?}, but the task belongs to agent {agent:?}"
            ))),
            None => Err(forbidden(
                "tokens are on (auth.tokens): send `Authorization: Bearer <token>` naming the agent",
            )),
        }
    }

    pub(super) fn agent_of(&self, id: u64) -> Result<String, RegistryError> {
        self.lock()
            .tasks
            .get(id)
            .map(|t| t.agent.clone())
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))
    }

    /// With tokens on, a new task's agent is the token's; a request naming another is
    /// refused.
    fn agent_from_token(
        &self,
        caller: &Caller,
        req: &mut protocol::CreateTask,
    ) -> Result<(), RegistryError> {
        if self.gate.auth.tokens_on() {
            let Some(agent) = &caller.agent else {
                return Err(forbidden(
                    "tokens are on (auth.tokens): send `Authorization: Bearer <token>`; the token names the agent",
                ));
            };
            if !req.agent.is_empty() && req.agent != *agent {
                return Err(forbidden(format!(
                    "the request names agent {:?} but the token is for agent {agent:?}; omit \"agent\" or match the token",
                    req.agent
                )));
            }
            req.agent.clone_from(agent);
        }
        Ok(())
    }

    /// `POST /v1/tasks` by an authenticated caller: the agent comes from the token
    /// when tokens are on, and the policy bounds the TTL, mode, intent and grants.
    pub fn create_task_as(
        &self,
        caller: &Caller,
        mut req: protocol::CreateTask,
    ) -> Result<protocol::Task, RegistryError> {
        // An approver's emergency task: its agent is the request's (an approver's token
        // names none), and the ceilings below do not apply.
        if let Some(asked) = req.break_glass.take() {
            return self.create_break_glass(caller, req, &asked);
        }
        self.agent_from_token(caller, &mut req)?;
        // A child of the caller's task (delegation), within its grants: the registry
        // checks those; the policy below applies to the child as to any task.
        let delegation =
            Self::delegating_parent(caller, req.delegate).map(|parent| registry::Delegation {
                parent,
                ttl_asked: req.ttl_seconds.is_some(),
            });
        if let Some(d) = delegation {
            req.agent = self.child_agent(d.parent, &req.agent)?;
        }
        let mut pending = Vec::new();
        let mut pending_ttl = PENDING_TTL;
        if let Some(policy) = self.gate.current() {
            // No TTL asked for: the default, but never beyond the rule's max_ttl.
            if req.ttl_seconds.is_none()
                && let Some(max) = policy.rule_for(&req.agent).and_then(|r| r.max_ttl)
                && max < self.limits.default_ttl
            {
                req.ttl_seconds = Some(max.as_secs().max(1));
            }
            let ttl = req
                .ttl_seconds
                .map_or(self.limits.default_ttl, Duration::from_secs);
            let has_intent = req.intent.as_deref().is_some_and(|i| !i.trim().is_empty());
            if let Verdict::Deny(m) =
                policy.check_task(&req.agent, ttl, req.mode.unwrap_or_default(), has_intent)
            {
                return Err(forbidden(m));
            }
            // A file grant that does not parse is left to the registry's 400 bad_grant.
            let file_grants = req
                .grants
                .files
                .iter()
                .filter(|g| crate::files::parse_grant(g).is_ok())
                .map(String::as_str);
            if let Verdict::Deny(m) =
                policy.check_files(&req.agent, req.file_mode.unwrap_or_default(), file_grants)
            {
                return Err(forbidden(m));
            }
            for (kind, list) in [
                (GrantKind::Exec, &mut req.grants.exec),
                (GrantKind::Connect, &mut req.grants.connect),
            ] {
                let mut keep = Vec::new();
                for spec in list.drain(..) {
                    match check_grant(&policy, &req.agent, kind, &spec) {
                        Verdict::Allow => keep.push(spec),
                        Verdict::Pending => pending.push((kind, spec)),
                        Verdict::Deny(m) => return Err(forbidden(m)),
                    }
                }
                *list = keep;
            }
            if let Some(rule) = policy.rule_for(&req.agent) {
                pending_ttl = rule.pending_ttl;
            }
        }
        // A pending grant that cannot be resolved fails the request before the task exists.
        for (kind, spec) in &pending {
            let root = self.caller_root(
                caller.pid,
                super::caller_root::names_paths(
                    *kind == GrantKind::Exec,
                    std::iter::once(spec).filter(|_| *kind == GrantKind::Connect),
                ),
            )?;
            registry::resolve(*kind, spec, String::new(), 0, &root.resolve_in())?;
        }
        let task = self.create_task(
            &req,
            caller.pid,
            registry::Origin {
                delegation,
                ..registry::Origin::default()
            },
        )?;
        let id = task.id.parse::<TaskId>()?.0;
        for (kind, spec) in pending {
            let add = protocol::AddGrant {
                exec: (kind == GrantKind::Exec).then(|| spec.clone()),
                connect: (kind == GrantKind::Connect).then_some(spec),
                file: None,
                ttl_seconds: None,
            };
            if let Err(e) = self.add_pending(caller, id, &add, pending_ttl) {
                if let Err(end) = self.end_task(id, EndReason::Ended) {
                    tracing::error!(task = %TaskId(id), "cannot end a task whose pending grant failed: {end}");
                }
                return Err(e);
            }
        }
        self.task(id)
    }

    /// `POST /v1/tasks/{id}/grants` by an authenticated caller; `true` when the grant
    /// is pending approval.
    pub fn add_grant_as(
        &self,
        caller: &Caller,
        id: u64,
        req: &protocol::AddGrant,
    ) -> Result<(String, bool), RegistryError> {
        let agent = self.agent_of(id)?;
        self.check_acting(caller, &agent)?;
        if let (Some(policy), Some((kind, spec))) = (self.gate.current(), requested(req)) {
            match check_grant(&policy, &agent, kind, spec) {
                Verdict::Allow => {}
                Verdict::Deny(m) => return Err(forbidden(m)),
                Verdict::Pending => {
                    let ttl = policy
                        .rule_for(&agent)
                        .map_or(PENDING_TTL, |r| r.pending_ttl);
                    return Ok((self.add_pending(caller, id, req, ttl)?, true));
                }
            }
        }
        Ok((self.add_grant(id, req, caller.pid)?, false))
    }

    /// `POST /v1/tasks/{id}/attach`: with tokens on, only for the task's own agent;
    /// only to a task the policy in force allows.
    pub fn attach_as(&self, caller: &Caller, id: u64, pid: u32) -> Result<(), RegistryError> {
        self.check_acting(caller, &self.agent_of(id)?)?;
        self.check_joinable(id)?;
        self.attach(id, pid)
    }

    /// Every grant of every live task: (task, agent, grant).
    pub(super) fn live_grants(&self) -> Vec<(u64, String, registry::GrantRecord)> {
        self.lock()
            .tasks
            .tasks
            .values()
            .filter(|t| t.state != protocol::TaskState::Ended && t.break_glass.is_none())
            .flat_map(|t| t.grants.iter().map(|g| (t.id, t.agent.clone(), g.clone())))
            .collect()
    }

    /// Loads the policy file again. A file that does not load leaves the policy in
    /// force; a new policy replaces it at once, then every live grant is checked again
    /// and those it no longer allows are revoked (`grant_revoked`, reason `policy: ...`).
    pub fn reload_policy(&self) -> Result<usize, String> {
        let file = self
            .gate
            .file
            .clone()
            .ok_or_else(|| "no policy file is configured (policy.file)".to_owned())?;
        crate::file_trust::check("policy.file", &file).map_err(|e| e.to_string())?;
        let policy = Arc::new(Policy::load(&file).map_err(|e| e.to_string())?);
        *self
            .gate
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&policy));
        let revoked = self.enforce_policy(&policy);
        tracing::info!(revoked, "policy reloaded: {}", self.gate.describe());
        Ok(revoked)
    }

    /// Ends every live task `policy` refuses, then revokes every live grant it refuses
    /// (after a reload, or at start when adopted tasks were granted under another
    /// policy); returns how many grants.
    pub fn enforce_policy(&self, policy: &Policy) -> usize {
        self.end_refused_tasks(policy);
        let mut revoked = 0;
        for (id, agent, g) in self.live_grants() {
            if let Verdict::Deny(m) = check_grant(policy, &agent, g.kind, &g.spec)
                && self
                    .revoke_grant(id, &g.id, &format!("policy: {m}"))
                    .is_ok()
            {
                revoked += 1;
            }
        }
        revoked
    }
}

/// Whether a denied decision is about a grant waiting for approval.
#[must_use]
pub fn is_pending_target(pending: &[registry::GrantRecord], target: &Target) -> bool {
    pending.iter().any(|g| match target {
        Target::Exec { dev, ino, .. } => g.files.iter().any(|f| f.dev == *dev && f.ino == *ino),
        Target::Net {
            addr,
            port,
            protocol,
        } => {
            let a = u128::from_be_bytes(grants::mapped(*addr));
            let proto = match protocol.as_str() {
                "tcp" => leash_common::grant::PROTO_TCP,
                "udp" => leash_common::grant::PROTO_UDP,
                _ => 0,
            };
            g.nets.iter().any(|n| {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(n.prefix))
                    .unwrap_or(0);
                (a & mask) == (u128::from_be_bytes(n.addr) & mask)
                    && (n.port_lo..=n.port_hi).contains(port)
                    && n.protos & proto != 0
            })
        }
        Target::Unix { path } => g.unix.iter().any(|u| u == path),
        Target::Process {}
        | Target::Socket { .. }
        | Target::Guard { .. }
        | Target::Compat { .. }
        | Target::Escape { .. } => false,
    })
}

/// Reloads the policy on every SIGHUP until the runtime stops.
pub(super) async fn reload_on_sighup(
    daemon: Arc<Daemon>,
    mut stopping: super::lifecycle::Stopping,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::error!("cannot watch SIGHUP; the policy reloads only on a restart: {e}");
            return;
        }
    };
    loop {
        tokio::select! {
            hup = hup.recv() => if hup.is_none() { return },
            () = stopping.wait() => return,
        }
        let d = Arc::clone(&daemon);
        match tokio::task::spawn_blocking(move || d.reload_policy()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(
                "SIGHUP: policy not reloaded, the previous policy stays in force: {e}"
            ),
            Err(e) => tracing::error!("SIGHUP: policy reload failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn grant(spec: &str) -> registry::GrantRecord {
        registry::resolve(
            GrantKind::Connect,
            spec,
            "g1".into(),
            0,
            &registry::ResolveIn::own(),
        )
        .unwrap()
    }

    fn net(addr: &str, port: u16, protocol: &str) -> Target {
        Target::Net {
            addr: addr.parse::<IpAddr>().unwrap(),
            port,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn denials_of_pending_grants_are_recognized() {
        let pending = [
            grant("10.1.0.0/16:8000-8100/tcp"),
            grant("[2001:db8::]/32:53"),
        ];
        assert!(is_pending_target(&pending, &net("10.1.200.3", 8080, "tcp")));
        assert!(is_pending_target(&pending, &net("2001:db8::1", 53, "udp")));
        for other in [
            net("10.2.0.1", 8080, "tcp"),
            net("10.1.0.1", 8101, "tcp"),
            net("10.1.0.1", 8080, "udp"),
            net("2001:db9::1", 53, "udp"),
        ] {
            assert!(!is_pending_target(&pending, &other), "{other:?}");
        }
        let all = [grant("0.0.0.0/0:*")];
        assert!(is_pending_target(&all, &net("192.0.2.1", 1, "udp")));
        assert!(!is_pending_target(&[], &net("192.0.2.1", 1, "udp")));
        let exec = registry::GrantRecord {
            files: vec![registry::FileRecord {
                path: "/bin/x".into(),
                dev: 8,
                ino: 42,
                script: false,
                state: None,
                tree: false,
            }],
            ..grant("127.0.0.1:1")
        };
        let target = |ino| Target::Exec {
            path: "/bin/x".into(),
            dev: 8,
            ino,
        };
        assert!(is_pending_target(std::slice::from_ref(&exec), &target(42)));
        assert!(!is_pending_target(&[exec], &target(43)));
    }
}
