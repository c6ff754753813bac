//! The end-of-run assertions: nothing of an ended task left in any map, no orphaned pin
//! or scope cgroup, the prober's decision counters equal to its own counts, an audit
//! log that verifies with no torn line, and the daemon's RSS within its bound.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use harness::daemon::DaemonGuard;

use crate::util::{Ctx, get};

/// The daemon's RSS may not exceed this (a debug build idles near 45 MiB).
pub(crate) const RSS_BOUND_KIB: u64 = 256 * 1024;

/// What the pinned state looked like before the first task.
pub(crate) struct Baseline {
    entries: BTreeMap<String, usize>,
    pins: BTreeSet<String>,
    cgroups: usize,
}

impl Baseline {
    pub(crate) fn take(d: &DaemonGuard) -> Self {
        Self {
            entries: pinned_entries(&d.pin_dir),
            pins: pins(&d.pin_dir),
            cgroups: scope_cgroups(),
        }
    }
}

/// Entries of every pinned map bpftool can dump (the ring buffer it cannot), by name.
fn pinned_entries(pin_dir: &Path) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let Ok(maps) = std::fs::read_dir(pin_dir.join("maps")) else {
        return out;
    };
    for m in maps.flatten() {
        let name = m.file_name().to_string_lossy().into_owned();
        let Ok(o) = Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(m.path())
            .output()
        else {
            continue;
        };
        if let Ok(serde_json::Value::Array(entries)) = serde_json::from_slice(&o.stdout) {
            out.insert(name, entries.len());
        }
    }
    out
}

/// Every path under the pin directory, relative to it.
fn pins(pin_dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![pin_dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p.strip_prefix(pin_dir).unwrap_or(&p).display().to_string());
        }
    }
    out
}

/// Leash scope cgroups under this process's cgroup, where the tasks' processes live.
fn scope_cgroups() -> usize {
    let Some(own) = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
        })
    else {
        return 0;
    };
    let mut n = 0;
    let mut stack = vec![Path::new("/sys/fs/cgroup").join(own.trim_start_matches('/'))];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                n += usize::from(e.file_name() == "leash");
                stack.push(e.path());
            }
        }
    }
    n
}

