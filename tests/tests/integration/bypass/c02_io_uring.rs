//! Class 2, `io_uring`: `IORING_OP_CONNECT` never passes through the connect syscall.

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, spec};

use super::untagged;

#[test]
fn io_uring_connect_does_not_bypass() {
    if std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").is_ok_and(|v| v.trim() == "2")
    {
        eprintln!("skipped io_uring: kernel.io_uring_disabled=2");
        return;
    }
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let granted = l.tcp4_port();
    let denied = other.tcp4_port();
    // io_uring itself needs its grant (c21); the connects it makes are still checked.
    let task = h.task(spec(
        &[],
        &[&format!("127.0.0.1:{granted}/tcp"), "socket:io_uring"],
    ));

    // IORING_OP_CONNECT runs in the kernel's connect path (or an io worker that carries
    // the tag): the cgroup hook decides, as for connect().
    task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
        task.probe(&format!("uring-connect 127.0.0.1 {denied}"))
    });
    assert_eq!(
        task.probe(&format!("uring-connect 127.0.0.1 {granted}")),
        "ok"
    );
    assert_eq!(untagged(&format!("uring-connect 127.0.0.1 {denied}")), "ok");
}
