//! Prometheus metrics: the snapshot a scrape reports and its OpenMetrics (or classic
//! Prometheus) text. Decision counts are read from the kernel's per-CPU counters at
//! scrape time, so lost events can never skew them. The daemon serves them
//! (`daemon::metrics_http`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub action: &'static str,
    pub verdict: &'static str,
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AgentLabels {
    pub agent: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndedLabels {
    pub agent: String,
    pub reason: String,
}

/// A refused (or, in audit mode, would-be refused) decision: every label from a fixed
/// set (the actions, `denied|audited`, the reasons), so the series stay bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub action: &'static str,
    pub verdict: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MapLabels {
    pub map: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgramLabels {
    pub program: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabels {
    pub version: &'static str,
}

/// Metrics the daemon updates as things happen (the rest is read at scrape time).
#[derive(Clone)]
pub struct Recorded {
    /// From API request to the kernel's maps updated.
    pub grant_apply: Histogram,
    pub tasks_ended: Family<EndedLabels, Counter>,
    /// File denials per agent, from Landlock's audit records (not the kernel's
    /// counters: counted by the daemon since it started, and only while audit is on).
    pub file_denials: Arc<Mutex<BTreeMap<String, u64>>>,
    /// From a query forwarded to a task's resolver to its answer (answered ones only;
    /// failures are `dns` decisions with reason `upstream_failed`).
    pub dns_upstream: Histogram,
    /// From the upstream's answer to the answer relayed: checked, its addresses
    /// installed as grants in the kernel's maps, the event reported.
    pub dns_install: Histogram,
    /// Denied and audited decisions by action and reason, from the events.
    pub denials: Family<DenialLabels, Counter>,
    /// Break-glass tasks started. One series, exported from 0, so that an alert on
    /// its increase fires on the first one.
    pub break_glass: Counter,
}

impl Recorded {
    /// Counts a decision by reason when it is not `allowed`.
    pub fn count_denial(&self, action: &'static str, verdict: &'static str, reason: &'static str) {
        if verdict != "allowed" {
            self.denials
                .get_or_create(&DenialLabels {
                    action,
                    verdict,
                    reason,
                })
                .inc();
        }
    }

    pub fn count_file_denial(&self, agent: &str) {
        *self
            .file_denials
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(agent.to_owned())
            .or_default() += 1;
    }
}

impl Default for Recorded {
    fn default() -> Self {
        Self {
            // 10 µs .. ~1.3 s
            grant_apply: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(1e-5, 2.0, 18),
            ),
            tasks_ended: Family::default(),
            denials: Family::default(),
            break_glass: Counter::default(),
            file_denials: Arc::default(),
            // 50 µs .. ~3.3 s: a local resolver answers in well under a millisecond, a
            // remote one in tens; the upstream timeout (2 s by default) bounds the rest.
            dns_upstream: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(5e-5, 2.0, 17),
            ),
            // 5 µs .. ~160 ms
            dns_install: Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(5e-6, 2.0, 16),
            ),
        }
    }
}

