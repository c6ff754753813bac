//! The control plane, the event drain and the daemon's memory.

use std::{
    fmt::Write as _,
    net::UdpSocket,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use harness::probe;

use super::percentile;

/// Grant apply and teardown latency through a real daemon.
pub(super) fn control_plane(n: usize) -> anyhow::Result<String> {
    use aya::maps::{HashMap, Map, MapData};
    use harness::daemon::{DaemonGuard, http};

    let d = DaemonGuard::start("bench", "");
    let tasks_map = MapData::from_pin(d.pin_dir.join("maps").join(leash_common::maps::TASKS))
        .context("open the pinned TASKS map")?;
    let tasks_map: HashMap<MapData, u64, leash_common::TaskInfo> =
        HashMap::try_from(Map::HashMap(tasks_map))?;
    let (mut create, mut grant, mut teardown) = (Vec::new(), Vec::new(), Vec::new());
    let mut grant_prefix = Vec::new();
    let mut floor = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let (status, body) = http(
            &d.socket,
            "POST",
            "/v1/tasks",
            br#"{"agent":"bench","grants":{"exec":["/bin/true"]},"end_when":"command_exits"}"#,
        );
        create.push(t.elapsed());
        if status != 201 {
            bail!("create task: {status} {body}");
        }
        let task: serde_json::Value = serde_json::from_str(&body)?;
        let id = task["id"].as_str().context("task id")?.to_owned();
        // A host grant, then a prefix grant (the task's first takes a slot of the
        // per-task trie pool): each timed as one API round trip.
        let add_grant = |connect: String| -> anyhow::Result<Duration> {
            let t = Instant::now();
            let spec = format!(r#"{{"connect":"{connect}"}}"#);
            let path = format!("/v1/tasks/{id}/grants");
            let (status, body) = http(&d.socket, "POST", &path, spec.as_bytes());
            let took = t.elapsed();
            if status != 201 {
                bail!("add grant {connect}: {status} {body}");
            }
            Ok(took)
        };
        grant.push(add_grant(format!("127.0.0.1:{}/tcp", 1000 + i % 60000))?);
        grant_prefix.push(add_grant(format!(
            "10.{}.{}.0/24:443/tcp",
            (i / 256) % 256,
            i % 256
        ))?);
        // The same round trip with no map work: the HTTP and scheduling floor.
        let t = Instant::now();
        let (status, body) = http(&d.socket, "GET", &format!("/v1/tasks/{id}"), b"");
        floor.push(t.elapsed());
        if status != 200 {
            bail!("get task: {status} {body}");
        }
        let kid = u64::from_str_radix(&id, 16)?;
        let st = d
            .cli()
            .args(["run", "--task", &id, "--", "/bin/true"])
            .status()?;
        let reaped = Instant::now();
        if !st.success() {
            bail!("leash run /bin/true failed: {st}");
        }
        while tasks_map.get(&kid, 0).is_ok() {
            if reaped.elapsed() > Duration::from_secs(5) {
                bail!("task {id} still in the kernel 5 s after its last process exited");
            }
            // Sleep, not spin: on 2 cores a spinning waiter delays the daemon's own
            // threads by a scheduler slice (the 5 ms p99 this section once showed).
            std::thread::sleep(Duration::from_micros(20));
        }
        teardown.push(reaped.elapsed());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let mut md = String::new();
    writeln!(
        md,
        "## 4. Control plane: {n} tasks through a real daemon (HTTP on its Unix socket)\n"
    )?;
    writeln!(md, "| latency | p50 | p99 | max |")?;
    writeln!(md, "|---|---|---|---|")?;
    for (name, v) in [
        (
            "create task with one exec grant (API round trip; grants in the kernel before the answer)",
            &mut create,
        ),
        (
            "grant apply (API request → map updated → answer)",
            &mut grant,
        ),
        (
            "prefix grant apply (a /24: the task's first takes a trie slot)",
            &mut grant_prefix,
        ),
        (
            "read-only round trip (GET the task: no map work, the HTTP floor)",
            &mut floor,
        ),
        (
            "teardown (last process reaped → task entry gone from the kernel)",
            &mut teardown,
        ),
    ] {
        v.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(
            md,
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(v[v.len() - 1])
        )?;
    }
    // The daemon's own measure of the apply (request parsed → maps updated), from its
    // histogram: what the round trip adds on top is transport and scheduling.
    let (_, metrics) = d.metrics_get("/metrics");
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    let count = value("leash_grant_apply_seconds_count");
    if count > 0.0 {
        writeln!(
            md,
            "\nInside the daemon (its `leash_grant_apply_seconds` histogram, which also counts task creation), applying grants takes {:.3} ms on average over {count:.0} requests.",
            value("leash_grant_apply_seconds_sum") / count * 1e3
        )?;
    }
    writeln!(
        md,
        "\nWhole loop per task (create, grant, `leash run /bin/true`, teardown): {rate:.0} tasks/s.\n"
    )?;
    Ok(md)
}

/// Denied events the daemon drains into the audit log, and what happens above it.
pub(super) fn event_drain(n: u32) -> anyhow::Result<String> {
    use harness::daemon::DaemonGuard;
    let d = DaemonGuard::start("drain", "");
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let port = sink.local_addr()?.port().to_string();
    let out = d.run(&[
        "task",
        "create",
        "--agent",
        "flood",
        "--allow-exec",
        &probe().display().to_string(),
    ]);
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let lines_before = std::fs::read_to_string(&d.audit_log)
        .unwrap_or_default()
        .lines()
        .count();
    let start = Instant::now();
    let out = d
        .cli()
        .args(["run", "--task", &id, "--"])
        .arg(probe())
        .args(["flood", "udp", &port, &n.to_string()])
        .output()?;
    let sent = start.elapsed();
    let denied: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("flood output")?;
    // Wait until the log stops growing.
    let mut last = 0;
    let mut stable_since = Instant::now();
    let drained = loop {
        let lines = std::fs::read_to_string(&d.audit_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"kind\":\"send\""))
            .count();
        if lines != last {
            last = lines;
            stable_since = Instant::now();
        } else if stable_since.elapsed() > Duration::from_millis(500) {
            break stable_since - start;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (_, metrics) = d.metrics_get("/metrics");
    let lost_events = metrics
        .lines()
        .find_map(|l| l.strip_prefix("leash_events_lost_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(-1.0);
    let counted = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "leash_decisions_total{action=\"send\",verdict=\"denied\",agent=\"flood\"}",
            )
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse::<f64>().ok())
        .unwrap_or(-1.0);
    let _ = lines_before;
    let mut md = String::new();
    writeln!(md, "## 5. Denied-event drain\n")?;
    writeln!(
        md,
        "One tagged process sends {n} denied UDP datagrams as fast as it can; the daemon drains the ring buffer (4 MiB) into the audit log.\n"
    )?;
    writeln!(
        md,
        "| sent (all EPERM) | send time | generation rate | events in the audit log | lost (counted) | kernel decision counter | drained in | drain rate |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| {denied} | {:.2} s | {:.0}/s | {last} | {lost_events:.0} | {counted:.0} | {:.2} s | {:.0}/s |\n",
        sent.as_secs_f64(),
        denied as f64 / sent.as_secs_f64(),
        drained.as_secs_f64(),
        last as f64 / drained.as_secs_f64()
    )?;
    writeln!(
        md,
        "Every denied send is in the log or counted as lost (log + lost ≥ sent: {}; the lost counter also counts any other record dropped meanwhile, such as the flooding process's exit), and the decision counter is exact regardless.\n",
        (last as f64 + lost_events) as u64 >= denied
    )?;
    Ok(md)
}

pub(super) fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("VmRSS:")
                        .map(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
                })
                .flatten()
        })
        .unwrap_or(0)
}

