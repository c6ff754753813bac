//! Class 18, compat system calls: i386 calls by `int $0x80` (and x32 calls) from a
//! 64-bit process fire none of the per-syscall tracepoints the guards use. A tagged
//! process is stopped at its first one, whatever it is, on both backends; untagged
//! processes make them as before.

use std::{os::fd::BorrowedFd, path::PathBuf};

use harness::{Action, Reason};
use harness::{Harness, spec};
use leash::{kernel::events::Target, kernel::ia32};

use super::untagged;

const KILLED: &str = "signal 9";

/// Whether this kernel takes i386 system calls; prints why not, for a skipped test.
/// Cross-checks what `leash status` says against a real `int $0x80` by an untagged
/// child (the test may probe; the daemon never does).
fn ia32_available() -> bool {
    let said = ia32::detect();
    let got = untagged("compat-getpid");
    match (said.state, got.as_str()) {
        (ia32::State::Disabled, "signal 11") => {
            eprintln!("skipped: no ia32 emulation on this kernel ({said})");
            false
        }
        (ia32::State::Unknown, "signal 11") => {
            eprintln!("skipped: int 0x80 faults: no ia32 emulation ({said})");
            false
        }
        (ia32::State::Enabled | ia32::State::Unknown, "ok") => true,
        (state, got) => panic!("leash says ia32 emulation {state:?} ({said}), int 0x80 gave {got}"),
    }
}

/// The process map pinned where the test's task can name it; unpinned on drop.
struct ProcsPin(PathBuf);

impl ProcsPin {
    fn new(h: &Harness) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/leash-c18-procs-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        let fd = h.enforcer.lock().unwrap().maps().procs_fd();
        // SAFETY: the harness keeps the map (and its fd) open while the test runs.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        leash::kernel::pin(fd, &path).expect("pin the process map");
        Self(path)
    }
}

impl Drop for ProcsPin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_compat_bpf_call_cannot_untag() {
    if !ia32_available() {
        return;
    }
    let h = Harness::load();
    let pin = ProcsPin::new(&h);
    let pin = pin.0.display().to_string();
    let task = h.task(spec(&[], &[]));
    // A long-lived tagged probe whose child gets the map by the compat bpf() and
    // deletes the probe's own entry: the child dies at its first compat call, so the
    // delete never comes (on lsm the lsm bpf hook also refuses it).
    let mut s = task.session();
    let ev = task.assert_denied(Action::Tamper, Reason::CompatSyscall, KILLED, || {
        s.run(&format!("compat-untag {pin}"))
    });
    assert_eq!(
        ev.target,
        Target::Compat {
            call: "compat".into(),
            syscall: 357
        }
    );
    assert!(
        task.procs().contains(&s.pid()),
        "the probe is still tagged: {:?}",
        task.procs()
    );
    // Still in the task: a native exec it was not granted is denied.
    assert_eq!(
        s.run("exec /bin/true"),
        harness::exec_denied(h.backend()),
        "still enforced"
    );
    // Untagged: the compat bpf() works (the map is got; the probe's parent, the test
    // process, is simply not in it).
    assert_eq!(untagged(&format!("compat-untag {pin}")), "errno 2");
}

/// An untagged process for the task to aim at; killed on drop.
struct Victim(std::process::Child);

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_compat_signal_to_leash_is_stopped() {
    if !ia32_available() {
        return;
    }
    let h = Harness::load();
    let daemon = Victim(
        std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap(),
    );
    let d = daemon.0.id();
    h.enforcer.lock().unwrap().maps_mut().protect(d).unwrap();
    let task = h.task(spec(&[], &[]));
    // Signal 0 only checks: the test cannot hurt the target even where it lands.
    let ev = task.assert_denied(Action::Tamper, Reason::CompatSyscall, KILLED, || {
        task.probe(&format!("compat-kill {d} 0"))
    });
    assert_eq!(
        ev.target,
        Target::Compat {
            call: "compat".into(),
            syscall: 37
        }
    );
    assert_eq!(untagged(&format!("compat-kill {d} 0")), "ok");
    h.enforcer.lock().unwrap().maps_mut().unprotect(d).unwrap();
}

#[test]
fn a_compat_netlink_socket_is_stopped() {
    if !ia32_available() {
        return;
    }
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    // socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE): by its own number and by socketcall.
    for (attempt, nr) in [
        ("compat-socket 16 3 0", 359),
        ("compat-socketcall 16 3 0", 102),
    ] {
        let ev = task.assert_denied(Action::Tamper, Reason::CompatSyscall, KILLED, || {
            task.probe(attempt)
        });
        assert_eq!(
            ev.target,
            Target::Compat {
                call: "compat".into(),
                syscall: nr
            }
        );
        assert_eq!(untagged(attempt), "ok", "untagged {attempt}");
    }
}

#[test]
fn any_compat_or_x32_call_stops_a_tagged_process_only() {
    if !ia32_available() {
        return;
    }
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    let ev = task.assert_denied(Action::Tamper, Reason::CompatSyscall, KILLED, || {
        task.probe("compat-getpid")
    });
    assert_eq!(
        ev.target,
        Target::Compat {
            call: "compat".into(),
            syscall: 20
        }
    );
    // x32 (bit 30 of a native number): stopped whether or not the kernel has the ABI.
    let ev = task.assert_denied(Action::Tamper, Reason::CompatSyscall, KILLED, || {
        task.probe("x32-getpid")
    });
    assert_eq!(
        ev.target,
        Target::Compat {
            call: "x32".into(),
            syscall: 0x4000_0000 | 0x27
        }
    );
    // Untagged: the same calls work (x32 may be absent: ENOSYS), and native calls in
    // the task are untouched.
    assert_eq!(untagged("compat-getpid"), "ok");
    assert!(
        ["ok", "errno 38"].contains(&untagged("x32-getpid").as_str()),
        "untagged x32 call"
    );
    assert!(
        task.probe("pid").parse::<u32>().is_ok(),
        "native calls work"
    );
}

/// `leash run` puts a seccomp filter on the command: a compat call is refused before it
/// runs, where the kernel guard alone (the tests above) lets that first call complete.
/// The filter's kill is reported from the exit hook.
#[test]
fn under_leash_run_a_compat_call_never_runs() {
    use std::os::unix::process::ExitStatusExt as _;

    use harness::daemon::{DaemonGuard, stderr};

    if !ia32_available() {
        return;
    }
    let d = DaemonGuard::start("compat-run", "");
    let sleeper = || {
        Victim(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        )
    };
    let mut victim = sleeper();
    let v = victim.0.id().to_string();
    let p = harness::probe().display().to_string();
    let o = d.run(&["run", "--allow-exec", &p, "--", &p, "compat-kill", &v, "15"]);
    // The probe makes the call in a child and reports how it ended.
    assert_eq!(
        harness::daemon::stdout(&o),
        "signal 31",
        "SIGSYS from the filter: {}",
        stderr(&o)
    );
    // The SIGTERM was never sent: the victim still runs.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        victim.0.try_wait().unwrap().is_none(),
        "the compat kill() ran"
    );
    let compat = || {
        d.audit()
            .into_iter()
            .find(|e| e["kind"] == "tamper" && e["reason"] == "compat_syscall")
    };
    harness::wait_for("a compat_syscall event in the audit log", || {
        compat().is_some()
    });
    // Untagged, the same call is delivered: the probe does what it says.
    let mut other = sleeper();
    let o = other.0.id().to_string();
    assert_eq!(untagged(&format!("compat-kill {o} 15")), "ok");
    let status = other.0.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "untagged compat kill delivered");
}
