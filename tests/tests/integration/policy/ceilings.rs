//! Ceilings hold on what is really granted: exec paths resolve only in mount
//! namespaces the caller cannot have arranged, IPv6 grants reaching IPv4 meet the IPv4
//! policies, and a reload re-checks whole tasks (agent rule, mode, TTL), as does joining.

use std::{os::unix::fs::MetadataExt as _, process::Command};

use harness::{
    EPERM, Listeners, Scratch,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe, wait_for,
};

use super::{audit_kinds, post, probe_dir, sighup, with_policy};

/// `leash task create --agent ci --intent x --allow-exec GIT` run by a root that is
/// root only in a user namespace of its own (`unshare -Urm`), after bind-mounting
/// `bash` over `git` there.
fn create_from_own_userns(d: &DaemonGuard, bash: &str, git: &str) -> std::process::Output {
    Command::new("unshare")
        .args(["-Urm", "sh", "-c"])
        .arg(r#"mount --bind "$1" "$2" && exec "$3" task create --agent ci --intent x --allow-exec "$2""#)
        .args(["sh", bash, git])
        .arg(harness::daemon::leash_bin())
        .env("LEASH_SOCKET", &d.socket)
        .output()
        .expect("run unshare")
}

/// `major:minor:ino` as the task shows a resolved file.
fn resolved_as(path: &str) -> String {
    let m = std::fs::metadata(path).unwrap();
    let (major, minor) = (libc::major(m.dev()), libc::minor(m.dev()));
    format!("{path} {major}:{minor}:{}", m.ino())
}

#[test]
fn exec_paths_are_not_resolved_in_a_mount_namespace_the_caller_arranged() {
    let s = Scratch::new("pol-userns");
    let (git, bash) = (s.copy_true("git"), s.copy_true("bash"));
    let policy = format!("rules:\n  - name: ci\n    agents: [ci]\n    exec: [\"{git}\"]\n");
    let (d, _f) = with_policy("pol-userns", &policy, "");

    // The bind mount would make the granted name run bash: refused, naming the knob.
    let o = create_from_own_userns(&d, &bash, &git);
    assert!(!o.status.success(), "{}", stdout(&o));
    let m = stderr(&o);
    assert!(
        m.contains("user namespace other than the daemon's")
            && m.contains("policy.trust_userns_mounts"),
        "{m}"
    );
    assert!(d.audit().iter().all(|e| e["kind"] != "task_started"));

    // An ordinary caller: the grant is the file the name means on the host.
    let o = d.run(&[
        "task",
        "create",
        "--agent",
        "ci",
        "--intent",
        "x",
        "--allow-exec",
        &git,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let t = task_json(&d, &id);
    assert_eq!(t["grants"][0]["resolved"][0], resolved_as(&git), "{t}");
    // Adding an exec grant from such a namespace is refused the same way; a request
    // with no exec path does not depend on the caller's mounts.
    let o = Command::new("unshare")
        .args(["-Urm"])
        .arg(harness::daemon::leash_bin())
        .args(["grant", "add", &id, "--exec", &git])
        .env("LEASH_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(
        stderr(&o).contains("policy.trust_userns_mounts"),
        "{}",
        stderr(&o)
    );
    drop(d);

    // Trusted by the config: resolved in the caller's namespace, as it asked.
    let (d, _f) = with_policy("pol-userns-trust", &policy, "  trust_userns_mounts: true\n");
    let o = create_from_own_userns(&d, &bash, &git);
    assert!(o.status.success(), "{}", stderr(&o));
    let t = task_json(&d, &stdout(&o));
    let bash_file = resolved_as(&bash).replace(&bash, &git);
    assert_eq!(t["grants"][0]["resolved"][0], bash_file, "{t}");
}

#[test]
fn ipv6_grants_reaching_ipv4_are_refused_by_ipv4_forbids_before_the_kernel() {
    let l = Listeners::new();
    let port = l.tcp4_port();
    let policy = format!(
        "rules:\n  - name: wide\n    agents: [w]\n    exec: [\"{}\"]\n    connect: [\"[::]/0:*\"]\ncedar: |\n  @id(\"no-loopback\")\n  forbid(principal, action == Leash::Action::\"connect\", resource)\n  when {{ resource has net && (resource.net.isInRange(ip(\"127.0.0.0/8\")) || ip(\"127.0.0.0/8\").isInRange(resource.net)) }};\n",
        probe_dir()
    );
    let (d, _f) = with_policy("pol-v4v6", &policy, "");
    let p = probe().display().to_string();
    for grant in ["[::]/0:*", &format!("[::ffff:127.0.0.1]:{port}/tcp")] {
        let body =
            serde_json::json!({ "agent": "w", "grants": { "exec": [p], "connect": [grant] } });
        let (status, v) = post(&d, "/v1/tasks", &body);
        assert_eq!(status, 403, "{grant}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("forbidden by Cedar policy \"no-loopback\"") && m.contains("IPv4"),
            "{grant}: {m}"
        );
    }
    assert!(d.audit().iter().all(|e| e["kind"] != "task_started"));

    // IPv6 proper stays allowed; adding the wide grant to a running task is refused,
    // and the kernel never holds it: the task cannot reach IPv4 loopback either way.
    let o = d.run(&[
        "task",
        "create",
        "--agent",
        "w",
        "--allow-exec",
        &p,
        "--allow-connect",
        "[::1]:*",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o);
    let o = d.run(&["grant", "add", &id, "--connect", "[::]/0:*"]);
    assert!(stderr(&o).contains("no-loopback"), "{}", stderr(&o));
    assert_eq!(task_json(&d, &id)["grants"].as_array().unwrap().len(), 2);
    let mut s = TaskSession::join(&d, &id);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), EPERM);
    assert_eq!(
        s.run(&format!("connect tcp mapped:127.0.0.1 {port}")),
        EPERM
    );
    assert!(audit_kinds(&d, "grant_added").is_empty());
}

/// A policy with rule `ci` (`extra` appended to it) allowing the probe and TCP to `port`.
fn ci_rule(port: u16, extra: &str) -> String {
    format!(
        "rules:\n  - name: ci\n    agents: [ci]\n    exec: [\"{}\"]\n    connect: [\"127.0.0.1:{port}/tcp\"]\n{extra}  - name: other\n    agents: [other]\n",
        probe_dir()
    )
}

/// A task of agent `ci`: the probe, TCP to `port`, this TTL and mode; its id.
fn ci_task(d: &DaemonGuard, port: u16, ttl: &str, audit: bool) -> String {
    let p = probe().display().to_string();
    let connect = format!("127.0.0.1:{port}/tcp");
    let mut args = vec![
        "task",
        "create",
        "--agent",
        "ci",
        "--ttl",
        ttl,
        "--allow-exec",
        &p,
        "--allow-connect",
        &connect,
    ];
    if audit {
        args.push("--audit");
    }
    let o = d.run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// `leash run --task ID -- probe pid`.
fn join_once(d: &DaemonGuard, id: &str) -> std::process::Output {
    d.cli()
        .args(["run", "--task", id, "--"])
        .arg(probe())
        .arg("pid")
        .output()
        .unwrap()
}

/// The `task_ended` record of task `id`.
fn ended_record(d: &DaemonGuard, id: &str) -> serde_json::Value {
    let mut found = None;
    wait_for("the task_ended record", || {
        found = audit_kinds(d, "task_ended")
            .into_iter()
            .find(|e| e["task"] == id);
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn a_reload_that_drops_the_agents_rule_ends_its_tasks() {
    let l = Listeners::new();
    let port = l.tcp4_port();
    let (d, f) = with_policy("pol-rl-rule", &ci_rule(port, ""), "");
    let id = ci_task(&d, port, "10m", false);
    let mut s = TaskSession::join(&d, &id);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), "ok");

    f.write("rules:\n  - name: other\n    agents: [other]\n");
    sighup(&d);
    let e = ended_record(&d, &id);
    assert_eq!(e["reason"], "revoked", "{e}");
    assert!(e["target"]["rule"].is_null(), "{e}");
    let why = e["target"]["policy"].as_str().unwrap();
    assert!(why.contains("agent \"ci\" matches no rule"), "{e}");
    let t = task_json(&d, &id);
    assert_eq!(
        (t["state"].as_str(), t["end_reason"].as_str()),
        (Some("ended"), Some("revoked"))
    );
    // Its process is denied from now on, and nobody may join it again.
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), EPERM);
    let o = join_once(&d, &id);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("may not be joined") && stderr(&o).contains("matches no rule"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_reload_that_tightens_ttl_or_modes_ends_the_tasks_beyond_them() {
    let l = Listeners::new();
    let port = l.tcp4_port();
    let (d, f) = with_policy("pol-rl-ttl", &ci_rule(port, "    max_ttl: 1h\n"), "");
    let long = ci_task(&d, port, "30m", false);
    let short = ci_task(&d, port, "5m", false);
    let audit = ci_task(&d, port, "5m", true);
    let mut s = TaskSession::join(&d, &long);
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), "ok");

    f.write(&ci_rule(port, "    max_ttl: 10m\n    modes: [enforce]\n"));
    sighup(&d);
    for (id, limit) in [(&long, "max_ttl 10m of rule \"ci\""), (&audit, "modes")] {
        let e = ended_record(&d, id);
        assert_eq!(
            (e["reason"].as_str(), e["target"]["rule"].as_str()),
            (Some("revoked"), Some("ci")),
            "{e}"
        );
        assert!(
            e["target"]["policy"].as_str().unwrap().contains(limit),
            "{e}"
        );
    }
    assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {port}")), EPERM);
    // Joining is checked against the policy in force: the over-long task is refused
    // with the limit; the task within it still takes processes.
    let o = join_once(&d, &long);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("may not be joined") && stderr(&o).contains("max_ttl 10m"),
        "{}",
        stderr(&o)
    );
    assert_eq!(task_json(&d, &short)["state"], "created");
    let o = join_once(&d, &short);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_rule_can_require_the_restricted_file_mode() {
    let (d, _f) = with_policy(
        "pol-files",
        "rules:\n  - name: locked\n    agents: [locked]\n    file_modes: [restricted]\n",
        "",
    );
    // The default (writes) and open are refused, naming the rule; restricted is not.
    for body in [
        serde_json::json!({"agent": "locked"}),
        serde_json::json!({"agent": "locked", "file_mode": "open"}),
    ] {
        let (status, v) = post(&d, "/v1/tasks", &body);
        assert_eq!(status, 403, "{body}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains("file_modes") && m.contains("\"locked\""), "{m}");
    }
    let body = serde_json::json!({"agent": "locked", "file_mode": "restricted"});
    let (status, v) = post(&d, "/v1/tasks", &body);
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["files"]["mode"], "restricted");
}

