//! Attach scope `task`: a tagged process moved out of its task's leash cgroups by an
//! untagged mover is killed (at the move, or by the daemon), a move between the task's
//! own leash cgroups is not an escape, and `auto` picks the scope by what the kernel
//! can do.

use std::{os::unix::process::ExitStatusExt as _, path::Path};

use harness::{
    EPERM, Listeners,
    daemon::{DaemonGuard, TaskSession, stdout},
    probe, wait_for,
};

use super::{
    TASK_SCOPE, audited, cgroup_dir, cgroup_of, counter, create_task, kernel_has_send_signal_task,
    status,
};

/// Rounds of the move-then-connect race.
const MOVE_ROUNDS: u64 = 60;

#[test]
fn a_tagged_process_moved_out_by_an_untagged_one_is_killed_before_it_connects() {
    let d = DaemonGuard::start("scope-moved", TASK_SCOPE);
    if status(&d)["kill_at_move"] != "kernel" {
        eprintln!(
            "skipped: no kill at the move here ({}); the daemon's fallback has its own test",
            status(&d)["kill_at_move"]
        );
        return;
    }
    let l = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    // The loop's target: not granted, so any connection that reaches it got past leash.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let port = other.local_addr().unwrap().port();
    let escapes = counter(&d, "leash_cgroup_escapes_total");
    // A process busy in user space (no system call the guards see) dies at the move.
    for round in 0..3 {
        let mut s = TaskSession::join(&d, &id);
        let pid = s.run("pid");
        let out = cgroup_dir(
            &d,
            Path::new(&cgroup_of(&pid))
                .parent()
                .unwrap()
                .to_str()
                .unwrap(),
        );
        let mover = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::write(out.join("cgroup.procs"), pid)
        });
        assert_eq!(s.run("spin 1000"), "", "spin {round}: alive after the move");
        mover.join().unwrap().unwrap();
    }
    for round in 0..MOVE_ROUNDS {
        let mut s = TaskSession::join(&d, &id);
        let pid = s.run("pid");
        let leash = cgroup_of(&pid);
        assert!(leash.ends_with("/leash"), "{leash}");
        let out = cgroup_dir(&d, Path::new(&leash).parent().unwrap().to_str().unwrap());
        // The untagged mover (this test, root) moves it out while it connects in a loop,
        // a little later each round.
        let mover = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_micros(200 + round * 397));
            std::fs::write(out.join("cgroup.procs"), pid)
        });
        let report = s.run(&format!("connect-loop 127.0.0.1 {port} 300"));
        mover.join().unwrap().unwrap();
        assert_eq!(report, "", "round {round}: the process outlived its move");
        let exit = s.child.wait().unwrap();
        assert_eq!(
            exit.signal(),
            Some(libc::SIGKILL),
            "round {round}: {exit:?}"
        );
        let reached = other.accept();
        assert!(
            reached
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "round {round}: a connection got through: {reached:?}"
        );
    }
    assert_eq!(
        counter(&d, "leash_cgroup_escapes_total"),
        escapes + MOVE_ROUNDS + 3
    );
    // Reported with the mover's pid (this test) and that the kernel killed it; a socket
    // the moved process made in between is reported too, as its own.
    let me = std::process::id();
    let by_me = || -> Vec<serde_json::Value> {
        audited(&d, "scope_escape")
            .into_iter()
            .filter(|e| e["pid"] == me)
            .collect()
    };
    // (The loop's refused connects, thousands a round, overflow the event ring at times:
    // some events are lost and counted as such; the escape counter above has them all.)
    wait_for("the escape events", || !by_me().is_empty());
    let events = by_me();
    assert!(
        events.iter().all(|e| e["target"]["killed_at_move"] == true
            && e["kind"] == "tamper"
            && e["verdict"] == "denied"),
        "{events:?}"
    );
}

#[test]
fn without_the_kfunc_the_daemon_kills_a_process_moved_out() {
    let d = DaemonGuard::start_with(
        "scope-moved-fallback",
        TASK_SCOPE,
        &[("LEASH_TEST_WITHOUT_KFUNCS", "1")],
        true,
    );
    let kill = status(&d)["kill_at_move"].as_str().unwrap().to_owned();
    assert!(kill.starts_with("daemon"), "{kill}");
    let l = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let mut windows = Vec::new();
    for round in 0..10 {
        let mut s = TaskSession::join(&d, &id);
        let pid = s.run("pid");
        let leash = cgroup_of(&pid);
        let out = cgroup_dir(&d, Path::new(&leash).parent().unwrap().to_str().unwrap());
        let moved = std::time::Instant::now();
        std::fs::write(out.join("cgroup.procs"), &pid).unwrap();
        // Polled: `wait` would close its stdin, which ends the probe by itself.
        let exit = loop {
            if let Some(exit) = s.child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                moved.elapsed() < std::time::Duration::from_secs(5),
                "round {round}: alive"
            );
            std::thread::sleep(std::time::Duration::from_micros(50));
        };
        windows.push(moved.elapsed());
        assert_eq!(
            exit.signal(),
            Some(libc::SIGKILL),
            "round {round}: {exit:?}"
        );
    }
    windows.sort();
    println!(
        "move to death with the daemon's kill: min {:?} median {:?} max {:?}",
        windows[0],
        windows[windows.len() / 2],
        windows[windows.len() - 1]
    );
    // The daemon writes the audit record after its kill: the last one may still be on its way.
    wait_for("an escape event per round", || {
        audited(&d, "scope_escape").len() >= 10
    });
    let events = audited(&d, "scope_escape");
    assert!(
        events.len() >= 10
            && events
                .iter()
                .all(|e| e["target"]["killed_at_move"] == false),
        "{events:?}"
    );
}

