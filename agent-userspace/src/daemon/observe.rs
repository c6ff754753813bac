//! What the daemon reports: tasks, `leash status`, readiness and the metrics snapshot.

use std::collections::BTreeMap;

use super::{Daemon, RegistryError, Tasks};
use crate::{protocol, protocol::TaskId};

impl Daemon {
    pub fn task(&self, id: u64) -> Result<protocol::Task, RegistryError> {
        self.lock()
            .tasks
            .get(id)
            .map(|t| t.view(&self.limits.trust_domain))
            .ok_or_else(|| RegistryError::NoTask(TaskId(id).to_string()))
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
            attach_scope: e.attach_scope().to_string(),
            attach_scope_reason: e.attach_scope_reason().into(),
            kill_at_move: match e.kill_at_move() {
                Ok(()) => "kernel".into(),
                Err(why) => format!("daemon ({why})"),
            },
            cgroup: e.cgroup().display().to_string(),
            // Every program of the object, and whether this backend attached it.
            programs: crate::kernel::all_programs()
                .iter()
                .map(|p| protocol::ProgramStatus {
                    name: (*p).into(),
                    attached: e.attached().contains(p),
                    applies: crate::kernel::program_applies(p, e.backend(), e.unix_hooks()),
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
            events_lost: stat(leash_common::maps::Stat::EventsLost),
            tag_failures: stat(leash_common::maps::Stat::TagFailed),
            bpf_stats_enabled: crate::metrics::bpf_stats_enabled(),
            guarantees: e
                .guarantees()
                .iter()
                .map(|g| (*g).to_owned())
                .chain(file_guarantee())
                .collect(),
            policy: self.gate.describe(),
            ia32_emulation: crate::kernel::ia32::detect().to_string(),
            landlock: crate::files::domain::summary(),
            scope: None,
        }
    }

    /// Whether the kernel maps answer (for `/readyz`).
    pub fn maps_reachable(&self) -> bool {
        self.lock()
            .enforcer
            .maps()
            .stat(leash_common::maps::Stat::EventsLost)
            .is_ok()
    }

    /// One scrape's worth of OpenMetrics text.
    pub fn metrics_text(&self) -> String {
        let dns_responders = self.dns.count();
        let snap = {
            let inner = self.lock();
            let maps = inner.enforcer.maps();
            let mut decisions = vec![("unknown".to_owned(), maps.decisions(0).unwrap_or_default())];
            let rows = inner.tasks.agent_rows();
            for (agent, slot) in &rows {
                decisions.push((agent.clone(), maps.decisions(*slot).unwrap_or_default()));
            }
            let mut active: BTreeMap<String, i64> = rows.into_iter().map(|(a, _)| (a, 0)).collect();
            let mut learned: BTreeMap<String, i64> = BTreeMap::new();
            let (mut exec, mut connect) = (0, 0);
            for t in inner
                .tasks
                .tasks
                .values()
                .filter(|t| t.state != protocol::TaskState::Ended)
            {
                let agent = inner.tasks.agent_label(&t.agent);
                if !t.learned.is_empty() {
                    *learned.entry(agent.clone()).or_default() += t.learned.len() as i64;
                }
                *active.entry(agent).or_default() += 1;
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
                events_lost: stat(leash_common::maps::Stat::EventsLost),
                tag_failures: stat(leash_common::maps::Stat::TagFailed),
                killed: stat(leash_common::maps::Stat::Killed),
                escapes: stat(leash_common::maps::Stat::Escaped),
                programs: inner.enforcer.program_stats(),
                connections: vec![
                    ("api", self.listeners.api.overload.counts()),
                    ("metrics", self.listeners.metrics.counts()),
                ],
                dns_learned: learned.into_iter().collect(),
                dns_responders,
            }
        };
        crate::metrics::render(&snap, &self.recorded)
    }
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
                    leash_common::maps::UNIX_GRANTS => maps.unix_len(),
                    _ => maps.procs_len(),
                },
                |(_, n)| *n,
            );
            (name, n, cap)
        })
        .collect()
}

/// The guarantee line of the file rules and self-protection scopes (Landlock).
fn file_guarantee() -> Option<String> {
    crate::files::kernel_abi().map(|abi| {
        format!(
            "files, ptrace, signals (leash run only, not the attach API): EACCES/EPERM (Landlock ABI {abi})"
        )
    })
}
