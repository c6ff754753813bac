//! `leash-bench`: per-call cost of connect, UDP send and exec with leash not loaded,
//! loaded with an untagged caller, and loaded with a tagged caller on the allowed path.
//! The three states are interleaved round by round, and ratios are taken within each
//! round, so machine noise hits all of them alike. Run as root: `cargo xtask bench`.

use std::{
    fmt::Write as _,
    net::{TcpListener, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use harness::{Harness, probe, spec};

const ROUNDS: usize = 9;

struct Work {
    name: &'static str,
    kind: &'static str,
    target: String,
    n: u32,
}

fn run_probe(cmd: &mut Command, w: &Work) -> anyhow::Result<f64> {
    let out = cmd
        .args(["bench", w.kind, &w.target, &w.n.to_string()])
        .output()
        .context("spawn probe")?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    text.parse::<f64>()
        .map_err(|_| anyhow::anyhow!("{}: probe said {text:?}", w.name))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let out_path = std::env::args().skip_while(|a| a != "--out").nth(1);
    harness::require_root();
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let tcp_port = tcp.local_addr()?.port();
    // std listens with a backlog of 128; a burst beyond it costs a 1 s SYN retry.
    // SAFETY: re-listening on our own socket only changes the backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&tcp), 4096) };
    // Accept and drop, so the backlog never fills.
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            drop(conn);
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    udp.set_read_timeout(Some(Duration::from_millis(1)))?;
    let udp_port = udp.local_addr()?.port();
    let works = [
        Work {
            name: "TCP connect (loopback)",
            kind: "connect",
            target: tcp_port.to_string(),
            n: 2000,
        },
        Work {
            name: "UDP unconnected sendto",
            kind: "udp",
            target: udp_port.to_string(),
            n: 50_000,
        },
        Work {
            name: "fork+exec /bin/true",
            kind: "exec",
            target: "/bin/true".into(),
            n: 200,
        },
    ];
    // [work][state][round]: states none, untagged, tagged.
    let mut samples = vec![[Vec::new(), Vec::new(), Vec::new()]; works.len()];
    let mut backend = String::new();
    for round in 0..ROUNDS {
        eprintln!("round {}/{ROUNDS}", round + 1);
        for (i, w) in works.iter().enumerate() {
            samples[i][0].push(run_probe(&mut Command::new(probe()), w)?);
        }
        let h = Harness::load();
        backend = h.backend().to_string();
        let task = h.task(spec(
            &["/bin/true"],
            &[
                &format!("127.0.0.1:{tcp_port}/tcp"),
                &format!("127.0.0.1:{udp_port}/udp"),
            ],
        ));
        for (i, w) in works.iter().enumerate() {
            samples[i][1].push(run_probe(&mut Command::new(probe()), w)?);
            samples[i][2].push(run_probe(&mut task.command(probe()), w)?);
        }
        let denied = task.decisions().iter().map(|a| a[1]).sum::<u64>();
        if denied != 0 {
            bail!(
                "the tagged runs hit {denied} denials: the benchmark would measure the wrong path"
            );
        }
        drop(task);
        drop(h);
    }
    let md = table(&works, &mut samples)?;
    let control = control_plane(1000)?;
    let header = format!(
        "Backend: {backend}. Kernel: {}. {ROUNDS} interleaved rounds (not loaded, untagged, tagged in each); medians of per-round values; ratios are per-round, then the median.\n\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    print!("{header}{md}\n{control}");
    if let Some(path) = out_path {
        std::fs::write(&path, format!("{header}{md}\n{control}"))
            .with_context(|| format!("write {path}"))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

/// The markdown table: medians per state, and per-round ratios to "not loaded".
fn table(works: &[Work], samples: &mut [[Vec<f64>; 3]]) -> anyhow::Result<String> {
    let mut md = String::new();
    writeln!(
        md,
        "| operation | not loaded (ns/op) | loaded, untagged | tagged, allowed | untagged / not loaded | tagged / not loaded |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (i, w) in works.iter().enumerate() {
        let rounds = samples[i][0].len();
        let mut r_untagged: Vec<f64> = (0..rounds)
            .map(|r| samples[i][1][r] / samples[i][0][r])
            .collect();
        let mut r_tagged: Vec<f64> = (0..rounds)
            .map(|r| samples[i][2][r] / samples[i][0][r])
            .collect();
        let (spread_lo, spread_hi) = {
            let mut t = r_tagged.clone();
            t.sort_by(f64::total_cmp);
            (t[0], t[t.len() - 1])
        };
        writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.0} | {:.3}× | {:.3}× (range {:.3}–{:.3}) |",
            w.name,
            median(&mut samples[i][0]),
            median(&mut samples[i][1]),
            median(&mut samples[i][2]),
            median(&mut r_untagged),
            median(&mut r_tagged),
            spread_lo,
            spread_hi,
        )?;
    }
    Ok(md)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Grant apply latency (API request → kernel map updated, which the daemon does before
/// it answers) and teardown latency (the task's last process reaped → its kernel task
/// entry gone), over `n` tasks of a real daemon.
fn control_plane(n: usize) -> anyhow::Result<String> {
    use aya::maps::{HashMap, Map, MapData};
    use harness::daemon::{DaemonGuard, http};

    let d = DaemonGuard::start("bench", "tasks:\n  default_ttl: 1h\n");
    let tasks_map = MapData::from_pin(d.pin_dir.join("maps").join(agent_common::maps::TASKS))
        .context("open the pinned TASKS map")?;
    let tasks_map: HashMap<MapData, u64, agent_common::TaskInfo> =
        HashMap::try_from(Map::HashMap(tasks_map))?;
    let mut create = Vec::with_capacity(n);
    let mut grant = Vec::with_capacity(n);
    let mut teardown = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let (status, body) = http(
            &d.socket,
            "POST",
            "/v1/tasks",
            br#"{"agent":"bench","grants":{"exec":["/bin/true"]}}"#,
        );
        create.push(t.elapsed());
        if status != 201 {
            bail!("create task: {status} {body}");
        }
        let task: serde_json::Value = serde_json::from_str(&body)?;
        let id = task["id"].as_str().context("task id")?.to_owned();
        let t = Instant::now();
        let spec = format!(r#"{{"connect":"127.0.0.1:{}/tcp"}}"#, 1000 + i % 60000);
        let (status, body) = http(
            &d.socket,
            "POST",
            &format!("/v1/tasks/{id}/grants"),
            spec.as_bytes(),
        );
        grant.push(t.elapsed());
        if status != 201 {
            bail!("add grant: {status} {body}");
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
        loop {
            if tasks_map.get(&kid, 0).is_err() {
                break;
            }
            if reaped.elapsed() > Duration::from_secs(5) {
                bail!("task {id} still in the kernel 5 s after its last process exited");
            }
            std::hint::spin_loop();
        }
        teardown.push(reaped.elapsed());
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let mut md = String::new();
    writeln!(
        md,
        "Control plane, {n} tasks through a real daemon (HTTP on the Unix socket):\n"
    )?;
    writeln!(md, "| latency | p50 | p99 | max |")?;
    writeln!(md, "|---|---|---|---|")?;
    for (name, v) in [
        (
            "create task (API round trip, grants in the kernel)",
            &mut create,
        ),
        (
            "grant apply (API request → map updated → answer)",
            &mut grant,
        ),
        (
            "teardown (last process reaped → task entry gone)",
            &mut teardown,
        ),
    ] {
        v.sort();
        writeln!(
            md,
            "| {name} | {:.3} ms | {:.3} ms | {:.3} ms |",
            percentile(v, 0.5).as_secs_f64() * 1e3,
            percentile(v, 0.99).as_secs_f64() * 1e3,
            v[v.len() - 1].as_secs_f64() * 1e3
        )?;
    }
    writeln!(
        md,
        "\nWhole loop (create, grant, `leash run /bin/true`, teardown): {rate:.0} tasks/s."
    )?;
    Ok(md)
}
