//! The daemon's tasks: their metadata, grants and lifecycle, and the kernel entries
//! that enforce them. Every mutation reaches the kernel's maps before it returns, and
//! is persisted to the state file so a restarted daemon can adopt it.

mod delegation;
mod learned;
mod records;
mod resolve;
mod sync;
mod unix_sockets;

use std::{collections::BTreeMap, collections::BTreeSet, time::Duration};

use serde::{Deserialize, Serialize};

use self::records::now_rfc3339;
use self::sync::uninstall;
pub use self::{
    delegation::{Delegation, EXCEEDS_PARENT, Origin},
    records::{
        FileRecord, GrantRecord, Installed, LearnedRecord, NetRecord, TaskRecord, unmapped,
        wall_of_boot_ns,
    },
    resolve::{ResolveIn, resolve},
    unix_sockets::{Unresolved, root_in},
};
use crate::{
    LoadError, clock,
    grants::GrantError,
    kernel::maps::{Maps, MapsError},
    protocol::{self, BadTaskId, EndReason, EndWhen, GrantKind, TaskId, TaskState},
};

/// Why a request was refused; the API maps each to a status and code.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("no task {0}; list tasks with `leash task list`")]
    NoTask(String),
    #[error("task {task} has no grant {grant}; see `leash task show {task}`")]
    NoGrant { task: String, grant: String },
    #[error("task {0} has ended; create a new task")]
    Ended(String),
    /// The request cannot be carried out on this task as it is.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Forbidden(String),
    /// Forbidden, with a code of its own for callers to act on.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    /// A kernel map (or the prefix-grant slots) has no room left.
    #[error(transparent)]
    MapFull(MapsError),
    /// Any other failure to change the kernel's maps.
    #[error(transparent)]
    Kernel(MapsError),
    #[error("cannot move the process into its leash cgroup: {0}")]
    Scope(#[source] LoadError),
}

impl From<MapsError> for RegistryError {
    fn from(e: MapsError) -> Self {
        match e {
            MapsError::Full { .. } => Self::MapFull(e),
            e => Self::Kernel(e),
        }
    }
}

/// Text that names no task is a task that is not there.
impl From<BadTaskId> for RegistryError {
    fn from(e: BadTaskId) -> Self {
        Self::NoTask(e.0)
    }
}

/// Limits from the config.
#[derive(Clone, Debug)]
pub struct Limits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub kill_on_end: bool,
    pub trust_domain: String,
    /// Base sets of the file rules (`files:`).
    pub files: crate::config::FilesConfig,
    /// How deep delegated tasks may go (`tasks.max_delegation_depth`; 0: no delegation).
    pub max_depth: u32,
    /// Longest TTL of a break-glass task (`tasks.break_glass_max_ttl`).
    pub break_glass_ttl: Duration,
}

/// Effective expiry of a grant under a task: the earlier non-zero one.
fn min_expiry(a: u64, b: u64) -> u64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// Tasks, agents and the kernel maps they are enforced through.
#[derive(Default, Serialize, Deserialize)]
pub struct Tasks {
    pub tasks: BTreeMap<u64, TaskRecord>,
    /// Agent name → decision counter slot (1-based; 0 is "unknown task").
    pub agents: BTreeMap<String, u32>,
    /// DNS slot → the task holding it, so the responder finds a query's task without a
    /// scan (`learned.rs`; rebuilt by [`Tasks::index_dns_slots`] after loading).
    #[serde(skip)]
    dns_slots: std::collections::HashMap<u32, u64>,
}

/// Ended tasks kept for `leash task list/show`.
const ENDED_KEPT: usize = 1000;

/// Agents with a decision-counter row of their own (rows 1 ..= this); every later agent
/// counts into the last row, reported as agent [`OTHER_AGENTS`], so that per-agent
/// metrics stay bounded whatever names callers send.
pub const AGENT_ROWS: u32 = leash_common::event::COUNTER_SLOTS - 2;
/// The agent label of the agents beyond [`AGENT_ROWS`].
pub const OTHER_AGENTS: &str = "_other";
const OTHER_ROW: u32 = AGENT_ROWS + 1;

impl Tasks {
    fn slot_for(&mut self, agent: &str) -> u32 {
        if let Some(&s) = self.agents.get(agent) {
            return s;
        }
        if self.agents.len() >= AGENT_ROWS as usize {
            return OTHER_ROW;
        }
        let slot = self.agents.len() as u32 + 1;
        self.agents.insert(agent.to_owned(), slot);
        slot
    }

    /// The agent label of per-agent metrics: the name when it has a row of its own,
    /// else [`OTHER_AGENTS`].
    #[must_use]
    pub fn agent_label(&self, agent: &str) -> String {
        if self.agents.contains_key(agent) {
            agent.to_owned()
        } else {
            OTHER_AGENTS.to_owned()
        }
    }