#[test]
fn file_grants_beyond_the_rules_paths_are_refused_and_a_reload_ends_them() {
    let rule = "rules:\n  - name: files\n    agents: [fa]\n    file_modes: [restricted]\n    read: [/srv/leash-it/data]\n";
    let (d, f) = with_policy(
        "pol-file-ceil",
        &format!("{rule}    write: [/srv/leash-it/out/]\n"),
        "",
    );
    let task = |files: &[&str]| {
        let body = serde_json::json!({"agent": "fa", "file_mode": "restricted", "grants": {"files": files}});
        post(&d, "/v1/tasks", &body)
    };
    // Within: the listed hierarchies, and reads under a write entry.
    let (status, v) = task(&[
        "read:/srv/leash-it/data/set1",
        "write:/srv/leash-it/out/job",
        "read:/srv/leash-it/out",
    ]);
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    // Beyond: refused with 403 naming the grant and the rule; no task is created.
    for (grant, names) in [
        ("write:/srv/leash-it/data", "write grant /srv/leash-it/data"),
        ("read:/etc", "read grant /etc"),
        ("write:/srv/leash-it/out/../../../etc", "not normalized"),
        (
            "read:/srv/leash-it/database",
            "read grant /srv/leash-it/database",
        ),
    ] {
        let (status, v) = task(&["read:/srv/leash-it/data", grant]);
        assert_eq!(status, 403, "{grant}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains(names) && m.contains("rule \"files\""),
            "{grant}: {m}"
        );
    }
    // The same through the CLI's flags.
    let o = d.run(&[
        "task",
        "create",
        "--agent",
        "fa",
        "--files",
        "restricted",
        "--allow-write",
        "/home",
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("write grant /home is outside the ceiling of rule \"files\""),
        "{}",
        stderr(&o)
    );
    let tasks = d.run(&["task", "list", "--json"]);
    let tasks: serde_json::Value = serde_json::from_slice(&tasks.stdout).unwrap();
    assert_eq!(tasks.as_array().unwrap().len(), 1, "{tasks}");

    // A reload without the write ceiling ends the task that holds a write grant.
    f.write(rule);
    sighup(&d);
    let e = ended_record(&d, &id);
    assert_eq!(e["reason"], "revoked", "{e}");
    assert_eq!(e["target"]["rule"], "files", "{e}");
    let why = e["target"]["policy"].as_str().unwrap();
    // (The first grant beyond the new ceiling: the read one under the dropped write entry.)
    assert!(
        why.contains("grant /srv/leash-it/out") && why.contains("outside the ceiling"),
        "{e}"
    );
}
