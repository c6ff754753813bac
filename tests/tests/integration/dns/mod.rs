//! Names as grants, enforced at DNS (docs/dns.md): a task in its own network namespace
//! resolves through its `resolv.conf` (a real DNS server), its DNS goes to the daemon's
//! responder whatever resolver it aims at, only granted names are answered, and their
//! answers become the addresses it may connect to, until their TTL ends.

mod libraries;
mod pod;
mod serve;

use std::{fmt::Write as _, time::Duration};

use harness::{
    EPERM,
    daemon::{DaemonGuard, stderr, stdout, task_json},
    probe,
};
use pod::Pod;

/// A granted address with nothing listening: the kernel lets the connect through.
const REFUSED: &str = "errno 111";

fn create(d: &DaemonGuard, connect: &[&str]) -> String {
    let p = probe().display().to_string();
    let mut args = vec!["task", "create", "--allow-exec", &p];
    for c in connect {
        args.extend(["--allow-connect", c]);
    }
    let o = d.run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
}

#[test]
fn granted_names_resolve_and_connect_everything_else_is_refused() {
    let pod = Pod::new("grant");
    let d = DaemonGuard::start("dns-grant", "");
    let id = create(
        &d,
        &[
            "granted.test:443/tcp",
            "*.wild.test:443/tcp",
            "alias.test:443/tcp",
        ],
    );
    let mut s = pod.join(&d, &id);

    // A granted name: answered, and its address becomes connectable.
    assert_eq!(
        s.run("connect tcp 10.77.0.1 443"),
        EPERM,
        "not before the query"
    );
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    assert_eq!(s.run("connect tcp 10.77.0.1 443"), REFUSED);
    assert_eq!(
        s.run("connect tcp 10.77.0.1 80"),
        EPERM,
        "the grant's port only"
    );
    // Through the C library, as programs resolve.
    assert_eq!(s.run("resolve granted.test"), "answer 10.77.0.1");

    // Not granted: refused, and its address stays denied.
    assert_eq!(s.run("dns udp 127.0.0.1 denied.test A"), "rcode Refused");
    assert_eq!(s.run("connect tcp 10.77.0.2 443"), EPERM);
    // A tunnel's query type, for a granted name.
    assert_eq!(s.run("dns udp 127.0.0.1 granted.test TXT"), "rcode Refused");

    // Wildcards cover the names below, not the apex.
    assert_eq!(
        s.run("dns udp 127.0.0.1 www.wild.test A"),
        "answer 10.77.0.3"
    );
    assert_eq!(s.run("connect tcp 10.77.0.3 443"), REFUSED);
    assert_eq!(s.run("dns udp 127.0.0.1 wild.test A"), "rcode Refused");
    assert_eq!(
        s.run("dns udp 127.0.0.1 WWW.Wild.TEST A"),
        "answer 10.77.0.3"
    );

    // A CNAME chain: the address at its end is granted.
    assert_eq!(s.run("dns udp 127.0.0.1 alias.test A"), "answer 10.77.0.5");
    assert_eq!(s.run("connect tcp 10.77.0.5 443"), REFUSED);

    // Over TCP, unconnected UDP, and aimed at another resolver: all reach leash.
    assert_eq!(
        s.run("dns tcp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    assert_eq!(
        s.run("dns udpto 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    assert_eq!(s.run("dns udp 10.9.9.9 denied.test A"), "rcode Refused");
    assert_eq!(s.run("dns tcp 192.0.2.53 denied.test A"), "rcode Refused");
    assert_eq!(s.run("dns udp 10.9.9.9 granted.test A"), "answer 10.77.0.1");
    // The caller sees the resolver it aimed at, not the responder.
    assert_eq!(
        s.run("dns-peer 127.0.0.1 granted.test"),
        "peer 127.0.0.1:53 from 127.0.0.1:53"
    );

    // Malformed: FORMERR, and the next good query is still answered.
    assert_eq!(
        s.run("dns-raw udp 127.0.0.1 abcd0100000100"),
        "rcode FormErr"
    );
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );

    // Untagged processes in the same namespace reach the resolver as before.
    assert_eq!(
        pod.untagged("dns udp 127.0.0.1 denied.test A"),
        "answer 10.77.0.2"
    );

    // Reported: a dns event naming the refused name, the learned addresses in the task.
    let audit = std::fs::read_to_string(&d.audit_log).unwrap_or_default();
    assert!(
        audit.lines().any(|l| l.contains("\"kind\":\"dns\"")
            && l.contains("denied.test")
            && l.contains("\"verdict\":\"denied\"")),
        "{audit}"
    );
    let learned = task_json(&d, &id)["learned"].to_string();
    assert!(learned.contains("10.77.0.1"), "{learned}");
    let (_, metrics) = d.metrics_get("/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leash_decisions_total{")
                && l.contains("action=\"dns\"")
                && l.contains("verdict=\"denied\"")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn learned_addresses_end_with_their_ttl() {
    let pod = Pod::new("ttl");
    let d = DaemonGuard::start("dns-ttl", "dns:\n  min_ttl: 2s\n");
    let id = create(&d, &["granted.test:443/tcp"]);
    let mut s = pod.join(&d, &id);
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    assert_eq!(s.run("connect tcp 10.77.0.1 443"), REFUSED);
    // The pod's server answers with TTL 1 s; the responder keeps an address at least
    // `dns.min_ttl` (2 s here).
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(s.run("connect tcp 10.77.0.1 443"), EPERM, "expired");
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    assert_eq!(s.run("connect tcp 10.77.0.1 443"), REFUSED, "learned again");
}

/// A refresh rewrites only that host entry (no full sync per answer): the kernel's
/// expiry must still move with it, or the address would be denied at the first one.
#[test]
fn a_later_answer_moves_the_expiry_in_the_kernel() {
    let pod = Pod::new("refresh");
    let d = DaemonGuard::start("dns-refresh", "dns:\n  min_ttl: 4s\n");
    let id = create(&d, &["granted.test:443/tcp"]);
    let mut s = pod.join(&d, &id);
    let first = std::time::Instant::now();
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    std::thread::sleep(Duration::from_secs(2));
    let second = std::time::Instant::now();
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    // Past the first answer's expiry, before the second's.
    std::thread::sleep(Duration::from_millis(4_500).saturating_sub(first.elapsed()));
    let got = s.run("connect tcp 10.77.0.1 443");
    assert!(
        second.elapsed() < Duration::from_millis(3_800),
        "too slow to tell: {:?} after the second answer",
        second.elapsed()
    );
    assert_eq!(
        got, REFUSED,
        "the second answer's expiry holds in the kernel"
    );
    std::thread::sleep(Duration::from_millis(4_500).saturating_sub(second.elapsed()));
    assert_eq!(s.run("connect tcp 10.77.0.1 443"), EPERM, "expired");
}

#[test]
fn ipv6_resolvers_and_a_flood() {
    let pod = Pod::new("v6");
    let d = DaemonGuard::start("dns-v6", "");
    let id = create(&d, &["granted.test:443/tcp"]);
    let mut s = pod.join(&d, &id);
    // A dual-stack IPv6 socket aimed at an IPv6 resolver reaches the responder.
    assert_eq!(s.run("dns udp ::1 granted.test A"), "answer 10.77.0.1");
    assert_eq!(s.run("dns tcp ::1 granted.test A"), "answer 10.77.0.1");
    // An unconnected IPv6 send cannot be redirected by the kernel: denied, not let out.
    assert_eq!(s.run("dns udpto ::1 granted.test A"), EPERM);

    // A flood is dropped past the task's rate, reported, and the responder recovers.
    assert_eq!(s.run("dns-flood 127.0.0.1 2000"), "ok");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    let audit = std::fs::read_to_string(&d.audit_log).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"kind\":\"dns\"") && l.contains("rate_limited")),
        "{audit}"
    );
}