    /// (label, counter row) of every per-agent row in use, the shared one included
    /// once some agent counts into it.
    #[must_use]
    pub fn agent_rows(&self) -> Vec<(String, u32)> {
        let mut rows: Vec<(String, u32)> =
            self.agents.iter().map(|(a, &s)| (a.clone(), s)).collect();
        if self.agents.len() >= AGENT_ROWS as usize {
            rows.push((OTHER_AGENTS.to_owned(), OTHER_ROW));
        }
        rows
    }

    #[must_use]
    pub fn get(&self, id: u64) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    fn get_mut(&mut self, id: u64) -> Result<&mut TaskRecord, RegistryError> {
        self.tasks
            .get_mut(&id)
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))
    }

    /// Validates and creates a task with its grants in the kernel.
    /// `root` is where exec paths are looked up: the caller's root (`/proc/<pid>/root`),
    /// so a path means the file the caller's processes will run; `unix:` path grants
    /// hold in the caller's mount namespace and root only. A child of `parent`
    /// (delegation) holds at most what the parent holds, for no longer.
    pub fn create(
        &mut self,
        maps: &mut Maps,
        req: &protocol::CreateTask,
        limits: &Limits,
        root: &ResolveIn<'_>,
        origin: Origin,
    ) -> Result<u64, RegistryError> {
        validate_agent(&req.agent)?;
        if let Some(intent) = &req.intent
            && intent.len() > 4096
        {
            return Err(RegistryError::BadRequest(
                "intent is longer than 4096 bytes; shorten it".into(),
            ));
        }
        let ttl = match req.ttl_seconds {
            Some(0) => {
                return Err(RegistryError::BadRequest(
                    "ttl_seconds must be at least 1 (omit it for the default)".into(),
                ));
            }
            Some(s) => Duration::from_secs(s),
            None => limits.default_ttl,
        };
        if ttl > limits.max_ttl {
            return Err(RegistryError::BadRequest(format!(
                "ttl_seconds {} exceeds the maximum of {} (tasks.max_ttl in the config)",
                ttl.as_secs(),
                limits.max_ttl.as_secs()
            )));
        }
        let mut expires_ns = clock::expiry_after(Some(ttl));
        let files = crate::files::rules(
            req.file_mode.unwrap_or_default(),
            &req.grants.files,
            &limits.files,
        )?;
        // Resolve every grant before anything reaches the kernel: one bad grant, no task.
        let mut grants = resolve_all(&req.grants, root)?;
        let mut chain = Vec::new();
        if let Some(Delegation {
            parent: p,
            ttl_asked,
        }) = origin.delegation
        {
            let parent = self.delegator(p, limits.max_depth)?;
            expires_ns = delegation::bound_expiry(parent, ttl_asked, expires_ns)?;
            delegation::check_mode(parent, req.mode.unwrap_or_default())?;
            delegation::check_files(parent, &files)?;
            for g in &mut grants {
                delegation::attenuate(parent, g)?;
            }
            chain.clone_from(&parent.chain);
            chain.push(p);
        }
        let id = loop {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b)
                .map_err(|e| RegistryError::BadRequest(format!("no randomness: {e}")))?;
            let id = u64::from_ne_bytes(b);
            if id != 0 && !self.tasks.contains_key(&id) {
                break id;
            }
        };
        let counter_slot = self.slot_for(&req.agent);
        let mut rec = TaskRecord::new(id, req, grants, expires_ns, counter_slot, files);
        rec.chain = chain;
        rec.break_glass = origin.break_glass;
        self.insert_synced(maps, rec)?;
        Ok(id)
    }

    /// Records a new task and puts it in the kernel; on failure neither keeps it.
    fn insert_synced(&mut self, maps: &mut Maps, rec: TaskRecord) -> Result<(), RegistryError> {
        let id = rec.id;
        self.tasks.insert(id, rec);
        if let Err(e) = self.sync(maps, id) {
            self.tasks.remove(&id);
            // Nothing half-installed stays behind; the sync error is the one to report.
            if let Err(cleanup) = maps.remove_task(id) {
                tracing::warn!(task = %TaskId(id), "cannot remove a task that failed to install: {cleanup}");
            }
            return Err(e);
        }
        Ok(())
    }

    /// Adds one grant; it is in the kernel when this returns. With `pending_ns` != 0
    /// the grant is pending approval until then: recorded, but kept out of the kernel.
    pub fn add_grant(
        &mut self,
        maps: &mut Maps,
        id: u64,
        req: &protocol::AddGrant,
        limits: &Limits,
        root: &ResolveIn<'_>,
        pending_ns: u64,
    ) -> Result<String, RegistryError> {
        if let Some(spec) = &req.file {
            crate::files::parse_grant(spec)?;
            return Err(RegistryError::Conflict(format!(
                "file grant {spec:?} cannot be added to a running task: its processes started by leash run hold a Landlock domain, which can only ever be narrowed, never widened; create a new task with the grant (--allow-read / --allow-write)"
            )));
        }
        let (kind, spec) = match (&req.exec, &req.connect) {
            (Some(e), None) => (GrantKind::Exec, e),
            (None, Some(c)) => (GrantKind::Connect, c),
            _ => {
                return Err(RegistryError::BadRequest(
                    "give exactly one of \"exec\" and \"connect\"".into(),
                ));
            }
        };
        let ttl_ns = match req.ttl_seconds {
            Some(0) => {
                return Err(RegistryError::BadRequest(
                    "ttl_seconds must be at least 1".into(),
                ));
            }
            Some(s) if Duration::from_secs(s) > limits.max_ttl => {
                return Err(RegistryError::BadRequest(format!(
                    "ttl_seconds {s} exceeds the maximum of {} (tasks.max_ttl in the config)",
                    limits.max_ttl.as_secs()
                )));
            }
            Some(s) => clock::expiry_after(Some(Duration::from_secs(s))),
            None => 0,
        };
        let task = self.get_mut(id)?;
        if !task.is_live() {
            return Err(RegistryError::Ended(task.id_string()));
        }
        let parent = task.chain.last().copied();
        let gid = format!("g{}", task.next_grant);
        // A grant never outlives its task.
        let expires = min_expiry(ttl_ns, task.expires_ns);
        let mut record = resolve(
            kind,
            spec,
            gid.clone(),
            if ttl_ns == 0 { 0 } else { expires },
            root,
        )?;
        record.pending_ns = pending_ns;
        if let Some(p) = parent {
            let parent = self
                .get(p)
                .filter(|p| p.is_live())
                .ok_or_else(|| RegistryError::Ended(TaskId(p).to_string()))?;
            delegation::attenuate(parent, &mut record)?;
        }
        let task = self.get_mut(id)?;
        task.next_grant += 1;
        task.grants.push(record);
        if let Err(e) = self.sync(maps, id) {
            let task = self.get_mut(id)?;
            task.grants.retain(|g| g.id != gid);
            // Back to the grants before: the error to report is the first one.
            if let Err(undo) = self.sync(maps, id) {
                tracing::error!(task = %TaskId(id), "cannot restore the grants after a failed add: {undo}");
            }
            return Err(e);
        }
        Ok(gid)
    }

    /// Revokes one grant; it is out of the kernel when this returns.
    pub fn revoke_grant(
        &mut self,
        maps: &mut Maps,
        id: u64,
        gid: &str,
    ) -> Result<GrantRecord, RegistryError> {
        let task = self.get_mut(id)?;
        let pos = task
            .grants
            .iter()
            .position(|g| g.id == gid)
            .ok_or_else(|| RegistryError::NoGrant {
                task: task.id_string(),
                grant: gid.to_owned(),
            })?;
        let removed = task.grants.remove(pos);
        if task.is_live() {
            self.sync(maps, id)?;
        }
        Ok(removed)
    }

    /// Whether a process may join task `id` now (it is live and not expired).
    pub fn check_attachable(&mut self, id: u64) -> Result<(), RegistryError> {
        let task = self.get_mut(id)?;
        if !task.is_live() {
            return Err(RegistryError::Ended(task.id_string()));
        }
        if task.expires_ns != 0 && clock::boottime_ns() >= task.expires_ns {
            return Err(RegistryError::Ended(task.id_string()));
        }
        Ok(())
    }

    /// Tags every thread of `pid` into the task.
    pub fn attach(&mut self, maps: &mut Maps, id: u64, pid: u32) -> Result<(), RegistryError> {
        self.check_attachable(id)?;
        for tid in threads_of(pid) {
            maps.tag(tid, id)?;
        }
        let task = self.get_mut(id)?;
        if !task.attached_pids.contains(&pid) {
            task.attached_pids.push(pid);
        }
        task.state = TaskState::Active;
        Ok(())
    }

    /// Ends a task: its kernel entries go (its processes stay tagged, so they are denied
    /// everything), and with `kill_on_end` its processes are killed.
    pub fn end(
        &mut self,
        maps: &mut Maps,
        id: u64,
        reason: EndReason,
        limits: &Limits,
    ) -> Result<Vec<u32>, RegistryError> {
        let task = self.get_mut(id)?;
        if !task.is_live() {
            return Ok(Vec::new());
        }
        task.state = TaskState::Ended;
        task.end_reason = Some(reason);
        task.ended_at = Some(now_rfc3339());
        uninstall(maps, id, &mut task.installed)?;
        let mut killed = Vec::new();
        if limits.kill_on_end {
            for tid in maps.procs_of(id) {
                // SAFETY-free: nix wraps kill(2); a vanished pid is fine.
                if nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(tid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .is_ok()
                {
                    killed.push(tid);
                }
            }
        }
        Ok(killed)
    }

    /// Active `command_exits` tasks none of whose processes is left (after an exit
    /// event, or as a sweep): the command is gone too. An `ended_or_expired` task
    /// outlives its processes.
    #[must_use]
    pub fn exited(&self, maps: &Maps, candidates: &[u64]) -> Vec<u64> {
        let live: BTreeSet<u64> = maps.tagged_tasks();
        candidates
            .iter()
            .copied()
            .filter(|id| {
                self.tasks.get(id).is_some_and(|t| {
                    t.state == TaskState::Active
                        && t.end_when == EndWhen::CommandExits
                        && !live.contains(id)
                })
            })
            .collect()
    }

    /// Live tasks whose TTL passed, and grants whose TTL passed.
    #[must_use]
    pub fn expired(&self, now_ns: u64) -> (Vec<u64>, Vec<(u64, String)>) {
        let mut tasks = Vec::new();
        let mut grants = Vec::new();
        for t in self.tasks.values().filter(|t| t.is_live()) {
            if t.expires_ns != 0 && now_ns >= t.expires_ns {
                tasks.push(t.id);
                continue;
            }
            for g in &t.grants {
                if g.expires_ns != 0 && now_ns >= g.expires_ns {
                    grants.push((t.id, g.id.clone()));
                }
            }
        }
        (tasks, grants)
    }

    /// Drops the oldest ended tasks beyond [`ENDED_KEPT`]; returns their ids.
    pub fn prune_ended(&mut self) -> Vec<u64> {
        let ended: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| !t.is_live())
            .map(|t| t.id)
            .collect();
        if ended.len() > ENDED_KEPT {
            let mut by_time: Vec<(String, u64)> = ended
                .iter()
                .filter_map(|id| {
                    self.tasks
                        .get(id)
                        .map(|t| (t.ended_at.clone().unwrap_or_default(), *id))
                })
                .collect();
            by_time.sort();
            let gone: Vec<u64> = by_time
                .iter()
                .take(ended.len() - ENDED_KEPT)
                .map(|(_, id)| *id)
                .collect();
            for id in &gone {
                if let Some(t) = self.tasks.remove(id) {
                    self.dns_slots.remove(&t.dns_slot);
                }
            }
            return gone;
        }
        Vec::new()
    }

    #[must_use]
    pub fn active_count(&self) -> u64 {
        self.tasks.values().filter(|t| t.is_live()).count() as u64
    }
}

