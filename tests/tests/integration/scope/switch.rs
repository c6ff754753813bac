//! The attach scope across restarts, with a prober in a running task checking all the
//! while that a granted connect works, an ungranted one is refused and an ungranted
//! exec is stopped. root → auto: `root` again while the root generation's task runs
//! (its sockets are outside every leash cgroup), `task` once none runs (where the
//! kernel kills at a move). task → root by `kill -9`: no gap either.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Instant,
};

use harness::{
    EPERM, Harness, Listeners, Scratch,
    daemon::{DaemonGuard, TaskSession, stdout},
    exec_denied, probe,
};

use super::{kernel_has_send_signal_task, status};

/// A task's probe checked in a loop on its own thread until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(u64, Vec<String>)>,
}

impl Prober {
    fn start(
        mut s: TaskSession,
        port: u16,
        denied_port: u16,
        program: &str,
        stopped_as: &str,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (program, stopped_as) = (program.to_owned(), stopped_as.to_owned());
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let checks = [
                (format!("connect tcp 127.0.0.1 {port}"), "ok".to_owned()),
                (format!("connect tcp 127.0.0.1 {denied_port}"), EPERM.into()),
                (format!("exec {program}"), stopped_as),
            ];
            let (mut rounds, mut misses) = (0, Vec::new());
            while !stopped.load(Ordering::Relaxed) {
                for (words, want) in &checks {
                    let got = s.run(words);
                    if &got != want {
                        let at = t0.elapsed().as_millis();
                        misses.push(format!("{at} ms: `{words}` gave {got:?}, not {want:?}"));
                    }
                }
                rounds += 1;
                // A pause between rounds, so that on one slow CPU (the VM under TCG) the
                // restarting daemon is not starved by this loop's process spawns.
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            (rounds, misses)
        });
        Self { stop, thread }
    }

    /// Stops the loop; panics on any miss or if it never ran.
    fn finish(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (rounds, misses) = self.thread.join().expect("prober thread");
        assert!(misses.is_empty(), "{what}: {misses:#?}");
        assert!(rounds > 0, "{what}: the prober never ran");
    }
}

/// Keeps accepting on `l` so the prober's connects never fill the backlog.
fn drain(l: &Listeners) {
    let tcp = l.tcp4.try_clone().unwrap();
    tcp.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        while let Ok((c, _)) = tcp.accept() {
            drop(c);
        }
    });
}

fn set_scope(d: &DaemonGuard, scope: &str) {
    let text = std::fs::read_to_string(&d.config).unwrap();
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("attach_scope:"))
        .collect();
    let line = format!("attach_scope: {scope}");
    kept.push(&line);
    std::fs::write(&d.config, kept.join("\n") + "\n").unwrap();
}

fn start_prober(d: &DaemonGuard, l: &Listeners, other: &Listeners, exec: &str) -> Prober {
    let out = d.run(&[
        "task",
        "create",
        "--agent",
        "switch",
        "--files",
        "open",
        "--allow-exec",
        &probe().display().to_string(),
        "--allow-connect",
        &format!("127.0.0.1:{}/tcp", l.tcp4_port()),
    ]);
    assert!(out.status.success(), "{}", harness::daemon::stderr(&out));
    let id = stdout(&out);
    let backend = Harness::backend_of_daemon(d);
    // Joined before the caller restarts anything: the probe answers only once its
    // `leash run --task` has attached it and exec'd it (under TCG that has taken
    // seconds, and a daemon stopped meanwhile closes the join's connection).
    let mut session = TaskSession::join(d, &id);
    assert!(
        !session.run("pid").is_empty(),
        "the prober's leash run --task did not join task {id}"
    );
    Prober::start(
        session,
        l.tcp4_port(),
        other.tcp4_port(),
        exec,
        exec_denied(backend),
    )
}

#[test]
fn a_restart_changes_the_attach_scope_both_ways_with_no_gap() {
    let mut d = DaemonGuard::start("scope-switch", "attach_scope: root\n");
    let (l, other) = (Listeners::new(), Listeners::new());
    drain(&l);
    let scratch = Scratch::new("scope-switch");
    let exec = scratch.copy_true("other");
    let pause = || std::thread::sleep(std::time::Duration::from_millis(300));

    // root → auto while a root-generation task runs: root again, and why.
    let prober = start_prober(&d, &l, &other, &exec);
    pause();
    set_scope(&d, "auto");
    d.stop_with(libc::SIGTERM);
    pause();
    d.spawn();
    pause();
    prober.finish("root → auto with a root-generation task running");
    let s = status(&d);
    assert_eq!(s["attach_scope"], "root", "{s}");
    let why = s["attach_scope_reason"].as_str().unwrap_or_default();
    assert!(why.contains("started in attach scope root"), "{s}");

    // With its process gone, a restart gives what auto picks on this kernel.
    d.stop_with(libc::SIGTERM);
    d.spawn();
    let s = status(&d);
    let task_scope = kernel_has_send_signal_task();
    assert_eq!(
        s["attach_scope"],
        if task_scope { "task" } else { "root" },
        "{s}"
    );

    // auto → root by kill -9 while a task of the auto generation runs.
    let prober = start_prober(&d, &l, &other, &exec);
    pause();
    set_scope(&d, "root");
    d.kill9();
    pause();
    d.spawn();
    pause();
    prober.finish("auto → root by kill -9");
    assert_eq!(status(&d)["attach_scope"], "root");
    if task_scope {
        assert_eq!(
            super::count_pins(&d.pin_dir.join("links-scope")),
            0,
            "the task generation's per-cgroup links are gone"
        );
    }
}
