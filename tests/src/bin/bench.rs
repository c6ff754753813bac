//! `leash-bench`: per-call cost of connect, UDP send and exec with leash not loaded,
//! loaded with an untagged caller, and loaded with a tagged caller on the allowed path.
//! The three states are interleaved round by round, and ratios are taken within each
//! round, so machine noise hits all of them alike. Run as root: `cargo xtask bench`.

use std::{
    fmt::Write as _,
    net::{TcpListener, UdpSocket},
    process::Command,
    time::Duration,
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
    let header = format!(
        "Backend: {backend}. Kernel: {}. {ROUNDS} interleaved rounds (not loaded, untagged, tagged in each); medians of per-round values; ratios are per-round, then the median.\n\n",
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    print!("{header}{md}");
    if let Some(path) = out_path {
        std::fs::write(&path, format!("{header}{md}")).with_context(|| format!("write {path}"))?;
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
