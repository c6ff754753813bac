//! Tagging on the real kernel: the tag follows every process and thread created from
//! a tagged one, and leaves with them.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use harness::{EPERM, Harness, Listeners, probe, spec};

fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

#[test]
fn children_grandchildren_threads_and_double_forks_carry_the_tag() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let task = h.task(spec(&[], &[&format!("127.0.0.1:{}", l.tcp4_port())]));
    let p = probe().display().to_string();
    let denied = other.tcp4_port();

    // The probe forks and execs a probe, which forks and execs another: a grandchild.
    assert_eq!(
        task.probe(&format!("exec {p} exec {p} connect tcp 127.0.0.1 {denied}")),
        "errno 1\nexit 0\nexit 0"
    );
    assert_eq!(
        task.probe(&format!("thread connect tcp 127.0.0.1 {denied}")),
        EPERM
    );
    assert_eq!(
        task.probe(&format!("double-fork connect tcp 127.0.0.1 {denied}")),
        EPERM,
        "setsid + reparenting to init"
    );
    assert_eq!(
        task.probe(&format!(
            "double-fork thread connect tcp 127.0.0.1 {}",
            l.tcp4_port()
        )),
        "ok"
    );

    assert!(
        wait_until(|| task.procs().is_empty()),
        "entries left after all exited: {:?}",
        task.procs()
    );
}

#[test]
fn exited_processes_leave_no_entry_and_a_recycled_pid_is_not_tagged() {
    let h = Harness::load();
    let other = Listeners::new();
    let denied = other.tcp4_port();
    let task = h.task(spec(&[], &[]));
    let pid = {
        let mut s = task.session();
        assert_eq!(s.run(&format!("connect tcp 127.0.0.1 {denied}")), EPERM);
        assert_eq!(task.procs(), vec![s.pid()]);
        s.pid()
    };
    assert!(
        wait_until(|| task.procs().is_empty()),
        "entry of exited pid {pid} remains"
    );

    // Ask the kernel for the same pid again (root pid namespace, so retry on races).
    for _ in 0..20 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = Command::new(probe())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        if child.id() == pid {
            let mut stdin = child.stdin.take().unwrap();
            let mut out = BufReader::new(child.stdout.take().unwrap());
            writeln!(stdin, "connect tcp 127.0.0.1 {denied}").unwrap();
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            let _ = child.kill();
            let _ = child.wait();
            assert_eq!(
                line.trim(),
                "ok",
                "the recycled pid {pid} inherited the task's tag"
            );
            return;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    eprintln!(
        "note: pid {pid} was not handed out again in 20 tries; checked only that its entry is gone"
    );
}
