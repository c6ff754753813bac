//! A real `leash daemon` process on a private socket, state dir, audit log and pin
//! directory; killed and cleaned up (`--cleanup`) on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The `leash` binary built next to the tests (`cargo build -p leash`).
#[must_use]
pub fn leash_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    [dir.join("leash"), dir.parent().unwrap_or(dir).join("leash")]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "the leash binary is missing near {}: run `cargo build -p leash` (cargo xtask test does)",
                dir.display()
            )
        })
}

pub struct DaemonGuard {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub audit_log: PathBuf,
    pub config: PathBuf,
    pub pin_dir: PathBuf,
    pub metrics_port: u16,
    child: Option<Child>,
}

/// A loopback port free right now (the daemon binds it a moment later).
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// How long a started daemon may take to listen on its socket. Under TCG (the VM suite)
/// loading the lsm programs alone takes most of a minute on a busy guest.
const LISTEN_WITHIN_S: u64 = 120;

impl DaemonGuard {
    /// Starts a daemon with its own paths and waits until its socket answers.
    #[must_use]
    pub fn start(name: &str, extra_config: &str) -> Self {
        Self::start_with(name, extra_config, &[], true)
    }

    /// [`Self::start`] with extra environment, optionally not waiting for the socket.
    #[must_use]
    pub fn start_with(name: &str, extra_config: &str, env: &[(&str, &str)], wait: bool) -> Self {
        crate::require_root();
        let dir = std::env::temp_dir().join(format!("leash-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("workspace")).unwrap();
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/leash-it-{name}-{}",
            std::process::id()
        ));
        let socket = dir.join("leash.sock");
        let audit_log = dir.join("audit.jsonl");
        let config = dir.join("config.yaml");
        let metrics_port = free_port();
        // The backend the test run asks for (cargo xtask vm forces each in turn).
        let backend = match crate::backend_env() {
            Some(b) if !extra_config.contains("backend:") => format!("backend: {b}\n"),
            _ => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "socket:\n  path: {}\nstate_dir: {}\npin_dir: {}\naudit_log: {}\nmetrics:\n  addr: 127.0.0.1:{metrics_port}\n{backend}{extra_config}",
                socket.display(),
                dir.join("state").display(),
                pin_dir.display(),
                audit_log.display()
            ),
        )
        .unwrap();
        let mut g = Self {
            dir,
            socket,
            audit_log,
            config,
            pin_dir,
            metrics_port,
            child: None,
        };
        g.spawn_with_env(env, wait);
        g
    }

    /// (Re)starts the daemon process on the same paths.
    pub fn spawn(&mut self) {
        self.spawn_with_env(&[], true);
    }

    /// Starts the daemon with extra environment variables; with `wait`, returns once
    /// its API socket answers.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)], wait: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(leash_bin())
            .args(["daemon", "--config"])
            .arg(&self.config)
            .envs(env.iter().copied())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn leash daemon");
        self.child = Some(child);
        if !wait {
            return;
        }
        // Generous: under TCG (the VM suite) the lsm backend's programs take most of
        // it to load, each LSM hook looked up in the kernel's BTF.
        let deadline = Instant::now() + Duration::from_secs(LISTEN_WITHIN_S);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("leash daemon exited with {status}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "leash daemon did not listen within {LISTEN_WITHIN_S} s: {}",
            self.log()
        );
    }

    /// Sends a signal to the daemon and waits for it to exit.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("daemon running");
        // SAFETY: signalling our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
        c.wait().unwrap()
    }

    /// Runs `leash daemon --cleanup` for this daemon's config.
    #[must_use]
    pub fn cleanup(&self) -> Output {
        Command::new(leash_bin())
            .args(["daemon", "--config"])
            .arg(&self.config)
            .arg("--cleanup")
            .output()
            .unwrap()
    }

    /// The daemon's pid while it runs.
    #[must_use]
    pub fn child_pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait, as kubelet or systemd stop a daemon for an upgrade; returns how
    /// it exited (None: it was not running).
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = libc::pid_t::try_from(c.id()).expect("pid fits pid_t");
        // SAFETY: plain syscall on the pid of our own child, which we have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        panic!("leash daemon ignored SIGTERM for 20 s: {}", self.log());
    }

    /// How the daemon exited, once it has (it is then no longer this guard's); None
    /// while it runs.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The running daemon's pid.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts `bin`, another `leash` binary, as the daemon on the same config, state and
    /// pin dir (an upgrade), and waits until its socket answers.
    pub fn spawn_binary(&mut self, bin: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .unwrap();
        let child = Command::new(bin)
            .args(["daemon", "--config"])
            .arg(&self.config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        self.child = Some(child);
        // Generous: under TCG (the VM suite) the lsm backend's programs take most of
        // it to load, each LSM hook looked up in the kernel's BTF.
        let deadline = Instant::now() + Duration::from_secs(LISTEN_WITHIN_S);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} daemon exited with {status}: {}",
                    bin.display(),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "{} daemon did not listen within {LISTEN_WITHIN_S} s: {}",
            bin.display(),
            self.log()
        );
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    /// A `leash` client command against this daemon.
    #[must_use]
    /// The `leash` CLI for this daemon, run in [`Self::workspace`] (`leash run` makes
    /// its working directory the task's writable workspace).
    pub fn cli(&self) -> Command {
        let mut c = Command::new(leash_bin());
        c.env("LEASH_SOCKET", &self.socket)
            .current_dir(self.workspace())
            .stdin(Stdio::null());
        c
    }

    /// The directory the CLI runs in: the workspace of its `leash run` tasks.
    #[must_use]
    pub fn workspace(&self) -> PathBuf {
        self.dir.join("workspace")
    }

    /// Runs a client command and returns its output.
    #[must_use]
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run leash")
    }

    /// Raw HTTP on the socket, for malformed requests the CLI never sends.
    #[must_use]
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        http(&self.socket, method, path, body)
    }

    /// `GET` on the metrics listener: (status, body).
    #[must_use]
    pub fn metrics_get(&self, path: &str) -> (u16, String) {
        use std::io::{Read as _, Write as _};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return (0, String::new());
        };
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: leash\r\nConnection: close\r\n\r\n"
        );
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp);
        parse_response(&resp)
    }

    /// The audit log's lines, parsed.
    #[must_use]
    pub fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new(leash_bin())
            .args(["daemon", "--config"])
            .arg(&self.config)
            .arg("--cleanup")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One HTTP/1.1 request on a Unix socket; returns status and body.
