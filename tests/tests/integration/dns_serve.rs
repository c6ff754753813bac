//! Where the daemon serves a task's DNS (docs/dns.md): in every network namespace its
//! processes are in, each through that namespace's own resolver, and again right after
//! a restart, for the tasks it adopts, without any process attaching again. Each test
//! runs real dnsmasq servers in network namespaces it creates (skipped, with the reason
//! printed, where dnsmasq or `ip netns` is missing, as in the VM guest).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use harness::{
    daemon::{DaemonGuard, TaskSession, leash_bin, stderr, stdout},
    probe, wait_for,
};

/// A network namespace with dnsmasq at `resolver` on its loopback answering
/// `granted.test` with `answer`, and `/etc/netns/NS/resolv.conf` naming it. Removed on
/// drop.
struct Netns {
    ns: String,
    dnsmasq: Child,
    conf_dir: PathBuf,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn have(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Netns {
    fn new(tag: &str, resolver: &str, answer: &str) -> Option<Self> {
        harness::require_root();
        if !have("dnsmasq", &["--version"]) || !have("ip", &["netns", "list"]) {
            println!("skipped: dnsmasq or `ip netns` is missing (cargo xtask setup installs them)");
            return None;
        }
        let ns = format!("leash-dnss-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let conf_dir = PathBuf::from("/etc/netns").join(&ns);
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(
            conf_dir.join("resolv.conf"),
            format!("nameserver {resolver}\n"),
        )
        .unwrap();
        let dnsmasq = Command::new("ip")
            .args(["netns", "exec", &ns, "dnsmasq", "--keep-in-foreground"])
            .args(["--no-resolv", "--no-hosts", "--bind-interfaces"])
            .arg(format!("--listen-address={resolver}"))
            .args(["--port=53", "--local-ttl=60"])
            .args(["--user=root", "--pid-file="])
            .arg(format!("--address=/granted.test/{answer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base, or cargo xtask setup)");
        let me = Self {
            ns,
            dnsmasq,
            conf_dir,
        };
        let want = format!("answer {answer}");
        wait_for("dnsmasq answers in the namespace", || {
            me.untagged(&format!("dns udp {resolver} granted.test A")) == want
        });
        Some(me)
    }

    fn untagged(&self, words: &str) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(probe())
            .args(words.split_whitespace())
            .output()
            .expect("run the probe in the namespace");
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    }

    /// A probe joined to task `id` inside the namespace.
    fn join(&self, d: &DaemonGuard, id: &str) -> TaskSession {
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

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
        let _ = std::fs::remove_dir_all(&self.conf_dir);
    }
}

fn create(d: &DaemonGuard) -> String {
    let p = probe().display().to_string();
    let o = d.run(&[
        "task",
        "create",
        "--allow-exec",
        &p,
        "--allow-connect",
        "granted.test:443/tcp",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

/// The value of an unlabelled gauge in the daemon's metrics.
fn gauge(d: &DaemonGuard, name: &str) -> String {
    let (_, metrics) = d.metrics_get("/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
        .to_owned()
}

#[test]
fn a_task_in_two_network_namespaces_resolves_in_each_through_its_own_resolver() {
    // Two resolver addresses: each namespace's queries must go to its own.
    let (Some(a), Some(b)) = (
        Netns::new("a", "127.0.0.1", "10.77.1.1"),
        Netns::new("b", "127.0.0.2", "10.77.2.1"),
    ) else {
        return;
    };
    let d = DaemonGuard::start("dns-two-ns", "");
    let id = create(&d);
    let mut in_a = a.join(&d, &id);
    let mut in_b = b.join(&d, &id);
    // Each namespace's responder forwards to that namespace's dnsmasq, whichever
    // process attached last.
    assert_eq!(
        in_a.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.1.1"
    );
    assert_eq!(
        in_b.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.2.1"
    );
    assert_eq!(
        in_a.run("dns tcp 127.0.0.1 granted.test A"),
        "answer 10.77.1.1"
    );
    assert_eq!(in_a.run("dns udp 127.0.0.1 other.test A"), "rcode Refused");
    assert_eq!(in_b.run("dns udp 127.0.0.1 other.test A"), "rcode Refused");
    assert_eq!(gauge(&d, "leash_dns_responders"), "2");
    // The responder knows the task of a query, not its process: `pid` is null.
    let audit = std::fs::read_to_string(&d.audit_log).unwrap_or_default();
    assert!(
        audit.lines().any(|l| l.contains("\"kind\":\"dns\"")
            && l.contains("other.test")
            && l.contains("\"pid\":null")),
        "{audit}"
    );
    let (_, metrics) = d.metrics_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leash_dns_learned_addresses{") && l.ends_with(" 2")),
        "both answers learned: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leash_dns_upstream_seconds_count ") && !l.ends_with(" 0")),
        "{metrics}"
    );

    // The task ends: both responders stop (a sweep every 2 s), releasing the
    // namespaces.
    let o = d.run(&["task", "end", &id]);
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for("the responders of an ended task stop", || {
        gauge(&d, "leash_dns_responders") == "0"
    });
}

#[test]
fn a_restarted_daemon_serves_the_dns_of_the_tasks_it_adopts() {
    let (Some(a), Some(b)) = (
        Netns::new("ra", "127.0.0.1", "10.77.3.1"),
        Netns::new("rb", "127.0.0.2", "10.77.4.1"),
    ) else {
        return;
    };
    let mut d = DaemonGuard::start("dns-restart", "");
    let id = create(&d);
    let mut in_a = a.join(&d, &id);
    let mut in_b = b.join(&d, &id);
    assert_eq!(
        in_a.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.3.1"
    );
    assert_eq!(
        in_b.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.4.1"
    );
    let status = d.stop().expect("the daemon was running");
    assert!(status.success(), "{}", d.log());

    // A new daemon, and no process attaches again: both namespaces are served.
    d.spawn_binary(&leash_bin());
    wait_for("the new daemon serves both namespaces", || {
        d.metrics_get("/metrics")
            .1
            .lines()
            .any(|l| l == "leash_dns_responders 2")
    });
    assert_eq!(
        in_a.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.3.1"
    );
    assert_eq!(
        in_b.run("dns tcp 127.0.0.1 granted.test A"),
        "answer 10.77.4.1"
    );
    assert_eq!(in_b.run("dns udp 127.0.0.1 other.test A"), "rcode Refused");
    assert_eq!(in_a.run("resolve granted.test"), "answer 10.77.3.1");
}
