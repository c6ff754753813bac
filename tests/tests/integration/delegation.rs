//! Delegation on a real daemon and kernel: a process inside a task creates a child
//! task (`leash run --delegate`) that holds at most what its parent holds, for no
//! longer; the child's processes are decided by the child's grants; each kind of
//! excess is refused by name; ending the parent or revoking its grant reaches the child;
//! the child's kernel expiry is its parent's even with the daemon down.
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), t(ask), c(hild), s(ession), o(utput) keep the scenarios short"
)]

use std::process::{Command, Stdio};

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe,
};

/// A parent task made from outside: it may run leash and the probe, and connect to
/// loopback `ports` over TCP.
fn parent(d: &DaemonGuard, ports: &[u16], ttl: &str) -> String {
    let leash = harness::daemon::leash_bin().display().to_string();
    let p = probe().display().to_string();
    let mut args = vec![
        "task".to_owned(),
        "create".into(),
        "--agent".into(),
        "orchestrator".into(),
        "--allow-exec".into(),
        leash,
        "--allow-exec".into(),
        p,
        "--ttl".into(),
        ttl.into(),
    ];
    for port in ports {
        args.extend(["--allow-connect".into(), format!("127.0.0.1:{port}/tcp")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = d.run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// `leash ARGS` run by a process inside task `task`.
fn inside(d: &DaemonGuard, task: &str, args: &[&str]) -> std::process::Output {
    let leash = harness::daemon::leash_bin().display().to_string();
    let mut all = vec!["run", "--task", task, "--", &leash];
    all.extend_from_slice(args);
    d.run(&all)
}

/// A probe in a child of `task`, made from inside it with `grants` (flags of leash run).
fn child_session(d: &DaemonGuard, task: &str, grants: &[&str]) -> TaskSession {
    let leash = harness::daemon::leash_bin().display().to_string();
    let p = probe().display().to_string();
    let mut c: Command = d.cli();
    c.args(["run", "--task", task, "--", &leash, "run", "--delegate"])
        .args(grants)
        .args(["--allow-exec", &p, "--", &p])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    TaskSession::from_child(c.spawn().unwrap())
}

/// An RFC 3339 time of the API.
fn at(v: &serde_json::Value) -> time::OffsetDateTime {
    let s = v.as_str().unwrap_or_default();
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

/// The grant of `spec` in a task's JSON.
fn grant(task: &serde_json::Value, spec: &str) -> serde_json::Value {
    task["grants"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["spec"] == spec))
        .unwrap_or_else(|| panic!("no grant {spec} in {task}"))
        .clone()
}

/// The tasks whose parent is `task`.
fn children(d: &DaemonGuard, task: &str) -> Vec<serde_json::Value> {
    let o = d.run(&["task", "list", "--json"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).unwrap();
    all.into_iter().filter(|t| t["parent"] == task).collect()
}

fn wait_child(d: &DaemonGuard, task: &str) -> serde_json::Value {
    harness::wait_for("the child task", || !children(d, task).is_empty());
    children(d, task).remove(0)
}

#[test]
fn a_child_holds_at_most_what_its_parent_holds() {
    let d = DaemonGuard::start("deleg-limits", "tasks:\n  max_delegation_depth: 1\n");
    let (near, far) = (Listeners::new(), Listeners::new());
    let (p1, p2) = (near.tcp4_port(), far.tcp4_port());
    let t = parent(&d, &[p1, p2], "10m");
    let p = probe().display().to_string();
    let leash = harness::daemon::leash_bin().display().to_string();

    // Within the parent's grants: made, and its processes are decided by its own
    // grants, not the parent's (the parent may reach p2; the child may not).
    let spec1 = format!("127.0.0.1:{p1}/tcp");
    let mut s = child_session(&d, &t, &["--allow-connect", &spec1]);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {p1}")), "ok");
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {p2}")), EPERM);
    let c = wait_child(&d, &t);
    assert_eq!(c["chain"], serde_json::json!([t]), "{c}");
    assert_eq!(
        c["agent"], "orchestrator",
        "a child takes its parent's agent"
    );
    let parent_grant = grant(&task_json(&d, &t), &spec1)["id"].clone();
    let derived = grant(&c, &spec1);
    assert_eq!(derived["derived_from"], serde_json::json!([parent_grant]));
    // Its TTL, asked for none, is the parent's remaining one, not the default hour.
    let gap = at(&task_json(&d, &t)["expires_at"]) - at(&c["expires_at"]);
    assert!(gap.abs() < time::Duration::seconds(1), "{gap}");
    drop(s);

    refuses_each_excess(&d, &t, p1, p2);

    // Without --delegate a process of the task still changes nothing, and a host
    // caller cannot delegate.
    let o = inside(&d, &t, &["task", "create", "--allow-exec", &p]);
    assert!(stderr(&o).contains("inside a leash task"), "{}", stderr(&o));
    let o = d.run(&["task", "create", "--delegate", "--allow-exec", &p]);
    assert!(stderr(&o).contains("outside every task"), "{}", stderr(&o));

    // The depth limit (1 here): a child may not delegate again.
    let o = inside(
        &d,
        &t,
        &[
            "run",
            "--delegate",
            "--allow-exec",
            &leash,
            "--allow-exec",
            &p,
            "--",
            &leash,
            "task",
            "create",
            "--delegate",
            "--allow-exec",
            &p,
        ],
    );
    assert!(
        stderr(&o).contains("max_delegation_depth is 1"),
        "{}",
        stderr(&o)
    );

    // A sibling or unrelated task, or the caller's own, cannot be touched.
    let other = parent(&d, &[p1], "10m");
    for id in [&other, &t] {
        let o = inside(&d, &t, &["task", "end", id]);
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("only the tasks it delegated"),
            "{}",
            stderr(&o)
        );
        let o = inside(&d, &t, &["grant", "add", id, "--connect", &spec1]);
        assert!(!o.status.success(), "{}", stdout(&o));
    }
    assert_eq!(task_json(&d, &other)["state"], "created");
}

/// Each kind of excess over the parent `t` (which holds loopback `p1` and `p2` over
/// TCP): refused, the grant and the parent named, nothing made.
fn refuses_each_excess(d: &DaemonGuard, t: &str, p1: u16, p2: u16) {
    let p = probe().display().to_string();
    let before = children(d, t).len();
    let excess: &[(&[&str], &str)] = &[
        (&["--allow-exec", "/bin/sh"], "exec grant /bin/sh"),
        (
            &[
                "--allow-connect",
                &format!("127.0.0.1:{}-{}/tcp", p1.min(p2), p1.max(p2)),
            ],
            "connect grant 127.0.0.1:",
        ),
        (
            &["--allow-connect", &format!("127.0.0.1:{p1}")],
            "not within any connect grant",
        ),
        (
            &["--allow-connect", "example.com:443"],
            "connect grant example.com:443",
        ),
        (&["--allow-connect", "socket:netlink"], "socket:netlink"),
        (&["--ttl", "1h"], "outlives the parent task"),
        (&["--audit"], "mode audit"),
        (&["--files", "open"], "file mode open"),
        (&["--allow-write", "/var/tmp"], "file grant write:/var/tmp"),
    ];
    for (flags, named) in excess {
        let mut args = vec!["task", "create", "--delegate", "--allow-exec", &p];
        args.extend_from_slice(flags);
        let o = inside(d, t, &args);
        assert!(!o.status.success(), "{flags:?} was allowed");
        let e = stderr(&o);
        assert!(e.contains(named) && e.contains(t), "{flags:?}: {e}");
    }
    assert_eq!(children(d, t).len(), before, "a refused child is not made");
}

#[test]
fn the_parent_s_end_revocation_and_expiry_reach_the_child() {
    let mut d = DaemonGuard::start("deleg-cascade", "");
    let l = Listeners::new();
    let port = l.tcp4_port();
    let spec = format!("127.0.0.1:{port}/tcp");
    let connect = format!("connect tcp 127.0.0.1 {port}");

    // Revoking the parent's grant revokes the grant derived from it, with an event.
    let t = parent(&d, &[port], "10m");
    let mut s = child_session(&d, &t, &["--allow-connect", &spec]);
    assert_eq!(s.run(&connect), "ok");
    let c = wait_child(&d, &t);
    let cid = c["id"].as_str().unwrap().to_owned();
    let g = grant(&task_json(&d, &t), &spec)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let o = d.run(&["grant", "revoke", &t, &g]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.run(&connect), EPERM);
    let grants = task_json(&d, &cid)["grants"].clone();
    assert!(
        !grants.as_array().unwrap().iter().any(|x| x["spec"] == spec),
        "{grants}"
    );
    let revoked = d.audit().into_iter().find(|e| {
        e["task"] == cid && e["kind"] == "grant_revoked" && e["reason"] == "parent_grant_revoked"
    });
    let revoked = revoked.expect("a grant_revoked event of the child");
    assert_eq!(revoked["chain"], serde_json::json!([t]), "{revoked}");
    assert_eq!(revoked["target"]["parent_grant"], format!("{t}/{g}"));

    // Ending the parent ends the child; its processes are denied everything.
    let o = d.run(&["task", "end", &t]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c = task_json(&d, &cid);
    assert_eq!(c["state"], "ended", "{c}");
    assert_eq!(c["end_reason"], "parent_ended", "{c}");
    let ended = d
        .audit()
        .into_iter()
        .find(|e| e["task"] == cid && e["kind"] == "task_ended");
    assert_eq!(
        ended.expect("the child's task_ended")["target"]["parent"],
        t
    );
    drop(s);

    // The kernel ends a child with its parent even with no daemon: asked for no TTL,
    // the child got the parent's expiry, not the default hour.
    let t = parent(&d, &[port], "25s");
    let mut s = child_session(&d, &t, &["--allow-connect", &spec]);
    assert_eq!(s.run(&connect), "ok");
    let expires = at(&task_json(&d, &t)["expires_at"]);
    let c = wait_child(&d, &t);
    assert!(
        (at(&c["expires_at"]) - expires).abs() < time::Duration::seconds(1),
        "{c}"
    );
    d.kill9();
    let left = expires - time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    if left.is_positive() {
        std::thread::sleep(left.unsigned_abs());
    }
    assert_eq!(s.run(&connect), EPERM, "the child outlived its parent");
}
