//! Metrics and health on a real daemon: exact decision deltas per agent, the exposition
//! passes `promtool check metrics`, and `/readyz` tracks the programs' attachment.
#![expect(clippy::float_cmp, reason = "counter samples are exact integers")]
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), l(istener), a/b (sessions), p(robe) keep the scenario short"
)]

use std::{
    collections::BTreeMap,
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    process::Stdio,
    time::{Duration, Instant},
};

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession},
    exec_denied, probe,
};

/// `name{labels}` → value, for every sample line.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn decision(m: &BTreeMap<String, f64>, action: &str, verdict: &str, agent: &str) -> f64 {
    let key = format!(
        "leash_decisions_total{{action=\"{action}\",verdict=\"{verdict}\",agent=\"{agent}\"}}"
    );
    m.get(&key).copied().unwrap_or(0.0)
}

fn scrape(d: &DaemonGuard) -> BTreeMap<String, f64> {
    let (status, body) = d.metrics_get("/metrics");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

/// The scrape counts entries from the daemon's records; `leash status` walks the
/// kernel's maps. They must agree, and match `expected` where given.
fn assert_map_entries(d: &DaemonGuard, scraped: &BTreeMap<String, f64>, expected: &[(&str, f64)]) {
    let entries = |name: &str| scraped.get(&format!("leash_map_entries{{map=\"{name}\"}}"));
    for (name, n) in expected {
        assert_eq!(entries(name), Some(n), "{name}");
    }
    let status: serde_json::Value =
        serde_json::from_slice(&d.run(&["status", "--json"]).stdout).unwrap();
    for map in status["maps"].as_array().unwrap() {
        let name = map["name"].as_str().unwrap();
        assert_eq!(
            entries(name),
            Some(&map["entries"].as_f64().unwrap()),
            "{name}: scrape and kernel disagree"
        );
    }
}

/// `leash task create ARGS` (split at spaces): the new task's id.
fn create_task(d: &DaemonGuard, args: &str) -> String {
    let args: Vec<&str> = ["task", "create"]
        .into_iter()
        .chain(args.split_whitespace())
        .collect();
    let out = d.run(&args);
    assert!(out.status.success(), "task create {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `leash_denials_total` of the actions below: (action, verdict, reason, count).
const DENIALS: &[(&str, &str, &str, f64)] = &[
    ("connect", "denied", "not_granted", 2.0),
    ("send", "denied", "not_granted", 1.0),
    ("exec", "denied", "not_granted", 1.0),
    ("connect", "audited", "not_granted", 2.0),
];

/// Waits until `leash_denials_total` grew by exactly the expected counts since `before`.
fn wait_for_denials(
    d: &DaemonGuard,
    before: &BTreeMap<String, f64>,
    want: &[(&str, &str, &str, f64)],
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(d);
        let got: Vec<f64> = want
            .iter()
            .map(|(action, verdict, reason, _)| {
                let key = format!(
                    "leash_denials_total{{action=\"{action}\",verdict=\"{verdict}\",reason=\"{reason}\"}}"
                );
                m.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0)
            })
            .collect();
        if got.iter().zip(want).all(|(g, w)| *g == w.3) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "denials by reason: {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn decision_counters_match_the_actions_exactly_per_agent() {
    let d = DaemonGuard::start("metrics", "");
    let l = Listeners::new();
    let other = Listeners::new();
    let p = probe().display().to_string();
    let tool = std::env::temp_dir().join(format!("leash-metrics-tool-{}", std::process::id()));
    std::fs::copy("/bin/true", &tool).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let before = scrape(&d);

    let own = format!("127.0.0.1:{}/tcp", l.tcp4_port());
    let prefixes = "--allow-connect 10.0.0.0/8:443/tcp --allow-connect 10.1.0.0/16:443/tcp";
    let alpha = create_task(
        &d,
        &format!(
            "--agent alpha --end-when command_exits --allow-exec {p} --allow-connect {own} {prefixes}"
        ),
    );
    let beta = create_task(
        &d,
        &format!("--agent beta --audit --allow-exec {p} --allow-connect 192.168.0.0/16:443/tcp"),
    );
    let mut a = TaskSession::join(&d, &alpha);
    let mut b = TaskSession::join(&d, &beta);
    let ok = format!("connect tcp 127.0.0.1 {}", l.tcp4_port());
    let no = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    for _ in 0..3 {
        assert_eq!(a.run(&ok), "ok");
    }
    for _ in 0..2 {
        assert_eq!(a.run(&no), EPERM);
    }
    assert_eq!(
        a.run(&format!("sendto 127.0.0.1 {}", other.udp4_port())),
        EPERM
    );
    let backend = harness::Harness::backend_of_daemon(&d);
    assert_eq!(
        a.run(&format!("exec {}", tool.display())),
        exec_denied(backend)
    );
    for _ in 0..2 {
        assert_eq!(b.run(&no), "ok", "audit mode allows");
    }

    let after = scrape(&d);
    let delta = |action: &str, verdict: &str, agent: &str| {
        decision(&after, action, verdict, agent) - decision(&before, action, verdict, agent)
    };
    // One allowed exec each: `leash run` exec'ing the probe.
    assert_eq!(delta("exec", "allowed", "alpha"), 1.0);
    assert_eq!(delta("exec", "denied", "alpha"), 1.0);
    assert_eq!(delta("connect", "allowed", "alpha"), 3.0);
    assert_eq!(delta("connect", "denied", "alpha"), 2.0);
    assert_eq!(delta("send", "denied", "alpha"), 1.0);
    assert_eq!(delta("connect", "audited", "alpha"), 0.0);
    assert_eq!(delta("exec", "allowed", "beta"), 1.0);
    assert_eq!(delta("connect", "audited", "beta"), 2.0);
    assert_eq!(delta("connect", "denied", "beta"), 0.0);
    assert_eq!(after.get("leash_tasks_active{agent=\"alpha\"}"), Some(&1.0));
    assert_eq!(after.get("leash_tasks_active{agent=\"beta\"}"), Some(&1.0));
    assert_eq!(after.get("leash_grants_active{kind=\"exec\"}"), Some(&2.0));
    // Two tasks; alpha's full address in the host hash. Prefixes fill each task's own
    // trie, so NET_GRANTS reports the fullest (alpha's two), against the capacity of
    // one trie: a sum over tasks would raise the near-capacity alert too early.
    assert_map_entries(
        &d,
        &after,
        &[("TASKS", 2.0), ("NET_HOSTS", 1.0), ("NET_GRANTS", 2.0)],
    );
    assert!(
        after
            .get("leash_grant_apply_seconds_count")
            .is_some_and(|n| *n >= 2.0)
    );
    assert_eq!(after.get("leash_events_lost_total"), Some(&0.0));
    assert!(
        after
            .keys()
            .any(|k| k.starts_with("leash_build_info{version="))
    );
    // Labels stay bounded: no task id or pid anywhere.
    assert!(
        !after
            .keys()
            .any(|k| k.contains(&alpha) || k.contains("pid="))
    );

    // Denials by reason, from the events (read a moment after the kernel counted them).
    wait_for_denials(&d, &before, DENIALS);

    // beta is ended by hand while its process runs; alpha ends when its process exits.
    let out = d.run(&["task", "end", &beta]);
    assert!(out.status.success());
    drop(a);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = scrape(&d);
        if m.get("leash_tasks_ended_total{agent=\"alpha\",reason=\"exited\"}") == Some(&1.0)
            && m.get("leash_tasks_ended_total{agent=\"beta\",reason=\"ended\"}") == Some(&1.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "ended counters: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(tool);
}

#[test]
fn exposition_passes_promtool() {
    let d = DaemonGuard::start("promtool", "");
    let p = probe().display().to_string();
    let _ = d.run(&[
        "run",
        "--agent",
        "lint",
        "--allow-exec",
        &p,
        "--",
        &p,
        "pid",
    ]);
    let (status, body) = d.metrics_get("/metrics");
    assert_eq!(status, 200);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by `cargo xtask setup` (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readyz_turns_ready_only_once_the_programs_are_attached() {
    let d = DaemonGuard::start_with(
        "readyz",
        "",
        &[("LEASH_DEBUG_STARTUP_DELAY_MS", "1500")],
        false,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.metrics_get("/healthz").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "healthz never answered: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = d.metrics_get("/readyz");
    assert_eq!(
        status, 503,
        "ready before the programs are attached: {body}"
    );
    assert!(body.contains("programs not attached"), "{body}");
    // Loading and attaching every program takes tens of seconds under TCG on a busy
    // machine (the VM suite); the point here is the order, not the speed.
    let deadline = Instant::now() + Duration::from_mins(1);
    while d.metrics_get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "never ready: {}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}
