//! DNS through leash (docs/dns.md): the latency a query gains through the responder
//! against the same query sent straight to the same upstream, interleaved round by
//! round; the responder's throughput with many live tasks; and the time from the
//! upstream's answer to the relayed answer (the answer's addresses installed as grants
//! first), from the daemon's own histogram.
//!
//! Everything runs in a network namespace the bench creates, with its own upstream: a
//! small authoritative server on hickory-proto on that namespace's loopback (no
//! dnsmasq, and never the host's resolver). Needs `ip netns`; skipped with the reason
//! printed without it.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, UdpSocket},
    os::fd::AsRawFd as _,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context as _, bail};
use harness::{
    daemon::{DaemonGuard, leash_bin},
    probe,
};
use hickory_proto::{
    op::Message,
    rr::{RData, Record, rdata},
};

use super::{median, range};

/// What the upstream answers for every name.
const ANSWER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const NAME: &str = "bench.test";

/// The namespace, its `resolv.conf` and the upstream inside; removed on drop.
struct Pod {
    ns: String,
    stop: Arc<AtomicBool>,
    upstream: Option<JoinHandle<()>>,
}

impl Pod {
    fn new() -> anyhow::Result<Self> {
        let ns = format!("leash-bench-dns-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns])?;
        let mut pod = Self {
            ns,
            stop: Arc::default(),
            upstream: None,
        };
        ip(&["-n", &pod.ns, "link", "set", "lo", "up"])?;
        let dir = format!("/etc/netns/{}", pod.ns);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(format!("{dir}/resolv.conf"), "nameserver 127.0.0.1\n")?;
        let netns = std::fs::File::open(format!("/run/netns/{}", pod.ns))?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = Arc::clone(&pod.stop);
        pod.upstream = Some(std::thread::spawn(move || {
            // SAFETY: setns on an fd this thread owns; it moves only this thread.
            let joined = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
            let sock = (if joined == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            })
            .and_then(|()| UdpSocket::bind("127.0.0.1:53"))
            .and_then(|s| {
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                Ok(s)
            });
            let sock = match sock {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            serve(&sock, &stop);
        }));
        ready_rx
            .recv()
            .context("the upstream's thread ended")?
            .context("the upstream cannot listen in the namespace")?;
        Ok(pod)
    }

    /// `ip netns exec NS` + `cmd`.
    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]);
        c
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.upstream.take() {
            let _ = t.join();
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.ns));
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let o = Command::new("ip").args(args).output().context("run ip")?;
    if !o.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

/// Answers every A query with [`ANSWER`] (TTL 300), parsed and built by hickory-proto.
fn serve(sock: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let Some(name) = query.queries.first().map(|q| q.name().clone()) else {
            continue;
        };
        let mut reply = query.into_response();
        reply.metadata.authoritative = true;
        reply.add_answer(Record::from_rdata(name, 300, RData::A(rdata::A(ANSWER))));
        if let Ok(bytes) = reply.to_vec() {
            let _ = sock.send_to(&bytes, from);
        }
    }
}

/// One `dns-load` run's figures.
struct Load {
    answers: u64,
    failed: u64,
    elapsed: Duration,
    p50: Duration,
}

fn parse_load(text: &str) -> anyhow::Result<Load> {
    let field = |k: &str| -> anyhow::Result<u64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {k} in the probe's {text:?}"))
    };
    if !text.starts_with("ok ") {
        bail!("dns-load said {text:?}");
    }
    Ok(Load {
        answers: field("answers")?,
        failed: field("errors")? + field("lost")?,
        elapsed: Duration::from_nanos(field("elapsed_ns")?),
        p50: Duration::from_nanos(field("p50_ns")?),
    })
}

fn load_args(n: u32, window: u32) -> [String; 5] {
    [
        "dns-load".into(),
        "127.0.0.1".into(),
        NAME.into(),
        n.to_string(),
        window.to_string(),
    ]
}

