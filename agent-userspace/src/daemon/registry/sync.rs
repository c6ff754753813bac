//! The kernel's entries for a task in line with its records, touching only that task's
//! entries: each map is reconciled the same way, new entries first, then stale ones.

use std::{
    collections::{HashMap, HashSet},
    hash::Hash,
};

use leash_common::{
    ExecFileGrant, ExecGrant, ExecKey, NetKey, ScriptKey, UnixGrant, UnixKey, UnixScope,
    grant::{CHECK_SCRIPT, CHECK_TREE},
};

use super::{FileRecord, Installed, LearnedRecord, RegistryError, TaskRecord, Tasks};
use crate::{
    grants::{self, ExecFile, NetGrant, UnixView, file_state},
    kernel::maps::{Maps, MapsError},
    protocol::TaskId,
    sockets::{self, SocketGrant},
};

impl Tasks {
    /// Puts the kernel's entries for a live task in line with its grants, touching only
    /// this task's entries.
    pub fn sync(&mut self, maps: &mut Maps, id: u64) -> Result<(), RegistryError> {
        let task = self.get_mut(id)?;
        let mut exec: HashMap<ExecKey, ExecFileGrant> = HashMap::new();
        let mut scripts: Vec<(ExecFile, u64)> = Vec::new();
        for g in task.grants.iter().filter(|g| g.pending_ns == 0) {
            for f in &g.files {
                add_exec(&mut exec, id, f, g.expires_ns);
                if f.script || f.tree {
                    scripts.push((exec_file(f), g.expires_ns));
                }
            }
        }
        let nets = net_grants(task);
        let (unix, unix_sockets) = unix_entries(id, &task.grants);
        let info = task.kernel_info();
        let net_entries = grants::compile_net(id, &nets)?;
        let mut script_keys: HashMap<ScriptKey, u64> = HashMap::new();
        for (file, expires_ns) in &scripts {
            for key in file.script_keys(id)? {
                script_keys.insert(key, *expires_ns);
            }
        }
        let installed = &mut task.installed;
        // Map by map, new entries go in before stale ones leave, and the task entry
        // last: a process never sees a live task with half its grants (it would be
        // denied, never wrongly allowed).
        reconcile(
            maps,
            &exec,
            &mut installed.exec,
            |maps, wanted| {
                wanted
                    .iter()
                    .try_for_each(|(key, &grant)| maps.grant_exec(key, grant))
            },
            Maps::revoke_exec,
        )?;
        reconcile(
            maps,
            &script_keys,
            &mut installed.scripts,
            |maps, wanted| {
                wanted.iter().try_for_each(|(key, &expires_ns)| {
                    maps.grant_script(key, ExecGrant { expires_ns })
                })
            },
            Maps::revoke_script,
        )?;
        reconcile(
            maps,
            &unix,
            &mut installed.unix,
            |maps, wanted| {
                wanted
                    .iter()
                    .try_for_each(|(key, grant)| maps.grant_unix(key, *grant))
            },
            Maps::revoke_unix,
        )?;
        reconcile(
            maps,
            &unix_sockets,
            &mut installed.unix_sockets,
            |maps, wanted| {
                wanted.iter().try_for_each(|(key, &expires_ns)| {
                    maps.grant_unix_socket(key, ExecGrant { expires_ns })
                })
            },
            Maps::revoke_unix_socket,
        )?;
        // Network entries go in as one batch: a task's prefix trie is published once filled.
        let want_net: HashMap<(u32, [u8; 16]), _> = net_entries
            .iter()
            .map(|entry @ (p, k, _)| ((*p, k.addr), entry))
            .collect();
        reconcile(
            maps,
            &want_net,
            &mut installed.net,
            |maps, _| maps.insert_net(&net_entries),
            |maps, &(prefix, addr)| maps.remove_net(prefix, NetKey { task: id, addr }),
        )?;
        maps.put_task(id, &info)?;
        Ok(())
    }

