//! Test harness: loads leash's real programs, creates tasks in their maps, and runs
//! the probe as a tagged process. Each [`Harness`] is its own loaded instance with its
//! own maps, so tests do not see each other's tasks.

pub mod audit_log;
pub mod daemon;
pub mod dns_server;
mod fixtures;
pub mod flood;
pub mod mount_ns;
pub mod netns;
mod task_spec;
pub mod tokens;

pub use fixtures::{Listeners, Scratch};
pub use task_spec::{TaskSpec, spec};

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use leash::{
    Backend, BackendChoice, Enforcer, LoadOptions,
    kernel::events::{Decision, EventReader},
    kernel::maps::DecisionCounts,
};
use leash_common::maps::Stat;
pub use leash_common::{Action, Reason, Verdict};

/// The probe run once outside any task.
#[must_use]
pub fn untagged(words: &str) -> String {
    let out = Command::new(probe())
        .args(words.split_whitespace())
        .output()
        .expect("spawn the probe");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The probe binary built next to the tests.
#[must_use]
pub fn probe() -> PathBuf {
    bin("leash-probe")
}

/// A binary of this crate: `leash-probe`, `leash-spiffe-probe`, ...
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    // Binaries sit in target/<profile>; integration tests run from its deps/ folder.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe dir");
    [dir.join(name), dir.parent().unwrap_or(dir).join(name)]
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!(
                "{name} missing near {}: build with `cargo build -p integration-tests`",
                dir.display()
            )
        })
}

/// Fails the test unless it runs as root: the programs need `CAP_BPF` and `CAP_PERFMON`.
pub fn require_root() {
    // SAFETY: plain getter.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "integration tests load BPF programs and must run as root"
    );
}

/// Names the backend the tests load: `auto` (the default), `lsm` or `portable`.
/// `cargo xtask vm` sets it to run the suite once per backend; [`Harness::load`] and
/// the daemons of [`daemon::DaemonGuard`] honour it.
pub const BACKEND_ENV: &str = "LEASH_TEST_BACKEND";

/// The backend [`BACKEND_ENV`] asks for; a forced backend that cannot load fails the test.
#[must_use]
pub fn backend_choice() -> BackendChoice {
    backend_env().map_or(BackendChoice::Auto, |name| {
        name.parse()
            .unwrap_or_else(|e| panic!("{BACKEND_ENV}: {e}"))
    })
}

/// The value of [`BACKEND_ENV`], when set and not empty.
#[must_use]
pub fn backend_env() -> Option<String> {
    std::env::var(BACKEND_ENV).ok().filter(|v| !v.is_empty())
}

pub struct Harness {
    pub enforcer: Mutex<Enforcer>,
    events: Mutex<(EventReader, Vec<Decision>)>,
}

static NEXT_SLOT: AtomicU32 = AtomicU32::new(1);

impl Harness {
    /// Loads and attaches the programs with the backend this kernel allows.
    #[must_use]
    pub fn load() -> Self {
        Self::load_with(leash::kernel::AttachScope::Root, Vec::new())
    }

    /// Loads with the network hooks attached at `scope`; in scope `task`, task commands
    /// move themselves into this process's leash cgroup before they exec.
    #[must_use]
    pub fn load_scoped(attach_scope: leash::kernel::AttachScope) -> Self {
        Self::load_with(attach_scope, Vec::new())
    }

    /// [`Self::load_scoped`] with map capacities (`max_entries` by map name).
    #[must_use]
    pub fn load_with(
        attach_scope: leash::kernel::AttachScope,
        capacities: Vec<(&'static str, u32)>,
    ) -> Self {
        Self::load_options(LoadOptions {
            attach_scope,
            capacities,
            ..LoadOptions::default()
        })
    }

    /// Loads with `opts` (its backend is the one the tests run with).
    #[must_use]
    pub fn load_options(opts: LoadOptions) -> Self {
        require_root();
        let mut enforcer = Enforcer::load(&LoadOptions {
            backend: backend_choice(),
            kernel_log_level: None,
            ..opts
        })
        .unwrap_or_else(|e| panic!("cannot load leash: {e}"));
        let reader = enforcer.take_events().expect("events");
        Self {
            enforcer: Mutex::new(enforcer),
            events: Mutex::new((reader, Vec::new())),
        }
    }

    /// The backend a running daemon chose, from `leash status --json`.
    #[must_use]
    pub fn backend_of_daemon(d: &daemon::DaemonGuard) -> Backend {
        let out = d.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json");
        match v["backend"].as_str() {
            Some("lsm") => Backend::Lsm,
            _ => Backend::Portable,
        }
    }

    #[must_use]
    pub fn backend(&self) -> Backend {
        self.enforcer.lock().unwrap().backend()
    }

    /// Whether the cgroup unix hooks refuse unix names here (portable on Linux >= 6.7).
    pub fn unix_hooks(&self) -> bool {
        self.enforcer.lock().unwrap().unix_hooks()
    }

    /// How a refused unix connect or send ends: EPERM from the lsm or cgroup unix
    /// hooks, else the syscall tracepoints' SIGKILL.
    pub fn unix_refused(&self) -> &'static str {
        if self.unix_hooks() {
            EPERM
        } else {
            refused(self.backend())
        }
    }