/// A `dns-load` in the namespace: joined to task `id` (through leash), or untagged
/// (straight to the upstream).
fn load_cmd(pod: &Pod, d: &DaemonGuard, id: Option<&str>, n: u32, window: u32) -> Command {
    let mut c = pod.exec();
    if let Some(id) = id {
        c.arg(leash_bin())
            .env("LEASH_SOCKET", &d.socket)
            .args(["run", "--task", id, "--"]);
    }
    c.arg(probe()).args(load_args(n, window));
    c.stdin(Stdio::null()).stderr(Stdio::null());
    c
}

/// The daemon's user + system CPU time so far, in seconds (0 when unreadable).
fn cpu_seconds(d: &DaemonGuard) -> f64 {
    let Some(stat) = d
        .child_pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
    else {
        return 0.0;
    };
    // After the command's closing parenthesis: field 3 onwards; utime and stime are
    // fields 14 and 15, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    match (ticks(14), ticks(15)) {
        (Some(u), Some(s)) if hz > 0.0 => (u + s) / hz,
        _ => 0.0,
    }
}

fn run_load(mut c: Command) -> anyhow::Result<Load> {
    let out = c.output().context("spawn the probe")?;
    parse_load(String::from_utf8_lossy(&out.stdout).trim())
}

/// `leash_dns_install_seconds` from the daemon's metrics: (count, mean, p50 and p99
/// as the upper bound of their bucket).
fn install_histogram(d: &DaemonGuard, name: &str) -> (u64, f64, f64, f64) {
    let (_, text) = d.metrics_get("/metrics");
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let (mut count, mut sum) = (0.0, 0.0);
    let mut buckets = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(&format!("{name}_bucket{{le=\"")) {
            let le = rest.split('"').next().and_then(|v| v.parse::<f64>().ok());
            if let (Some(le), Some(n)) = (le, value(line)) {
                buckets.push((le, n));
            }
        } else if line.starts_with(&format!("{name}_count")) {
            count = value(line).unwrap_or(0.0);
        } else if line.starts_with(&format!("{name}_sum")) {
            sum = value(line).unwrap_or(0.0);
        }
    }
    let quantile = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n >= q * count)
            .map_or(f64::NAN, |(le, _)| *le)
    };
    let mean = if count > 0.0 { sum / count } else { f64::NAN };
    (count as u64, mean, quantile(0.5), quantile(0.99))
}

