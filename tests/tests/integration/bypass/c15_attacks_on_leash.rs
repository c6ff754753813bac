//! Class 15, attacks on leash itself: from inside a task (root, every capability) no
//! `bpf()`, no ptrace or memory writes outside the task, no signals to leash's
//! processes, nothing on the BPF file system, no cgroup moves, no mutating API call.

use harness::{Action, Reason};
use harness::{
    EPERM, Harness, Scratch,
    daemon::{DaemonGuard, TaskSession, stderr, stdout},
    mount_ns::Mount,
    probe, refused, spec,
};
use leash::kernel::Backend;

use super::untagged;

const KILLED: &str = "signal 9";

/// An untagged process for the task to aim at; killed on drop.
struct Victim(std::process::Child);

impl Victim {
    fn new() -> Self {
        Self(
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn bpf_is_stopped_at_the_first_call() {
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    let get = "bpf-obj-get /sys/fs/bpf/leash-bypass-absent";
    // lsm refuses the call (EPERM); portable kills the caller at it.
    let denied = refused(h.backend());
    let ev = task.assert_denied(Action::Tamper, Reason::GuardBpf, denied, || task.probe(get));
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Guard {
            call: "bpf".into(),
            target_pid: 0
        }
    );
    assert_eq!(untagged(get), "errno 2", "untagged bpf() is untouched");
}

#[test]
fn ptrace_and_memory_writes_outside_the_task_are_stopped() {
    let h = Harness::load();
    let victim = Victim::new();
    let task = h.task(spec(&[], &[]));
    let pid = victim.pid();
    let denied = refused(h.backend());
    let ev = task.assert_denied(Action::Tamper, Reason::GuardProcess, denied, || {
        task.probe(&format!("ptrace-attach {pid}"))
    });
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Guard {
            call: "ptrace".into(),
            target_pid: pid
        }
    );
    task.assert_denied(Action::Tamper, Reason::GuardProcess, denied, || {
        task.probe(&format!("vm-write {pid}"))
    });
    assert_eq!(
        untagged(&format!("vm-write {pid}")),
        "errno 14",
        "untagged: EFAULT"
    );
}

#[test]
fn leash_processes_cannot_be_signalled() {
    let h = Harness::load();
    let daemon = Victim::new();
    let bystander = Victim::new();
    h.enforcer
        .lock()
        .unwrap()
        .maps_mut()
        .protect(daemon.pid())
        .unwrap();
    let task = h.task(spec(&[], &[]));
    // lsm refuses the signal itself (task_kill); portable kills the sender, and a real
    // signal would still be delivered (docs/security.md), so the portable run sends
    // signal 0, which only checks, and proves the stop without harming the target.
    let lsm = h.backend() == Backend::Lsm;
    let (denied, call) = if lsm {
        (EPERM, "signal")
    } else {
        (KILLED, "kill")
    };
    let d = daemon.pid();
    let ev = task.assert_denied(Action::Tamper, Reason::GuardProcess, denied, || {
        task.probe(&format!("kill {d} 0"))
    });
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Guard {
            call: call.into(),
            target_pid: d
        }
    );
    // kill(-1) succeeds when some target took the signal: on lsm every one but leash's.
    task.assert_denied(
        Action::Tamper,
        Reason::GuardProcess,
        if lsm { "ok" } else { KILLED },
        || task.probe("kill -1 0"),
    );
    task.assert_denied(Action::Tamper, Reason::GuardProcess, KILLED, || {
        task.probe(&format!("pidfd-open {d}"))
    });
    for attempt in [
        format!("tkill {d} 0"),
        // Queued signals take their own syscalls, past kill()'s.
        format!("sigqueue {d} 0"),
        format!("tgsigqueue {d} {d} 0"),
    ] {
        task.assert_denied(Action::Tamper, Reason::GuardProcess, denied, || {
            task.probe(&attempt)
        });
    }
    if lsm {
        // A real signal, refused before delivery: the target lives on.
        task.assert_denied(Action::Tamper, Reason::GuardProcess, EPERM, || {
            task.probe(&format!("sigqueue {d} 15"))
        });
        assert_eq!(untagged(&format!("kill {d} 0")), "ok", "still alive");
    }
    // Other processes are the task's business, as in any shell.
    assert_eq!(task.probe(&format!("kill {} 0", bystander.pid())), "ok");
    assert_eq!(task.probe(&format!("sigqueue {} 0", bystander.pid())), "ok");
    assert_eq!(untagged(&format!("kill {d} 0")), "ok");
    h.enforcer.lock().unwrap().maps_mut().unprotect(d).unwrap();
}