    /// Writes only the host entries of `addrs`, addresses a DNS answer taught a live
    /// task or whose expiry it moved: nothing else of the task changes, and a full
    /// [`Self::sync`] per answer would rewrite every entry it has.
    pub(super) fn sync_hosts(
        &mut self,
        maps: &mut Maps,
        id: u64,
        addrs: &HashSet<[u8; 16]>,
    ) -> Result<(), RegistryError> {
        let task = self.get_mut(id)?;
        let full = leash_common::grant::FULL_ADDRESS_PREFIX;
        let hosts: Vec<_> = grants::compile_net(id, &net_grants(task))?
            .into_iter()
            .filter(|(prefix, key, _)| *prefix == full && addrs.contains(&key.addr))
            .collect();
        // Tracked before the write, as `reconcile` does: a half-done write leaves
        // nothing untracked.
        task.installed
            .net
            .extend(hosts.iter().map(|(prefix, key, _)| (*prefix, key.addr)));
        maps.insert_net(&hosts)?;
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

    /// Kernel entries of each map this registry installed (`TASKS`, `EXEC_GRANTS`,
    /// `SCRIPT_GRANTS`, `NET_GRANTS`, `NET_HOSTS`), from its own records: no map walk.
    #[must_use]
    pub fn kernel_entries(&self) -> [(&'static str, u64); 5] {
        use leash_common::maps as names;
        let full = leash_common::grant::FULL_ADDRESS_PREFIX;
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
}

/// A task's network grants: its approved grants' and the unexpired learned addresses.
fn net_grants(task: &TaskRecord) -> Vec<NetGrant> {
    let mut nets: Vec<NetGrant> = Vec::new();
    for g in task.grants.iter().filter(|g| g.pending_ns == 0) {
        for n in &g.nets {
            nets.push(NetGrant {
                addr: n.addr,
                prefix: n.prefix,
                rule: leash_common::PortRule {
                    expires_ns: g.expires_ns,
                    port_lo: n.port_lo,
                    port_hi: n.port_hi,
                    protos: n.protos,
                    _pad: [0; 3],
                },
            });
        }
    }
    nets.extend(learned_grants(&task.learned, crate::clock::boottime_ns()));
    nets
}

/// Host grants of the addresses a task learned from DNS answers, until they expire.
fn learned_grants(learned: &[LearnedRecord], now: u64) -> impl Iterator<Item = NetGrant> + '_ {
    learned
        .iter()
        .filter(move |l| l.expires_ns > now)
        .map(|l| NetGrant {
            addr: l.addr,
            prefix: 128,
            rule: leash_common::PortRule {
                expires_ns: l.expires_ns,
                port_lo: l.port_lo,
                port_hi: l.port_hi,
                protos: l.protos,
                _pad: [0; 3],
            },
        })
}

/// Removes a task's kernel entries: the task entry first, so its processes are
/// denied from that moment, then its grants.
pub(super) fn uninstall(
    maps: &mut Maps,
    id: u64,
    installed: &mut Installed,
) -> Result<(), MapsError> {
    maps.remove_task_entry(id)?;
    maps.remove_dns_target(id)?;
    for key in installed.exec.drain() {
        maps.revoke_exec(&key)?;
    }
    for key in installed.scripts.drain() {
        maps.revoke_script(&key)?;
    }
    // Host entries one by one; the prefixes leave with the task's trie slot.
    let full = leash_common::grant::FULL_ADDRESS_PREFIX;
    for (prefix, addr) in installed.net.drain() {
        if prefix == full {
            maps.remove_net(prefix, NetKey { task: id, addr })?;
        }
    }
    maps.remove_net_task(id)?;
    for key in installed.unix.drain() {
        maps.revoke_unix(&key)?;
    }
    for key in installed.unix_sockets.drain() {
        maps.revoke_unix_socket(&key)?;
    }
    Ok(())
}

/// The kernel entries of a task's live `unix:` grants: each name with the view it holds
/// in (a path name granted in two views holds in the later one's), and the socket
/// files path names named. Of two grants of one entry the longer-lived expiry wins.
fn unix_entries(
    id: u64,
    grants: &[super::GrantRecord],
) -> (HashMap<UnixKey, UnixGrant>, HashMap<ExecKey, u64>) {
    let mut unix: HashMap<UnixKey, UnixGrant> = HashMap::new();
    let mut sockets_of: HashMap<ExecKey, u64> = HashMap::new();
    for g in grants.iter().filter(|g| g.pending_ns == 0) {
        for name in &g.unix {
            let Some(Ok(SocketGrant::Unix(n))) = sockets::parse(&format!("unix:{name}")) else {
                continue;
            };
            // A path name recorded without its view (older state) holds nowhere: the
            // all-zero scope names no mount namespace.
            let scope = if name.starts_with('/') {
                g.unix_view.map(UnixView::scope).unwrap_or_default()
            } else {
                UnixScope::default()
            };
            let e = unix.entry(n.key(id)).or_insert(UnixGrant {
                expires_ns: g.expires_ns,
                scope,
            });
            *e = UnixGrant {
                expires_ns: longer_lived(e.expires_ns, g.expires_ns),
                scope,
            };
            if let Some(file) = g.unix_socket {
                let e = sockets_of.entry(file.key(id)).or_insert(g.expires_ns);
                *e = longer_lived(*e, g.expires_ns);
            }
        }
    }
    (unix, sockets_of)
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
    if f.tree {
        let tree = ExecFileGrant {
            expires_ns,
            ctime_sec: 0,
            ctime_nsec: 0,
            generation: 0,
            checks: CHECK_TREE,
            _pad: 0,
        };
        let e = exec.entry(key).or_insert(tree);
        e.expires_ns = longer_lived(e.expires_ns, expires_ns);
        return;
    }
    let grant = f.state.map_or_else(
        || {
            tracing::warn!(
                task = %TaskId(id),
                path = %f.path,
                "exec grant recorded by an older daemon, without the file's state: checked by identity only until granted again"
            );
            file_state::unchecked(expires_ns)
        },
        |s| s.grant(expires_ns),
    );
    let grant = if f.script {
        ExecFileGrant {
            checks: grant.checks | CHECK_SCRIPT,
            ..grant
        }
    } else {
        grant
    };
    let e = exec.entry(key).or_insert(grant);
    *e = ExecFileGrant {
        expires_ns: longer_lived(e.expires_ns, expires_ns),
        ..grant
    };
}

/// The later of two expiries in `CLOCK_BOOTTIME` ns, where 0 means "with the task" and
/// outlives any time.
fn longer_lived(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 { 0 } else { a.max(b) }
}

fn exec_file(f: &FileRecord) -> ExecFile {
    ExecFile {
        path: f.path.clone().into(),
        dev: f.dev,
        ino: f.ino,
        script: f.script,
        state: f.state.unwrap_or_default(),
        tree: f.tree,
    }
}

/// Puts one map's entries of a task in line with `wanted`: `put` writes every wanted
/// entry (new or changed), then the installed ones no longer wanted are removed, so an
/// entry wanted before and after is never missing in between. `installed` is what may
/// be in the kernel: wanted keys count from before the write, so a write that fails
/// half way leaves nothing untracked (removing an absent entry is not an error).
fn reconcile<K: Copy + Eq + Hash, V>(
    maps: &mut Maps,
    wanted: &HashMap<K, V>,
    installed: &mut HashSet<K>,
    put: impl FnOnce(&mut Maps, &HashMap<K, V>) -> Result<(), MapsError>,
    remove: impl Fn(&mut Maps, &K) -> Result<(), MapsError>,
) -> Result<(), MapsError> {
    installed.extend(wanted.keys().copied());
    put(maps, wanted)?;
    let stale: Vec<K> = installed
        .iter()
        .filter(|k| !wanted.contains_key(k))
        .copied()
        .collect();
    for key in stale {
        remove(maps, &key)?;
        installed.remove(&key);
    }
    Ok(())
}
