//! Finding a task and its events among many: `leash task list` and `leash events`
//! filters against a real daemon, newest first, and bad filter values refused by name.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    sync::mpsc,
    time::Duration,
};

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stderr, stdout},
    probe,
};

fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(o.status.success(), "{}", stderr(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn list(d: &DaemonGuard, args: &[&str]) -> Vec<String> {
    let mut all = vec!["task", "list", "--json"];
    all.extend(args);
    let o = d.run(&all);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs the probe in a new task of `agent`, denied a connect; returns the task id, as
/// `leash run -v` prints it.
fn denied_run(d: &DaemonGuard, agent: &str, port: u16) -> String {
    let p = probe().display().to_string();
    let o = d.run(&[
        "run",
        "--agent",
        agent,
        "-v",
        "--allow-exec",
        &p,
        "--",
        &p,
        "connect",
        "tcp",
        "127.0.0.1",
        &port.to_string(),
    ]);
    assert_eq!(stdout(&o), EPERM);
    let err = stderr(&o);
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("leash: task "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no task id in {err:?}"))
        .to_owned();
    assert_eq!(
        list(d, &["--agent", agent, "--limit", "1"]),
        std::slice::from_ref(&id)
    );
    id
}

#[test]
fn tasks_and_events_are_found_by_agent_state_time_and_verdict() {
    let d = DaemonGuard::start("finding", "");
    let port = Listeners::new().tcp4_port();
    let first = denied_run(&d, "finder-a", port);
    let second = denied_run(&d, "finder-b", port);
    let created = d.run(&["task", "create", "--agent", "finder-a"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let open = stdout(&created);

    // Newest first, then each filter.
    assert_eq!(list(&d, &[]), [open.clone(), second.clone(), first.clone()]);
    assert_eq!(
        list(&d, &["--agent", "finder-a"]),
        [open.clone(), first.clone()]
    );
    assert_eq!(
        list(&d, &["--agent", "finder-a", "--active"]),
        std::slice::from_ref(&open)
    );
    assert_eq!(list(&d, &["--limit", "2"]), [open.clone(), second.clone()]);
    assert_eq!(list(&d, &["--since", "1h"]).len(), 3);
    assert!(list(&d, &["--since", "2999-01-01T00:00:00Z"]).is_empty());

    // Events: by agent, verdict, tail; the denial of each run is there.
    let events = |args: &[&str]| {
        let mut all = vec!["events", "--json"];
        all.extend(args);
        json_lines(&d.run(&all))
    };
    let b = events(&["--agent", "finder-b"]);
    assert!(!b.is_empty());
    assert!(b.iter().all(|e| e["agent"] == "finder-b"), "{b:?}");
    let denied = events(&["--agent", "finder-a", "--verdict", "denied"]);
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["task"], first.as_str());
    assert_eq!(denied[0]["kind"], "connect");
    let last = events(&["--tail", "1"]);
    assert_eq!(last.len(), 1);
    assert_eq!(events(&["--since", "2999-01-01T00:00:00Z"]).len(), 0);

    // Bad values are refused by name, by the CLI and by the API (never a silent
    // match-all).
    let o = d.run(&["events", "--since", "yesterday"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("bad since \"yesterday\""),
        "{}",
        stderr(&o)
    );
    for path in [
        "/v1/events?verdict=deny",
        "/v1/events?tail=0",
        "/v1/events?agnet=finder-a",
        "/v1/tasks?limit=many",
        "/v1/tasks?since=soon",
    ] {
        let (status, body) = d.http("GET", path, b"");
        assert_eq!(status, 400, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"]["code"], "bad_request", "{path}: {body}");
    }

    // --follow starts from now: the earlier runs are not replayed, the next one is.
    let mut follower = d
        .cli()
        .args(["events", "--follow", "--json", "--agent", "finder-a"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let early = rx.recv_timeout(Duration::from_millis(700));
    assert!(early.is_err(), "replayed: {early:?}");
    let third = denied_run(&d, "finder-a", port);
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the new run's events");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["task"], third.as_str(), "{line}");
    let _ = follower.kill();
    let _ = follower.wait();
}

#[test]
fn exec_events_print_the_device_as_major_minor() {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let d = DaemonGuard::start("finding-dev", "");
    let p = probe().display().to_string();
    // A file of its own (the VM guest's `true` is a busybox link), never granted.
    let target = std::env::temp_dir().join(format!("leash-finding-true-{}", std::process::id()));
    std::fs::copy("/bin/true", &target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _ = d.run(&[
        "run",
        "--agent",
        "finder-dev",
        "--allow-exec",
        &p,
        "--",
        &p,
        "exec",
        &target.display().to_string(),
    ]);
    let meta = std::fs::metadata(&target).unwrap();
    let want = format!("{}:{}", libc::major(meta.dev()), libc::minor(meta.dev()));
    let mut found = Vec::new();
    harness::wait_for("the exec denial's event", || {
        found = json_lines(&d.run(&["events", "--json", "--agent", "finder-dev"]))
            .into_iter()
            .filter(|e| e["kind"] == "exec" && e["verdict"] == "denied")
            .collect();
        !found.is_empty()
    });
    assert_eq!(found[0]["target"]["dev"], want.as_str(), "{found:?}");
    assert_eq!(found[0]["target"]["ino"], meta.ino(), "{found:?}");
    let _ = std::fs::remove_file(&target);
}

#[test]
fn status_marks_the_other_backends_programs_not_applicable() {
    let d = DaemonGuard::start("finding-status", "");
    let o = d.run(&["status", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let programs = v["programs"].as_array().unwrap();
    let other: Vec<&serde_json::Value> =
        programs.iter().filter(|p| p["applies"] == false).collect();
    assert!(
        !other.is_empty(),
        "the other backend's programs: {programs:?}"
    );
    assert!(other.iter().all(|p| p["attached"] == false), "{other:?}");
    assert!(
        programs
            .iter()
            .filter(|p| p["attached"] == true)
            .all(|p| p["applies"] == true),
        "{programs:?}"
    );
    let text = stdout(&d.run(&["status"]));
    let backend = v["backend"].as_str().unwrap();
    assert!(
        text.contains(&format!("n/a (not the {backend} backend's)")),
        "{text}"
    );
}

#[test]
fn task_started_names_the_caller_not_the_daemon_and_has_no_verdict() {
    let d = DaemonGuard::start("finding-caller", "");
    let (status, body) = d.http("POST", "/v1/tasks", br#"{"agent":"finder-caller"}"#);
    assert_eq!(status, 201, "{body}");
    let started = json_lines(&d.run(&["events", "--json", "--agent", "finder-caller"]));
    let started: Vec<_> = started
        .iter()
        .filter(|e| e["kind"] == "task_started")
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    assert_eq!(started[0]["pid"], std::process::id(), "{started:?}");
    assert_ne!(
        started[0]["pid"],
        d.child_pid().unwrap(),
        "the daemon's own pid"
    );
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    assert_eq!(started[0]["comm"], comm.trim_end(), "{started:?}");
    // A lifecycle record decides nothing: no verdict, and found as such.
    assert_eq!(started[0]["verdict"], "none", "{started:?}");
    let none = json_lines(&d.run(&[
        "events",
        "--json",
        "--agent",
        "finder-caller",
        "--verdict",
        "none",
    ]));
    assert_eq!(none.len(), 1, "{none:?}");
    let allowed = json_lines(&d.run(&[
        "events",
        "--json",
        "--agent",
        "finder-caller",
        "--verdict",
        "allowed",
    ]));
    assert!(allowed.is_empty(), "{allowed:?}");
}

/// A process that outlives its task's TTL is denied by a kernel that no longer knows
/// the task; the event says why the task is gone (`task_expired`), not `task_unknown`.
#[test]
fn denials_after_the_ttl_say_task_expired() {
    let d = DaemonGuard::start("finding-expired", "");
    let port = Listeners::new().tcp4_port();
    let p = probe().display().to_string();
    let created = d.run(&[
        "task",
        "create",
        "--agent",
        "finder-gone",
        "--ttl",
        "2s",
        "--allow-exec",
        &p,
    ]);
    assert!(created.status.success(), "{}", stderr(&created));
    let id = stdout(&created);
    let mut s = TaskSession::join(&d, &id);
    harness::wait_for("the task to expire", || {
        harness::daemon::task_json(&d, &id)["state"] == "ended"
    });
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), EPERM);
    let mut found = Vec::new();
    harness::wait_for("the denial's event", || {
        found = json_lines(&d.run(&["events", "--json", "--task", &id]))
            .into_iter()
            .filter(|e| e["kind"] == "connect")
            .collect();
        !found.is_empty()
    });
    assert_eq!(found[0]["reason"], "task_expired", "{found:?}");
}
