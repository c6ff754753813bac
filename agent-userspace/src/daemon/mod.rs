//! `leash daemon`: owns the kernel programs and the tasks, serves the API, writes the
//! audit log, and ends tasks when they expire, are ended, or their command exits.
//!
//! [`run`] is the whole daemon (`lifecycle`; `crate::run` hands it the API server);
//! [`Daemon`] is its state. Changing tasks and grants goes through the authorizing
//! paths (`policy`, `approval`); the other modules answer one question each:
//! `kernel_events` (what the kernel reports), `observe` (what the daemon reports),
//! `sweep` (what time ends), `registry` (the tasks and their kernel entries).

pub mod approval;
pub mod audit;
pub mod audit_file;
mod break_glass;
mod caller_root;
mod delegation;
pub mod event_sync;
pub mod fault;
mod file_denials;
mod kernel_events;
mod lifecycle;
pub mod lifetime;
mod metrics_http;
mod observe;
pub mod policy;
pub mod refusals;
pub mod registry;
mod reload;
mod responders;
pub mod scoped;
/// Public for the fuzz targets (`fuzz/`), which recover journals from arbitrary bytes.
pub mod store;
mod sweep;
pub mod task_roots;
pub mod token_check;
pub mod tokens;

use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;

use crate::{
    Enforcer, clock,
    config::Config,
    protocol::{self, AuditEvent, EndReason, TaskId},
};

pub use audit::AuditSink;

/// The verdict of a lifecycle record (`task_started`, `grant_added`, ...), which
/// decides nothing.
pub const LIFECYCLE_VERDICT: &str = "none";
pub use lifecycle::{run, stop_signal};
pub use registry::{Limits, RegistryError, Tasks, install};

/// Everything under the one lock: the kernel maps and the task registry change together.
pub struct Inner {
    pub enforcer: Enforcer,
    pub tasks: Tasks,
}

/// The daemon's shared state.
pub struct Daemon {
    inner: Mutex<Inner>,
    pub audit: AuditSink,
    pub limits: Limits,
    log_allowed_exec: bool,
    store: store::Store,
    pub recorded: crate::metrics::Recorded,
    /// The node policy and the caller authenticator.
    pub gate: policy::Gate,
    /// This daemon, for the tasks that watch commands (`lifetime`).
    me: std::sync::Weak<Daemon>,
    /// Resolve exec paths in mount namespaces owned by other user namespaces too.
    trust_userns_mounts: bool,
    /// The DNS responders, one per network namespace of attached processes.
    dns: responders::Responders,
    /// The HTTP listeners' admission and counters.
    pub listeners: Listeners,
    /// The keys and settings of task identity tokens.
    pub tokens: tokens::Issuer,
    /// Waits for the decision ring buffer to be drained.
    pub events_sync: event_sync::EventSync,
    /// Each task's root as its first process saw it, for refusals read late.
    roots: task_roots::TaskRoots,
}

/// The API socket's admission (by uid), and what the metrics listener refused.
pub struct Listeners {
    pub api: Arc<crate::http::Admission<u32>>,
    pub metrics: Arc<crate::http::Overload>,
}