pub(super) fn dns(rounds: usize, tasks: usize, queries: u32) -> anyhow::Result<String> {
    let mut md = String::from("## 8. DNS through leash (docs/dns.md)\n\n");
    let has_netns = Command::new("ip")
        .args(["netns", "list"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_netns {
        let why = "skipped: `ip netns` is missing (iproute2; cargo xtask setup installs it)";
        eprintln!("dns: {why}");
        writeln!(md, "{why}\n")?;
        return Ok(md);
    }
    let pod = Pod::new()?;
    // No rate limit in the way of a throughput figure.
    let d = DaemonGuard::start("bench-dns", "dns:\n  rate: 10000000\n  burst: 10000000\n");
    let p = probe().display().to_string();
    let body = serde_json::json!({
        "agent": "bench",
        "grants": { "exec": [p], "connect": [format!("{NAME}:443/tcp")] },
    })
    .to_string();
    let mut ids = Vec::with_capacity(tasks);
    for _ in 0..tasks {
        let (status, text) = d.http("POST", "/v1/tasks", body.as_bytes());
        if status != 201 {
            bail!("create task: {status} {text}");
        }
        let v: serde_json::Value = serde_json::from_str(&text)?;
        ids.push(v["id"].as_str().context("task id")?.to_owned());
    }

    // Latency: one query after another, through leash and straight to the upstream,
    // the order alternating round by round.
    let (mut through, mut direct, mut added, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds {
        let mut pair = [None, None];
        for leg in if r % 2 == 0 { [0, 1] } else { [1, 0] } {
            let id = (leg == 0).then_some(ids[0].as_str());
            let l = run_load(load_cmd(&pod, &d, id, queries, 1))?;
            if l.failed > 0 {
                bail!("{} of {queries} queries failed (leg {leg})", l.failed);
            }
            pair[leg] = Some(l.p50.as_secs_f64() * 1e6);
        }
        let (Some(t), Some(s)) = (pair[0], pair[1]) else {
            bail!("a leg did not run");
        };
        through.push(t);
        direct.push(s);
        added.push(t - s);
        ratio.push(t / s);
    }
    writeln!(
        md,
        "{tasks} live tasks, each granted `{NAME}:443/tcp`; a task's probe in the \
         namespace sends {queries} A queries one after another (connected UDP socket), \
         and an untagged probe the same queries straight to the same upstream; {rounds} \
         rounds, the order alternating. Per-round p50:\n"
    )?;
    writeln!(md, "| | p50 (median of rounds) | range |\n|---|---|---|")?;
    for (label, v, unit) in [
        ("through leash", &through, "µs"),
        ("direct", &direct, "µs"),
        ("added by leash", &added, "µs"),
        ("ratio", &ratio, "×"),
    ] {
        let (lo, hi) = range(v);
        writeln!(
            md,
            "| {label} | {:.1} {unit} | {lo:.1}–{hi:.1} |",
            median(v)
        )?;
    }

    // Throughput: several tasks at once, each keeping 64 queries in flight.
    let senders = 4.min(ids.len());
    let per = queries.saturating_mul(10);
    let mut samples = Vec::new();
    let (cpu_before, mut answered) = (cpu_seconds(&d), 0);
    for r in 0..rounds.min(5) {
        let children: Vec<_> = ids[..senders]
            .iter()
            .map(|id| {
                load_cmd(&pod, &d, Some(id), per, 64)
                    .stdout(Stdio::piped())
                    .spawn()
            })
            .collect::<Result<_, _>>()?;
        let mut answers = 0;
        let mut slowest = Duration::ZERO;
        let mut failed = 0;
        for c in children {
            let out = c.wait_with_output()?;
            let l = parse_load(String::from_utf8_lossy(&out.stdout).trim())?;
            answers += l.answers;
            answered += l.answers;
            failed += l.failed;
            slowest = slowest.max(l.elapsed);
        }
        let qps = answers as f64 / slowest.as_secs_f64();
        samples.push(qps);
        if failed > 0 {
            eprintln!("dns throughput round {r}: {failed} queries unanswered");
        }
    }
    let (lo, hi) = range(&samples);
    writeln!(
        md,
        "\nThroughput: {senders} tasks at once, each {per} queries with 64 in flight \
         ({tasks} live tasks): **{:.0} answered queries/s** (median of {} rounds, \
         {lo:.0}–{hi:.0}); the upstream, the probes and the daemon share the machine's \
         {} cores.",
        median(&samples),
        samples.len(),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
    )?;

    let cpu = cpu_seconds(&d) - cpu_before;
    let per_query = cpu / answered.max(1) as f64;
    writeln!(
        md,
        "\nThe daemon's own CPU time (user + system, `/proc/PID/stat`) over those rounds: \
         {:.1} µs per answered query ({answered} answers), so one core given to the \
         responder alone answers about **{:.0} queries/s**; the rest of each round's time \
         went to the probes (each query passes the kernel's hooks twice), the upstream and \
         the loopback.",
        per_query * 1e6,
        1.0 / per_query,
    )?;

    let (n, mean, p50, p99) = install_histogram(&d, "leash_dns_install_seconds");
    let (un, umean, _, _) = install_histogram(&d, "leash_dns_upstream_seconds");
    writeln!(
        md,
        "\nGrant install (upstream answer → relayed answer: checked, its address installed \
         in the kernel's maps, the event reported), from `leash_dns_install_seconds` over \
         {n} answers: mean {:.1} µs, p50 ≤ {:.0} µs, p99 ≤ {:.0} µs (bucket bounds). \
         Upstream round trip inside the daemon (`leash_dns_upstream_seconds`, {un} \
         answers, with the queueing of the throughput runs): mean {:.1} µs.\n",
        mean * 1e6,
        p50 * 1e6,
        p99 * 1e6,
        umean * 1e6,
    )?;
    Ok(md)
}
