//! The API socket and the metrics listener under abuse (docs/api.md, "Limits"): one
//! unprivileged caller holding thousands of connections, garbage, oversized headers,
//! slow and stalled clients, pipelined requests. The daemon keeps serving everyone
//! else, `/healthz` keeps answering, its descriptors stay bounded, and the overload is
//! logged and counted.

use std::{
    io::{Read as _, Write as _},
    net::SocketAddr,
    os::unix::{fs::PermissionsExt as _, net::UnixStream},
    time::Duration,
};

use harness::{
    daemon::{DaemonGuard, stderr},
    flood, wait_for,
};

/// Small limits, so that the test reaches them fast.
const LIMITS: &str = "connections:\n  api_max: 64\n  api_per_uid: 16\n  metrics_max: 32\n  \
                      metrics_per_ip: 8\n  header_timeout: 1s\n  request_timeout: 2s\n";

fn metric(d: &DaemonGuard, prefix: &str) -> u64 {
    let (_, text) = d.metrics_get("/metrics");
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

#[test]
fn a_flood_of_connections_from_one_uid_leaves_the_others_served() {
    let d = DaemonGuard::start("abuse-flood", LIMITS);
    let pid = d.pid().unwrap();
    let before = fds(pid);
    // The flood comes from an unprivileged member of the socket's audience.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let holder = flood::hold_as_nobody(&d.socket, 3_000);
    wait_for("the per-uid refusals to be counted", || {
        metric(
            &d,
            "leash_http_connections_refused_total{listener=\"api\",reason=\"per_peer\"}",
        ) > 1_000
    });
    // Root, another uid, is served as before, and health answers.
    for args in [&["task", "list"][..], &["status"]] {
        let o = d.run(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(d.metrics_get("/healthz"), (200, "ok\n".to_owned()));
    // The descriptors the daemon holds stay bounded: 16 held connections (and a
    // pidfd each), not 3000.
    let during = fds(pid);
    assert!(
        during < before + 2 * 16 + 16,
        "{before} fds before, {during} during"
    );
    assert!(
        d.log().contains("connections refused"),
        "the overload is logged: {}",
        d.log()
    );
    // Idle connections are closed after the header timeout.
    wait_for("the idle connections to be closed", || {
        metric(&d, "leash_http_connections{listener=\"api\"}") <= 1
    });
    drop(holder);

    // The metrics port has its own budget, per client address: a flood from
    // 127.0.0.2 leaves /healthz from 127.0.0.1 answered.
    let target = SocketAddr::from(([127, 0, 0, 1], d.metrics_port));
    let mut held = Vec::new();
    for _ in 0..200 {
        let s = flood::tcp_from([127, 0, 0, 2], target);
        held.extend(s);
    }
    wait_for("the metrics refusals to be counted", || {
        metric(
            &d,
            "leash_http_connections_refused_total{listener=\"metrics\",reason=\"per_peer\"}",
        ) > 100
    });
    assert_eq!(d.metrics_get("/healthz"), (200, "ok\n".to_owned()));
    drop(held);
}

/// Sends `bytes` on a new API connection; returns what the daemon answered until it
/// closed the connection (at most 10 s: a daemon that never closes fails the test).
fn exchange(d: &DaemonGuard, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the daemon held the connection past 10 s: {e}"),
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn garbage_big_headers_stalls_and_pipelining_get_clear_answers() {
    let d = DaemonGuard::start("abuse-requests", LIMITS);
    // Not HTTP at all.
    let r = exchange(&d, b"\x00\x01\x02\xffhello\r\n\r\n");
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 400"), "{r:?}");
    // Headers past the limit.
    let big = format!(
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let r = exchange(&d, big.as_bytes());
    assert!(r.starts_with("HTTP/1.1 431"), "{r:?}");
    // Headers that never end: the connection is closed after the header timeout.
    let r = exchange(&d, b"GET /v1/status HTTP/1.1\r\nHost: x\r\n");
    assert!(r.is_empty() || r.starts_with("HTTP/1.1 408"), "{r:?}");
    // A body that stops short: 408 with the API's error body.
    let r = exchange(
        &d,
        b"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"agent\"",
    );
    assert!(r.starts_with("HTTP/1.1 408"), "{r:?}");
    assert!(r.contains("\"code\":\"request_timeout\""), "{r:?}");
    assert!(
        metric(&d, "leash_http_requests_timed_out_total{listener=\"api\"}") >= 1,
        "counted"
    );
    // Two requests in one write: two answers, in order.
    let r = exchange(
        &d,
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /v1/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let first = r.find("HTTP/1.1 200").expect("the first answered");
    let second = r.find("HTTP/1.1 404").expect("the second answered");
    assert!(first < second, "{r:?}");
    // And the daemon serves the next caller as before.
    let o = d.run(&["task", "list"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
