//! `leash daemon`: owns the kernel programs and the tasks, serves the API, writes the
//! audit log, and ends tasks when they expire, are ended, or their command exits.

pub mod approval;
pub mod audit;
pub mod audit_file;
mod caller_root;
pub mod lifetime;
pub mod policy;
pub mod registry;
mod reload;
pub mod scoped;
mod store;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::json;

use crate::{
    Enforcer, clock,
    config::Config,
    kernel::events::{Decision, Target},
    protocol::{self, AuditEvent, EndReason},
};

pub use audit::AuditSink;
pub use registry::{Limits, RegistryError, Tasks};

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
    pub guard: policy::Guard,
    /// This daemon, for the tasks that watch commands (`lifetime`).
    me: std::sync::Weak<Daemon>,
    /// Resolve exec paths in mount namespaces owned by other user namespaces too.
    trust_userns_mounts: bool,
}

impl Daemon {
    /// Adopts the state a previous daemon left (tasks in the state file whose kernel
    /// entries survived in the pinned maps), then starts from there.
    pub fn new(enforcer: Enforcer, config: &Config, audit: AuditSink) -> anyhow::Result<Arc<Self>> {
        let store = store::Store::new(config.state_dir.clone());
        let tasks = store.load()?;
        let guard = policy::Guard::new(config)?;
        let mut enforcer = enforcer;
        // Tagged processes reach unix sockets only by grant; the API socket is open to
        // them all, so that they hear a clear 403 from the API instead of being killed.
        if let Err(e) = enforcer
            .maps_mut()
            .grant_unix_everywhere(&config.socket.path)
        {
            tracing::error!("cannot open the API socket to tagged processes: {e}");
        }
        let daemon = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            inner: Mutex::new(Inner { enforcer, tasks }),
            audit,
            limits: Limits {
                default_ttl: config.tasks.default_ttl,
                max_ttl: config.tasks.max_ttl,
                kill_on_end: config.tasks.kill_on_end,
                trust_domain: config.trust_domain.clone(),
            },
            log_allowed_exec: config.log_allowed.exec,
            store,
            recorded: crate::metrics::Recorded::default(),
            guard,
            trust_userns_mounts: config.policy.trust_userns_mounts,
        });
        daemon.adopt();
        daemon.watch_adopted();
        if let Some(policy) = daemon.guard.current() {
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
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
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
                registry::task_id_string(id)
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
                        tracing::error!(task = %registry::task_id_string(id), "cannot re-apply grants: {e}");
                    }
                }
            } else {
                // The kernel lost it (no pinned maps: first start or reboot): nothing
                // enforces its grants, so it cannot go on.
                let _ = tasks.end(enforcer.maps_mut(), id, EndReason::Ended, &self.limits);
                tracing::warn!(task = %registry::task_id_string(id), "task not in the kernel's maps any more; ended");
            }
        }
        // Kernel tasks the state file does not know (a crash before it was saved): no
        // one can manage them, so their entries go; their processes stay denied.
        for id in enforcer.maps().task_ids() {
            if tasks
                .get(id)
                .is_none_or(|t| t.state == protocol::TaskState::Ended)
            {
                let _ = enforcer.maps_mut().remove_task(id);
                tracing::warn!(task = %registry::task_id_string(id), "removed a kernel task without a record");
            }
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
        self.audit.emit(AuditEvent {
            ts: registry::wall_of_boot_ns(clock::boottime_ns()),
            task: task.id_string(),
            agent: task.agent.clone(),
            spiffe_id: task.spiffe_id(&self.limits.trust_domain),
            intent: task.intent.clone(),
            pid: std::process::id(),
            comm: "leash".into(),
            kind: kind.into(),
            verdict: "allowed".into(),
            target,
            reason: reason.into(),
        });
    }

    pub fn create_task(
        &self,
        req: &protocol::CreateTask,
        caller: Option<u32>,
    ) -> Result<protocol::Task, RegistryError> {
        let started = std::time::Instant::now();
        let root = self.caller_root(caller, !req.grants.exec.is_empty())?;
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let agents = tasks.agents.len();
        let created = tasks.create(enforcer.maps_mut(), req, &self.limits, &root);
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
            .ok_or_else(|| RegistryError::NoTask(registry::task_id_string(id)))?;
        let pruned = inner.tasks.prune_ended();
        self.save(&inner, id);
        for old in pruned {
            self.save(&inner, old);
        }
        drop(inner);
        self.lifecycle_event(
            &rec,
            "task_started",
            json!({ "grants": req.grants, "mode": rec.mode }),
            "created",
        );
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
            .ok_or_else(|| RegistryError::NoTask(registry::task_id_string(id)))?;
        self.save(&inner, id);
        drop(inner);
        if was_live {
            let reason = serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.recorded
                .tasks_ended
                .get_or_create(&crate::metrics::EndedLabels {
                    agent: rec.agent.clone(),
                    reason: reason.clone(),
                })
                .inc();
            let mut target = json!({ "killed_pids": killed });
            if let Some(t) = target.as_object_mut() {
                t.extend(note);
            }
            self.lifecycle_event(&rec, "task_ended", target, &reason);
        }
        Ok(rec.view(&self.limits.trust_domain))
    }

    pub fn add_grant(
        &self,
        id: u64,
        req: &protocol::AddGrant,
        caller: Option<u32>,
    ) -> Result<String, RegistryError> {
        let started = std::time::Instant::now();
        let root = self.caller_root(caller, req.exec.is_some())?;
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let gid = tasks.add_grant(enforcer.maps_mut(), id, req, &self.limits, &root, 0)?;
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
        let mut inner = self.lock();
        let Inner { enforcer, tasks } = &mut *inner;
        let g = tasks.revoke_grant(enforcer.maps_mut(), id, gid)?;
        let rec = tasks.get(id).cloned();
        self.save(&inner, id);
        drop(inner);
        if let Some(rec) = rec {
            let mut target = json!({ "grant_id": g.id, "kind": g.kind, "spec": g.spec });
            if let Some(by) = by {
                target["by"] = by.into();
            }
            self.lifecycle_event(&rec, kind, target, reason);
        }
        Ok(())
    }

    pub fn attach(&self, id: u64, pid: u32) -> Result<(), RegistryError> {
        let mut inner = self.lock();
        inner.tasks.check_attachable(id)?;
        // A `command_exits` task: this process is its command, watched through a pidfd.
        let command = lifetime::command_for(&inner, id, pid)?;
        let Inner { enforcer, tasks } = &mut *inner;
        // Into its leash cgroup first (attach scope `task`), so it is never tagged
        // outside the network hooks' reach.
        enforcer
            .enter_scope(pid)
            .map_err(|e| RegistryError::Scope(e.to_string()))?;
        tasks.attach(enforcer.maps_mut(), id, pid)?;
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

    pub fn task(&self, id: u64) -> Result<protocol::Task, RegistryError> {
        self.lock()
            .tasks
            .get(id)
            .map(|t| t.view(&self.limits.trust_domain))
            .ok_or_else(|| RegistryError::NoTask(registry::task_id_string(id)))
    }

    pub fn list(&self) -> Vec<protocol::Task> {
        self.lock()
            .tasks
            .tasks
            .values()
            .map(|t| t.view(&self.limits.trust_domain))
            .collect()
    }

    pub fn status(&self) -> protocol::Status {
        let inner = self.lock();
        let e = &inner.enforcer;
        let stat = |s| e.maps().stat(s).unwrap_or(0);
        protocol::Status {
            version: env!("CARGO_PKG_VERSION").into(),
            backend: e.backend().to_string(),
            backend_reason: e.backend_reason().into(),
            cgroup: e.cgroup().display().to_string(),
            // Every program of the object, and whether this backend attached it.
            programs: crate::kernel::all_programs()
                .iter()
                .map(|p| protocol::ProgramStatus {
                    name: (*p).into(),
                    attached: e.attached().contains(p),
                })
                .collect(),
            maps: e
                .maps()
                .usage()
                .into_iter()
                .map(|(name, entries, capacity)| protocol::MapStatus {
                    name: name.into(),
                    entries,
                    capacity,
                })
                .collect(),
            tasks_active: inner.tasks.active_count(),
            events_lost: stat(agent_common::maps::Stat::EventsLost),
            tag_failures: stat(agent_common::maps::Stat::TagFailed),
            bpf_stats_enabled: crate::metrics::bpf_stats_enabled(),
            guarantees: e.guarantees().iter().map(|g| (*g).to_owned()).collect(),
            policy: self.guard.describe(),
            ia32_emulation: crate::kernel::ia32::detect().to_string(),
            scope: None,
        }
    }

    /// Whether the kernel maps answer (for `/readyz`).
    pub fn maps_reachable(&self) -> bool {
        self.lock()
            .enforcer
            .maps()
            .stat(agent_common::maps::Stat::EventsLost)
            .is_ok()
    }

    /// One scrape's worth of OpenMetrics text.
    pub fn metrics_text(&self) -> String {
        let snap = {
            let inner = self.lock();
            let maps = inner.enforcer.maps();
            let mut decisions = vec![("unknown".to_owned(), maps.decisions(0).unwrap_or_default())];
            for (agent, &slot) in &inner.tasks.agents {
                decisions.push((agent.clone(), maps.decisions(slot).unwrap_or_default()));
            }
            let mut active: BTreeMap<String, i64> =
                inner.tasks.agents.keys().map(|a| (a.clone(), 0)).collect();
            let (mut exec, mut connect) = (0, 0);
            for t in inner
                .tasks
                .tasks
                .values()
                .filter(|t| t.state != protocol::TaskState::Ended)
            {
                *active.entry(t.agent.clone()).or_default() += 1;
                for g in &t.grants {
                    match g.kind {
                        protocol::GrantKind::Exec => exec += 1,
                        protocol::GrantKind::Connect => connect += 1,
                    }
                }
            }
            let stat = |s| maps.stat(s).unwrap_or(0);
            crate::metrics::Snapshot {
                decisions,
                tasks_active: active.into_iter().collect(),
                grants_active: [("exec", exec), ("connect", connect)],
                maps: kernel_usage(maps, &inner.tasks),
                events_lost: stat(agent_common::maps::Stat::EventsLost),
                tag_failures: stat(agent_common::maps::Stat::TagFailed),
                killed: stat(agent_common::maps::Stat::Killed),
                escapes: stat(agent_common::maps::Stat::Escaped),
                programs: inner.enforcer.program_stats(),
            }
        };
        crate::metrics::render(&snap, &self.recorded)
    }

    /// Turns one kernel record into audit events and lifecycle actions.
    pub fn on_kernel_events(&self, batch: Vec<Decision>) {
        let mut exits = Vec::new();
        // Task metadata looked up once per task per batch, under one lock.
        let mut meta: HashMap<u64, TaskMeta> = HashMap::new();
        {
            let inner = self.lock();
            for d in &batch {
                meta.entry(d.task).or_insert_with(|| {
                    inner.tasks.get(d.task).map_or_else(
                        || ("unknown".to_owned(), String::new(), None, Vec::new()),
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
                            )
                        },
                    )
                });
            }
        }
        let mut events = Vec::with_capacity(batch.len());
        for d in batch {
            if d.kind == "exit" {
                exits.push(d.task);
                continue;
            }
            if d.kind == "exec" && d.verdict == "allowed" && !self.log_allowed_exec {
                continue;
            }
            let (agent, spiffe_id, intent, pending) =
                meta.get(&d.task).cloned().unwrap_or_default();
            let reason = if d.verdict == "denied" && policy::is_pending_target(&pending, &d.target)
            {
                "pending_approval"
            } else {
                d.reason
            };
            let target = match &d.target {
                Target::Exec { path, dev, ino } => json!({ "path": path, "dev": dev, "ino": ino }),
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
                Target::Process {} => json!({}),
            };
            events.push(AuditEvent {
                ts: registry::wall_of_boot_ns(d.ts_ns),
                task: registry::task_id_string(d.task),
                agent,
                spiffe_id,
                intent,
                pid: d.pid,
                comm: d.comm,
                kind: d.kind.into(),
                verdict: d.verdict.into(),
                target,
                reason: reason.into(),
            });
        }
        self.audit.emit_all(events);
        if !exits.is_empty() {
            self.end_exited(&exits);
        }
    }

    /// Ends active tasks among `candidates` that have no process left.
    pub fn end_exited(&self, candidates: &[u64]) {
        let done = {
            let inner = self.lock();
            inner.tasks.exited(inner.enforcer.maps(), candidates)
        };
        for id in done {
            if let Err(e) = self.end_task(id, EndReason::Exited) {
                tracing::error!(task = %registry::task_id_string(id), "cannot end an exited task: {e}");
            }
        }
    }

    /// Ends expired tasks and revokes expired grants. The kernel already denies them at
    /// their expiry; this removes their entries and records it.
    pub fn sweep(&self, all_exits: bool) {
        let (tasks, grants, active) = {
            let inner = self.lock();
            let (t, g) = inner.tasks.expired(clock::boottime_ns());
            let active: Vec<u64> = if all_exits {
                inner
                    .tasks
                    .tasks
                    .values()
                    .filter(|t| t.state == protocol::TaskState::Active)
                    .map(|t| t.id)
                    .collect()
            } else {
                Vec::new()
            };
            (t, g, active)
        };
        for id in tasks {
            let _ = self.end_task(id, EndReason::Expired);
        }
        for (id, gid) in grants {
            let _ = self.revoke_grant(id, &gid, "expired");
        }
        self.sweep_pending(clock::boottime_ns());
        if !active.is_empty() {
            // Catches exits whose event was lost to a full ring buffer.
            self.end_exited(&active);
        }
        if all_exits {
            for id in self.commands_gone() {
                self.command_exited(id);
            }
        }
        if all_exits {
            self.restore_pins();
        }
        self.lock().enforcer.prune_scopes();
    }

    /// Pins again what someone removed from the pin directory while this daemon runs
    /// (its own references keep enforcement in place meanwhile), so the next daemon
    /// adopts the same maps and links.
    pub fn restore_pins(&self) {
        for path in self.lock().enforcer.restore_pins() {
            tracing::warn!(path = %path.display(), "a pin was removed; pinned again");
        }
    }
}

