//! Class 21, `io_uring` without a grant: its operations (`OPENAT`, `SOCKET`, `RENAMEAT`,
//! `UNLINKAT`, ...) run in the kernel past the system calls the portable backend
//! watches, so a task gets no ring unless granted `socket:io_uring`.

use harness::{Action, Reason};
use harness::{EPERM, Harness, refused, spec};
use leash::{kernel::Backend, kernel::events::Target};

use super::{
    c20_host_state::{CORE_PATTERN, CorePattern},
    untagged,
};

fn io_uring_disabled() -> bool {
    let off = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|v| v.trim() == "2");
    if off {
        eprintln!("skipped io_uring: kernel.io_uring_disabled=2");
    }
    off
}

#[test]
fn io_uring_needs_a_grant() {
    if io_uring_disabled() {
        return;
    }
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    // lsm refuses the ring before it exists (EPERM); portable kills the caller at
    // io_uring_setup, and the ring dies with it.
    let ev = task.assert_denied(
        Action::Tamper,
        Reason::IoUringNotGranted,
        refused(h.backend()),
        || task.probe("uring-setup"),
    );
    assert_eq!(
        ev.target,
        Target::Guard {
            call: "io_uring".into(),
            target_pid: 0
        }
    );
    let granted = h.task(spec(&[], &["socket:io_uring"]));
    assert_eq!(granted.probe("uring-setup"), "ok");
    assert_eq!(untagged("uring-setup"), "ok");
}

/// What a granted ring re-opens: `IORING_OP_OPENAT` makes no open system call, so the
/// portable backend's open-exit tracepoints do not see it (docs/security.md); the lsm
/// backend's `file_open` does.
#[test]
fn a_granted_ring_opening_host_state() {
    if io_uring_disabled() {
        return;
    }
    let core = CorePattern::save();
    let h = Harness::load();
    let task = h.task(spec(&[], &["socket:io_uring"]));
    let attempt = format!("uring-openat {CORE_PATTERN}");
    if h.backend() == Backend::Lsm {
        task.assert_denied(Action::Tamper, Reason::GuardHostState, EPERM, || {
            task.probe(&attempt)
        });
    } else {
        // Opened for write, nothing written: the gap the grant re-opens.
        assert_eq!(task.probe(&attempt), "ok");
    }
    core.assert_unchanged();
    assert_eq!(untagged(&attempt), "ok");
}
