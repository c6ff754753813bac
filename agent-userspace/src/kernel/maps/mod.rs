//! Typed wrappers over the kernel's maps: every write returns an error naming the
//! map, and a full map says so with the remedy.

use aya::{
    Ebpf,
    maps::{HashMap, MapData, MapError, PerCpuArray},
};
use leash_common::{
    DnsTarget, ExecFileGrant, ExecGrant, ExecKey, NetKey, NetRules, ScriptKey, TaskInfo, UnixGrant,
    UnixKey, maps as names,
};

mod dns;
mod net;
mod net_pool;
mod protected_names;
mod stats;
mod trie_btf;
mod unix;
use leash_common::grant::FULL_ADDRESS_PREFIX as FULL_ADDRESS;
use net_pool::NetPool;
use protected_names::ProtectedNames;
pub use stats::{COUNTED, DecisionCounts, VERDICTS};

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {0} is missing from the eBPF object")]
    Missing(&'static str),
    #[error("map {map} has the wrong type: {source}")]
    Type {
        map: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {map} is full; raise maps.{config_key} in the config")]
    Full {
        map: &'static str,
        config_key: &'static str,
    },
    #[error(
        "all {capacity} prefix-grant slots of NET_PREFIXES are in use; raise maps.tasks in the config"
    )]
    PoolFull { capacity: u32 },
    #[error("cannot read this process's mount namespace and root: {0}")]
    OwnView(#[source] std::io::Error),
    #[error("{op} on map {map} failed: {source}")]
    Op {
        op: &'static str,
        map: &'static str,
        #[source]
        source: MapError,
    },
}

/// Handles on every map the control plane writes or reads.
pub struct Maps {
    procs: HashMap<MapData, u32, u64>,
    tasks: HashMap<MapData, u64, TaskInfo>,
    exec: HashMap<MapData, ExecKey, ExecFileGrant>,
    scripts: HashMap<MapData, ScriptKey, ExecGrant>,
    /// Prefixes shorter than an address: one trie per task, from a pool of slots.
    net: NetPool,
    /// `maps.net_grants`: capacity of each task's trie.
    net_capacity: u32,
    hosts: HashMap<MapData, NetKey, NetRules>,
    unix: HashMap<MapData, UnixKey, UnixGrant>,
    /// The socket files unix path grants named (lsm backend).
    unix_sockets: HashMap<MapData, ExecKey, ExecGrant>,
    protected: HashMap<MapData, u32, u32>,
    /// The API socket's names (`protect_socket_only`).
    protected_names: ProtectedNames,
    decisions: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, u64>,
    scopes: HashMap<MapData, u64, u8>,
    /// Task id → where its DNS goes (`dns.rs`).
    dns: HashMap<MapData, u64, DnsTarget>,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, MapsError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
    T::try_from(map).map_err(|source| MapsError::Type { map: name, source })
}

fn is_full(e: &MapError) -> bool {
    matches!(e, MapError::SyscallError(s) if matches!(s.io_error.raw_os_error(), Some(libc::E2BIG | libc::ENOMEM | libc::ENOSPC)))
}

fn op_err(op: &'static str, map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| {
        if is_full(&source) {
            MapsError::Full {
                map,
                config_key: config_key(map),
            }
        } else {
            MapsError::Op { op, map, source }
        }
    }
}

/// The config field that sizes a map.
fn config_key(map: &str) -> &'static str {
    match map {
        names::PROCS => "procs",
        names::TASKS | names::DNS_TARGETS => "tasks",
        names::EXEC_GRANTS => "exec_grants",
        names::SCRIPT_GRANTS => "script_grants",
        names::NET_GRANTS | names::NET_HOSTS | names::NET_PREFIXES => "net_grants",
        names::LEASH_CGROUPS => "leash_cgroups",
        names::UNIX_GRANTS | names::UNIX_SOCKETS => "unix_grants",
        _ => "events_bytes",
    }
}

/// Removal of an absent key is not an error: the goal state is reached.
fn removed(r: Result<(), MapError>, map: &'static str) -> Result<(), MapsError> {
    match r {
        Ok(()) | Err(MapError::KeyNotFound | MapError::ElementNotFound) => Ok(()),
        Err(MapError::SyscallError(s)) if s.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(MapsError::Op {
            op: "remove",
            map,
            source,
        }),
    }
}

/// The kernel entries of one task's grants.
#[derive(Clone, Debug, Default)]
pub struct TaskKeys {
    pub exec: Vec<ExecKey>,
    pub scripts: Vec<ScriptKey>,
    pub net: Vec<(u32, NetKey)>,
    pub unix: Vec<UnixKey>,
    pub unix_sockets: Vec<ExecKey>,
}

/// A real thread id, not a fork reservation (see [`names::RESERVED`]).
const fn is_tid(key: u32) -> bool {
    key < names::RESERVED
}