#[test]
fn a_move_between_the_leash_cgroups_of_one_task_is_no_escape() {
    let d = DaemonGuard::start("scope-within", TASK_SCOPE);
    let l = Listeners::new();
    let other = Listeners::new();
    let id = create_task(&d, l.tcp4_port());
    let mut first = TaskSession::join(&d, &id);
    let pid = first.run("pid");
    // A second cgroup, next to the first leash cgroup's parent, with a process of the
    // same task in it: the task has two leash cgroups.
    let parent = cgroup_dir(
        &d,
        Path::new(&cgroup_of(&pid))
            .parent()
            .unwrap()
            .to_str()
            .unwrap(),
    );
    let second = parent.join(format!("leash-it-within-{}", std::process::id()));
    std::fs::create_dir(&second).unwrap();
    let procs = std::fs::OpenOptions::new()
        .write(true)
        .open(second.join("cgroup.procs"))
        .unwrap();
    let mut cmd = d.cli();
    cmd.args(["run", "--task", &id, "--"])
        .arg(probe())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    // SAFETY: one write() of a static buffer in the child before exec.
    unsafe {
        use std::os::{fd::AsRawFd as _, unix::process::CommandExt as _};
        let fd = procs.as_raw_fd();
        cmd.pre_exec(move || {
            if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut second_session = TaskSession::from_child(cmd.spawn().unwrap());
    let pid2 = second_session.run("pid");
    let second_leash = cgroup_of(&pid2);
    assert!(second_leash.ends_with("/leash"), "{second_leash}");
    let escapes = counter(&d, "leash_cgroup_escapes_total");
    // The first process moves into the second leash cgroup: it lives, still enforced.
    std::fs::write(cgroup_dir(&d, &second_leash).join("cgroup.procs"), &pid).unwrap();
    assert_eq!(cgroup_of(&pid), second_leash);
    let denied = format!("connect tcp 127.0.0.1 {}", other.tcp4_port());
    assert_eq!(first.run(&denied), EPERM);
    assert_eq!(
        first.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    assert_eq!(counter(&d, "leash_cgroup_escapes_total"), escapes);
    drop(first);
    drop(second_session);
    wait_for("the second leash cgroup to empty", || {
        std::fs::read_to_string(second.join("cgroup.events"))
            .is_ok_and(|t| t.contains("populated 0"))
    });
    let _ = std::fs::remove_dir(second.join("leash"));
    std::fs::remove_dir(&second).unwrap();
}

#[test]
fn auto_picks_task_where_the_kernel_kills_at_the_move_and_root_otherwise() {
    let d = DaemonGuard::start("scope-auto", "attach_scope: auto\n");
    let s = status(&d);
    if kernel_has_send_signal_task() {
        assert_eq!(s["attach_scope"], "task", "{s}");
        assert_eq!(s["kill_at_move"], "kernel", "{s}");
    } else {
        assert_eq!(s["attach_scope"], "root", "{s}");
        assert!(
            s["attach_scope_reason"]
                .as_str()
                .unwrap()
                .contains("no kill at a cgroup move"),
            "{s}"
        );
    }
    let text = stdout(&d.run(&["status"]));
    assert!(text.contains("attach scope:"), "{text}");
    drop(d);
    // The probe forced to fail: root, and why.
    let d = DaemonGuard::start_with(
        "scope-auto-forced",
        "attach_scope: auto\n",
        &[("LEASH_TEST_WITHOUT_KFUNCS", "1")],
        true,
    );
    let s = status(&d);
    assert_eq!(s["attach_scope"], "root", "{s}");
    assert_eq!(
        s["attach_scope_reason"], "auto: no kill at a cgroup move (turned off for tests)",
        "{s}"
    );
    assert!(
        d.log().contains("auto: no kill at a cgroup move"),
        "the reason is logged"
    );
}