/// The run's end: survivors killed, every task still live ended. Returns how many
/// tasks were still live.
pub(crate) fn wind_down(ctx: &Ctx) -> usize {
    for pid in ctx.survivors.lock().unwrap().drain(..) {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("leash-probe") {
            // SAFETY: a plain kill of a process this run left behind (checked by name).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let Some(o) = ctx.call_answered(&["task", "list", "--json"]) else {
        return 0;
    };
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let live: Vec<&str> = tasks
        .iter()
        .filter(|t| t["state"] != "ended")
        .filter_map(|t| t["id"].as_str())
        .collect();
    for id in &live {
        let _ = ctx.call_answered(&["task", "end", id]);
    }
    live.len()
}

/// Every end-of-run assertion; the failures, each a line.
pub(crate) fn verify(
    ctx: &Ctx,
    d: &DaemonGuard,
    base: &Baseline,
    report: &mut Report,
) -> Vec<String> {
    let mut failures = Vec::new();
    // Task ends and process exits reach the maps through the daemon's event pump and
    // sweeper: give them a few passes.
    let until = Instant::now() + Duration::from_secs(30);
    let mut leaked;
    loop {
        leaked = leaked_entries(&base.entries, &pinned_entries(&d.pin_dir));
        if leaked.is_empty() || Instant::now() > until {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    report.leaked_entries = leaked.iter().map(|(_, n)| *n).sum();
    for (map, n) in &leaked {
        failures.push(format!("{map}: {n} entries left of ended tasks"));
    }
    // The daemon's own map readers must agree.
    if let Some(o) = ctx.call_answered(&["status", "--json"]) {
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        for m in v["maps"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap_or_default();
            let want = base.entries.get(name).copied().unwrap_or(0) as u64;
            if m["entries"].as_u64() != Some(want) {
                failures.push(format!(
                    "leash status: {name} has {} entries, {want} at start",
                    m["entries"]
                ));
            }
        }
    }
    let now_pins = pins(&d.pin_dir);
    let orphans: Vec<&String> = now_pins.difference(&base.pins).collect();
    report.orphaned_pins = orphans.len();
    if !orphans.is_empty() {
        failures.push(format!("orphaned pins: {orphans:?}"));
    }
    report.scope_cgroups = scope_cgroups().saturating_sub(base.cgroups);
    if report.scope_cgroups > 0 {
        failures.push(format!("{} scope cgroups left", report.scope_cgroups));
    }
    counters(ctx, d, report, &mut failures);
    audit(d, report, &mut failures);
    report.rss_kib_max = get(&ctx.stats.rss_kib_max).max(crate::faults::rss_kib(d.pid()));
    if report.rss_kib_max > RSS_BOUND_KIB {
        failures.push(format!(
            "daemon RSS reached {} KiB (bound {RSS_BOUND_KIB} KiB)",
            report.rss_kib_max
        ));
    }
    failures
}

fn leaked_entries(
    base: &BTreeMap<String, usize>,
    now: &BTreeMap<String, usize>,
) -> Vec<(String, usize)> {
    now.iter()
        .filter_map(|(name, n)| {
            let was = base.get(name).copied().unwrap_or(0);
            (*n > was).then(|| (name.clone(), n - was))
        })
        .collect()
}

/// The prober's agent: its decision counters against what the prober saw (plus the
/// one allowed exec of the probe by `leash run`). The counters live in a pinned map
/// that daemon kills do not touch, but a restarted daemon attaches its programs before
/// it lets the previous daemon's go (a handover with no gap), and a decision made in
/// between is counted by both. That moment lasts tens of milliseconds, so: never fewer
/// than the prober saw, and at most two more per restart (the prober makes a round
/// every 50 ms).
fn counters(ctx: &Ctx, d: &DaemonGuard, report: &mut Report, failures: &mut Vec<String>) {
    let (status, body) = d.metrics_get("/metrics");
    if status != 200 {
        failures.push(format!("GET /metrics: {status}"));
        return;
    }
    let sample = |action: &str, verdict: &str| -> u64 {
        let key = format!(
            "leash_decisions_total{{action=\"{action}\",verdict=\"{verdict}\",agent=\"{}\"}} ",
            crate::prober::AGENT
        );
        body.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let windows = ctx.restarts.lock().unwrap().clone();
    let in_restart = ctx
        .rounds
        .lock()
        .unwrap()
        .iter()
        .filter(|t| {
            windows
                .iter()
                .any(|(from, to)| **t + Duration::from_secs(1) >= *from && **t <= *to)
        })
        .count() as u64;
    report.rounds_in_restarts = in_restart;
    let s = &ctx.stats;
    for (action, verdict, seen) in [
        ("connect", "allowed", get(&s.prober_connect_ok)),
        ("connect", "denied", get(&s.prober_connect_denied)),
        ("exec", "denied", get(&s.prober_exec_denied)),
        ("exec", "allowed", 1),
    ] {
        let got = sample(action, verdict);
        report
            .counters
            .push(format!("{action}/{verdict} {got} (seen {seen})"));
        let most = if action == "exec" && verdict == "allowed" {
            seen
        } else {
            seen + 2 * windows.len() as u64
        };
        if got < seen || got > most {
            failures.push(format!(
                "decision counter {action}/{verdict} of the prober: {got}; the prober saw {seen}, over {} restarts",
                windows.len()
            ));
        }
    }
}

/// `leash audit verify` passes and every line is a whole JSON record.
fn audit(d: &DaemonGuard, report: &mut Report, failures: &mut Vec<String>) {
    let text = std::fs::read_to_string(&d.audit_log).unwrap_or_default();
    report.audit_lines = text.lines().count();
    report.torn_lines = text
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_err())
        .count();
    if report.torn_lines > 0 {
        failures.push(format!("{} torn lines in the audit log", report.torn_lines));
    }
    let o = Command::new(harness::daemon::leash_bin())
        .args(["audit", "verify", "--config"])
        .arg(&d.config)
        .output();
    match o {
        Ok(o) if o.status.success() => {}
        Ok(o) => failures.push(format!(
            "leash audit verify: {}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => failures.push(format!("leash audit verify: {e}")),
    }
}

/// The figures the run ends with.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) live_at_end: usize,
    pub(crate) leaked_entries: usize,
    pub(crate) orphaned_pins: usize,
    pub(crate) scope_cgroups: usize,
    pub(crate) audit_lines: usize,
    pub(crate) torn_lines: usize,
    pub(crate) rss_kib_max: u64,
    pub(crate) rounds_in_restarts: u64,
    pub(crate) counters: Vec<String>,
}
