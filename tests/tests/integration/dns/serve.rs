//! Where the daemon serves a task's DNS (docs/dns.md): in every network namespace its
//! processes are in, each through that namespace's own resolver, and again right after
//! a restart, for the tasks it adopts, without any process attaching again. Each pod is
//! a namespace with its own resolver at its own address.

use std::net::{IpAddr, Ipv4Addr};

use harness::{
    daemon::{DaemonGuard, leash_bin, stderr},
    dns_server::Zone,
    wait_for,
};

use super::pod::Pod;

/// A pod whose resolver at `resolver` answers `granted.test` with `answer`.
fn pod(tag: &str, resolver: [u8; 4], answer: [u8; 4]) -> Pod {
    let (resolver, answer) = (Ipv4Addr::from(resolver), Ipv4Addr::from(answer));
    let zone = Zone::new(60).addrs("granted.test.", &[IpAddr::V4(answer)]);
    let pod = Pod::with(tag, resolver, zone, &[]);
    let want = format!("answer {answer}");
    wait_for("the pod's resolver answers", || {
        pod.untagged(&format!("dns udp {resolver} granted.test A")) == want
    });
    pod
}

fn create(d: &DaemonGuard) -> String {
    super::create(d, &["granted.test:443/tcp"])
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
    let a = pod("a", [127, 0, 0, 1], [10, 77, 1, 1]);
    let b = pod("b", [127, 0, 0, 2], [10, 77, 2, 1]);
    let d = DaemonGuard::start("dns-two-ns", "");
    let id = create(&d);
    let mut in_a = a.join(&d, &id);
    let mut in_b = b.join(&d, &id);
    // Each namespace's responder forwards to that namespace's resolver, whichever
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
    let a = pod("ra", [127, 0, 0, 1], [10, 77, 3, 1]);
    let b = pod("rb", [127, 0, 0, 2], [10, 77, 4, 1]);
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
