//! `leash-bench`: the figures in BENCHMARKS.md. Run as root: `cargo xtask bench`.
//!
//! Every comparison is a ratio taken inside one round, with the states interleaved
//! round by round (not loaded, Landlock, loaded+untagged, loaded+tagged), so machine
//! noise hits all of them alike; the report gives the median ratio and its range.
#![expect(
    clippy::too_many_lines,
    reason = "each section measures and reports in one place"
)]

use std::{
    fmt::Write as _,
    net::{TcpListener, UdpSocket},
    process::Command,
    time::Duration,
};

use anyhow::Context as _;

mod api_abuse;
mod control_plane;
mod data_plane;
mod dns;
mod file_modes;
mod program_stats;
mod scale;

use api_abuse::api_abuse;
use control_plane::{control_plane, daemon_memory, event_drain};
use data_plane::data_plane;
use file_modes::file_modes;
use program_stats::program_stats;
use scale::scale;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Connect,
    Udp,
    Exec,
    Syscall,
}

struct Work {
    name: &'static str,
    kind: Kind,
    target: String,
    n: u32,
}

impl Work {
    fn args(&self) -> [String; 3] {
        let k = match self.kind {
            Kind::Connect => "connect",
            Kind::Udp => "udp",
            Kind::Exec => "exec",
            Kind::Syscall => "syscall",
        };
        [k.to_owned(), self.target.clone(), self.n.to_string()]
    }
}

fn run_probe(cmd: &mut Command, args: &[String]) -> anyhow::Result<f64> {
    let out = cmd.args(args).output().context("spawn probe")?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    text.parse::<f64>()
        .map_err(|_| anyhow::anyhow!("probe {args:?} said {text:?}"))
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn range(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() - 1])
}

/// Loopback listeners for the workloads.
struct Targets {
    tcp_port: u16,
    udp_port: u16,
    _udp: UdpSocket,
}

fn targets() -> anyhow::Result<Targets> {
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let tcp_port = tcp.local_addr()?.port();
    // std listens with a backlog of 128; a burst beyond it costs a 1 s SYN retry.
    // SAFETY: re-listening on our own socket only changes the backlog.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&tcp), 4096) };
    std::thread::spawn(move || {
        for conn in tcp.incoming() {
            drop(conn);
        }
    });
    let udp = UdpSocket::bind("127.0.0.1:0")?;
    let udp_port = udp.local_addr()?.port();
    Ok(Targets {
        tcp_port,
        udp_port,
        _udp: udp,
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out_path = args.iter().skip_while(|a| *a != "--out").nth(1).cloned();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only stats,control`: just those sections, at full size (to check some figures
    // alone); names: data, stats, scale, control, drain, memory, files, dns, abuse.
    let only: Option<Vec<String>> = args
        .iter()
        .skip_while(|a| *a != "--only")
        .nth(1)
        .map(|s| s.split(',').map(str::to_owned).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|s| s == name));
    harness::require_root();
    let t = targets()?;
    let rounds = if quick { 3 } else { 11 };
    let mut md = String::new();
    writeln!(
        md,
        "Machine: {} cores, kernel {}. Command: `cargo xtask bench`{}. Date: {}.\n",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        if quick { " -- --quick" } else { "" },
        String::from_utf8_lossy(
            &Command::new("date")
                .arg("-u")
                .arg("+%Y-%m-%d")
                .output()?
                .stdout
        )
        .trim(),
    )?;
    if wanted("data") {
        md.push_str(&data_plane(&t, rounds)?);
    }
    if wanted("stats") {
        md.push_str(&program_stats(&t)?);
    }
    if wanted("scale") {
        md.push_str(&scale(&t, if quick { 3 } else { 15 })?);
    }
    if wanted("control") {
        md.push_str(&control_plane(if quick { 100 } else { 1000 })?);
    }
    if wanted("drain") {
        md.push_str(&event_drain(if quick { 50_000 } else { 400_000 })?);
    }
    if wanted("files") {
        md.push_str(&file_modes(rounds, quick)?);
    }
    if wanted("memory") {
        md.push_str(&daemon_memory(if quick { 1000 } else { 10_000 })?);
    }
    if wanted("abuse") {
        md.push_str(&api_abuse(
            if quick { 2_000 } else { 20_000 },
            if quick { 1 } else { 3 },
        )?);
    }
    if wanted("dns") {
        let (tasks, queries) = if quick { (20, 200) } else { (1000, 2000) };
        md.push_str(&dns::dns(rounds, tasks, queries)?);
    }
    print!("{md}");
    if let Some(path) = out_path {
        std::fs::write(
            &path,
            splice(&std::fs::read_to_string(&path).unwrap_or_default(), &md),
        )
        .with_context(|| format!("write {path}"))?;
        eprintln!("wrote {path}");
    }
    Ok(())
}

const BEGIN: &str = "<!-- leash-bench:begin -->";
const END: &str = "<!-- leash-bench:end -->";

/// Puts the figures between the markers of an existing report, keeping the prose
/// around them; a file without markers is replaced.
fn splice(existing: &str, figures: &str) -> String {
    match (existing.find(BEGIN), existing.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{BEGIN}\n{figures}{}", &existing[..b], &existing[e..])
        }
        _ => format!("{BEGIN}\n{figures}{END}\n"),
    }
}

/// Runs `f` with `kernel.bpf_stats_enabled=1`, restoring the previous value.
fn with_bpf_stats<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let before = std::fs::read_to_string(BPF_STATS).unwrap_or_else(|_| "0".into());
    std::fs::write(BPF_STATS, "1").context("enable kernel.bpf_stats_enabled")?;
    let result = f();
    std::fs::write(BPF_STATS, before.trim()).context("restore kernel.bpf_stats_enabled")?;
    result
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
