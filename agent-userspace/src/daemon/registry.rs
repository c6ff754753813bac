//! The daemon's tasks: their metadata, grants and lifecycle, and the kernel entries
//! that enforce them. Every mutation reaches the kernel's maps before it returns, and
//! is persisted to the state file so a restarted daemon can adopt it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::Path,
    time::Duration,
};

use agent_common::{
    ExecFileGrant, ExecGrant, ExecKey, NetKey, ScriptKey, TaskInfo, TaskMode, TaskState as KState,
    UnixKey,
};
use serde::{Deserialize, Serialize};

use crate::{
    clock,
    grants::{self, ConnectSpec, ExecFile, GrantError, NetGrant},
    kernel::file_state::{self, FileState},
    kernel::maps::{Maps, MapsError},
    protocol::{self, EndReason, EndWhen, GrantKind, Mode, TaskState},
    sockets::{self, SocketGrant},
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
    #[error("{0}")]
    Forbidden(String),
    /// Forbidden, with a code of its own for callers to act on.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("cannot move the process into its leash cgroup: {0}")]
    Scope(String),
}

/// Limits from the config.
#[derive(Clone, Debug)]
pub struct Limits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    pub kill_on_end: bool,
    pub trust_domain: String,
}

/// One grant, resolved when it was added (an exec grant is bound to the inode it named
/// then), and kept in that form across daemon restarts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: String,
    pub kind: GrantKind,
    pub spec: String,
    /// `CLOCK_BOOTTIME` ns; 0 = with the task.
    pub expires_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub files: Vec<FileRecord>,
    #[serde(default)]
    pub nets: Vec<NetRecord>,
    /// Waiting for approval until this `CLOCK_BOOTTIME` ns (0: not pending). A pending
    /// grant is resolved but not in the kernel, so the kernel denies it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pending_ns: u64,
    /// `unix:` grants: the socket name as written after `unix:`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unix: Vec<String>,
    /// `socket:` grants: `FAMILY_*` bits.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub families: u32,
    /// Who asked for a grant that waits for approval (approval needs another party).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<super::approval::Identity>,
}

/// serde's `skip_serializing_if` takes a reference.
fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub dev: u32,
    pub ino: u64,
    pub script: bool,
    /// The file's state when granted; absent in state written before it was kept,
    /// and then only the identity is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<FileState>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NetRecord {
    pub addr: [u8; 16],
    pub prefix: u8,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protos: u8,
}

/// A task as the daemon keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: u64,
    pub agent: String,
    pub intent: Option<String>,
    pub mode: Mode,
    pub state: TaskState,
    pub end_reason: Option<EndReason>,
    pub created_at: String,
    /// `CLOCK_BOOTTIME` ns; 0 = none.
    pub expires_ns: u64,
    pub expires_at: Option<String>,
    pub ended_at: Option<String>,
    pub grants: Vec<GrantRecord>,
    pub next_grant: u32,
    pub attached_pids: Vec<u32>,
    pub counter_slot: u32,
    /// When the task ends on its own (see `lifetime`).
    #[serde(default = "super::lifetime::legacy_end_when")]
    pub end_when: EndWhen,
    /// The command a `command_exits` task ends with, once attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<super::lifetime::CommandRecord>,
    /// What is in the kernel for this task now, so changes touch only their own
    /// entries instead of scanning whole maps. Rebuilt from the maps on adoption.
    #[serde(skip)]
    pub installed: Installed,
}

/// Kernel entries installed for one task.
#[derive(Clone, Debug, Default)]
pub struct Installed {
    pub exec: HashSet<ExecKey>,
    pub scripts: HashSet<ScriptKey>,
    pub net: HashSet<(u32, [u8; 16])>,
    pub unix: HashSet<UnixKey>,
}

impl Installed {
    /// From the keys found in the kernel's maps.
    #[must_use]
    pub fn from_keys(keys: &crate::kernel::maps::TaskKeys) -> Self {
        Self {
            exec: keys.exec.iter().copied().collect(),
            scripts: keys.scripts.iter().copied().collect(),
            net: keys.net.iter().map(|(p, k)| (*p, k.addr)).collect(),
            unix: keys.unix.iter().copied().collect(),
        }
    }
}

/// Printable task id: 16 lowercase hex digits.
#[must_use]
pub fn task_id_string(id: u64) -> String {
    format!("{id:016x}")
}

