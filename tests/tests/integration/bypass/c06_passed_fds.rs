//! Class 6, inherited or passed file descriptors: a descriptor that is already
//! connected needs no connect, so leash cannot see its use (docs/security.md). What it
//! closes: taking descriptors out of another process (`pidfd_getfd`), and `leash run`
//! tags itself before it opens anything (the `daemon` module runs it).

use harness::{Action, Reason};
use harness::{Harness, refused, spec};

use super::untagged;

#[test]
fn pidfd_getfd_is_stopped() {
    let h = Harness::load();
    let mut victim = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = victim.id();
    let task = h.task(spec(&[], &[]));
    let ev = task.assert_denied(
        Action::Tamper,
        Reason::GuardProcess,
        refused(h.backend()),
        || task.probe(&format!("pidfd-getfd {pid} 0")),
    );
    // The portable backend stops any pidfd_getfd (its target is not known at syscall
    // entry); the lsm backend refuses the access check on the target.
    let (call, target_pid) = match h.backend() {
        leash::Backend::Portable => ("getfd", 0),
        leash::Backend::Lsm => ("ptrace", pid),
    };
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Guard {
            call: call.into(),
            target_pid
        }
    );
    assert_eq!(untagged(&format!("pidfd-getfd {pid} 0")), "ok");
    let _ = victim.kill();
    let _ = victim.wait();
}