impl Daemon {
    /// Re-resolves the DNS names of connect grants. Resolution runs without the lock;
    /// a name that fails to resolve keeps its last addresses (logged), so a resolver
    /// hiccup does not cut a task off.
    pub fn refresh_dns(&self) {
        let named = self.lock().tasks.named_grants();
        for (id, gid, spec) in named {
            match registry::resolve(
                protocol::GrantKind::Connect,
                &spec,
                gid.clone(),
                0,
                std::path::Path::new("/"),
            ) {
                Ok(fresh) => {
                    let mut inner = self.lock();
                    let Inner { enforcer, tasks } = &mut *inner;
                    match tasks.update_named(enforcer.maps_mut(), id, &gid, fresh) {
                        Ok(true) => {
                            tracing::info!(task = %registry::task_id_string(id), grant = gid, spec, "DNS grant re-resolved to new addresses");
                            self.save(&inner, id);
                        }
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(task = %registry::task_id_string(id), grant = gid, "cannot apply re-resolved addresses: {e}");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %registry::task_id_string(id), grant = gid, "re-resolving {spec} failed, keeping the last addresses: {e}");
                }
            }
        }
    }
}

/// A task's agent, SPIFFE ID, intent and pending grants, for its kernel events.
type TaskMeta = (String, String, Option<String>, Vec<registry::GrantRecord>);

