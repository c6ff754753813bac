//! Class 17, daemon restart or crash: enforcement continues with the daemon killed
//! (programs and maps are pinned), and the restarted daemon adopts the task.
#![expect(
    clippy::many_single_char_names,
    reason = "d(aemon), l(istener), o(utput), p(robe), s(ession) keep the scenario short"
)]

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stderr, stdout, task_json},
    probe, wait_for,
};

#[test]
fn kill9_keeps_enforcement_and_a_restart_adopts_the_task() {
    let mut d = DaemonGuard::start("restart", "");
    let l = Listeners::new();
    let other = Listeners::new();
    let p = probe().display().to_string();
    // Ends with the one process that joins it: the restarted daemon watches it again.
    let o = d.run(&[
        "task",
        "create",
        "--end-when",
        "command_exits",
        "--agent",
        "ci",
        "--allow-exec",
        &p,
        "--allow-connect",
        &format!("127.0.0.1:{}/tcp", l.tcp4_port()),
    ]);
    let id = stdout(&o);
    let mut s = TaskSession::join(&d, &id);
    let ok = format!("connect tcp 127.0.0.1 {}", l.tcp4_port());
    let denied = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    assert_eq!(s.run(&ok), "ok");

    d.kill9();
    assert_eq!(
        s.run(&denied),
        EPERM,
        "enforcement continues with no daemon"
    );
    assert_eq!(s.run(&ok), "ok", "grants continue with no daemon");

    d.spawn();
    assert_eq!(s.run(&denied), EPERM, "no gap across the restart");
    // Denials while the daemon was down and after are counted and reported by it.
    wait_for(
        "the restarted daemon to count and report the denials",
        || {
            let (_, metrics) = d.metrics_get("/metrics");
            let counted = metrics.lines().any(|l| {
                l.starts_with(
                    "leash_decisions_total{action=\"connect\",verdict=\"denied\",agent=\"ci\"}",
                ) && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(2.0)
            });
            let reported = d
                .audit()
                .iter()
                .filter(|e| {
                    e["task"] == id.as_str() && e["kind"] == "connect" && e["verdict"] == "denied"
                })
                .count()
                >= 2;
            counted && reported
        },
    );
    let t = task_json(&d, &id);
    assert_eq!(t["state"], "active", "{t}");
    assert_eq!(t["grants"].as_array().unwrap().len(), 2);
    let o = d.run(&[
        "grant",
        "add",
        &id,
        "--connect",
        &format!("127.0.0.1:{}/tcp", other.tcp4_port()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s.run(&denied), "ok", "the adopted task takes new grants");

    drop(s);
    wait_for("the adopted task to end when its process exits", || {
        task_json(&d, &id)["end_reason"] == "exited"
    });
    let links = std::fs::read_dir(d.pin_dir.join("links")).unwrap().count();
    let status: serde_json::Value =
        serde_json::from_slice(&d.run(&["status", "--json"]).stdout).unwrap();
    let backend = if status["backend"] == "lsm" {
        leash::Backend::Lsm
    } else {
        leash::Backend::Portable
    };
    // Programs of calls this kernel lacks (modules, kexec) are not attached.
    let tracefs = leash::kernel::mounts::ensure_tracefs().unwrap();
    let scope = if status["attach_scope"] == "task" {
        leash::kernel::AttachScope::Task
    } else {
        leash::kernel::AttachScope::Root
    };
    let expected =
        leash::kernel::attached_by(backend, harness::daemon::unix_hooks(&d), scope, &tracefs).len();
    assert_eq!(
        links, expected,
        "one pinned link per program of the {backend} backend, no leftovers from the first daemon"
    );
}