/// A query for `granted.test` A (ID abcd, RD), as hex: followed by `junk` zero bytes, or
/// with an EDNS padding option of `junk` bytes (a well-formed message that large).
fn big_query(junk: usize, edns: bool) -> String {
    let mut hex = String::from(if edns {
        "abcd01000001000000000001"
    } else {
        "abcd01000001000000000000"
    });
    hex.push_str("076772616e74656404746573740000010001");
    if edns {
        // OPT: root owner, type 41, payload 4096, no extended flags, then option 12.
        let _ = write!(hex, "0000291000000000{:04x}000c{junk:04x}", junk + 4);
    }
    hex.push_str(&"00".repeat(junk));
    hex
}

#[test]
fn rotating_answers_and_oversized_messages() {
    let pod = Pod::new("rotate");
    let d = DaemonGuard::start("dns-rotate", "");
    let id = create(
        &d,
        &[
            "rotate.test:443/tcp",
            "big.test:443/tcp",
            "granted.test:443/tcp",
        ],
    );
    let mut s = pod.join(&d, &id);

    // A CDN answers a different address each time: every one answered is connectable.
    let rotation = ["10.77.1.1", "10.77.1.2", "10.77.1.3"];
    for ip in rotation {
        assert_eq!(
            s.run(&format!("connect tcp {ip} 443")),
            EPERM,
            "{ip} before"
        );
    }
    let mut answered: Vec<String> = (0..3)
        .map(|_| s.run("dns udp 127.0.0.1 rotate.test A"))
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        rotation.map(|ip| format!("answer {ip}")),
        "one address per answer, each in turn"
    );
    for ip in rotation {
        assert_eq!(
            s.run(&format!("connect tcp {ip} 443")),
            REFUSED,
            "{ip} after"
        );
    }

    // An answer too large for 512 bytes of UDP: relayed truncated, then whole over TCP,
    // and every address in it is learned (nothing listens nor routes there: errno 101).
    let last = format!("10.78.0.{}", pod::BIG);
    assert_eq!(s.run(&format!("connect tcp {last} 443")), EPERM);
    assert_eq!(s.run("dns udp 127.0.0.1 big.test A"), "truncated");
    let whole = s.run("dns tcp 127.0.0.1 big.test A");
    assert_eq!(whole.split(',').count(), usize::from(pod::BIG), "{whole}");
    assert_eq!(s.run(&format!("connect tcp {last} 443")), "errno 101");

    // Oversized queries, over UDP and TCP, with trailing bytes or an EDNS option that
    // large: each gets an answer or an error code (never silence), and the next good
    // query is answered.
    for (proto, size, edns) in [
        ("udp", 60_000, false),
        ("tcp", 65_000, false),
        ("udp", 60_000, true),
        ("tcp", 65_000, true),
    ] {
        let out = s.run(&format!(
            "dns-raw {proto} 127.0.0.1 {}",
            big_query(size, edns)
        ));
        assert!(
            out == "answer 10.77.0.1" || out.starts_with("rcode "),
            "{proto} {size} bytes (EDNS {edns}): {out}"
        );
    }
    assert_eq!(
        s.run("dns udp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
    assert_eq!(
        s.run("dns tcp 127.0.0.1 granted.test A"),
        "answer 10.77.0.1"
    );
}
