//! Lifecycle on the real kernel: an ended or expired task's processes are denied
//! everything (fail closed), and audit mode reports without enforcing.

use std::{fs, os::unix::fs::PermissionsExt as _};

use harness::TaskSpec;
use harness::{EPERM, Harness, Listeners, exec_denied, spec};
use harness::{Reason, Verdict};

fn private_true(tag: &str) -> String {
    let p = std::env::temp_dir().join(format!("leash-life-{tag}-{}", std::process::id()));
    fs::copy("/bin/true", &p).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p.display().to_string()
}

#[test]
fn ended_task_denies_everything_to_survivors() {
    let h = Harness::load();
    let l = Listeners::new();
    let tool = private_true("end");
    let task = h.task(spec(
        &[&tool],
        &[
            &format!("127.0.0.1:{}", l.tcp4_port()),
            &format!("127.0.0.1:{}/udp", l.udp4_port()),
        ],
    ));
    let mut s = task.session();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    assert_eq!(s.run(&format!("exec {tool}")), "exit 0");

    task.end();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        EPERM
    );
    assert_eq!(s.run(&format!("sendto 127.0.0.1 {}", l.udp4_port())), EPERM);
    // lsm refuses the probe's fork itself (task_alloc), before any exec, and reports no
    // event for it; portable kills the exec'd child.
    let (exec_outcome, closed_events) = match h.backend() {
        leash::Backend::Lsm => ("error fork errno 1", 2),
        leash::Backend::Portable => (exec_denied(h.backend()), 3),
    };
    assert_eq!(s.run(&format!("exec {tool}")), exec_outcome);
    let events = task.events(closed_events);
    let closed: Vec<_> = events
        .iter()
        .filter(|e| e.reason == Reason::UnknownTask)
        .collect();
    assert_eq!(closed.len(), closed_events, "{events:?}");
    assert!(closed.iter().all(|e| e.verdict == Verdict::Denied));
    let _ = fs::remove_file(tool);
}

#[test]
fn audit_mode_allows_and_reports_audited() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let tool = private_true("audit");
    let task = h.task(TaskSpec {
        connect: vec![format!("127.0.0.1:{}", l.tcp4_port())],
        audit: true,
        ..TaskSpec::default()
    });
    let before = task.decisions();
    let mut s = task.session();
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", other.tcp4_port())),
        "ok"
    );
    assert_eq!(
        s.run(&format!("sendto 127.0.0.1 {}", other.udp4_port())),
        "ok"
    );
    assert_eq!(s.run(&format!("exec {tool}")), "exit 0");
    assert_eq!(
        s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
        "ok"
    );
    let after = task.decisions();
    let d = |a: usize, v: usize| after[a][v] - before[a][v];
    assert_eq!((d(0, 1), d(0, 2)), (0, 1), "exec: denied, audited");
    assert_eq!(
        (d(1, 0), d(1, 1), d(1, 2)),
        (1, 0, 1),
        "connect: allowed, denied, audited"
    );
    assert_eq!((d(2, 1), d(2, 2)), (0, 1), "send: denied, audited");
    let audited: Vec<_> = task
        .events(3)
        .into_iter()
        .filter(|e| e.verdict == Verdict::Audited)
        .collect();
    assert_eq!(audited.len(), 3, "{audited:?}");
    assert!(audited.iter().all(|e| e.reason == Reason::NotGranted));
    let _ = fs::remove_file(tool);
}

/// A task's life matches how it was made: a `leash run` task ends when its command
/// exits, so what the command left behind is denied (and killed under `kill_on_end`).
mod end_when {
    use std::{
        os::unix::process::ExitStatusExt as _,
        path::PathBuf,
        time::{Duration, Instant},
    };

    use harness::{
        EPERM, Listeners,
        daemon::{DaemonGuard, stderr, stdout, task_json},
        probe, wait_for,
    };

    /// Where a lingering probe reports; removed on drop.
    struct Report(PathBuf);

    impl Report {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("leash-linger-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_file(&p);
            let _ = std::fs::remove_file(Self::pid_path(&p));
            Self(p)
        }

        fn pid_path(p: &std::path::Path) -> PathBuf {
            let mut s = p.as_os_str().to_owned();
            s.push(".pid");
            PathBuf::from(s)
        }

        fn pid(&self) -> i32 {
            let mut pid = String::new();
            wait_for("the survivor to write its pid", || {
                pid = std::fs::read_to_string(Self::pid_path(&self.0)).unwrap_or_default();
                !pid.is_empty()
            });
            pid.trim().parse().unwrap()
        }
    }