/// A snapshot of the kernel and daemon state a scrape reports.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// (agent, counts[action][verdict]) per counter slot in use; slot 0 is "unknown".
    pub decisions: Vec<(String, crate::kernel::maps::DecisionCounts)>,
    pub tasks_active: Vec<(String, i64)>,
    pub grants_active: [(&'static str, i64); 2],
    pub maps: Vec<(&'static str, u64, u64)>,
    pub events_lost: u64,
    pub tag_failures: u64,
    pub killed: u64,
    /// Tagged threads moved out of the leash cgroups (attach scope `task`).
    pub escapes: u64,
    pub programs: Vec<(&'static str, Duration, u64)>,
    /// Per HTTP listener (`api`, `metrics`): connections open, refused at the
    /// listener's maximum, refused at the peer's, and requests timed out.
    pub connections: Vec<(&'static str, [u64; 4])>,
    /// Addresses learned from DNS answers of live tasks, per agent.
    pub dns_learned: Vec<(String, i64)>,
    /// DNS responders running (one per network namespace of attached processes).
    pub dns_responders: i64,
}

/// Whether the kernel keeps BPF program run statistics.
#[must_use]
pub fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() == "1")
}

/// Renders the OpenMetrics text for one scrape.
#[must_use]
pub fn render(snap: &Snapshot, recorded: &Recorded) -> String {
    let mut reg = Registry::default();
    register_decisions(&mut reg, snap, recorded);
    register_state(&mut reg, snap, recorded);
    register_kernel(&mut reg, snap, recorded);
    register_connections(&mut reg, snap);
    register_dns(&mut reg, snap, recorded);
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        let _ = writeln!(out, "# encoding failed");
    }
    out
}

fn register_decisions(reg: &mut Registry, snap: &Snapshot, recorded: &Recorded) {
    let decisions = Family::<DecisionLabels, Counter>::default();
    for (agent, counts) in &snap.decisions {
        for (a, action) in crate::kernel::maps::COUNTED
            .map(leash_common::Action::as_str)
            .iter()
            .enumerate()
        {
            for (v, verdict) in crate::kernel::maps::VERDICTS
                .map(leash_common::Verdict::as_str)
                .iter()
                .enumerate()
            {
                decisions
                    .get_or_create(&DecisionLabels {
                        action,
                        verdict,
                        agent: agent.clone(),
                    })
                    .inc_by(counts[a][v]);
            }
        }
    }
    for (agent, n) in recorded
        .file_denials
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
    {
        decisions
            .get_or_create(&DecisionLabels {
                action: "file",
                verdict: "denied",
                agent: agent.clone(),
            })
            .inc_by(*n);
    }
    reg.register(
        "leash_decisions",
        "Decisions on tagged processes, counted per CPU in the kernel (never skewed by lost events); action file: Landlock's denials from the audit log, counted by the daemon while audit is on",
        decisions,
    );
}

/// Tasks, grants and maps.
fn register_state(reg: &mut Registry, snap: &Snapshot, recorded: &Recorded) {
    let active = Family::<AgentLabels, Gauge>::default();
    for (agent, n) in &snap.tasks_active {
        active
            .get_or_create(&AgentLabels {
                agent: agent.clone(),
            })
            .set(*n);
    }
    reg.register("leash_tasks_active", "Tasks not yet ended", active);
    reg.register(
        "leash_denials",
        "Denied and audited decisions by action, verdict and reason, as reported in the events \
         (a denial whose event the ring buffer dropped is counted in leash_decisions_total only)",
        recorded.denials.clone(),
    );
    reg.register(
        "leash_break_glass",
        "Break-glass tasks started since the daemon started (docs/policy.md, break-glass)",
        recorded.break_glass.clone(),
    );
    reg.register(
        "leash_tasks_ended",
        "Tasks ended since the daemon started, by reason (exited, expired, ended, revoked)",
        recorded.tasks_ended.clone(),
    );
    let grants = Family::<KindLabels, Gauge>::default();
    for (kind, n) in snap.grants_active {
        grants.get_or_create(&KindLabels { kind }).set(n);
    }
    reg.register(
        "leash_grants_active",
        "Grants of tasks not yet ended",
        grants,
    );
    let entries = Family::<MapLabels, Gauge>::default();
    let capacity = Family::<MapLabels, Gauge>::default();
    for &(map, e, c) in &snap.maps {
        entries.get_or_create(&MapLabels { map }).set(e as i64);
        capacity.get_or_create(&MapLabels { map }).set(c as i64);
    }
    reg.register(
        "leash_map_entries",
        "Entries in each BPF map (NET_GRANTS: the fullest task's prefix trie)",
        entries,
    );
    reg.register(
        "leash_map_capacity",
        "Capacity (max_entries) of each BPF map (NET_GRANTS: of each task's prefix trie)",
        capacity,
    );
}

/// The HTTP listeners' connections: what they hold and what they refused.
fn register_connections(reg: &mut Registry, snap: &Snapshot) {
    let open = Family::<ListenerLabels, Gauge>::default();
    let refused = Family::<RefusedLabels, Counter>::default();
    let timed_out = Family::<ListenerLabels, Counter>::default();
    for &(listener, [n, max, per_peer, late]) in &snap.connections {
        open.get_or_create(&ListenerLabels { listener })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
        for (reason, v) in [("max", max), ("per_peer", per_peer)] {
            refused
                .get_or_create(&RefusedLabels { listener, reason })
                .inc_by(v);
        }
        timed_out
            .get_or_create(&ListenerLabels { listener })
            .inc_by(late);
    }
    reg.register(
        "leash_http_connections",
        "Connections the API socket and the metrics listener hold now",
        open,
    );
    reg.register(
        "leash_http_connections_refused",
        "Connections closed at accept: the listener's maximum (max) or the peer's (per_peer) was reached",
        refused,
    );
    reg.register(
        "leash_http_requests_timed_out",
        "Requests answered 408 because they did not complete within connections.request_timeout",
        timed_out,
    );
}

/// Kernel health counters, program statistics and build info.
fn register_kernel(reg: &mut Registry, snap: &Snapshot, recorded: &Recorded) {
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "leash_events_lost",
        "Decision events the kernel could not queue (ring buffer full); counters stay exact",
        counter(snap.events_lost),
    );
    reg.register(
        "leash_tag_failures",
        "Forks of tagged processes refused because the process map was full (the forking process was killed)",
        counter(snap.tag_failures),
    );
    reg.register(
        "leash_processes_killed",
        "Tagged processes the kernel killed (denied execs on the portable backend, socket families, attempts on leash, full process map)",
        counter(snap.killed),
    );
    reg.register(
        "leash_cgroup_escapes",
        "Tagged processes moved out of their task's leash cgroups (attach_scope task); each is killed, at the move or by the daemon",
        counter(snap.escapes),
    );
    reg.register(
        "leash_grant_apply_seconds",
        "Time from an API request to its grants being in the kernel's maps",
        recorded.grant_apply.clone(),
    );
    let enabled = bpf_stats_enabled();
    let stats_gauge = Gauge::<i64>::default();
    stats_gauge.set(i64::from(enabled));
    reg.register(
        "leash_bpf_stats_enabled",
        "1 when kernel.bpf_stats_enabled is on, so program run time and counts are reported",
        stats_gauge,
    );
    if enabled {
        let run_time = Family::<ProgramLabels, Counter<f64>>::default();
        let runs = Family::<ProgramLabels, Counter>::default();
        for &(program, t, n) in &snap.programs {
            run_time
                .get_or_create(&ProgramLabels { program })
                .inc_by(t.as_secs_f64());
            runs.get_or_create(&ProgramLabels { program }).inc_by(n);
        }
        reg.register(
            "leash_bpf_program_run_seconds",
            "Time spent in each program",
            run_time,
        );
        reg.register("leash_bpf_program_runs", "Runs of each program", runs);
    }
    let info = Family::<VersionLabels, Gauge>::default();
    info.get_or_create(&VersionLabels {
        version: env!("CARGO_PKG_VERSION"),
    })
    .set(1);
    reg.register("leash_build_info", "Build of the running daemon", info);
}