/// How often DNS names of connect grants are resolved again. The system resolver does
/// not expose record TTLs, so this is a fixed period shorter than common TTLs.
pub const DNS_REFRESH: Duration = Duration::from_secs(30);

/// Runs the periodic sweep until `shutdown` fires.
pub async fn sweeper(daemon: Arc<Daemon>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        n += 1;
        let d = Arc::clone(&daemon);
        // Every 2 s, also look for tasks whose exit event was lost.
        let all = n.is_multiple_of(8);
        let dns = n.is_multiple_of(DNS_REFRESH.as_millis() as u64 / 250);
        let _ = tokio::task::spawn_blocking(move || {
            d.sweep(all);
            if dns {
                d.refresh_dns();
            }
        })
        .await;
    }
}

/// Removes the daemon's state files (`leash daemon --cleanup`).
pub fn clear_state(config: &Config) {
    store::Store::new(config.state_dir.clone()).clear();
}

/// Entries and capacity of each map for a scrape. Grant and task entries come from the
/// registry's records (walking the maps cost one syscall per entry: 3.6 ms with 1000
/// tasks); only the process map, which the kernel fills on fork, and the small unix
/// map, which also holds the API socket's entry, are walked.
fn kernel_usage(maps: &crate::kernel::maps::Maps, tasks: &Tasks) -> Vec<(&'static str, u64, u64)> {
    let counted = tasks.kernel_entries();
    maps.capacities()
        .into_iter()
        .map(|(name, cap)| {
            let n = counted.iter().find(|(c, _)| *c == name).map_or_else(
                || match name {
                    agent_common::maps::UNIX_GRANTS => maps.unix_len(),
                    _ => maps.procs_len(),
                },
                |(_, n)| *n,
            );
            (name, n, cap)
        })
        .collect()
}
