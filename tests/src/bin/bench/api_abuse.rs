//! The API under a connection flood (RELIABILITY.md): one unprivileged uid opens
//! thousands of connections to the API socket, and one address floods the metrics
//! port, while root's requests and `/healthz` are timed, interleaved round by round
//! with the same requests without the flood.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    os::unix::fs::PermissionsExt as _,
    time::{Duration, Instant},
};

use anyhow::bail;
use harness::{
    daemon::{DaemonGuard, http},
    flood,
};

use super::{control_plane::rss_kib, percentile};

fn timed(n: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<Duration>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// `connections` held by uid 65534 on the API socket and from 127.0.0.2 on the
/// metrics port (a tenth of them), over `rounds` rounds.
pub(super) fn api_abuse(connections: usize, rounds: usize) -> anyhow::Result<String> {
    // The metrics flood is this process's own connections.
    let _ = leash::http::raise_nofile();
    let d = DaemonGuard::start("bench-abuse", "");
    let pid = d.pid().unwrap_or(0);
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666))?;
    let status = || -> anyhow::Result<()> {
        let (code, body) = http(&d.socket, "GET", "/v1/status", b"");
        if code != 200 {
            bail!("status: {code} {body}");
        }
        Ok(())
    };
    let health = || -> anyhow::Result<()> {
        let (code, _) = d.metrics_get("/healthz");
        if code != 200 {
            bail!("healthz: {code}");
        }
        Ok(())
    };
    let target = SocketAddr::from(([127, 0, 0, 1], d.metrics_port));
    let (mut calm, mut stormy, mut calm_h, mut stormy_h) = (vec![], vec![], vec![], vec![]);
    let (mut peak_fds, mut peak_rss, base_fds) = (0, 0, fds(pid));
    let held_at_once = connections;
    for _ in 0..rounds {
        calm.extend(timed(50, status)?);
        calm_h.extend(timed(50, health)?);
        let holder = flood::hold_as_nobody(&d.socket, connections);
        let metrics_flood: Vec<_> = (0..connections / 10)
            .filter_map(|_| flood::tcp_from([127, 0, 0, 2], target))
            .collect();
        stormy.extend(timed(50, status)?);
        stormy_h.extend(timed(50, health)?);
        peak_fds = peak_fds.max(fds(pid));
        peak_rss = peak_rss.max(rss_kib(pid));
        drop(metrics_flood);
        drop(holder);
        // Let the daemon close what the holder left before the next calm round.
        std::thread::sleep(Duration::from_secs(6));
    }
    for v in [&mut calm, &mut stormy, &mut calm_h, &mut stormy_h] {
        v.sort();
    }
    let (_, metrics) = d.metrics_get("/metrics");
    let refused: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("leash_http_connections_refused_total"))
        .collect();
    let us = |v: &[Duration], p| percentile(v, p).as_secs_f64() * 1e6;
    let mut md = String::new();
    writeln!(
        md,
        "\n## API abuse: {held_at_once} connections from one uid, {} to the metrics port\n\n\
         Default `connections:` limits. {rounds} rounds; in each, 50 requests without the \
         flood, then the flood, then 50 during it. Root's `GET /v1/status` on the socket \
         and `GET /healthz` on the metrics port:\n",
        connections / 10
    )?;
    writeln!(
        md,
        "| request | p50 calm | p50 flood | p99 calm | p99 flood |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    for (name, c, s) in [
        ("GET /v1/status", &calm, &stormy),
        ("GET /healthz", &calm_h, &stormy_h),
    ] {
        writeln!(
            md,
            "| {name} | {:.0} µs | {:.0} µs | {:.0} µs | {:.0} µs |",
            us(c, 0.5),
            us(s, 0.5),
            us(c, 0.99),
            us(s, 0.99)
        )?;
    }
    writeln!(
        md,
        "\nDaemon descriptors: {base_fds} idle, at most {peak_fds} during the floods; RSS at \
         most {peak_rss} KiB. Refused and counted:\n\n```\n{}\n```",
        refused.join("\n")
    )?;
    Ok(md)
}
