//! Exec enforcement on the real kernel: granted files run, others are stopped, and
//! untagged processes see no change.

use std::{fs, os::unix::fs::PermissionsExt as _, path::PathBuf};

use harness::{Harness, exec_denied, probe, spec};

/// A private copy of /bin/true (a distinct inode) in a fresh directory.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("leash-exec-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn copy_true(&self, name: &str) -> String {
        let p = self.dir.join(name);
        fs::copy("/bin/true", &p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

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
fn other_names_for_the_same_file() {
    let h = Harness::load();
    let s = Scratch::new("names");
    let granted = s.copy_true("granted");
    let sym = s.path("symlink");
    let hard = s.path("hardlink");
    std::os::unix::fs::symlink(&granted, &sym).unwrap();
    fs::hard_link(&granted, &hard).unwrap();
    let copy = s.copy_true("copy");
    let task = h.task(spec(&[&granted], &[]));

    assert_eq!(
        task.probe(&format!("exec {sym}")),
        "exit 0",
        "symlink: same inode"
    );
    assert_eq!(
        task.probe(&format!("exec {hard}")),
        "exit 0",
        "hardlink: same inode"
    );
    assert_eq!(
        task.probe(&format!("exec {copy}")),
        exec_denied(h.backend()),
        "a copy is a new file"
    );
}

#[test]
fn replacing_the_granted_path_does_not_carry_the_grant() {
    let h = Harness::load();
    let s = Scratch::new("replace");
    let path = s.copy_true("tool");
    let task = h.task(spec(&[&path], &[]));
    assert_eq!(task.probe(&format!("exec {path}")), "exit 0");
    // Same path, new file (rename over it, as an attacker with write access would).
    let new = s.copy_true("tool.new");
    fs::rename(&new, &path).unwrap();
    assert_eq!(
        task.probe(&format!("exec {path}")),
        exec_denied(h.backend())
    );
}

#[test]
fn exec_without_a_path_is_stopped() {
    let h = Harness::load();
    let s = Scratch::new("nopath");
    let granted = s.copy_true("granted");
    let other = s.copy_true("other");
    let task = h.task(spec(&[&granted], &[]));

    assert_eq!(
        task.probe(&format!("execveat {granted}")),
        "exit 0",
        "execveat of a granted file"
    );
    assert_eq!(
        task.probe(&format!("execveat {other}")),
        exec_denied(h.backend())
    );
    // A memfd is a new inode on an internal mount: never granted.
    assert_eq!(
        task.probe(&format!("memfd-exec {granted}")),
        exec_denied(h.backend())
    );

    let out = std::process::Command::new(probe())
        .args(["memfd-exec", &other])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "exit 0",
        "untagged memfd exec works"
    );
}

#[test]
fn shebang_script_needs_script_and_interpreter() {
    let h = Harness::load();
    let s = Scratch::new("shebang");
    let interp = s.copy_true("interp");
    let script = s.path("script.sh");
    fs::write(&script, format!("#!{interp}\n")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let denied = exec_denied(h.backend());

    let both = h.task(spec(&[&script, &interp], &[]));
    assert_eq!(both.probe(&format!("exec {script}")), "exit 0");

    let only_interp = h.task(spec(&[&interp], &[]));
    assert_eq!(
        only_interp.probe(&format!("exec {script}")),
        denied,
        "script not granted"
    );
    let events = only_interp.events(1);
    let ev = events
        .iter()
        .find(|e| e.kind == "exec" && e.verdict == "denied")
        .expect("denied exec event");
    if h.backend() == leash::Backend::Portable {
        assert_eq!(ev.reason, "script_not_granted");
    }

    let only_script = h.task(spec(&[&script], &[]));
    assert_eq!(
        only_script.probe(&format!("exec {script}")),
        denied,
        "interpreter not granted"
    );
}

#[test]
fn exec_from_a_non_leader_thread_is_checked_and_keeps_the_tag() {
    let h = Harness::load();
    let s = Scratch::new("thread");
    let granted = s.copy_true("granted");
    let other = s.copy_true("other");
    let task = h.task(spec(&[&granted], &[]));
    assert_eq!(
        task.probe(&format!("thread-exec {other}")),
        exec_denied(h.backend())
    );
    assert_eq!(task.probe(&format!("thread-exec {granted}")), "exit 0");
    // The thread took over the leader's pid; the new image must still be in the task:
    // the probe it became tries an ungranted exec, which must still be stopped.
    let p = probe().display().to_string();
    let denied = exec_denied(h.backend());
    assert_eq!(
        task.probe(&format!("thread-exec {p} exec {other}")),
        format!("{denied}\nexit 0")
    );
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
    let denied: Vec<_> = events.iter().filter(|e| e.verdict == "denied").collect();
    assert_eq!(denied.len(), 2);
    for e in &denied {
        let leash::events::Target::Exec { path, .. } = &e.target else {
            panic!("unexpected target {:?}", e.target);
        };
        assert_eq!(path, &other);
        assert_eq!(e.reason, "not_granted");
    }
    assert_eq!(events.iter().filter(|e| e.verdict == "allowed").count(), 8);
}