pub fn parse_task_id(s: &str) -> Result<u64, RegistryError> {
    u64::from_str_radix(s, 16)
        .ok()
        .filter(|_| s.len() == 16)
        .ok_or_else(|| RegistryError::NoTask(s.to_owned()))
}

fn now_rfc3339() -> String {
    rfc3339(time::OffsetDateTime::now_utc())
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Wall-clock time of a `CLOCK_BOOTTIME` instant.
#[must_use]
pub fn wall_of_boot_ns(boot_ns: u64) -> String {
    let now_boot = clock::boottime_ns();
    let now = time::OffsetDateTime::now_utc();
    let delta =
        time::Duration::nanoseconds(i64::try_from(boot_ns.abs_diff(now_boot)).unwrap_or(i64::MAX));
    rfc3339(if boot_ns >= now_boot {
        now + delta
    } else {
        now - delta
    })
}

impl TaskRecord {
    #[must_use]
    pub fn id_string(&self) -> String {
        task_id_string(self.id)
    }

    #[must_use]
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/agent/{}/task/{}",
            self.agent,
            self.id_string()
        )
    }

    #[must_use]
    pub fn view(&self, trust_domain: &str) -> protocol::Task {
        protocol::Task {
            id: self.id_string(),
            agent: self.agent.clone(),
            spiffe_id: self.spiffe_id(trust_domain),
            intent: self.intent.clone(),
            mode: self.mode,
            state: self.state,
            end_when: self.end_when,
            end_reason: self.end_reason,
            created_at: self.created_at.clone(),
            expires_at: self.expires_at.clone(),
            ended_at: self.ended_at.clone(),
            grants: self
                .grants
                .iter()
                .map(|g| protocol::Grant {
                    id: g.id.clone(),
                    kind: g.kind,
                    spec: g.spec.clone(),
                    expires_at: g.expires_at.clone(),
                    pending_until: (g.pending_ns != 0).then(|| wall_of_boot_ns(g.pending_ns)),
                    resolved: g
                        .files
                        .iter()
                        .map(|f| format!("{} {}:{}", f.path, f.dev, f.ino))
                        .chain(g.nets.iter().map(|n| {
                            let v6 = std::net::Ipv6Addr::from(n.addr);
                            match v6.to_ipv4_mapped() {
                                Some(v4) if n.prefix >= 96 => format!("{v4}/{}", n.prefix - 96),
                                _ => format!("{v6}/{}", n.prefix),
                            }
                        }))
                        .collect(),
                })
                .collect(),
            attached_pids: self.attached_pids.clone(),
        }
    }

    fn kernel_info(&self) -> TaskInfo {
        TaskInfo {
            expires_ns: self.expires_ns,
            state: KState::Active as u32,
            mode: match self.mode {
                Mode::Enforce => TaskMode::Enforce,
                Mode::Audit => TaskMode::Audit,
            } as u32,
            counter_slot: self.counter_slot,
            families: self.grants.iter().fold(0, |acc, g| acc | g.families),
        }
    }

    fn is_live(&self) -> bool {
        self.state != TaskState::Ended
    }
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
}

/// Ended tasks kept for `leash task list/show`.
const ENDED_KEPT: usize = 1000;

impl Tasks {
    fn slot_for(&mut self, agent: &str) -> u32 {
        if let Some(&s) = self.agents.get(agent) {
            return s;
        }
        let slot = (self.agents.len() as u32 % (agent_common::event::COUNTER_SLOTS - 1)) + 1;
        self.agents.insert(agent.to_owned(), slot);
        slot
    }

    #[must_use]
    pub fn get(&self, id: u64) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    fn get_mut(&mut self, id: u64) -> Result<&mut TaskRecord, RegistryError> {
        self.tasks
            .get_mut(&id)
            .ok_or_else(|| RegistryError::NoTask(task_id_string(id)))
    }