#[test]
fn the_bpf_file_system_is_out_of_reach() {
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    if h.backend() == Backend::Lsm {
        // The LSM hooks look at the directory's file system, whatever the path names
        // it: they need a real directory on bpffs, and refuse before anything changes.
        let name = format!("leash-bypass-{}", std::process::id());
        let dir = format!("/sys/fs/bpf/{name}");
        std::fs::create_dir_all(&dir).unwrap();
        for attempt in [
            format!("rmdir {dir}"),
            format!("rename {dir} {dir}-moved"),
            format!("rename /sys/fs/../fs/bpf/../bpf/{name} /sys/fs/bpf/x"),
        ] {
            task.assert_denied(Action::Tamper, Reason::GuardPins, EPERM, || {
                task.probe(&attempt)
            });
        }
        assert!(std::path::Path::new(&dir).is_dir(), "refused: still there");
        assert_eq!(untagged(&format!("rmdir {dir}")), "ok");
    } else {
        // Paths that do not exist: the kill must come from the path, not the outcome.
        let absent = "/sys/fs/bpf/leash-bypass-absent";
        for attempt in [
            format!("unlink {absent}"),
            format!("rmdir {absent}"),
            format!("rename {absent} /tmp/leash-bypass-absent"),
        ] {
            task.assert_denied(Action::Tamper, Reason::GuardPins, KILLED, || {
                task.probe(&attempt)
            });
        }
    }
    if h.backend() == Backend::Lsm {
        // lsm/sb_umount refuses any unmount, and names a bpffs instance by its file
        // system: one the test mounts in a namespace of its own.
        let s = Scratch::new("c15-bpffs");
        let dir = s.path("bpf");
        std::fs::create_dir(&dir).unwrap();
        let bpffs = [Mount {
            fstype: "bpf",
            target: &dir,
        }];
        task.assert_denied(Action::Tamper, Reason::GuardPins, EPERM, || {
            task.probe_in_mount_ns(&bpffs, &format!("umount {dir}"))
        });
    } else {
        // The umount tracepoint names bpffs by the path (an umount above it takes it
        // along); any other unmount is stopped too, as leash_mount (c19).
        task.assert_denied(Action::Tamper, Reason::GuardPins, KILLED, || {
            task.probe("umount /sys/fs/bpf/leash-bypass-absent/sub")
        });
    }
    assert_eq!(task.probe("unlink /tmp/leash-bypass-absent"), "errno 2");
    assert_eq!(
        untagged("unlink /sys/fs/bpf/leash-bypass-absent"),
        "errno 2"
    );
}

/// A child cgroup of the hierarchy leash attaches to; removed on drop.
struct Cgroup(std::path::PathBuf);

