//! Class 6, inherited or passed file descriptors: a descriptor that is already
//! connected needs no connect, so leash cannot see its use (docs/security.md). What it
//! closes: taking descriptors out of another process (`pidfd_getfd`), and `leash run`
//! tags itself before it opens anything (tests/tests/daemon.rs runs it).

use harness::{Harness, spec};

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
    let ev = task.assert_denied("tamper", "leash_process", "signal 9", || {
        task.probe(&format!("pidfd-getfd {pid} 0"))
    });
    assert_eq!(
        ev.target,
        leash::events::Target::Guard {
            call: "getfd".into(),
            target_pid: 0
        }
    );
    assert_eq!(untagged(&format!("pidfd-getfd {pid} 0")), "ok");
    let _ = victim.kill();
    let _ = victim.wait();
}
