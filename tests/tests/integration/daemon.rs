//! The daemon end to end: a real `leash daemon` on a private socket and pin directory,
//! driven through the `leash` CLI and raw HTTP, enforcing on the real kernel.
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), l(istener), o(utput), p(robe), s(ession) keep the scenarios short"
)]

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe, wait_for,
};

fn map_entries(d: &DaemonGuard, map: &str) -> u64 {
    let o = d.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == map)
        .and_then(|m| m["entries"].as_u64())
        .unwrap()
}

#[test]
fn run_enforces_passes_exit_status_and_ends_the_task() {
    let d = DaemonGuard::start("run", "");
    let l = Listeners::new();
    let other = Listeners::new();
    let p = probe().display().to_string();
    let allow = format!("127.0.0.1:{}/tcp", l.tcp4_port());

    let o = d.run(&[
        "run",
        "--agent",
        "ci",
        "--allow-exec",
        &p,
        "--allow-connect",
        &allow,
        "--",
        &p,
        "connect",
        "tcp",
        "127.0.0.1",
        &l.tcp4_port().to_string(),
    ]);
    assert_eq!(stdout(&o), "ok", "{}", stderr(&o));
    assert!(o.status.success());
    let o = d.run(&[
        "run",
        "--agent",
        "ci",
        "--allow-exec",
        &p,
        "--allow-connect",
        &allow,
        "--",
        &p,
        "connect",
        "tcp",
        "127.0.0.1",
        &other.tcp4_port().to_string(),
    ]);
    assert_eq!(stdout(&o), EPERM);

    // Exit status passes through; an ungranted command is stopped by the kernel.
    let o = d.run(&[
        "run",
        "--allow-exec",
        "/bin/sh",
        "--",
        "/bin/sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let o = d.run(&["run", "--", "/bin/true"]);
    assert_ne!(
        o.status.code(),
        Some(0),
        "an ungranted command must not run"
    );

    // Every task ended when its tree exited, and its kernel entries are gone.
    wait_for("tasks to end", || {
        let o = d.run(&["task", "list", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let tasks = v.as_array().unwrap();
        tasks.len() == 4
            && tasks
                .iter()
                .all(|t| t["state"] == "ended" && t["end_reason"] == "exited")
    });
    assert_eq!(map_entries(&d, "TASKS"), 0);
    assert_eq!(map_entries(&d, "EXEC_GRANTS"), 0);
    assert_eq!(map_entries(&d, "NET_GRANTS"), 0);
    assert_eq!(map_entries(&d, "PROCS"), 0);

    let audit = d.audit();
    assert!(
        audit
            .iter()
            .any(|e| e["kind"] == "connect" && e["verdict"] == "denied" && e["agent"] == "ci")
    );
    assert!(
        audit
            .iter()
            .any(|e| e["kind"] == "task_ended" && e["reason"] == "exited")
    );
    assert!(audit.iter().all(|e| e["spiffe_id"].as_str().is_some()));
}

#[test]
fn grants_change_at_runtime_and_expire_on_time() {
    let d = DaemonGuard::start("grants", "");
    let l = Listeners::new();
    let port = l.tcp4_port().to_string();
    let p = probe().display().to_string();
    let o = d.run(&["task", "create", "--agent", "ci", "--allow-exec", &p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let mut s = TaskSession::join(&d, &id);
    let connect = format!("connect tcp 127.0.0.1 {port}");
    assert_eq!(s.run(&connect), EPERM);

    let o = d.run(&[
        "grant",
        "add",
        &id,
        "--connect",
        &format!("127.0.0.1:{port}/tcp"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let gid = stdout(&o);
    assert_eq!(
        s.run(&connect),
        "ok",
        "a grant applies as soon as the command returns"
    );
    let o = d.run(&["grant", "revoke", &id, &gid]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        s.run(&connect),
        EPERM,
        "a revoked grant is gone as soon as the command returns"
    );

    let o = d.run(&[
        "grant",
        "add",
        &id,
        "--connect",
        &format!("127.0.0.1:{port}/tcp"),
        "--ttl",
        "2s",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.run(&connect), "ok");
    std::thread::sleep(Duration::from_millis(2300));
    assert_eq!(s.run(&connect), EPERM, "grant TTL");
    wait_for("the expired grant to be revoked", || {
        task_json(&d, &id)["grants"].as_array().unwrap().len() == 1
    });

    // Task TTL: the kernel denies at expiry, the daemon then ends it.
    let o = d.run(&[
        "task",
        "create",
        "--agent",
        "ci",
        "--ttl",
        "3s",
        "--allow-exec",
        &p,
        "--allow-connect",
        &format!("127.0.0.1:{port}"),
    ]);
    let short = stdout(&o);
    let mut s2 = TaskSession::join(&d, &short);
    assert_eq!(s2.run(&connect), "ok");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(s2.run(&connect), EPERM, "task TTL");
    wait_for("the task to end as expired", || {
        task_json(&d, &short)["end_reason"] == "expired"
    });
}

#[test]
fn bad_requests_get_clear_errors_and_the_daemon_keeps_serving() {
    let d = DaemonGuard::start("errors", "");
    let cases: [(&str, &str, Vec<u8>, u16, &str); 9] = [
        (
            "POST",
            "/v1/tasks",
            b"{not json".to_vec(),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/tasks",
            br#"{"agent":"a","grantz":{}}"#.to_vec(),
            400,
            "unknown field `grantz`",
        ),
        (
            "POST",
            "/v1/tasks",
            br#"{"agent":"a","grants":{"connect":["10.0.0.1/8:80"]}}"#.to_vec(),
            400,
            "host bits set",
        ),
        (
            "POST",
            "/v1/tasks",
            br#"{"agent":"a","grants":{"exec":["/no/such/file"]}}"#.to_vec(),
            400,
            "/no/such/file",
        ),
        (
            "POST",
            "/v1/tasks",
            br#"{"agent":"bad name!"}"#.to_vec(),
            400,
            "not a valid name",
        ),
        (
            "POST",
            "/v1/tasks",
            br#"{"agent":"a","ttl_seconds":99999999}"#.to_vec(),
            400,
            "exceeds the maximum",
        ),
        ("POST", "/v1/tasks", vec![b' '; 200_000], 413, "larger than"),
        (
            "GET",
            "/v1/tasks/0123456789abcdef",
            Vec::new(),
            404,
            "no task 0123456789abcdef",
        ),
        (
            "DELETE",
            "/v1/tasks/not-an-id",
            Vec::new(),
            404,
            "no task not-an-id",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let (got, text) = d.http(method, path, &body);
        assert_eq!(got, status, "{method} {path}: {text}");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        let msg = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(needle),
            "{method} {path}: {msg:?} lacks {needle:?}"
        );
        assert!(v["error"]["code"].as_str().is_some());
    }
    let (got, _) = d.http("GET", "/v1/status", b"");
    assert_eq!(got, 200, "the daemon still serves");
}

#[test]
fn events_follow_streams_a_run() {
    let d = DaemonGuard::start("events", "");
    let other = Listeners::new();
    let mut follower = d
        .cli()
        .args(["events", "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let p = probe().display().to_string();
    let o = d.run(&[
        "run",
        "--agent",
        "watch",
        "--allow-exec",
        &p,
        "--",
        &p,
        "connect",
        "tcp",
        "127.0.0.1",
        &other.tcp4_port().to_string(),
    ]);
    assert_eq!(stdout(&o), EPERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut kinds = Vec::new();
    // The task's end comes from the command's pidfd, its decisions from the ring buffer:
    // the two reach the stream in either order, so read until both are in.
    let seen = |kinds: &[String], k: &str| kinds.iter().any(|x| x == k);
    while Instant::now() < deadline && !(seen(&kinds, "task_ended") && seen(&kinds, "connect")) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["agent"], "watch");
            kinds.push(v["kind"].as_str().unwrap().to_owned());
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    assert!(kinds.contains(&"task_started".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"connect".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"task_ended".to_owned()), "{kinds:?}");
}

#[test]
fn names_are_never_looked_up_when_granted_and_bad_ones_are_refused() {
    let d = DaemonGuard::start("names", "");
    let l = Listeners::new();
    let p = probe().display().to_string();
    let port = l.tcp4_port().to_string();
    // A name grant learns addresses only from the task's own DNS queries (docs/dns.md):
    // `localhost` comes from /etc/hosts, so its address is not granted.
    let o = d.run(&[
        "run",
        "--allow-exec",
        &p,
        "--allow-connect",
        &format!("localhost:{port}/tcp"),
        "--",
        &p,
        "connect",
        "tcp",
        "127.0.0.1",
        &port,
    ]);
    assert_eq!(stdout(&o), EPERM, "{}", stderr(&o));
    // A typo is a name like any other: accepted, and nothing is looked up.
    let o = d.run(&["task", "create", "--allow-connect", "localhots:80"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for bad in ["300.1.1.1:80", "a.*.example.com:80", "x_y.example:80"] {
        let o = d.run(&["task", "create", &format!("--allow-connect={bad}")]);
        assert!(!o.status.success(), "{bad}");
        assert!(
            stderr(&o).contains(bad.split(':').next().unwrap()),
            "{}",
            stderr(&o)
        );
    }
    let o = d.run(&["task", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        2,
        "a refused grant creates no task"
    );
}

#[test]
fn sigterm_keeps_enforcement_and_cleanup_removes_it() {
    let mut d = DaemonGuard::start("cleanup", "");
    let other = Listeners::new();
    let p = probe().display().to_string();
    let id = stdout(&d.run(&["task", "create", "--allow-exec", &p]));
    let mut s = TaskSession::join(&d, &id);
    let denied = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    assert_eq!(s.run(&denied), EPERM);

    let status = d.stop_with(libc::SIGTERM);
    assert!(status.success(), "graceful stop: {status}");
    assert_eq!(s.run(&denied), EPERM, "enforcement stays after SIGTERM");

    let o = d.cleanup();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!d.pin_dir.exists(), "pins removed");
    assert_eq!(s.run(&denied), "ok", "cleanup detaches the programs");
}

#[test]
fn kill_on_end_kills_the_remaining_processes() {
    let d = DaemonGuard::start("killonend", "tasks:\n  kill_on_end: true\n");
    let p = probe().display().to_string();
    let id = stdout(&d.run(&["task", "create", "--allow-exec", &p]));
    let mut s = TaskSession::join(&d, &id);
    assert_eq!(s.run("pid"), s.child.id().to_string());
    let o = d.run(&["task", "end", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    let deadline = Instant::now() + Duration::from_secs(3);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "the task's process survived kill_on_end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let t = task_json(&d, &id);
    assert_eq!(t["end_reason"], "ended");
}

#[test]
fn a_full_map_is_a_clear_error_and_nothing_half_installed_stays() {
    let d = DaemonGuard::start("full", "maps:\n  tasks: 2\n");
    for _ in 0..2 {
        let o = d.run(&["task", "create", "--allow-exec", "/bin/true"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (status, body) = d.http(
        "POST",
        "/v1/tasks",
        br#"{"agent":"a","grants":{"exec":["/bin/true"]}}"#,
    );
    assert_eq!(status, 507, "{body}");
    assert!(
        body.contains("map_full") && body.contains("maps.tasks"),
        "{body}"
    );
    assert_eq!(map_entries(&d, "TASKS"), 2);
    assert_eq!(
        map_entries(&d, "EXEC_GRANTS"),
        2,
        "the refused task's grants were removed"
    );
}

#[test]
fn exec_grants_resolve_in_the_callers_mount_namespace() {
    use std::os::unix::fs::MetadataExt as _;
    let d = DaemonGuard::start("mntns", "");
    let dir = d.dir.join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b) = (dir.join("tool"), dir.join("other"));
    std::fs::copy("/bin/true", &a).unwrap();
    std::fs::copy("/bin/true", &b).unwrap();
    let leash = harness::daemon::leash_bin();
    // The caller sees `other` at the path `tool`, as a container would see its own file.
    let script = format!(
        "mount --bind {} {} && exec {} task create --allow-exec {}",
        b.display(),
        a.display(),
        leash.display(),
        a.display()
    );
    let o = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("LEASH_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let t = task_json(&d, &id);
    let resolved = t["grants"][0]["resolved"][0].as_str().unwrap().to_owned();
    let ino_b = std::fs::metadata(&b).unwrap().ino();
    let ino_a = std::fs::metadata(&a).unwrap().ino();
    assert!(
        resolved.ends_with(&format!(":{ino_b}")),
        "granted {resolved}, expected the caller's file (inode {ino_b}, not {ino_a})"
    );
}
