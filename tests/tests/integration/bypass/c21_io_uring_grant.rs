//! Class 21, `io_uring` without a grant: its operations (`OPENAT`, `SOCKET`, `RENAMEAT`,
//! `UNLINKAT`, ...) run in the kernel past the system calls the portable backend
//! watches, so a task gets no ring unless granted `socket:io_uring`.

use std::os::unix::net::UnixListener;

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, Scratch, refused, spec};
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

/// Registered files and direct descriptors (the ring's own file table, used with
/// `IOSQE_FIXED_FILE`; a direct descriptor never has a number in the process): a socket
/// that lives only there is still checked where the kernel connects it, but what the
/// portable backend does not see for any ring it does not see here either
/// (docs/security.md): `IORING_OP_OPENAT` of host
/// state, and before Linux 6.7 unix connects.
#[test]
fn registered_files_and_direct_descriptors() {
    if io_uring_disabled() {
        return;
    }
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let (granted, denied) = (l.tcp4_port(), other.tcp4_port());
    let s = Scratch::new("c21-direct");
    let sock = s.path("other.sock");
    let _unix = UnixListener::bind(&sock).unwrap();
    let task = h.task(spec(
        &[],
        &[&format!("127.0.0.1:{granted}/tcp"), "socket:io_uring"],
    ));
    let lsm = h.backend() == Backend::Lsm;

    // inet: the cgroup hooks run in the kernel's connect path, whatever holds the socket.
    for how in ["uring-direct-connect", "uring-registered-connect"] {
        task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
            task.probe(&format!("{how} 127.0.0.1 {denied}"))
        });
        assert_eq!(task.probe(&format!("{how} 127.0.0.1 {granted}")), "ok");
        assert_eq!(untagged(&format!("{how} 127.0.0.1 {denied}")), "ok");
    }
    // unix: the lsm and cgroup unix hooks (Linux >= 6.7) decide on the kernel's copy of
    // the address; the older portable backend's syscall tracepoints never run.
    let unix = format!("uring-direct-unix-connect {sock}");
    if h.unix_refused() == EPERM {
        task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
            task.probe(&unix)
        });
    } else {
        assert_eq!(task.probe(&unix), "ok", "not seen before Linux 6.7");
    }
    assert_eq!(untagged(&unix), "ok");
    // Another family into a slot: lsm/socket_create refuses it; the portable backend
    // kills the submitter (the io_uring submit tracepoint; the socket dies with it).
    let netlink = format!(
        "uring-direct-socket {} {} 0",
        libc::AF_NETLINK,
        libc::SOCK_RAW
    );
    task.assert_denied(
        Action::Socket,
        Reason::FamilyNotGranted,
        refused(h.backend()),
        || task.probe(&netlink),
    );
    assert_eq!(untagged(&netlink), "ok");
    // Host state opened for write into a slot: lsm/file_open refuses it; portable does
    // not see it. Nothing is written.
    let core = CorePattern::save();
    let open = format!("uring-direct-openat {CORE_PATTERN}");
    if lsm {
        task.assert_denied(Action::Tamper, Reason::GuardHostState, EPERM, || {
            task.probe(&open)
        });
    } else {
        assert_eq!(task.probe(&open), "ok", "IORING_OP_OPENAT is not seen");
    }
    core.assert_unchanged();
    assert_eq!(untagged(&open), "ok");
}

/// A granted ring's `UNLINKAT` and `RENAMEAT` on bpffs: the lsm backend's inode hooks
/// refuse them; the portable backend reads the kernel's copy of each path as the
/// request is submitted and kills the submitter (the request itself still runs).
#[test]
fn a_granted_ring_on_the_bpf_file_system() {
    if io_uring_disabled() {
        return;
    }
    let h = Harness::load();
    let task = h.task(spec(&[], &["socket:io_uring"]));
    if h.backend() == Backend::Lsm {
        let dir = format!("/sys/fs/bpf/leash-c21-{}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        for attempt in [
            format!("uring-unlinkat {dir} rmdir"),
            format!("uring-renameat {dir} {dir}-moved"),
        ] {
            task.assert_denied(Action::Tamper, Reason::GuardPins, EPERM, || {
                task.probe(&attempt)
            });
        }
        assert!(std::path::Path::new(&dir).is_dir(), "refused: still there");
        assert_eq!(untagged(&format!("uring-unlinkat {dir} rmdir")), "ok");
    } else {
        // Paths that do not exist: the kill must come from the path.
        let absent = "/sys/fs/bpf/leash-bypass-absent";
        for (attempt, call) in [
            (format!("uring-unlinkat {absent}"), "u_unlink"),
            (
                format!("uring-renameat /tmp/leash-c21-absent {absent}"),
                "u_rename",
            ),
        ] {
            let ev = task.assert_denied(Action::Tamper, Reason::GuardPins, "signal 9", || {
                task.probe(&attempt)
            });
            assert_eq!(
                ev.target,
                Target::Guard {
                    call: call.into(),
                    target_pid: 0
                }
            );
            // Outside a task the kernel refuses it by itself (no such file, another
            // file system): an error, no kill.
            let outside = untagged(&attempt);
            assert!(outside.starts_with("errno "), "{outside}");
        }
        // Other paths are the task's business.
        assert_eq!(
            task.probe("uring-unlinkat /tmp/leash-c21-absent"),
            "errno 2"
        );
    }
}
