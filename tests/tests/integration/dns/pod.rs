//! A pod-like network namespace with its own resolver: dnsmasq on its loopback, serving
//! the names of [`ZONE`], and `/etc/netns/NS/resolv.conf` naming it; a task's probe runs
//! inside through `ip netns exec`. Everything is removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use harness::{
    daemon::{DaemonGuard, TaskSession, leash_bin},
    probe, wait_for,
};

/// Names dnsmasq answers (`--address` also answers every name below its own).
pub(super) const ZONE: &[&str] = &[
    "--address=/granted.test/10.77.0.1",
    "--address=/denied.test/10.77.0.2",
    "--address=/wild.test/10.77.0.4",
    "--address=/www.wild.test/10.77.0.3",
    "--host-record=real.test,10.77.0.5",
    "--cname=alias.test,real.test",
    "--txt-record=granted.test,tunnel",
];

pub(super) struct Pod {
    pub(super) ns: String,
    dnsmasq: Child,
    netns_dir: PathBuf,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Pod {
    /// A pod, or `None` (with the reason printed) where dnsmasq or `ip netns` is missing:
    /// the VM guest has only busybox.
    pub(super) fn new(tag: &str) -> Option<Self> {
        harness::require_root();
        let have = |cmd: &str, args: &[&str]| {
            Command::new(cmd)
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !have("dnsmasq", &["--version"]) || !have("ip", &["netns", "list"]) {
            println!("skipped: dnsmasq or `ip netns` is missing (cargo xtask setup installs them)");
            return None;
        }
        let ns = format!("leash-dns-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        for a in [
            "10.77.0.1/32",
            "10.77.0.2/32",
            "10.77.0.3/32",
            "10.77.0.5/32",
        ] {
            ip(&["-n", &ns, "addr", "add", a, "dev", "lo"]);
        }
        let netns_dir = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&netns_dir).unwrap();
        std::fs::write(netns_dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        let dnsmasq = Command::new("ip")
            .args(["netns", "exec", &ns, "dnsmasq", "--keep-in-foreground"])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--port=53", "--local-ttl=1"])
            .args(["--user=root", "--pid-file="])
            .args(ZONE)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base, or cargo xtask setup)");
        let pod = Self {
            ns,
            dnsmasq,
            netns_dir,
        };
        wait_for("dnsmasq answers in the namespace", || {
            pod.untagged("dns udp 127.0.0.1 granted.test A") == "answer 10.77.0.1"
        });
        Some(pod)
    }

    /// The probe, untagged, inside the namespace.
    pub(super) fn untagged(&self, words: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(probe())
            .args(words.split_whitespace())
            .output()
            .expect("run the probe in the namespace");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// A probe joined to task `id` (`leash run --task`) inside the namespace.
    pub(super) fn join(&self, d: &DaemonGuard, id: &str) -> TaskSession {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(leash_bin())
            .env("LEASH_SOCKET", &d.socket)
            .args(["run", "--task", id, "--"])
            .arg(probe())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn leash run in the namespace");
        TaskSession::from_child(child)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(&self.netns_dir);
    }
}
