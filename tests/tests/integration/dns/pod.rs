//! A pod-like network namespace with its own resolver: the harness's DNS server
//! (hickory-server, in this process) on the namespace's loopback serving [`zone`], and a
//! `resolv.conf` naming it, bind-mounted over `/etc/resolv.conf` for the processes started
//! in the namespace, as `ip netns exec` does. Made with syscalls only, so it runs in the
//! VM's busybox guest as on the host; everything ends on drop.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use harness::{
    daemon::{DaemonGuard, TaskSession},
    dns_server::{DnsServer, Zone},
    netns::NetNs,
    probe, wait_for,
};

/// Addresses on the pod's `lo`, so that a connect the kernel lets through is refused
/// (errno 111) rather than unroutable.
const LOCAL: &[[u8; 4]] = &[
    [10, 77, 0, 1],
    [10, 77, 0, 2],
    [10, 77, 0, 3],
    [10, 77, 0, 4],
    [10, 77, 0, 5],
    [10, 77, 1, 1],
    [10, 77, 1, 2],
    [10, 77, 1, 3],
];

/// How many A records `big.test` has: more than a 512-byte UDP answer holds.
pub(super) const BIG: u8 = 60;

fn v4(a: [u8; 4]) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(a))
}

/// The names the pod's resolver answers, every record with TTL 1 s.
fn zone() -> Zone {
    let big: Vec<IpAddr> = (1..=BIG).map(|i| v4([10, 78, 0, i])).collect();
    Zone::new(1)
        .addrs("granted.test.", &[v4([10, 77, 0, 1])])
        .txt("granted.test.", "tunnel")
        .addrs("denied.test.", &[v4([10, 77, 0, 2])])
        .addrs("wild.test.", &[v4([10, 77, 0, 4])])
        .addrs("www.wild.test.", &[v4([10, 77, 0, 3])])
        // A chain of two CNAMEs.
        .cname("alias.test.", "mid.test.")
        .cname("mid.test.", "real.test.")
        .addrs("real.test.", &[v4([10, 77, 0, 5])])
        // A CDN: a different address on each answer.
        .rotating(
            "rotate.test.",
            &[v4([10, 77, 1, 1]), v4([10, 77, 1, 2]), v4([10, 77, 1, 3])],
        )
        .addrs("big.test.", &big)
}

pub(super) struct Pod {
    // Dropped in this order: the server (its sockets), then the namespace.
    _server: DnsServer,
    ns: NetNs,
    dir: PathBuf,
}

impl Pod {
    /// The pod of the `dns` tests: [`zone`] at 127.0.0.1.
    pub(super) fn new(tag: &str) -> Self {
        let local: Vec<Ipv4Addr> = LOCAL.iter().map(|a| Ipv4Addr::from(*a)).collect();
        let pod = Self::with(tag, Ipv4Addr::LOCALHOST, zone(), &local);
        wait_for("the pod's resolver answers", || {
            pod.untagged("dns udp 127.0.0.1 granted.test A") == "answer 10.77.0.1"
        });
        pod
    }

    /// A pod whose resolver, at `resolver` on its loopback, serves `zone`, with `local`
    /// addresses on its `lo`. The caller waits until the resolver answers.
    pub(super) fn with(tag: &str, resolver: Ipv4Addr, zone: Zone, local: &[Ipv4Addr]) -> Self {
        harness::require_root();
        assert!(
            Path::new("/etc/resolv.conf").exists(),
            "the pod's resolv.conf is bind-mounted over /etc/resolv.conf, which must exist"
        );
        let ns = NetNs::new(local).expect("a network namespace for the pod");
        let dir = std::env::temp_dir().join(format!("leash-dns-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the pod's directory");
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {resolver}\n"))
            .expect("the pod's resolv.conf");
        let server = DnsServer::start(std::os::fd::AsFd::as_fd(&ns), resolver, zone);
        Self {
            _server: server,
            ns,
            dir,
        }
    }

    /// Makes `cmd` start in the pod's namespace with its `resolv.conf`.
    fn enter(&self, cmd: &mut Command) {
        let resolv = self.dir.join("resolv.conf");
        self.ns
            .enter_on_exec(cmd, resolv.to_str().expect("a UTF-8 temp path"));
    }

    /// `leash run --task id -- …` in the namespace, from the daemon's workspace (the
    /// task's writable one: not `/`, the VM guest's working directory).
    fn leash_run(&self, d: &DaemonGuard, id: &str) -> Command {
        let mut cmd = d.cli();
        self.enter(&mut cmd);
        cmd.args(["run", "--task", id, "--"]);
        cmd
    }

    /// The probe, untagged, inside the namespace.
    pub(super) fn untagged(&self, words: &str) -> String {
        let mut cmd = Command::new(probe());
        self.enter(&mut cmd);
        let o = cmd
            .args(words.split_whitespace())
            .output()
            .expect("run the probe in the namespace");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// A probe joined to task `id` (`leash run --task`) inside the namespace.
    pub(super) fn join(&self, d: &DaemonGuard, id: &str) -> TaskSession {
        self.join_with(d, id, &probe())
    }

    /// Another build of the probe (it reads the same commands) joined to task `id`.
    pub(super) fn join_with(&self, d: &DaemonGuard, id: &str, probe: &Path) -> TaskSession {
        let child = self
            .leash_run(d, id)
            .arg(probe)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn leash run in the namespace");
        TaskSession::from_child(child)
    }

    /// `argv` run once in task `id` inside the namespace: its stdout, trimmed.
    pub(super) fn run_once(&self, d: &DaemonGuard, id: &str, argv: &[&str]) -> String {
        let o = self
            .leash_run(d, id)
            .args(argv)
            .output()
            .expect("spawn leash run in the namespace");
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout).trim(),
            if o.status.success() {
                String::new()
            } else {
                format!(
                    " [{}: {}]",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                )
            }
        )
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
