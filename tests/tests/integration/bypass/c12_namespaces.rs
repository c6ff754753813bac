//! Class 12, namespaces: tagging is per process, so new namespaces change nothing.

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, Scratch, exec_denied, spec};

#[test]
fn new_namespaces_keep_the_tag() {
    let h = Harness::load();
    let s = Scratch::new("ns");
    let other = s.copy_true("other");
    let l = Listeners::new();
    let task = h.task(spec(&[], &[]));
    let newnet = libc::CLONE_NEWNET;
    let newns = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    // A new network namespace: the cgroup hooks still decide (before any routing).
    task.assert_denied(Action::Send, Reason::NotGranted, EPERM, || {
        task.probe(&format!(
            "unshare {newnet} sendto 127.0.0.1 {}",
            l.udp4_port()
        ))
    });
    task.assert_denied(Action::Socket, Reason::FamilyNotGranted, EPERM, || {
        task.probe(&format!("unshare {newnet} socket 2 {} 1", libc::SOCK_RAW))
    });
    // A new mount namespace: exec is still checked.
    task.assert_denied(
        Action::Exec,
        Reason::NotGranted,
        exec_denied(h.backend()),
        || task.probe(&format!("unshare {newns} exec {other}")),
    );
}