/// Installs one task straight into `maps` through the daemon's own path (the grants
/// resolved as the daemon resolves them, the entries written by the same sync, the task
/// entry last), without a daemon, a state file or a policy: for kernel tests and tools
/// that own the maps. Exec paths resolve from `/`; `expires_ns` is `CLOCK_BOOTTIME` ns
/// (0: never). The task is active at once; `Maps::remove_task` removes it.
pub fn install(
    maps: &mut Maps,
    id: TaskId,
    req: &protocol::CreateTask,
    expires_ns: u64,
    counter_slot: u32,
) -> Result<(), RegistryError> {
    let files = crate::files::rules(
        req.file_mode.unwrap_or_default(),
        &req.grants.files,
        &crate::config::FilesConfig::default(),
    )?;
    let grants = resolve_all(&req.grants, &ResolveIn::own())?;
    Tasks::default().insert_synced(
        maps,
        TaskRecord::new(id.0, req, grants, expires_ns, counter_slot, files),
    )
}

/// The grants of a new task, numbered `g1`, `g2`, ... in request order (exec first).
fn resolve_all(
    req: &protocol::Grants,
    root: &ResolveIn<'_>,
) -> Result<Vec<GrantRecord>, RegistryError> {
    let exec = req.exec.iter().map(|s| (GrantKind::Exec, s));
    let connect = req.connect.iter().map(|s| (GrantKind::Connect, s));
    exec.chain(connect)
        .zip(1..)
        .map(|((kind, spec), n)| resolve(kind, spec, format!("g{n}"), 0, root))
        .collect()
}

fn validate_agent(agent: &str) -> Result<(), RegistryError> {
    let ok = !agent.is_empty()
        && agent.len() <= 64
        && agent
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(RegistryError::BadRequest(format!(
            "agent {agent:?} is not a valid name: use 1-64 letters, digits, '-', '_' or '.' (it becomes part of a SPIFFE ID)"
        )))
    }
}

/// Thread ids of a process (just the pid if /proc cannot be read).
#[must_use]
pub fn threads_of(pid: u32) -> Vec<u32> {
    let mut tids: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    if !tids.contains(&pid) {
        tids.push(pid);
    }
    tids
}