    impl Drop for Report {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_file(Self::pid_path(&self.0));
        }
    }

    fn alive(pid: i32) -> bool {
        // SAFETY: signal 0 only checks that the pid exists.
        unsafe { libc::kill(pid, 0) == 0 }
    }

    /// `leash run` of a probe that leaves a survivor connecting to `port` after 1.5 s.
    /// In the `open` file mode: the survivor writes its report outside the workspace.
    fn run_with_survivor(d: &DaemonGuard, port: u16, report: &Report) -> String {
        let p = probe().display().to_string();
        let o = d.run(&[
            "run",
            "--files",
            "open",
            "--allow-exec",
            &p,
            "--allow-connect",
            &format!("127.0.0.1:{port}/tcp"),
            "--",
            &p,
            "linger",
            "1500",
            &report.0.display().to_string(),
            "connect",
            "tcp",
            "127.0.0.1",
            &port.to_string(),
        ]);
        assert_eq!(stdout(&o), "ok", "{}", stderr(&o));
        assert!(o.status.success(), "{}", stderr(&o));
        let tasks: serde_json::Value =
            serde_json::from_slice(&d.run(&["task", "list", "--json"]).stdout).unwrap();
        let t = tasks.as_array().unwrap().last().unwrap().clone();
        assert_eq!(t["end_when"], "command_exits", "{t}");
        t["id"].as_str().unwrap().to_owned()
    }

    #[test]
    fn a_survivor_of_a_run_is_denied_once_its_command_exits() {
        let d = DaemonGuard::start("life-survivor", "");
        let l = Listeners::new();
        let report = Report::new("denied");
        let id = run_with_survivor(&d, l.tcp4_port(), &report);
        let pid = report.pid();
        assert!(alive(pid), "without kill_on_end the survivor lives on");
        wait_for("the task to end with its command", || {
            let t = task_json(&d, &id);
            t["state"] == "ended" && t["end_reason"] == "exited"
        });
        // The granted connect, tried after the command exited, is denied.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !report.0.exists() {
            assert!(Instant::now() < deadline, "the survivor never reported");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(std::fs::read_to_string(&report.0).unwrap(), EPERM);
        wait_for("the survivor's denied connect in the audit log", || {
            d.audit().iter().any(|e| {
                e["task"] == id.as_str()
                    && e["kind"] == "connect"
                    && e["verdict"] == "denied"
                    && e["pid"] == pid
            })
        });
        let (_, metrics) = d.metrics_get("/metrics");
        assert!(
            metrics.lines().any(|l| l.starts_with(
                "leash_decisions_total{action=\"connect\",verdict=\"denied\",agent=\"unknown\"}"
            ) && !l.ends_with(" 0")),
            "{metrics}"
        );
    }

    #[test]
    fn a_survivor_of_a_run_is_killed_under_kill_on_end() {
        let d = DaemonGuard::start("life-kill", "tasks:\n  kill_on_end: true\n");
        let l = Listeners::new();
        let report = Report::new("killed");
        let id = run_with_survivor(&d, l.tcp4_port(), &report);
        let pid = report.pid();
        wait_for("the survivor to be killed when the command exits", || {
            !alive(pid)
        });
        let t = task_json(&d, &id);
        assert_eq!(t["end_reason"], "exited", "{t}");
        std::thread::sleep(Duration::from_millis(1700));
        assert!(!report.0.exists(), "the killed survivor never connected");
        let ended = d
            .audit()
            .into_iter()
            .find(|e| e["task"] == id.as_str() && e["kind"] == "task_ended")
            .expect("task_ended");
        assert!(
            ended["target"]["killed_pids"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == pid),
            "{ended}"
        );
    }

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "d(aemon), l(istener), o(utput), p(robe), n(th run) keep the scenario short"
    )]
    fn a_created_task_lives_through_many_runs_until_ended() {
        let d = DaemonGuard::start("life-session", "");
        let l = Listeners::new();
        let p = probe().display().to_string();
        let port = l.tcp4_port().to_string();
        let o = d.run(&[
            "task",
            "create",
            "--allow-exec",
            &p,
            "--allow-connect",
            &format!("127.0.0.1:{port}/tcp"),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let id = stdout(&o);
        assert_eq!(task_json(&d, &id)["end_when"], "ended_or_expired");
        for n in 1..=3 {
            let o = d.run(&[
                "run",
                "--task",
                &id,
                "--",
                &p,
                "connect",
                "tcp",
                "127.0.0.1",
                &port,
            ]);
            assert_eq!(stdout(&o), "ok", "run {n}: {}", stderr(&o));
            // Longer than the sweep's exit check (2 s at most between two).
            std::thread::sleep(Duration::from_millis(if n == 3 { 2500 } else { 300 }));
            let t = task_json(&d, &id);
            assert_eq!(t["state"], "active", "after run {n}: {t}");
        }
        let show = stdout(&d.run(&["task", "show", &id]));
        assert!(
            show.contains("end_when:") && show.contains("ended_or_expired"),
            "{show}"
        );
        let o = d.run(&["task", "end", &id]);
        assert!(o.status.success(), "{}", stderr(&o));
        let o = d.run(&["run", "--task", &id, "--", &p, "pid"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("has ended"), "{}", stderr(&o));

        // A task created to end with its command takes that one command only.
        let o = d.run(&[
            "task",
            "create",
            "--end-when",
            "command_exits",
            "--allow-exec",
            &p,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let once = stdout(&o);
        let mut first = d
            .cli()
            .args(["run", "--task", &once, "--", &p])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the first command to join", || {
            task_json(&d, &once)["state"] == "active"
        });
        let o = d.run(&["run", "--task", &once, "--", &p, "pid"]);
        assert!(!o.status.success());
        assert!(stderr(&o).contains("command_exits"), "{}", stderr(&o));
        drop(first.stdin.take());
        first.wait().unwrap();
        wait_for("the task to end with its one command", || {
            task_json(&d, &once)["end_reason"] == "exited"
        });
    }

    #[test]
    fn run_passes_exit_status_and_signals_through_and_ends_the_task() {
        let d = DaemonGuard::start("life-status", "");
        let sh = ["run", "--allow-exec", "/bin/sh", "--", "/bin/sh", "-c"];
        let o = d.run(&[&sh[..], &["exit 3"]].concat());
        assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
        // Killed by SIGTERM: the caller sees the signal itself (a shell shows 143).
        let o = d.run(&[&sh[..], &["kill -TERM $$"]].concat());
        assert_eq!(o.status.signal(), Some(libc::SIGTERM), "{o:?}");
        wait_for("both tasks to end with their commands", || {
            let v: serde_json::Value =
                serde_json::from_slice(&d.run(&["task", "list", "--json"]).stdout).unwrap();
            let tasks = v.as_array().unwrap();
            tasks.len() == 2 && tasks.iter().all(|t| t["end_reason"] == "exited")
        });
    }
}