impl Maps {
    /// Takes the maps out of a loaded object. `net_capacity` sizes each task's
    /// prefix trie (`maps.net_grants`).
    pub fn take(ebpf: &mut Ebpf, net_capacity: u32) -> Result<Self, MapsError> {
        let mut maps = Self {
            net: NetPool::take(ebpf, net_capacity)?,
            net_capacity,
            hosts: take(ebpf, names::NET_HOSTS)?,
            procs: take(ebpf, names::PROCS)?,
            tasks: take(ebpf, names::TASKS)?,
            exec: take(ebpf, names::EXEC_GRANTS)?,
            scripts: take(ebpf, names::SCRIPT_GRANTS)?,
            unix: take(ebpf, names::UNIX_GRANTS)?,
            unix_sockets: take(ebpf, names::UNIX_SOCKETS)?,
            protected: take(ebpf, names::PROTECTED)?,
            protected_names: ProtectedNames::take(ebpf)?,
            decisions: take(ebpf, names::DECISIONS)?,
            stats: take(ebpf, names::STATS)?,
            scopes: take(ebpf, names::LEASH_CGROUPS)?,
            dns: take(ebpf, names::DNS_TARGETS)?,
        };
        maps.free_orphan_slots()?;
        Ok(maps)
    }

    /// Frees the prefix slots of tasks the kernel no longer knows: a daemon stopped
    /// between removing a task's entry and its prefixes. At load nothing is being
    /// installed, so every live task already has its entry.
    fn free_orphan_slots(&mut self) -> Result<(), MapsError> {
        let orphans: Vec<u64> = self
            .net
            .owned()
            .map(|(task, _)| task)
            .filter(|task| self.tasks.get(task, 0).is_err())
            .collect();
        for task in orphans {
            self.net.release(task)?;
        }
        Ok(())
    }

    pub fn put_task(&mut self, id: u64, info: &TaskInfo) -> Result<(), MapsError> {
        self.tasks
            .insert(id, info, 0)
            .map_err(op_err("insert", names::TASKS))
    }

    #[must_use]
    pub fn task(&self, id: u64) -> Option<TaskInfo> {
        self.tasks.get(&id, 0).ok()
    }

    /// Removes only the task's entry (its grants stay until removed one by one).
    pub fn remove_task_entry(&mut self, id: u64) -> Result<(), MapsError> {
        removed(self.tasks.remove(&id), names::TASKS)
    }