/// The DNS responders: their upstream latency, what they learned, how many run.
/// Queries by verdict are `leash_decisions_total{action="dns"}`.
fn register_dns(reg: &mut Registry, snap: &Snapshot, recorded: &Recorded) {
    reg.register(
        "leash_dns_upstream_seconds",
        "Time from a task's query forwarded to its resolver to the answer (answered queries)",
        recorded.dns_upstream.clone(),
    );
    reg.register(
        "leash_dns_install_seconds",
        "Time from the upstream's answer to a granted answer relayed, its addresses installed as grants",
        recorded.dns_install.clone(),
    );
    let learned = Family::<AgentLabels, Gauge>::default();
    for (agent, n) in &snap.dns_learned {
        learned
            .get_or_create(&AgentLabels {
                agent: agent.clone(),
            })
            .set(*n);
    }
    reg.register(
        "leash_dns_learned_addresses",
        "Addresses learned from DNS answers, host grants of live tasks until they expire",
        learned,
    );
    let responders = Gauge::<i64>::default();
    responders.set(snap.dns_responders);
    reg.register(
        "leash_dns_responders",
        "DNS responders running, one per network namespace of attached processes",
        responders,
    );
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition, for
/// scrapers that do not ask for OpenMetrics: counter families are named with their
/// `_total` suffix, and there is no `# EOF`.
#[must_use]
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_with_help_and_converts_counters() {
        let recorded = Recorded::default();
        recorded.grant_apply.observe(0.0005);
        recorded.dns_upstream.observe(0.0002);
        let snap = Snapshot {
            decisions: vec![(
                "alpha".into(),
                [
                    [1, 2, 3],
                    [4, 5, 6],
                    [7, 8, 9],
                    [0, 10, 0],
                    [0, 11, 0],
                    [0, 12, 0],
                    [13, 14, 15],
                ],
            )],
            tasks_active: vec![("alpha".into(), 2)],
            grants_active: [("exec", 3), ("connect", 1)],
            maps: vec![("PROCS", 5, 100)],
            events_lost: 4,
            dns_learned: vec![("alpha".into(), 3)],
            dns_responders: 2,
            ..Snapshot::default()
        };
        let om = render(&snap, &recorded);
        for (action, n) in [("socket", 10), ("tamper", 11), ("fork", 12), ("dns", 14)] {
            let line = format!(
                "leash_decisions_total{{action=\"{action}\",verdict=\"denied\",agent=\"alpha\"}} {n}"
            );
            assert!(om.contains(&line), "{line} missing");
        }
        assert!(
            om.contains(
                "leash_decisions_total{action=\"connect\",verdict=\"denied\",agent=\"alpha\"} 5"
            ),
            "{om}"
        );
        assert!(om.contains("leash_events_lost_total 4"));
        assert!(
            om.contains("leash_dns_learned_addresses{agent=\"alpha\"} 3"),
            "{om}"
        );
        assert!(om.contains("leash_dns_responders 2"));
        assert!(om.contains("leash_dns_upstream_seconds_count 1"));
        assert!(
            om.contains("leash_dns_upstream_seconds_bucket{le=\"0.0002\"} 1"),
            "{om}"
        );
        assert!(om.trim_end().ends_with("# EOF"));
        let text = to_prometheus_text(&om);
        assert!(text.contains("# TYPE leash_decisions_total counter"));
        assert!(text.contains("# HELP leash_events_lost_total "));
        assert!(text.contains("# TYPE leash_tasks_active gauge"));
        assert!(!text.contains("# EOF"));
    }
}