    /// Creates a task with its own counter slot. The probe is always granted (it is how
    /// the test acts inside the task), plus `spec`'s grants.
    #[must_use]
    pub fn task(&self, mut spec: TaskSpec) -> Task<'_> {
        spec.exec.push(probe().display().to_string());
        spec.counter_slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) + std::process::id() % 512;
        let id = (u64::from(std::process::id()) << 32) | u64::from(spec.counter_slot);
        let mut enf = self.enforcer.lock().unwrap();
        spec.install(enf.maps_mut(), id)
            .unwrap_or_else(|e| panic!("cannot install the test task: {e}"));
        Task {
            h: self,
            id,
            slot: spec.counter_slot,
        }
    }

    /// Counters of a slot.
    #[must_use]
    pub fn decisions(&self, slot: u32) -> DecisionCounts {
        self.enforcer
            .lock()
            .unwrap()
            .maps()
            .decisions(slot)
            .unwrap()
    }

    #[must_use]
    pub fn stat(&self, stat: Stat) -> u64 {
        self.enforcer.lock().unwrap().maps().stat(stat).unwrap()
    }

    /// Decision events of `task` seen so far (process exits left out), waiting up to
    /// 2 s for at least `min` of them.
    #[must_use]
    pub fn events(&self, task: u64, min: usize) -> Vec<Decision> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let mut ev = self.events.lock().unwrap();
            let (reader, seen) = &mut *ev;
            seen.extend(reader.drain());
            let mine: Vec<_> = seen
                .iter()
                .filter(|d| d.task == task && d.kind != Action::Exit)
                .cloned()
                .collect();
            if mine.len() >= min || Instant::now() > deadline {
                return mine;
            }
            drop(ev);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A task in the kernel's maps; removed on drop.
pub struct Task<'h> {
    h: &'h Harness,
    pub id: u64,
    pub slot: u32,
}

impl Task<'_> {
    /// Ends the task now: its map entries go, its processes stay tagged.
    pub fn end(&self) {
        self.h
            .enforcer
            .lock()
            .unwrap()
            .maps_mut()
            .remove_task(self.id)
            .unwrap();
    }

    /// A command that tags itself into this task between fork and exec, as `leash run` does.
    #[must_use]
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.tag_on_exec(Command::new(program))
    }

    /// Runs the probe once in the task, started in a private mount namespace with
    /// `mounts` made in it before it is tagged ([`mount_ns::on_exec`]).
    #[must_use]
    pub fn probe_in_mount_ns(&self, mounts: &[mount_ns::Mount<'_>], words: &str) -> String {
        let mut cmd = Command::new(probe());
        mount_ns::on_exec(&mut cmd, mounts);
        let out = self
            .tag_on_exec(cmd)
            .args(words.split_whitespace())
            .output()
            .expect("spawn probe");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Runs the probe once in the task, started in a private mount namespace with
    /// `binds` made in it before it is tagged ([`mount_ns::binds_on_exec`]).
    #[must_use]
    pub fn probe_with_binds(&self, binds: &[mount_ns::Bind<'_>], words: &str) -> String {
        let mut cmd = Command::new(probe());
        mount_ns::binds_on_exec(&mut cmd, binds);
        let out = self
            .tag_on_exec(cmd)
            .args(words.split_whitespace())
            .output()
            .expect("spawn probe");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Adds the tagging step to `cmd`, after any it already has.
    fn tag_on_exec(&self, mut cmd: Command) -> Command {
        let mut enf = self.h.enforcer.lock().unwrap();
        let fd = enf.maps().procs_fd();
        // Attach scope `task`: the child joins the leash cgroup of this process's cgroup.
        let scope = enf
            .scope_cgroup(std::process::id())
            .expect("leash cgroup")
            .map(|(_, leash)| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(leash.join("cgroup.procs"))
                    .expect("open the leash cgroup")
            });
        drop(enf);
        let task = self.id;
        // SAFETY: the closure makes one write() and one raw bpf() syscall, both
        // async-signal-safe; `scope` is moved in and outlives the fork.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(procs) = &scope {
                    join_cgroup(procs)?;
                }
                tag_self(fd, task)
            });
        }
        cmd
    }

    /// Runs the probe once in the task with the given command words.
    #[must_use]
    pub fn probe(&self, words: &str) -> String {
        let out = self
            .command(probe())
            .args(words.split_whitespace())
            .output()
            .expect("spawn probe");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A long-lived probe in the task, driven line by line.
    #[must_use]
    pub fn session(&self) -> Session {
        let mut child = self
            .command(probe())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn probe session");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Session {
            child,
            stdin,
            stdout,
        }
    }

    #[must_use]
    pub fn decisions(&self) -> DecisionCounts {
        self.h.decisions(self.slot)
    }

    #[must_use]
    pub fn events(&self, min: usize) -> Vec<Decision> {
        self.h.events(self.id, min)
    }

    /// Runs `attempt`, expects `outcome` from it, and then a denial of `kind` for
    /// `reason` both counted (the task's denied counter of that action grew) and
    /// reported (a new denied event). Returns the event.
    pub fn assert_denied(
        &self,
        kind: Action,
        reason: Reason,
        outcome: &str,
        attempt: impl FnOnce() -> String,
    ) -> Decision {
        let row = leash::kernel::maps::COUNTED
            .iter()
            .position(|a| *a == kind)
            .unwrap_or_else(|| panic!("{kind} is not a counted action"));
        let matching = |evs: &[Decision]| -> Vec<Decision> {
            evs.iter()
                .filter(|e| e.kind == kind && e.verdict == Verdict::Denied && e.reason == reason)
                .cloned()
                .collect()
        };
        let before_count = self.decisions()[row][1];
        let before_events = matching(&self.events(0)).len();
        let got = attempt();
        assert_eq!(got, outcome, "{kind} attempt ({reason})");
        let after_count = self.decisions()[row][1];
        assert!(
            after_count > before_count,
            "{kind} denial ({reason}) not counted: {before_count} -> {after_count}"
        );
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let events = matching(&self.events(0));
            if events.len() > before_events {
                return events[events.len() - 1].clone();
            }
            assert!(
                Instant::now() < deadline,
                "no new denied {kind} event for {reason}: {:?}",
                self.events(0)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Threads of the task still in the process map.
    #[must_use]
    pub fn procs(&self) -> Vec<u32> {
        self.h.enforcer.lock().unwrap().maps().procs_of(self.id)
    }
}

impl Drop for Task<'_> {
    fn drop(&mut self) {
        if let Ok(mut enf) = self.h.enforcer.lock() {
            let _ = enf.maps_mut().remove_task(self.id);
        }
    }
}

