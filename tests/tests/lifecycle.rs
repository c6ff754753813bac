//! Lifecycle on the real kernel: an ended or expired task's processes are denied
//! everything (fail closed), and audit mode reports without enforcing.

use std::{fs, os::unix::fs::PermissionsExt as _};

use harness::{EPERM, Harness, Listeners, exec_denied, spec};
use leash::tasks::TaskSpec;

fn private_true(tag: &str) -> String {
    let p = std::env::temp_dir().join(format!("leash-life-{tag}-{}", std::process::id()));
    fs::copy("/bin/true", &p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn ended_task_denies_everything_to_survivors() {
    let h = Harness::load();
    let l = Listeners::new();
    let tool = private_true("end");
    let task = h.task(spec(
        &[&tool],
        &[
            &format!("127.0.0.1:{}", l.tcp4_port()),
            &format!("127.0.0.1:{}/udp", l.udp4_port()),
        ],
    ));
    let mut s = task.session();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    assert_eq!(s.run(&format!("exec {tool}")), "exit 0");

    task.end();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        EPERM
    );
    assert_eq!(s.run(&format!("sendto 127.0.0.1 {}", l.udp4_port())), EPERM);
    // lsm refuses the probe's fork itself (task_alloc), before any exec, and reports no
    // event for it; portable kills the exec'd child.
    let (exec_outcome, closed_events) = match h.backend() {
        leash::Backend::Lsm => ("error fork errno 1", 2),
        leash::Backend::Portable => (exec_denied(h.backend()), 3),
    };
    assert_eq!(s.run(&format!("exec {tool}")), exec_outcome);
    let events = task.events(closed_events);
    let closed: Vec<_> = events
        .iter()
        .filter(|e| e.reason == "task_unknown")
        .collect();
    assert_eq!(closed.len(), closed_events, "{events:?}");
    assert!(closed.iter().all(|e| e.verdict == "denied"));
    let _ = fs::remove_file(tool);
}

#[test]
fn audit_mode_allows_and_reports_audited() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let tool = private_true("audit");
    let task = h.task(TaskSpec {
        connect: vec![format!("127.0.0.1:{}", l.tcp4_port())],
        audit: true,
        ..TaskSpec::default()
    });
    let before = task.decisions();
    let mut s = task.session();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", other.tcp4_port())),
        "ok"
    );
    assert_eq!(
        s.run(&format!("sendto 127.0.0.1 {}", other.udp4_port())),
        "ok"
    );
    assert_eq!(s.run(&format!("exec {tool}")), "exit 0");
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    let after = task.decisions();
    let d = |a: usize, v: usize| after[a][v] - before[a][v];
    assert_eq!((d(0, 1), d(0, 2)), (0, 1), "exec: denied, audited");
    assert_eq!(
        (d(1, 0), d(1, 1), d(1, 2)),
        (1, 0, 1),
        "connect: allowed, denied, audited"
    );
    assert_eq!((d(2, 1), d(2, 2)), (0, 1), "send: denied, audited");
    let audited: Vec<_> = task
        .events(3)
        .into_iter()
        .filter(|e| e.verdict == "audited")
        .collect();
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert!(audited.iter().all(|e| e.reason == "not_granted"));
    let _ = fs::remove_file(tool);
}
