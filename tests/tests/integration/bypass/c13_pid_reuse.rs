//! Class 13, pid reuse: an exited process leaves no entry, so a new process with the
//! same pid inherits nothing.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Stdio},
};

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, probe, spec, wait_for};

#[test]
fn exited_processes_leave_no_entry_and_a_recycled_pid_is_not_tagged() {
    let h = Harness::load();
    let other = Listeners::new();
    let denied = other.tcp4_port();
    let task = h.task(spec(&[], &[]));
    let pid = {
        let mut s = task.session();
        task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
            s.run(&format!("connect tcp 127.0.0.1 {denied}"))
        });
        assert_eq!(task.procs(), vec![s.pid()]);
        s.pid()
    };
    wait_for(&format!("the entry of exited pid {pid} to leave"), || {
        task.procs().is_empty()
    });

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
