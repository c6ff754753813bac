//! Class 11, escaping the tree: children, grandchildren, threads, double fork with
//! setsid (reparenting to init), and exec from a non-leader thread keep the tag.

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, Scratch, exec_denied, probe, spec, wait_for};

#[test]
fn children_grandchildren_threads_and_double_forks_carry_the_tag() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let task = h.task(spec(&[], &[&format!("127.0.0.1:{}", l.tcp4_port())]));
    let p = probe().display().to_string();
    let denied = other.tcp4_port();

    // The probe forks and execs a probe, which forks and execs another: a grandchild.
    assert_eq!(
        task.probe(&format!("exec {p} exec {p} connect tcp 127.0.0.1 {denied}")),
        "errno 1\nexit 0\nexit 0"
    );
    assert_eq!(
        task.probe(&format!("thread connect tcp 127.0.0.1 {denied}")),
        EPERM
    );
    // setsid + reparenting to init.
    task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
        task.probe(&format!("double-fork connect tcp 127.0.0.1 {denied}"))
    });
    assert_eq!(
        task.probe(&format!(
            "double-fork thread connect tcp 127.0.0.1 {}",
            l.tcp4_port()
        )),
        "ok"
    );

    wait_for("every process entry to leave once all exited", || {
        task.procs().is_empty()
    });
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
fn a_vfork_spawn_is_checked_like_a_fork() {
    let h = Harness::load();
    let s = Scratch::new("spawn");
    let granted = s.copy_true("granted");
    let other = s.copy_true("other");
    let task = h.task(spec(&[&granted], &[]));
    assert_eq!(task.probe(&format!("spawn {granted}")), "exit 0");
    // posix_spawn reports a refused exec as its own error on lsm.
    let denied = match h.backend() {
        leash::Backend::Portable => "signal 9",
        leash::Backend::Lsm => "errno 1",
    };
    task.assert_denied(Action::Exec, Reason::NotGranted, denied, || {
        task.probe(&format!("spawn {other}"))
    });
}