    /// Removes a task and every grant of it, scanning the grant maps. Processes keep
    /// their tag and so are denied everything from now on (fail closed).
    pub fn remove_task(&mut self, id: u64) -> Result<(), MapsError> {
        removed(self.tasks.remove(&id), names::TASKS)?;
        self.remove_dns_target(id)?;
        let exec: Vec<_> = self
            .exec
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == id)
            .collect();
        for k in exec {
            removed(self.exec.remove(&k), names::EXEC_GRANTS)?;
        }
        let scripts: Vec<_> = self
            .scripts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == id)
            .collect();
        for k in scripts {
            removed(self.scripts.remove(&k), names::SCRIPT_GRANTS)?;
        }
        let unix: Vec<_> = self
            .unix
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == id)
            .collect();
        for k in unix {
            self.revoke_unix(&k)?;
        }
        let sockets: Vec<_> = self
            .unix_sockets
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == id)
            .collect();
        for k in sockets {
            self.revoke_unix_socket(&k)?;
        }
        self.set_net(id, &[])
    }

    /// Makes `pid` a leash process that tagged processes may not signal or trace,
    /// forgetting earlier ones (a previous daemon's pid may be reused by anyone).
    pub fn protect_only(&mut self, pid: u32) -> Result<(), MapsError> {
        let old: Vec<u32> = self.protected.keys().filter_map(Result::ok).collect();
        for k in old {
            removed(self.protected.remove(&k), names::PROTECTED)?;
        }
        self.protect(pid)
    }

    /// Adds `pid` to the protected processes.
    pub fn protect(&mut self, pid: u32) -> Result<(), MapsError> {
        self.protected
            .insert(pid, 1, 0)
            .map_err(op_err("insert", names::PROTECTED))
    }

    pub fn unprotect(&mut self, pid: u32) -> Result<(), MapsError> {
        removed(self.protected.remove(&pid), names::PROTECTED)
    }

    pub fn grant_exec(&mut self, key: &ExecKey, grant: ExecFileGrant) -> Result<(), MapsError> {
        self.exec
            .insert(key, grant, 0)
            .map_err(op_err("insert", names::EXEC_GRANTS))
    }

    pub fn revoke_exec(&mut self, key: &ExecKey) -> Result<(), MapsError> {
        removed(self.exec.remove(key), names::EXEC_GRANTS)
    }

    pub fn grant_script(&mut self, key: &ScriptKey, grant: ExecGrant) -> Result<(), MapsError> {
        self.scripts
            .insert(key, grant, 0)
            .map_err(op_err("insert", names::SCRIPT_GRANTS))
    }

    pub fn revoke_script(&mut self, key: &ScriptKey) -> Result<(), MapsError> {
        removed(self.scripts.remove(key), names::SCRIPT_GRANTS)
    }

    /// Every grant key in the kernel, grouped by task, in one pass per map (for a
    /// daemon adopting pinned maps).
    #[must_use]
    pub fn keys_by_task(&self) -> std::collections::HashMap<u64, TaskKeys> {
        let mut out: std::collections::HashMap<u64, TaskKeys> = std::collections::HashMap::new();
        for k in self.exec.keys().filter_map(Result::ok) {
            out.entry(k.task).or_default().exec.push(k);
        }
        for k in self.scripts.keys().filter_map(Result::ok) {
            out.entry(k.task).or_default().scripts.push(k);
        }
        for (prefix, key) in self.net_keys() {
            out.entry(key.task).or_default().net.push((prefix, key));
        }
        for k in self.unix.keys().filter_map(Result::ok) {
            out.entry(k.task).or_default().unix.push(k);
        }
        for k in self.unix_sockets.keys().filter_map(Result::ok) {
            out.entry(k.task).or_default().unix_sockets.push(k);
        }
        out
    }

    /// Tags thread `tid` (and, from now on, everything it creates) with `task`.
    pub fn tag(&mut self, tid: u32, task: u64) -> Result<(), MapsError> {
        self.procs
            .insert(tid, task, 0)
            .map_err(op_err("insert", names::PROCS))
    }

    #[must_use]
    pub fn tag_of(&self, tid: u32) -> Option<u64> {
        self.procs.get(&tid, 0).ok()
    }

    /// Registers a leash cgroup (attach scope `task`): moves into it are not escapes.
    pub fn add_scope(&mut self, cgroup_id: u64) -> Result<(), MapsError> {
        self.scopes
            .insert(cgroup_id, 1, 0)
            .map_err(op_err("insert", names::LEASH_CGROUPS))
    }

    pub fn remove_scope(&mut self, cgroup_id: u64) -> Result<(), MapsError> {
        removed(self.scopes.remove(&cgroup_id), names::LEASH_CGROUPS)
    }

    /// Forgets every leash cgroup (attach scope `root`: the guard is not attached).
    pub fn clear_scopes(&mut self) {
        let ids: Vec<u64> = self.scopes.keys().filter_map(Result::ok).collect();
        for id in ids {
            let _ = self.scopes.remove(&id);
        }
    }

    /// How many tagged threads are alive (an entry whose thread is gone is not).
    #[must_use]
    pub fn live_tagged_processes(&self) -> usize {
        self.procs
            .keys()
            .filter_map(Result::ok)
            .filter(|tid: &u32| std::path::Path::new(&format!("/proc/{tid}")).exists())
            .count()
    }

    /// Every task id the kernel knows.
    #[must_use]
    pub fn task_ids(&self) -> Vec<u64> {
        self.tasks.keys().filter_map(Result::ok).collect()
    }

    /// Exec grant keys of a task now in the kernel.
    #[must_use]
    pub fn exec_keys_of(&self, task: u64) -> Vec<ExecKey> {
        self.exec
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == task)
            .collect()
    }

    /// Script grant keys of a task now in the kernel.
    #[must_use]
    pub fn script_keys_of(&self, task: u64) -> Vec<ScriptKey> {
        self.scripts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| k.task == task)
            .collect()
    }

    /// Tasks with at least one tagged thread, in one pass over the process map.
    #[must_use]
    pub fn tagged_tasks(&self) -> std::collections::BTreeSet<u64> {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .filter(|(tid, _)| is_tid(*tid))
            .map(|(_, t)| t)
            .collect()
    }

    /// Threads currently tagged with `task`.
    #[must_use]
    pub fn procs_of(&self, task: u64) -> Vec<u32> {
        self.procs
            .iter()
            .filter_map(Result::ok)
            .filter(|(tid, t)| *t == task && is_tid(*tid))
            .map(|(tid, _)| tid)
            .collect()
    }

    /// Every tagged thread by task, in one walk of the process map.
    #[must_use]
    pub fn tagged_by_task(&self) -> std::collections::BTreeMap<u64, Vec<u32>> {
        let mut out = std::collections::BTreeMap::<u64, Vec<u32>>::new();
        for (tid, task) in self.procs.iter().filter_map(Result::ok) {
            if is_tid(tid) {
                out.entry(task).or_default().push(tid);
            }
        }
        out
    }
}

impl Maps {
    /// Raw fd of the process map, for a child that tags itself between fork and exec
    /// (the `leash run` pattern: no pid is ever guessed).
    #[must_use]
    pub fn procs_fd(&self) -> std::os::fd::RawFd {
        use aya::maps::IterableMap as _;
        use std::os::fd::{AsFd as _, AsRawFd as _};
        self.procs.map().fd().as_fd().as_raw_fd()
    }
}