/// Daemon RSS idle and with `n` live tasks.
pub(super) fn daemon_memory(n: usize) -> anyhow::Result<String> {
    use harness::daemon::{DaemonGuard, http};
    let d = DaemonGuard::start("rss", "");
    std::thread::sleep(Duration::from_millis(500));
    let pid = d.pid().context("daemon pid")?;
    let idle = rss_kib(pid);
    let start = Instant::now();
    for _ in 0..n {
        let (status, body) = http(
            &d.socket,
            "POST",
            "/v1/tasks",
            br#"{"agent":"rss","grants":{"exec":["/bin/true"],"connect":["10.0.0.0/8:443/tcp"]}}"#,
        );
        if status != 201 {
            bail!("create task: {status} {body}");
        }
    }
    let elapsed = start.elapsed();
    let loaded = rss_kib(pid);
    let mut md = String::new();
    writeln!(md, "## 6. Daemon memory\n")?;
    writeln!(
        md,
        "| state | RSS |\n|---|---|\n| idle | {:.1} MiB |\n| {n} live tasks (one exec and one connect grant each) | {:.1} MiB |\n",
        idle as f64 / 1024.0,
        loaded as f64 / 1024.0
    )?;
    writeln!(
        md,
        "Creating the {n} tasks took {:.1} s ({:.0} tasks/s through the API).\n",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    )?;
    Ok(md)
}