    /// Validates and creates a task with its grants in the kernel.
    /// `root` is where exec paths are looked up: the caller's root (`/proc/<pid>/root`),
    /// so a path means the file the caller's processes will run.
    pub fn create(
        &mut self,
        maps: &mut Maps,
        req: &protocol::CreateTask,
        limits: &Limits,
        root: &Path,
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
        let expires_ns = clock::expiry_after(Some(ttl));
        // Resolve every grant before anything reaches the kernel: one bad grant, no task.
        let mut grants = Vec::new();
        let mut n = 0;
        for spec in &req.grants.exec {
            n += 1;
            grants.push(resolve(GrantKind::Exec, spec, format!("g{n}"), 0, root)?);
        }
        for spec in &req.grants.connect {
            n += 1;
            grants.push(resolve(GrantKind::Connect, spec, format!("g{n}"), 0, root)?);
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
        let rec = TaskRecord {
            id,
            agent: req.agent.clone(),
            intent: req.intent.clone(),
            mode: req.mode.unwrap_or_default(),
            state: TaskState::Created,
            end_reason: None,
            created_at: now_rfc3339(),
            expires_ns,
            expires_at: Some(wall_of_boot_ns(expires_ns)),
            ended_at: None,
            grants,
            next_grant: n + 1,
            attached_pids: Vec::new(),
            counter_slot,
            end_when: req.end_when.unwrap_or_default(),
            command: None,
            installed: Installed::default(),
        };
        self.tasks.insert(id, rec);
        if let Err(e) = self.sync(maps, id) {
            self.tasks.remove(&id);
            let _ = maps.remove_task(id);
            return Err(e);
        }
        Ok(id)
    }

    /// Adds one grant; it is in the kernel when this returns. With `pending_ns` != 0
    /// the grant is pending approval until then: recorded, but kept out of the kernel.
    pub fn add_grant(
        &mut self,
        maps: &mut Maps,
        id: u64,
        req: &protocol::AddGrant,
        limits: &Limits,
        root: &Path,
        pending_ns: u64,
    ) -> Result<String, RegistryError> {
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
        task.next_grant += 1;
        task.grants.push(record);
        if let Err(e) = self.sync(maps, id) {
            let task = self.get_mut(id)?;
            task.grants.retain(|g| g.id != gid);
            let _ = self.sync(maps, id);
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

    /// Puts the kernel's entries for a live task in line with its grants, touching only
    /// this task's entries.
    pub fn sync(&mut self, maps: &mut Maps, id: u64) -> Result<(), RegistryError> {
        let task = self.get_mut(id)?;
        let mut exec: HashMap<ExecKey, ExecFileGrant> = HashMap::new();
        let mut scripts: Vec<(ExecFile, u64)> = Vec::new();
        let mut nets: Vec<NetGrant> = Vec::new();
        for g in task.grants.iter().filter(|g| g.pending_ns == 0) {
            for f in &g.files {
                add_exec(&mut exec, id, f, g.expires_ns);
                if f.script {
                    scripts.push((exec_file(f), g.expires_ns));
                }
            }
            for n in &g.nets {
                nets.push(NetGrant {
                    addr: n.addr,
                    prefix: n.prefix,
                    rule: agent_common::PortRule {
                        expires_ns: g.expires_ns,
                        port_lo: n.port_lo,
                        port_hi: n.port_hi,
                        protos: n.protos,
                        _pad: [0; 3],
                    },
                });
            }
        }
        let mut unix: HashMap<UnixKey, u64> = HashMap::new();
        for g in &task.grants {
            for name in &g.unix {
                if let Some(Ok(SocketGrant::Unix(n))) = sockets::parse(&format!("unix:{name}")) {
                    let e = unix.entry(n.key(id)).or_insert(g.expires_ns);
                    if g.expires_ns == 0 || (*e != 0 && g.expires_ns > *e) {
                        *e = g.expires_ns;
                    }
                }
            }
        }
        let info = task.kernel_info();
        let net_entries = grants::compile_net(id, &nets)?;
        let mut script_keys: HashMap<ScriptKey, u64> = HashMap::new();
        for (file, expires_ns) in &scripts {
            for key in file.script_keys(id)? {
                script_keys.insert(key, *expires_ns);
            }
        }
        let installed = &mut task.installed;
        // New entries go in before stale ones leave, and the task entry last: a
        // process never sees a live task with half its grants (it would be denied,
        // never wrongly allowed).
        for (key, &grant) in &exec {
            maps.grant_exec(key, grant)?;
            installed.exec.insert(*key);
        }
        for (key, &expires_ns) in &script_keys {
            maps.grant_script(key, ExecGrant { expires_ns })?;
            installed.scripts.insert(*key);
        }
        for (key, &expires_ns) in &unix {
            maps.grant_unix(key, ExecGrant { expires_ns })?;
            installed.unix.insert(*key);
        }
        for key in installed.unix.clone() {
            if !unix.contains_key(&key) {
                maps.revoke_unix(&key)?;
                installed.unix.remove(&key);
            }
        }
        maps.insert_net(&net_entries)?;
        installed
            .net
            .extend(net_entries.iter().map(|(p, k, _)| (*p, k.addr)));
        for key in installed.exec.clone() {
            if !exec.contains_key(&key) {
                maps.revoke_exec(&key)?;
                installed.exec.remove(&key);
            }
        }
        for key in installed.scripts.clone() {
            if !script_keys.contains_key(&key) {
                maps.revoke_script(&key)?;
                installed.scripts.remove(&key);
            }
        }
        let want_net: HashSet<(u32, [u8; 16])> =
            net_entries.iter().map(|(p, k, _)| (*p, k.addr)).collect();
        for (prefix, addr) in installed.net.clone() {
            if !want_net.contains(&(prefix, addr)) {
                maps.remove_net(prefix, NetKey { task: id, addr })?;
                installed.net.remove(&(prefix, addr));
            }
        }
        maps.put_task(id, &info)?;
        Ok(())
    }

    /// Records what the kernel holds for each task (after adopting pinned maps).
    pub fn set_installed(&mut self, mut keys: HashMap<u64, crate::kernel::maps::TaskKeys>) {
        for (id, t) in &mut self.tasks {
            t.installed = keys
                .remove(id)
                .map(|k| Installed::from_keys(&k))
                .unwrap_or_default();
        }
    }

    /// Connect grants that name a DNS host: (task, grant id, spec).
    #[must_use]
    pub fn named_grants(&self) -> Vec<(u64, String, String)> {
        self.tasks
            .values()
            .filter(|t| t.is_live())
            .flat_map(|t| {
                t.grants
                    .iter()
                    .filter(|g| {
                        g.kind == GrantKind::Connect
                            && g.spec
                                .parse::<ConnectSpec>()
                                .is_ok_and(|c| matches!(c.host, grants::Host::Name(_)))
                    })
                    .map(move |g| (t.id, g.id.clone(), g.spec.clone()))
            })
            .collect()
    }

    /// Replaces the addresses of a named grant (after re-resolution) and re-syncs the
    /// task if they changed; addresses no longer returned leave the kernel.
    pub fn update_named(
        &mut self,
        maps: &mut Maps,
        id: u64,
        gid: &str,
        fresh: GrantRecord,
    ) -> Result<bool, RegistryError> {
        let task = self.get_mut(id)?;
        let Some(g) = task.grants.iter_mut().find(|g| g.id == gid) else {
            return Ok(false);
        };
        let key = |n: &NetRecord| (n.addr, n.prefix, n.port_lo, n.port_hi, n.protos);
        let old: BTreeSet<_> = g.nets.iter().map(key).collect();
        let new: BTreeSet<_> = fresh.nets.iter().map(key).collect();
        if old == new {
            return Ok(false);
        }
        g.nets = fresh.nets;
        self.sync(maps, id)?;
        Ok(true)
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
                self.tasks.remove(id);
            }
            return gone;
        }
        Vec::new()
    }

    /// Kernel entries of each map this registry installed (`TASKS`, `EXEC_GRANTS`,
    /// `SCRIPT_GRANTS`, `NET_GRANTS`, `NET_HOSTS`), from its own records: no map walk.
    #[must_use]
    pub fn kernel_entries(&self) -> [(&'static str, u64); 5] {
        use agent_common::maps as names;
        let full = agent_common::grant::FULL_ADDRESS_PREFIX;
        let mut n = [0u64; 5];
        for t in self.tasks.values().filter(|t| t.is_live()) {
            let hosts = t.installed.net.iter().filter(|(p, _)| *p == full).count() as u64;
            n[0] += 1;
            n[1] += t.installed.exec.len() as u64;
            n[2] += t.installed.scripts.len() as u64;
            // Each task's prefixes fill its own trie: the fullest is what a grant meets.
            n[3] = n[3].max(t.installed.net.len() as u64 - hosts);
            n[4] += hosts;
        }
        [
            (names::TASKS, n[0]),
            (names::EXEC_GRANTS, n[1]),
            (names::SCRIPT_GRANTS, n[2]),
            (names::NET_GRANTS, n[3]),
            (names::NET_HOSTS, n[4]),
        ]
    }

    #[must_use]
    pub fn active_count(&self) -> u64 {
        self.tasks.values().filter(|t| t.is_live()).count() as u64
    }
}

/// Removes a task's kernel entries: the task entry first, so its processes are
/// denied from that moment, then its grants.
fn uninstall(maps: &mut Maps, id: u64, installed: &mut Installed) -> Result<(), MapsError> {
    maps.remove_task_entry(id)?;
    for key in installed.exec.drain() {
        maps.revoke_exec(&key)?;
    }
    for key in installed.scripts.drain() {
        maps.revoke_script(&key)?;
    }
    // Host entries one by one; the prefixes leave with the task's trie slot.
    let full = agent_common::grant::FULL_ADDRESS_PREFIX;
    for (prefix, addr) in installed.net.drain() {
        if prefix == full {
            maps.remove_net(prefix, NetKey { task: id, addr })?;
        }
    }
    maps.remove_net_task(id)?;
    for key in installed.unix.drain() {
        maps.revoke_unix(&key)?;
    }
    Ok(())
}

/// Adds the kernel entry of `f`, granted until `expires_ns`, to `exec`. Of two grants
/// of one file the longer-lived expiry wins (0 = with the task), and the later grant's
/// state: the file as last granted.
fn add_exec(exec: &mut HashMap<ExecKey, ExecFileGrant>, id: u64, f: &FileRecord, expires_ns: u64) {
    let key = ExecKey {
        task: id,
        ino: f.ino,
        dev: f.dev,
        _pad: 0,
    };
    let grant = f.state.map_or_else(
        || {
            tracing::warn!(
                task = %task_id_string(id),
                path = %f.path,
                "exec grant recorded by an older daemon, without the file's state: checked by identity only until granted again"
            );
            file_state::unchecked(expires_ns)
        },
        |s| s.grant(expires_ns),
    );
    let e = exec.entry(key).or_insert(grant);
    let expires_ns = if expires_ns == 0 || (e.expires_ns != 0 && expires_ns > e.expires_ns) {
        expires_ns
    } else {
        e.expires_ns
    };
    *e = ExecFileGrant {
        expires_ns,
        ..grant
    };
}

fn exec_file(f: &FileRecord) -> ExecFile {
    ExecFile {
        path: f.path.clone().into(),
        dev: f.dev,
        ino: f.ino,
        script: f.script,
        state: f.state.unwrap_or_default(),
    }
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

/// Resolves a grant spec now (paths to inodes, names to addresses).
pub fn resolve(
    kind: GrantKind,
    spec: &str,
    id: String,
    expires_ns: u64,
    root: &Path,
) -> Result<GrantRecord, RegistryError> {
    let mut rec = GrantRecord {
        id,
        kind,
        spec: spec.to_owned(),
        expires_ns,
        expires_at: (expires_ns != 0).then(|| wall_of_boot_ns(expires_ns)),
        files: Vec::new(),
        nets: Vec::new(),
        pending_ns: 0,
        unix: Vec::new(),
        families: 0,
        requested_by: None,
    };
    match kind {
        GrantKind::Exec => {
            rec.files = grants::resolve_exec_in(root, spec)?
                .into_iter()
                .map(|f| FileRecord {
                    path: f.path.display().to_string(),
                    dev: f.dev,
                    ino: f.ino,
                    script: f.script,
                    state: Some(f.state),
                })
                .collect();
        }
        GrantKind::Connect => match sockets::parse(spec).transpose()? {
            Some(SocketGrant::Unix(name)) => rec.unix.push(name.to_string()),
            Some(SocketGrant::Family(bit)) => rec.families = bit,
            None => rec.nets = net_records(spec)?,
        },
    }
    Ok(rec)
}

fn net_records(spec: &str) -> Result<Vec<NetRecord>, RegistryError> {
    let parsed: ConnectSpec = spec.parse()?;
    Ok(parsed
        .to_net_grants(spec, 0)?
        .into_iter()
        .map(|n| NetRecord {
            addr: n.addr,
            prefix: n.prefix,
            port_lo: n.rule.port_lo,
            port_hi: n.rule.port_hi,
            protos: n.rule.protos,
        })
        .collect())
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
