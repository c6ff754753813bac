//! Exec enforcement on the real kernel: granted files run, others are stopped, and
//! untagged processes see no change.

use harness::{Harness, Scratch, exec_denied, probe, spec};
use harness::{Action, Reason, Verdict};

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

/// `DIR/**`: files written below DIR after the grant run, at any depth, scripts
/// included; a file outside it, one moved out of it, and a script reached through
/// `..` from inside it are stopped; untagged processes are unaffected.
#[test]
fn a_tree_grant_runs_what_is_written_below_it_and_nothing_else() {
    use std::{fs, os::unix::fs::PermissionsExt as _};
    let h = Harness::load();
    let s = Scratch::new("tree");
    let interp = s.copy_true("interp");
    let outside = s.copy_true("outside");
    let venv = s.path("venv");
    fs::create_dir_all(format!("{venv}/bin")).unwrap();
    let task = h.task(spec(&[&format!("{venv}/**"), &interp], &[]));
    let denied = exec_denied(h.backend());

    // Written after the grant, as a venv's `bin/pip` would be.
    fs::create_dir_all(format!("{venv}/lib/a/b/c")).unwrap();
    let tool = format!("{venv}/bin/tool");
    let deep = format!("{venv}/lib/a/b/c/deep");
    for p in [&tool, &deep] {
        fs::copy("/bin/true", p).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = format!("{venv}/bin/run.sh");
    let sneaky = s.path("sneaky.sh");
    for p in [&script, &sneaky] {
        fs::write(p, format!("#!{interp}\n")).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(task.probe(&format!("exec {tool}")), "exit 0");
    assert_eq!(task.probe(&format!("exec {deep}")), "exit 0");
    assert_eq!(task.probe(&format!("exec {script}")), "exit 0");

    task.assert_denied(Action::Exec, Reason::NotGranted, denied, || {
        task.probe(&format!("exec {outside}"))
    });
    // A script outside the tree, by a path that starts inside it.
    let reason = match h.backend() {
        leash::Backend::Portable => Reason::ScriptNotGranted,
        leash::Backend::Lsm => Reason::NotGranted,
    };
    task.assert_denied(Action::Exec, reason, denied, || {
        task.probe(&format!("exec {venv}/bin/../../sneaky.sh"))
    });
    // Moved out of the tree, it is an ungranted file again.
    let moved = s.path("moved");
    fs::rename(&tool, &moved).unwrap();
    assert_eq!(task.probe(&format!("exec {moved}")), denied);

    let out = std::process::Command::new(probe())
        .args(["exec", &moved])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "exit 0");
}
