//! Exec enforcement on the real kernel: granted files run, others are stopped, and
//! untagged processes see no change.

use harness::{Harness, Scratch, exec_denied, probe, spec};
use harness::{Reason, Verdict};

#[test]
fn granted_runs_ungranted_is_stopped_untagged_unaffected() {
    let h = Harness::load();
    let s = Scratch::new("basic");
    let allowed = s.copy_true("allowed");
    let other = s.copy_true("other");
    let task = h.task(spec(&[&allowed], &[]));

    assert_eq!(task.probe(&format!("exec {allowed}")), "exit 0");
    assert_eq!(
        task.probe(&format!("exec {other}")),
        exec_denied(h.backend())
    );

    // Untagged: the same probe, same files, no task.
    let out = std::process::Command::new(probe())
        .args(["exec", &other])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exit 0");
}

#[test]
fn allowed_and_denied_execs_are_counted_and_reported() {
    let h = Harness::load();
    let s = Scratch::new("count");
    let granted = s.copy_true("granted");
    let other = s.copy_true("other");
    let task = h.task(spec(&[&granted], &[]));
    let before = task.decisions();
    for _ in 0..3 {
        assert_eq!(task.probe(&format!("exec {granted}")), "exit 0");
    }
    for _ in 0..2 {
        assert_eq!(
            task.probe(&format!("exec {other}")),
            exec_denied(h.backend())
        );
    }
    let after = task.decisions();
    // Each probe run is itself one allowed exec (of the probe): 5 probes + 3 execs.
    assert_eq!(after[0][0] - before[0][0], 8, "allowed execs");
    assert_eq!(after[0][1] - before[0][1], 2, "denied execs");
    assert_eq!(after[0][2] - before[0][2], 0, "audited execs");

    let events = task.events(10);
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.verdict == Verdict::Denied)
        .collect();
    assert_eq!(denied.len(), 2);
    for e in &denied {
        let leash::kernel::events::Target::Exec { path, .. } = &e.target else {
            panic!("unexpected target {:?}", e.target);
        };
        assert_eq!(path, &other);
        assert_eq!(e.reason, Reason::NotGranted);
    }
    assert_eq!(
        events
            .iter()
            .filter(|e| e.verdict == Verdict::Allowed)
            .count(),
        8
    );
}
