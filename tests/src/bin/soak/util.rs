//! What every part of the soak shares: the run's context and tallies, a seeded random
//! source, `leash` client calls with a deadline, and probe sessions read with one.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Set by Ctrl-C or SIGTERM: the run stops and cleans up as on a normal end.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// How long one client call or probe command may take before the soak calls it stuck.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The run's fixed facts and its shared tallies.
pub(crate) struct Ctx {
    pub(crate) leash: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) workspace: PathBuf,
    pub(crate) probe: String,
    /// A private copy of /bin/true that no task is ever granted.
    pub(crate) ungranted: String,
    /// How a refused exec shows in the probe on this backend.
    pub(crate) exec_refused: &'static str,
    /// Granted to the prober and to every `leash run` of the workload.
    pub(crate) granted_port: u16,
    /// Never granted to anyone.
    pub(crate) denied_port: u16,
    /// Ports the grant scenarios add and revoke grants for.
    pub(crate) pool: Vec<u16>,
    pub(crate) scratch: PathBuf,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) stop: AtomicBool,
    pub(crate) stats: Stats,
    pub(crate) misses: Mutex<Vec<String>>,
    /// Pids of processes the workload left behind on purpose.
    pub(crate) survivors: Mutex<Vec<i32>>,
    /// When each restarted daemon was started and when it answered.
    pub(crate) restarts: Mutex<Vec<(Instant, Instant)>>,
    /// When each of the prober's rounds started.
    pub(crate) rounds: Mutex<Vec<Instant>>,
}

/// Counts of what the run did.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) runs: AtomicU64,
    pub(crate) run_refused: AtomicU64,
    pub(crate) created: AtomicU64,
    pub(crate) grants_acked: AtomicU64,
    pub(crate) grants_refused: AtomicU64,
    pub(crate) grants_unanswered: AtomicU64,
    pub(crate) revokes_acked: AtomicU64,
    pub(crate) ended: AtomicU64,
    pub(crate) survivors: AtomicU64,
    pub(crate) workload_checks: AtomicU64,
    pub(crate) kills: AtomicU64,
    pub(crate) fault_aborts: AtomicU64,
    pub(crate) restart_ms_max: AtomicU64,
    pub(crate) rss_kib_max: AtomicU64,
    pub(crate) prober_checks: AtomicU64,
    pub(crate) prober_connect_ok: AtomicU64,
    pub(crate) prober_connect_denied: AtomicU64,
    pub(crate) prober_exec_denied: AtomicU64,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

pub(crate) fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

pub(crate) fn raise(counter: &AtomicU64, n: u64) {
    counter.fetch_max(n, Ordering::Relaxed);
}

impl Ctx {
    pub(crate) fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
            && !INTERRUPTED.load(Ordering::Relaxed)
            && Instant::now() < self.deadline
    }

    /// Records a wrong outcome with when it happened.
    pub(crate) fn miss(&self, what: &str) {
        let line = format!("{}: {what}", self.stamp());
        eprintln!("soak: MISS {line}");
        self.misses.lock().unwrap().push(line);
    }

    /// `t+SECONDS (unix SECONDS.MILLIS)`.
    pub(crate) fn stamp(&self) -> String {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "t+{:.3}s (unix {}.{:03})",
            self.started.elapsed().as_secs_f64(),
            wall.as_secs(),
            wall.subsec_millis()
        )
    }

    /// The `leash` CLI on the soak's daemon, run in its workspace.
    pub(crate) fn cli(&self) -> Command {
        let mut c = Command::new(&self.leash);
        c.env("LEASH_SOCKET", &self.socket)
            .current_dir(&self.workspace)
            .stdin(Stdio::null());
        c
    }

    /// Runs `leash ARGS` with [`CALL_TIMEOUT`]; None if it did not finish in time.
    pub(crate) fn call(&self, args: &[&str]) -> Option<Output> {
        let mut c = self.cli();
        c.args(args);
        output_within(c, CALL_TIMEOUT)
    }

    /// `leash ARGS` retried while the daemon is down (for up to two minutes); the
    /// answer, successful or refused.
    pub(crate) fn call_answered(&self, args: &[&str]) -> Option<Output> {
        let until = Instant::now() + Duration::from_mins(2);
        loop {
            if let Some(o) = self.call(args)
                && (o.status.success() || refused(&o))
            {
                return Some(o);
            }
            if Instant::now() > until || INTERRUPTED.load(Ordering::Relaxed) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a failed client call is the daemon's answer, not a transport failure: an
/// API error ends with its code in parentheses, `... (bad_request)`.
pub(crate) fn refused(o: &Output) -> bool {
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.trim_end();
    !o.status.success()
        && last.ends_with(')')
        && last.rsplit_once('(').is_some_and(|(_, code)| {
            code.len() > 1
                && code[..code.len() - 1]
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
        })
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// Runs `cmd` to completion, killing it after `limit`.
pub(crate) fn output_within(mut cmd: Command, limit: Duration) -> Option<Output> {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    if let Ok(out) = rx.recv_timeout(limit) {
        return out.ok();
    }
    // SAFETY: signals our own child, which the waiting thread has not reaped yet.
    unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap_or(0), libc::SIGKILL) };
    None
}

/// A seeded xorshift64*: the run's choices replay from its seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub(crate) fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A probe driven line by line, its answers read with a deadline.
pub(crate) struct Session {
    pub(crate) child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Session {
    /// Starts `cmd` (a `leash run ... -- probe`) with piped stdin and stdout.
    pub(crate) fn spawn(mut cmd: Command) -> Option<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take()?);
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line.trim().to_owned()).is_err() {
                    break;
                }
            }
        });
        Some(Self {
            child,
            stdin,
            lines,
        })
    }

    /// Sends one command; its outcome, `eof` once the probe is gone, or `timeout`.
    pub(crate) fn run(&mut self, words: &str) -> String {
        let Some(stdin) = self.stdin.as_mut() else {
            return "eof".into();
        };
        if writeln!(stdin, "{words}")
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return "eof".into();
        }
        match self.lines.recv_timeout(CALL_TIMEOUT) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Disconnected) => "eof".into(),
            Err(mpsc::RecvTimeoutError::Timeout) => "timeout".into(),
        }
    }

    /// Closes stdin (the probe exits) and waits for it, killing it after the timeout.
    pub(crate) fn finish(mut self) {
        self.stdin = None;
        let until = Instant::now() + CALL_TIMEOUT;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