impl Daemon {
    /// Adopts the state a previous daemon left (tasks in the state file whose kernel
    /// entries survived in the pinned maps), then starts from there.
    pub fn new(
        enforcer: Enforcer,
        config: &Config,
        audit: AuditSink,
        metrics: Arc<crate::http::Overload>,
    ) -> anyhow::Result<Arc<Self>> {
        let store = store::Store::new(config.state_dir.clone());
        let tasks = store.load()?;
        let gate = policy::Gate::new(config)?;
        let daemon = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            inner: Mutex::new(Inner { enforcer, tasks }),
            audit,
            limits: Limits {
                default_ttl: config.tasks.default_ttl,
                max_ttl: config.tasks.max_ttl,
                kill_on_end: config.tasks.kill_on_end,
                trust_domain: config.trust_domain.clone(),
                files: config.files.clone(),
                max_depth: config.tasks.max_delegation_depth,
                break_glass_ttl: config.tasks.break_glass_max_ttl,
            },
            log_allowed_exec: config.log_allowed.exec,
            store,
            recorded: crate::metrics::Recorded::default(),
            gate,
            trust_userns_mounts: config.policy.trust_userns_mounts,
            dns: responders::Responders::new(&config.dns),
            listeners: Listeners {
                api: crate::http::Admission::new(api_limits(config), Arc::default()),
                metrics,
            },
            tokens: tokens::Issuer::new(config),
            events_sync: event_sync::EventSync::default(),
            roots: task_roots::TaskRoots::default(),
        });
        daemon.adopt();
        daemon.dns_adopt();
        daemon.watch_adopted();
        if let Some(policy) = daemon.gate.current() {
            // On a thread of its own: Cedar (through `stacker`) cannot tell the main
            // thread's stack size in a static musl build and then refuses to evaluate
            // ("recursion limit reached"), which would revoke every adopted grant.
            std::thread::scope(|s| {
                if s.spawn(|| daemon.enforce_policy(&policy)).join().is_err() {
                    tracing::error!("the policy check of adopted tasks panicked");
                }
            });
        }
        Ok(daemon)
    }

    /// The lock; a panic while holding it cannot leave the maps half-written in a way
    /// that allows more (grants go in before the task entry), so poisoning is ignored.
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Persists one task (and the agent slots, which only grow).
    fn save(&self, inner: &Inner, id: u64) {
        let result = match inner.tasks.get(id) {
            Some(t) => self.store.save_task(t),
            None => self.store.remove_task(id),
        };
        if let Err(e) = result {
            tracing::error!(
                "cannot save the state of task {}: {e:#}",
                TaskId(id).to_string()
            );
        }
    }

    fn save_agents(&self, inner: &Inner) {
        if let Err(e) = self.store.save_agents(&inner.tasks.agents) {
            tracing::error!("cannot save the agents' state: {e:#}");
        }
    }

    fn adopt(&self) {
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        // Tagged processes may not signal or trace this daemon (guard.rs).
        if let Err(e) = enforcer.maps_mut().protect_only(std::process::id()) {
            tracing::error!("cannot protect the daemon from tagged processes: {e}");
        }
        tasks.set_installed(enforcer.maps().keys_by_task());
        let live: Vec<u64> = tasks
            .tasks
            .values()
            .filter(|t| t.state != protocol::TaskState::Ended)
            .map(|t| t.id)
            .collect();
        let mut adopted = 0;
        for id in live {
            if enforcer.maps().task(id).is_some() {
                match tasks.sync(enforcer.maps_mut(), id) {
                    Ok(()) => adopted += 1,
                    Err(e) => {
                        tracing::error!(task = %TaskId(id), "cannot re-apply grants: {e}");
                    }
                }
            } else {
                // The kernel lost it (no pinned maps: first start or reboot): nothing
                // enforces its grants, so it cannot go on.
                if let Err(e) = tasks.end(enforcer.maps_mut(), id, EndReason::Ended, &self.limits) {
                    tracing::error!(task = %TaskId(id), "cannot end a task the kernel lost: {e}");
                }
                tracing::warn!(task = %TaskId(id), "task not in the kernel's maps any more; ended");
            }
        }
        // Kernel tasks the state file does not know (a crash before it was saved): no
        // one can manage them, so their entries go; their processes stay denied. Grant
        // entries count too: a task's grants go in before its task entry, so a crash
        // in between leaves grants of a task the task map never had.
        let mut kernel_ids = enforcer.maps().task_ids();
        kernel_ids.extend(enforcer.maps().keys_by_task().into_keys());
        kernel_ids.sort_unstable();
        kernel_ids.dedup();
        // Task 0 is no task: its entries are grants to every task (the API socket's).
        kernel_ids.retain(|&id| id != 0);
        for id in kernel_ids {
            if tasks
                .get(id)
                .is_none_or(|t| t.state == protocol::TaskState::Ended)
            {
                if let Err(e) = enforcer.maps_mut().remove_task(id) {
                    tracing::error!(task = %TaskId(id), "cannot remove a kernel task without a record: {e}");
                    continue;
                }
                tracing::warn!(task = %TaskId(id), "removed a kernel task without a record");
            }
        }
        // A child whose parent ended while no daemon ran ends too.
        for id in tasks.orphans() {
            if let Err(e) = tasks.end(
                enforcer.maps_mut(),
                id,
                EndReason::ParentEnded,
                &self.limits,
            ) {
                tracing::error!(task = %TaskId(id), "cannot end a child of an ended task: {e}");
            }
        }
        for t in tasks.tasks.values().filter(|t| !t.chain.is_empty()) {
            self.audit.set_chain(&t.id_string(), t.chain_strings());
        }
        if adopted > 0 {
            tracing::info!(adopted, "adopted running tasks");
        }
        let ids: Vec<u64> = inner.tasks.tasks.keys().copied().collect();
        for id in ids {
            self.save(&inner, id);
        }
    }

    fn lifecycle_event(
        &self,
        task: &registry::TaskRecord,
        kind: &str,
        target: serde_json::Value,
        reason: &str,
    ) {
        self.lifecycle_event_by(task, kind, target, reason, None);
    }

    /// [`Self::lifecycle_event`] naming the process that asked for it (`by`, the API
    /// caller) rather than the daemon, which only carried it out.
    fn lifecycle_event_by(
        &self,
        task: &registry::TaskRecord,
        kind: &str,
        target: serde_json::Value,
        reason: &str,
        by: Option<u32>,
    ) {
        let (pid, comm) = match by {
            Some(pid) => (
                pid,
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .map(|c| c.trim_end().to_owned())
                    .unwrap_or_default(),
            ),
            None => (std::process::id(), "leash".into()),
        };
        self.audit.emit(AuditEvent {
            ts: registry::wall_of_boot_ns(clock::boottime_ns()),
            task: task.id_string(),
            agent: task.agent.clone(),
            spiffe_id: task.spiffe_id(&self.limits.trust_domain),
            intent: task.intent.clone(),
            pid: Some(pid),
            comm,
            kind: kind.into(),
            // A change of the task, not a decision: no verdict.
            verdict: LIFECYCLE_VERDICT.into(),
            target,
            reason: reason.into(),
            chain: Vec::new(),
        });
    }

    /// Creates a task as asked, without checking who asks: callers go through
    /// `create_task_as` (policy.rs).
    pub(super) fn create_task(
        &self,
        req: &protocol::CreateTask,
        caller: Option<u32>,
        origin: registry::Origin,
    ) -> Result<protocol::Task, RegistryError> {
        let started = std::time::Instant::now();
        let root = self.caller_root(
            caller,
            caller_root::names_paths(!req.grants.exec.is_empty(), req.grants.connect.iter()),
        )?;
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let agents = tasks.agents.len();
        let parent = origin.delegation.map(|d| d.parent);
        let created = tasks.create(
            enforcer.maps_mut(),
            req,
            &self.limits,
            &root.resolve_in(),
            origin,
        );
        // Slots are only ever added (a refused task may have added one too), so an
        // agent seen before changes nothing.
        if inner.tasks.agents.len() != agents {
            self.save_agents(&inner);
        }
        let id = created?;
        self.recorded
            .grant_apply
            .observe(started.elapsed().as_secs_f64());
        let rec = inner
            .tasks
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))?;
        let pruned = inner.tasks.prune_ended();
        self.save(&inner, id);
        for old in pruned {
            self.save(&inner, old);
            self.audit.forget_chain(&TaskId(old).to_string());
        }
        drop(inner);
        let mut target = json!({ "grants": req.grants, "mode": rec.mode });
        if let Some(p) = parent {
            target["parent"] = TaskId(p).to_string().into();
            self.audit.set_chain(&rec.id_string(), rec.chain_strings());
        }
        self.lifecycle_event_by(&rec, "task_started", target, "created", caller);
        Ok(rec.view(&self.limits.trust_domain))
    }

    pub fn end_task(&self, id: u64, reason: EndReason) -> Result<protocol::Task, RegistryError> {
        self.end_task_noting(id, reason, serde_json::Map::new())
    }

    /// Ends a task; `note` goes into the `task_ended` record's target (e.g. the rule).
    fn end_task_noting(
        &self,
        id: u64,
        reason: EndReason,
        note: serde_json::Map<String, serde_json::Value>,
    ) -> Result<protocol::Task, RegistryError> {
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let was_live = tasks
            .get(id)
            .is_some_and(|t| t.state != protocol::TaskState::Ended);
        let killed = tasks.end(enforcer.maps_mut(), id, reason, &self.limits)?;
        let rec = tasks
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))?;
        self.save(&inner, id);
        let agent_label = inner.tasks.agent_label(&rec.agent);
        drop(inner);
        if was_live {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.recorded
                .tasks_ended
                .get_or_create(&crate::metrics::EndedLabels {
                    agent: agent_label,
                    reason: reason.clone(),
                })
                .inc();
            let mut target = json!({ "killed_pids": killed });
            if let Some(t) = target.as_object_mut() {
                t.extend(note);
            }
            self.lifecycle_event(&rec, "task_ended", target, &reason);
            // The private tmp directories `leash run` made for it.
            crate::files::remove_tmpdirs(&rec.id_string());
            self.end_children(id);
        }
        Ok(rec.view(&self.limits.trust_domain))
    }

    /// Adds a grant as asked, without checking who asks: callers go through
    /// `add_grant_as` (policy.rs) or an approval (approval.rs).
    pub(super) fn add_grant(
        &self,
        id: u64,
        req: &protocol::AddGrant,
        caller: Option<u32>,
    ) -> Result<String, RegistryError> {
        let started = std::time::Instant::now();
        let root = self.caller_root(
            caller,
            caller_root::names_paths(req.exec.is_some(), req.connect.iter()),
        )?;
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let gid = tasks.add_grant(
            enforcer.maps_mut(),
            id,
            req,
            &self.limits,
            &root.resolve_in(),
            0,
        )?;
        fault::after_grant_map_write(id, &gid);
        self.recorded
            .grant_apply
            .observe(started.elapsed().as_secs_f64());
        let rec = tasks.get(id).cloned();
        self.save(&inner, id);
        drop(inner);
        if let Some(rec) = rec
            && let Some(g) = rec.grants.iter().find(|g| g.id == gid)
        {
            self.lifecycle_event(&rec, "grant_added", json!({ "grant_id": gid, "kind": g.kind, "spec": g.spec, "expires_at": g.expires_at }), "requested");
        }
        Ok(gid)
    }

    pub fn revoke_grant(&self, id: u64, gid: &str, reason: &str) -> Result<(), RegistryError> {
        self.remove_grant(id, gid, "grant_revoked", reason, None)
    }

    /// Removes a grant and records it as `kind`, naming who decided when `by` is given.
    fn remove_grant(
        &self,
        id: u64,
        gid: &str,
        kind: &str,
        reason: &str,
        by: Option<&str>,
    ) -> Result<(), RegistryError> {
        let note = by.map_or_else(|| json!({}), |by| json!({ "by": by }));
        self.remove_grant_noting(id, gid, kind, reason, note)
    }

    /// Removes a grant, records it as `kind` with `note` in the target, then revokes
    /// the grants derived from it in the task's children.
    fn remove_grant_noting(
        &self,
        id: u64,
        gid: &str,
        kind: &str,
        reason: &str,
        note: serde_json::Value,
    ) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let g = tasks.revoke_grant(enforcer.maps_mut(), id, gid)?;
        let rec = tasks.get(id).cloned();
        self.save(&inner, id);
        drop(inner);
        if let Some(rec) = rec {
            let mut target = json!({ "grant_id": g.id, "kind": g.kind, "spec": g.spec });
            if let (Some(t), serde_json::Value::Object(extra)) = (target.as_object_mut(), note) {
                t.extend(extra);
            }
            self.lifecycle_event(&rec, kind, target, reason);
        }
        self.revoke_derived(id, gid);
        Ok(())
    }

    /// Tags `pid` into the task, without checking who asks: callers go through
    /// `attach_as` (policy.rs).
    pub(super) fn attach(&self, id: u64, pid: u32) -> Result<(), RegistryError> {
        // DNS first: from its tag on, the process's DNS goes to the responder (without
        // one it is denied, never let through).
        if let Err(e) = self.dns_attach(id, pid) {
            tracing::error!(task = %TaskId(id), "no DNS responder for the task, its DNS is denied: {e}");
        }
        let mut inner = self.lock();
        inner.tasks.check_attachable(id)?;
        // A `command_exits` task: this process is its command, watched through a pidfd.
        let command = lifetime::command_for(&inner, id, pid)?;
        let Inner { enforcer, tasks } = &mut *inner;
        // Into its leash cgroup first (attach scope `task`), so it is never tagged
        // outside the network hooks' reach.
        enforcer.enter_scope(pid).map_err(RegistryError::Scope)?;
        tasks.attach(enforcer.maps_mut(), id, pid)?;
        self.roots.note(id, pid);
        let fd = command.map(|(rec, fd)| {
            if let Some(t) = tasks.tasks.get_mut(&id) {
                t.command = Some(rec);
            }
            fd
        });
        self.save(&inner, id);
        drop(inner);
        if let Some(fd) = fd {
            self.watch_command(id, fd);
        }
        Ok(())
    }
}

