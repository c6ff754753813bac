//! What the maps report: capacities, entries, kernel memory, and the decision and
//! health counters.

use aya::maps::{MapData, PerCpuArray};
use leash_common::{
    Action, Verdict,
    event::counter_index,
    maps::{self as names, Stat},
};

use super::{Maps, MapsError, is_tid};

/// The counted actions, in the row order of [`DecisionCounts`].
pub const COUNTED: [Action; 7] = [
    Action::Exec,
    Action::Connect,
    Action::Send,
    Action::Socket,
    Action::Tamper,
    Action::Fork,
    Action::Dns,
];

/// The verdicts, in the column order of [`DecisionCounts`].
pub const VERDICTS: [Verdict; 3] = [Verdict::Allowed, Verdict::Denied, Verdict::Audited];

/// Decision counts of one counter slot: `[action][verdict]`, actions as in [`COUNTED`].
pub type DecisionCounts = [[u64; VERDICTS.len()]; COUNTED.len()];

impl Maps {
    /// Capacity of each map, one syscall each. `NET_GRANTS` is that of each task's
    /// prefix trie.
    #[must_use]
    pub fn capacities(&self) -> [(&'static str, u64); 7] {
        use aya::maps::IterableMap as _;
        let cap = |m: &MapData| m.info().map_or(0, |i| u64::from(i.max_entries()));
        [
            (names::PROCS, cap(self.procs.map())),
            (names::TASKS, cap(self.tasks.map())),
            (names::EXEC_GRANTS, cap(self.exec.map())),
            (names::SCRIPT_GRANTS, cap(self.scripts.map())),
            (names::NET_GRANTS, u64::from(self.net_capacity)),
            (names::NET_HOSTS, cap(self.hosts.map())),
            (names::UNIX_GRANTS, cap(self.unix.map())),
        ]
    }

    /// Tagged threads, by walking the process map (one syscall per entry); fork
    /// reservations are not threads.
    #[must_use]
    pub fn procs_len(&self) -> u64 {
        self.procs
            .keys()
            .filter_map(Result::ok)
            .filter(|k| is_tid(*k))
            .count() as u64
    }

    /// Granted unix names, by walking the map (small: a few per task, and the API
    /// socket's entry that no task record holds).
    #[must_use]
    pub fn unix_len(&self) -> u64 {
        self.unix.keys().count() as u64
    }

    /// Entries and capacity of each map, counted by walking every map (one syscall per
    /// entry): for `leash status`; the metrics count from the daemon's records.
    #[must_use]
    pub fn usage(&self) -> Vec<(&'static str, u64, u64)> {
        let entries = [
            self.procs_len(),
            self.tasks.keys().count() as u64,
            self.exec.keys().count() as u64,
            self.scripts.keys().count() as u64,
            // The fullest task's trie, against the capacity of each (`capacities`).
            self.net
                .owned()
                .map(|(t, _)| self.prefix_keys_of(t).map_or(0, |k| k.len() as u64))
                .max()
                .unwrap_or(0),
            self.hosts.keys().count() as u64,
            self.unix.keys().count() as u64,
        ];
        self.capacities()
            .into_iter()
            .zip(entries)
            .map(|((name, cap), n)| (name, n, cap))
            .collect()
    }

    /// Kernel memory charged to each map (`memlock` in the map fd's fdinfo), in bytes.
    #[must_use]
    pub fn memlock(&self) -> Vec<(&'static str, u64)> {
        use aya::maps::IterableMap as _;
        use std::os::fd::{AsFd as _, AsRawFd as _};
        let read = |m: &MapData| {
            let fd = m.fd().as_fd().as_raw_fd();
            std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))
                .ok()
                .and_then(|t| {
                    t.lines()
                        .find_map(|l| l.strip_prefix("memlock:").map(|v| v.trim().parse().ok()))
                        .flatten()
                })
                .unwrap_or(0)
        };
        vec![
            (names::PROCS, read(self.procs.map())),
            (names::TASKS, read(self.tasks.map())),
            (names::EXEC_GRANTS, read(self.exec.map())),
            (names::SCRIPT_GRANTS, read(self.scripts.map())),
            (
                names::NET_GRANTS,
                self.net.maps().into_iter().map(&read).sum::<u64>() + self.net.tries_memlock(read),
            ),
            (names::NET_HOSTS, read(self.hosts.map())),
            (names::UNIX_GRANTS, read(self.unix.map())),
        ]
    }

    /// Sum over CPUs of one counter slot.
    pub fn decisions(&self, slot: u32) -> Result<DecisionCounts, MapsError> {
        let mut out = [[0u64; VERDICTS.len()]; COUNTED.len()];
        for (a, action) in COUNTED.into_iter().enumerate() {
            for (v, verdict) in VERDICTS.into_iter().enumerate() {
                out[a][v] = Self::sum(
                    &self.decisions,
                    counter_index(slot, action, verdict),
                    names::DECISIONS,
                )?;
            }
        }
        Ok(out)
    }

    /// Counts a decision made in userspace (the DNS responder) in the kernel's counters,
    /// on the first CPU's copy: no kernel program writes the rows of such an action,
    /// and the daemon writes them under its lock, so nothing is lost to a race.
    pub fn count_userspace(
        &mut self,
        slot: u32,
        action: Action,
        verdict: Verdict,
    ) -> Result<(), MapsError> {
        let index = counter_index(slot, action, verdict);
        let op = |op| {
            move |source| MapsError::Op {
                op,
                map: names::DECISIONS,
                source,
            }
        };
        let values = self.decisions.get(&index, 0).map_err(op("lookup"))?;
        let mut values: Vec<u64> = values.iter().copied().collect();
        if let Some(first) = values.first_mut() {
            *first += 1;
        }
        let values = aya::maps::PerCpuValues::try_from(values).map_err(|e| MapsError::Op {
            op: "update",
            map: names::DECISIONS,
            source: aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_update_elem",
                io_error: e,
            }),
        })?;
        self.decisions.set(index, values, 0).map_err(op("update"))
    }

    pub fn stat(&self, stat: Stat) -> Result<u64, MapsError> {
        Self::sum(&self.stats, stat as u32, names::STATS)
    }

    fn sum(
        map: &PerCpuArray<MapData, u64>,
        index: u32,
        name: &'static str,
    ) -> Result<u64, MapsError> {
        let values = map.get(&index, 0).map_err(|source| MapsError::Op {
            op: "lookup",
            map: name,
            source,
        })?;
        Ok(values.iter().sum())
    }
}