impl Cgroup {
    fn new() -> Self {
        let root = leash::kernel::mounts::cgroup2_root().unwrap();
        let dir = root.join(format!("leash-bypass-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        Self(dir)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes are gone by now (killed, or exited).
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

#[test]
fn moving_between_cgroups_is_stopped() {
    let h = Harness::load();
    let cg = Cgroup::new();
    let dir = cg.0.display().to_string();
    let task = h.task(spec(&[], &[]));
    task.assert_denied(Action::Tamper, Reason::GuardCgroup, KILLED, || {
        task.probe(&format!("cgroup-move {dir}"))
    });
    task.assert_denied(Action::Tamper, Reason::GuardCgroup, KILLED, || {
        task.probe(&format!("clone3-into-cgroup {dir}"))
    });
    assert_eq!(untagged(&format!("cgroup-move {dir}")), "ok");
}

#[test]
fn a_process_inside_a_task_cannot_change_tasks_or_grants() {
    let d = DaemonGuard::start("forbidden", "");
    // Not by itself, nor when its leader thread has exited and another thread calls.
    let p = probe().display().to_string();
    let socket = d.socket.display().to_string();
    let o = d.run(&[
        "run",
        "--allow-exec",
        &p,
        "--",
        &p,
        "leader-exit",
        "api-create",
        &socket,
    ]);
    assert_eq!(stdout(&o), "status 403", "{}", stderr(&o));
    let o = std::process::Command::new(probe())
        .args(["api-create", &socket])
        .output()
        .unwrap();
    assert_eq!(
        stdout(&o),
        "status 201",
        "an untagged caller may create tasks"
    );

    // A process inside a task may not call mutating routes: here, the leash CLI itself.
    let leash = harness::daemon::leash_bin().display().to_string();
    let o = d.run(&[
        "run",
        "--allow-exec",
        &leash,
        "--",
        &leash,
        "task",
        "create",
        "--agent",
        "escape",
        "--allow-exec",
        "/bin/sh",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("inside a leash task"), "{}", stderr(&o));
    // Nor signal the daemon: a run inside a task sends it signal 0 and is stopped
    // (refused on lsm, killed on portable).
    let pid = d.pid().unwrap().to_string();
    let o = d.run(&["run", "--allow-exec", &p, "--", &p, "kill", &pid, "0"]);
    let denied = refused(Harness::backend_of_daemon(&d));
    assert_eq!(stdout(&o), denied, "{}", stderr(&o));
    // The audit record follows the kill through the event reader: wait for it.
    let tamper = || d.audit().into_iter().find(|e| e["kind"] == "tamper");
    harness::wait_for("a tamper event in the audit log", || tamper().is_some());
    let tamper = tamper().expect("a tamper event in the audit log");
    assert_eq!(tamper["verdict"], "denied", "{tamper}");
    assert_eq!(tamper["reason"], "leash_process", "{tamper}");
}

#[test]
fn a_removed_pin_detaches_nothing_and_is_pinned_again() {
    use aya::{
        maps::MapData,
        programs::links::{FdLink, PinnedLink},
    };
    let d = DaemonGuard::start("pins", "");
    let l = harness::Listeners::new();
    let p = probe().display().to_string();
    // In attach scope `task` the connect hook's link is pinned per leash cgroup, which
    // lives while a task process is in it: a keeper holds it through the test.
    let mut keeper = TaskSession::from_child(
        d.cli()
            .args(["run", "--files", "open", "--allow-exec", &p, "--", &p])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let connect = format!("connect tcp 127.0.0.1 {}", l.tcp4_port());
    assert_eq!(keeper.run(&connect), EPERM);
    let pin = connect_hook_pin(&d);
    let maps = d.pin_dir.join("maps");
    let procs = maps.join(leash_common::maps::PROCS);
    let ids = || {
        let link = FdLink::from(PinnedLink::from_pin(&pin).unwrap());
        let map = MapData::from_pin(&procs).unwrap();
        (link.info().unwrap().id(), map.info().unwrap().id())
    };
    // The probe in a task of its own, in the `open` file mode: what the eBPF guard and
    // the daemon do without a Landlock domain (processes joined through the attach API
    // have none). `files::pins_are_out_of_reach_by_any_path` covers the other modes.
    let in_task = |args: &[&str]| {
        let mut argv = vec![
            "run",
            "--files",
            "open",
            "--allow-exec",
            p.as_str(),
            "--",
            p.as_str(),
        ];
        argv.extend_from_slice(args);
        d.run(&argv)
    };
    let before = ids();
    let lsm = Harness::backend_of_daemon(&d) == Backend::Lsm;
    // On portable, the unlink lands before the guard's kill (a syscall-enter
    // tracepoint cannot refuse) ...
    let o = in_task(&["unlink", &pin.display().to_string()]);
    assert_eq!(
        stdout(&o),
        if lsm { EPERM } else { KILLED },
        "{}",
        stderr(&o)
    );
    // ... and a name relative to a directory descriptor passes the guard, which
    // compares path strings (docs/security.md): the process map's pin goes. The lsm
    // backend refuses both by the file system, whatever the path.
    let dir = maps.display().to_string();
    let o = in_task(&["unlinkat", &dir, "PROCS"]);
    assert_eq!(stdout(&o), if lsm { EPERM } else { "ok" }, "{}", stderr(&o));
    // The daemon still holds the link and the map, so the connect hook still denies ...
    let port = l.tcp4_port().to_string();
    let o = in_task(&["connect", "tcp", "127.0.0.1", &port]);
    assert_eq!(stdout(&o), EPERM, "{}", stderr(&o));
    // ... and pins both again (every 2 s), the same objects, for the next daemon.
    harness::wait_for("the pins again", || pin.exists() && procs.exists());
    assert_eq!(ids(), before, "(link id, map id)");
}

/// The pin of the connect hook's link: at the cgroup2 root in attach scope `root`, of
/// the one leash cgroup in scope `task`.
fn connect_hook_pin(d: &DaemonGuard) -> std::path::PathBuf {
    let root = d.pin_dir.join("links").join("net_connect4");
    if root.exists() {
        return root;
    }
    let scopes: Vec<_> = std::fs::read_dir(d.pin_dir.join("links-scope"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("net_connect4"))
        .collect();
    assert_eq!(scopes.len(), 1, "one leash cgroup: {scopes:?}");
    scopes[0].clone()
}

/// A directory on bpffs, made by the test and removed on drop whatever happened.
struct BpfDir(String);

impl Drop for BpfDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The portable guards read a path from the caller's memory without faulting a page
/// in. A path in a page not faulted in yet (a fresh file mapping) or in a userfaultfd
/// range is unreadable to them, though the kernel's own copy reads it a moment later:
/// such a call is stopped as `argument_unreadable`, never let through unchecked. The
/// lsm backend decides on the directory's file system instead, whatever the memory.
#[test]
fn a_path_the_guards_cannot_read_stops_the_caller() {
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    for mode in ["file", "uffd"] {
        if h.backend() == Backend::Lsm {
            let dir = BpfDir(format!(
                "/sys/fs/bpf/leash-unpaged-{}-{mode}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir.0).unwrap();
            let attempt = format!("unpaged {mode} rmdir {}", dir.0);
            task.assert_denied(Action::Tamper, Reason::GuardPins, EPERM, || {
                task.probe(&attempt)
            });
            assert!(
                std::path::Path::new(&dir.0).is_dir(),
                "refused: still there"
            );
            assert_eq!(untagged(&attempt), "ok", "untagged {mode}");
        } else {
            // A path that does not exist: the kill must come from the unread path.
            let attempt = format!("unpaged {mode} rmdir /sys/fs/bpf/leash-bypass-absent");
            task.assert_denied(Action::Tamper, Reason::ArgumentUnreadable, KILLED, || {
                task.probe(&attempt)
            });
            assert_eq!(untagged(&attempt), "errno 2", "untagged {mode}");
        }
    }
    // The clone3 guard reads `clone_args.flags` (CLONE_INTO_CGROUP) on both backends.
    for mode in ["file", "uffd"] {
        task.assert_denied(Action::Tamper, Reason::ArgumentUnreadable, KILLED, || {
            task.probe(&format!("unpaged {mode} clone3"))
        });
        assert_eq!(untagged(&format!("unpaged {mode} clone3")), "ok");
    }
}

/// The Landlock domain every `leash run` task holds (whatever its file mode) refuses
/// what the portable backend can only kill after it landed. Skips, saying why, where
/// the kernel lacks the Landlock feature a check needs.
mod landlock_domain {
    use std::sync::atomic::{AtomicU8, Ordering};

    use harness::{
        daemon::{DaemonGuard, stderr, stdout},
        probe,
    };

    use super::{KILLED, Victim};

    fn in_task(d: &DaemonGuard, flags: &[&str], words: &[&str]) -> std::process::Output {
        let p = probe().display().to_string();
        d.cli()
            .arg("run")
            .args(flags)
            .args(["--allow-exec", &p, "--", &p])
            .args(words)
            .output()
            .expect("run leash")
    }

    fn abi() -> i32 {
        leash::files::kernel_abi().unwrap_or(0)
    }

    #[test]
    fn a_signal_to_an_untagged_process_is_refused_and_not_delivered() {
        if abi() < 6 {
            eprintln!(
                "skipped: Landlock ABI {} has no signal scope (ABI 6, Linux 6.12)",
                abi()
            );
            return;
        }
        let d = DaemonGuard::start("ll-signal", "");
        let mut victim = Victim::new();
        let pid = victim.pid().to_string();
        for mode in ["open", "writes", "restricted"] {
            let o = in_task(&d, &["--files", mode], &["kill", &pid, "15"]);
            assert_eq!(stdout(&o), "errno 1", "{mode}: {}", stderr(&o));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            victim.0.try_wait().unwrap().is_none(),
            "the untagged process got the signal"
        );
        // Signals inside the task still work (the probe signals its own child).
        let o = in_task(
            &d,
            &["--allow-exec", "/bin/sh"],
            &["exec", "/bin/sh", "-c", "kill -TERM $$"],
        );
        assert_eq!(stdout(&o), "signal 15", "{}", stderr(&o));
    }

    /// A byte of this test process, an untagged process outside every task.
    static BYTE: AtomicU8 = AtomicU8::new(0);

    #[test]
    fn memory_writes_into_an_untagged_process_are_refused() {
        let d = DaemonGuard::start("ll-memory", "");
        let lsm = harness::Harness::backend_of_daemon(&d) == leash::kernel::Backend::Lsm;
        let pid = std::process::id().to_string();
        let addr = (BYTE.as_ptr() as usize).to_string();
        // process_vm_writev: refused by Landlock before anything is written. The
        // portable backend still kills the caller at the call; lsm refuses it.
        let o = in_task(&d, &[], &["vm-write", &pid, &addr]);
        assert_eq!(
            stdout(&o),
            if lsm { "errno 1" } else { KILLED },
            "{}",
            stderr(&o)
        );
        assert_eq!(BYTE.load(Ordering::SeqCst), 0, "the write landed");
        // /proc/<pid>/mem, which the portable backend does not watch: EACCES.
        let victim = Victim::new();
        let mem = format!("/proc/{}/mem", victim.pid());
        let o = in_task(&d, &["--files", "open"], &["open-write", &mem, ""]);
        assert_eq!(stdout(&o), "errno 13", "{}", stderr(&o));
        // Without a domain both land: an untagged process writes the byte.
        assert_eq!(super::untagged(&format!("vm-write {pid} {addr}")), "ok");
        assert_eq!(BYTE.swap(0, Ordering::SeqCst), 0x5a);
        assert_eq!(super::untagged(&format!("open-write {mem} ")), "ok");
    }

    #[test]
    fn pins_are_out_of_reach_by_any_path() {
        let d = DaemonGuard::start("ll-pins", "");
        let maps = d.pin_dir.join("maps");
        let procs = maps.join(leash_common::maps::PROCS);
        let link = d.workspace().join("bpf");
        std::os::unix::fs::symlink(&maps, &link).unwrap();
        let dir = maps.display().to_string();
        let through_link = link.join(leash_common::maps::PROCS).display().to_string();
        for mode in ["writes", "restricted"] {
            // A name relative to a directory descriptor, and a path through a symlink:
            // the portable backend's path guard sees neither; Landlock refuses both.
            let o = in_task(
                &d,
                &["--files", mode],
                &["unlinkat", &dir, leash_common::maps::PROCS],
            );
            assert_eq!(stdout(&o), "errno 13", "{mode}: {}", stderr(&o));
            let o = in_task(&d, &["--files", mode], &["unlink", &through_link]);
            assert_eq!(stdout(&o), "errno 13", "{mode}: {}", stderr(&o));
            assert!(procs.exists(), "{mode}: the pin is gone");
        }
    }
}
