//! Class 3, TCP Fast Open: `sendto(..., MSG_FASTOPEN, addr)` connects without the
//! connect syscall.

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, spec};

use super::untagged;

#[test]
fn fast_open_does_not_bypass() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let granted = l.tcp4_port();
    let denied = other.tcp4_port();
    let task = h.task(spec(&[], &[&format!("127.0.0.1:{granted}/tcp")]));

    // sendto(MSG_FASTOPEN) connects inside sendmsg: the cgroup connect hook sees it.
    task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
        task.probe(&format!("fastopen 127.0.0.1 {denied}"))
    });
    assert_eq!(task.probe(&format!("fastopen 127.0.0.1 {granted}")), "ok");
    assert_eq!(untagged(&format!("fastopen 127.0.0.1 {denied}")), "ok");
}