#[must_use]
pub fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(socket, method, path, "", body)
}

/// [`http`] with extra header lines (each ending in `\r\n`).
#[must_use]
pub fn http_with(
    socket: &Path,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect to the daemon");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: leash\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A refused large body may close the socket early; that is the daemon's right.
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    parse_response(&resp)
}

/// Status code and (de-chunked) body of a raw HTTP/1.1 response.
fn parse_response(resp: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, dechunk(&body))
}

/// A probe joined to an existing task through `leash run --task`, driven line by line;
/// killed on drop.
pub struct TaskSession {
    pub child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl TaskSession {
    #[must_use]
    pub fn join(d: &DaemonGuard, task: &str) -> Self {
        let child = d
            .cli()
            .args(["run", "--task", task, "--"])
            .arg(crate::probe())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn leash run --task");
        Self::from_child(child)
    }

    /// Drives a probe already spawned with piped stdin and stdout (in a network
    /// namespace, say).
    #[must_use]
    pub fn from_child(mut child: Child) -> Self {
        let out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, out }
    }

    /// Sends one probe command and returns its outcome line.
    pub fn run(&mut self, words: &str) -> String {
        use std::io::{BufRead as _, Write as _};
        let stdin = self.child.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{words}").expect("write to probe");
        stdin.flush().expect("flush probe");
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read probe");
        line.trim().to_owned()
    }
}

impl Drop for TaskSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Undoes chunked transfer encoding if present (axum streams some bodies).
fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let Some((size, after)) = rest.split_once("\r\n") else {
            return if out.is_empty() { body.to_owned() } else { out };
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            return if out.is_empty() { body.to_owned() } else { out };
        };
        if n == 0 || after.len() < n {
            return out;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
}

/// A command's standard output, trimmed.
#[must_use]
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// A command's standard error, trimmed.
#[must_use]
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// `leash task show ID --json`, parsed.
#[must_use]
pub fn task_json(d: &DaemonGuard, id: &str) -> serde_json::Value {
    let o = d.run(&["task", "show", id, "--json"]);
    assert!(o.status.success(), "task show: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("task show --json")
}

/// Whether the daemon refuses unix names with the cgroup unix hooks (`leash status`).
#[must_use]
pub fn unix_hooks(d: &DaemonGuard) -> bool {
    let o = d.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status --json");
    status["programs"].as_array().is_some_and(|programs| {
        programs
            .iter()
            .any(|p| p["name"] == "family_connect_unix" && p["attached"] == true)
    })
}

/// Links pinned per leash cgroup: the four network hooks, `sock_create`, the four DNS
/// reverse hooks, and the unix hooks where used.
#[must_use]
pub fn scope_links(d: &DaemonGuard) -> usize {
    if unix_hooks(d) { 11 } else { 9 }
}