/// Stops enforcement for good (`leash daemon --cleanup`): detaches every pinned
/// program, removes the pinned maps, the state files and a stale API socket; returns
/// the pinned objects removed.
pub fn cleanup(config: &Config) -> Result<Vec<std::path::PathBuf>, crate::LoadError> {
    let removed = crate::kernel::cleanup(&config.pin_dir)?;
    store::Store::new(config.state_dir.clone()).clear();
    // A stale socket, if any; none is fine.
    let _ = std::fs::remove_file(&config.socket.path);
    Ok(removed)
}

/// The API socket's limits from `connections:`.
#[must_use]
pub fn api_limits(config: &Config) -> crate::http::Limits {
    let c = &config.connections;
    listener_limits(config, c.api_max, c.api_per_uid)
}

/// The metrics listener's limits from `connections:`.
#[must_use]
pub fn metrics_limits(config: &Config) -> crate::http::Limits {
    let c = &config.connections;
    listener_limits(config, c.metrics_max, c.metrics_per_ip)
}

/// One listener's limits: its own counts, the timeouts both share.
const fn listener_limits(config: &Config, max: u32, per_peer: u32) -> crate::http::Limits {
    crate::http::Limits {
        max,
        per_peer,
        header_timeout: config.connections.header_timeout,
        request_timeout: config.connections.request_timeout,
    }
}