/// A probe reading commands on stdin.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Session {
    pub fn run(&mut self, words: &str) -> String {
        writeln!(self.stdin, "{words}").expect("write to probe");
        self.stdin.flush().expect("flush probe");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read probe");
        line.trim().to_owned()
    }

    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bpf(BPF_MAP_UPDATE_ELEM, {fd, &getpid(), &task})`: tags the calling process.
/// Moves the calling process into the cgroup whose `cgroup.procs` is open in `procs`
/// ("0" names the writer).
fn join_cgroup(procs: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: writes one byte from a static buffer to an open fd.
    let rc = unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn tag_self(fd: i32, task: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct UpdateAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        value: u64,
        flags: u64,
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() } as u32;
    let attr = UpdateAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: (&raw const pid) as u64,
        value: (&raw const task) as u64,
        flags: 0,
    };
    // SAFETY: attr points at valid key and value for the map's sizes (u32 → u64).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            2, // BPF_MAP_UPDATE_ELEM
            &raw const attr,
            size_of::<UpdateAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// How a denied exec shows on this backend: SIGKILL (portable) or EPERM (lsm; the
/// probe exits 200 + errno).
#[must_use]
pub fn exec_denied(backend: Backend) -> &'static str {
    match backend {
        Backend::Portable => "signal 9",
        Backend::Lsm => "exit 201",
    }
}

/// How a denial shows that an LSM hook refuses and the portable backend's syscall
/// tracepoints kill (socket families, unix names, ptrace): EPERM on lsm, SIGKILL on
/// portable.
#[must_use]
pub fn refused(backend: Backend) -> &'static str {
    match backend {
        Backend::Portable => "signal 9",
        Backend::Lsm => EPERM,
    }
}

/// The probe's outcome for an EPERM from a network call.
pub const EPERM: &str = "errno 1";

/// How long [`wait_for`] polls before it gives up. The daemon's periodic work (sweep,
/// re-pinning) runs every 2 s, but under TCG (the VM suite, two guests on a 2-core
/// host) starting a process through `leash run` alone has taken over 5 s. A condition
/// that holds returns at once, so only a failing test pays for the margin.
pub const WAIT_FOR: Duration = Duration::from_secs(30);

/// Polls `f` every 20 ms until it holds; panics naming `what` if it does not within
/// [`WAIT_FOR`]. The one polling helper of the suite.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_FOR;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(f(), "timed out after {WAIT_FOR:?} waiting for {what}");
}
