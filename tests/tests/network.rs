//! Network enforcement on the real kernel: connect and unconnected sends of a tagged
//! process go only where its grants say; untagged processes are unaffected.

use harness::{EPERM, Harness, Listeners, spec, untagged};

#[test]
fn tcp_connect_to_granted_port_only() {
    let h = Harness::load();
    let l = Listeners::new();
    let granted = l.tcp4_port();
    let other = Listeners::new();
    let task = h.task(spec(&[], &[&format!("127.0.0.1:{granted}/tcp")]));

    assert_eq!(
        task.probe(&format!("connect tcp 127.0.0.1 {granted}")),
        "ok"
    );
    let denied_port = other.tcp4_port();
    assert_eq!(
        task.probe(&format!("connect tcp 127.0.0.1 {denied_port}")),
        EPERM
    );
    assert_eq!(
        untagged(&format!("connect tcp 127.0.0.1 {denied_port}")),
        "ok"
    );
}

#[test]
fn cidr_and_port_range_grants() {
    let h = Harness::load();
    let l = Listeners::new();
    let port = l.tcp4_port();
    let task = h.task(spec(
        &[],
        &[&format!(
            "127.0.0.0/8:{}-{}/tcp",
            port.saturating_sub(1),
            port.saturating_add(1)
        )],
    ));
    // 127.0.0.0/8 all routes to loopback, so any 127.x address reaches the listener
    // only if it binds the wildcard; ours binds 127.0.0.1, so use it for the "ok" case
    // and other 127.x addresses for the match-but-refused case.
    assert_eq!(task.probe(&format!("connect tcp 127.0.0.1 {port}")), "ok");
    assert_eq!(
        task.probe(&format!("connect tcp 127.1.2.3 {port}")),
        "errno 111",
        "granted, so the kernel tries (ECONNREFUSED)"
    );
    let outside = if port > 2 { port - 2 } else { port + 2 };
    assert_eq!(
        task.probe(&format!("connect tcp 127.0.0.1 {outside}")),
        EPERM,
        "port outside the range"
    );
}

#[test]
fn network_decisions_are_counted_and_denials_reported() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let task = h.task(spec(
        &[],
        &[
            &format!("127.0.0.1:{}", l.tcp4_port()),
            &format!("127.0.0.1:{}/udp", l.udp4_port()),
        ],
    ));
    let before = task.decisions();
    let mut s = task.session();
    for _ in 0..4 {
        assert_eq!(
            s.run(&format!("connect tcp 127.0.0.1 {}", l.tcp4_port())),
            "ok"
        );
    }
    for _ in 0..3 {
        assert_eq!(
            s.run(&format!("connect tcp 127.0.0.1 {}", other.tcp4_port())),
            EPERM
        );
    }
    for _ in 0..2 {
        assert_eq!(s.run(&format!("sendto 127.0.0.1 {}", l.udp4_port())), "ok");
    }
    assert_eq!(
        s.run(&format!("sendto 127.0.0.1 {}", other.udp4_port())),
        EPERM
    );
    let after = task.decisions();
    let d = |a: usize, v: usize| after[a][v] - before[a][v];
    assert_eq!(
        (d(1, 0), d(1, 1), d(1, 2)),
        (4, 3, 0),
        "connect allowed/denied/audited"
    );
    assert_eq!(
        (d(2, 0), d(2, 1), d(2, 2)),
        (2, 1, 0),
        "send allowed/denied/audited"
    );

    let events = task.events(4);
    let net: Vec<_> = events.iter().filter(|e| e.kind != "exec").collect();
    assert_eq!(
        net.len(),
        4,
        "one event per denial, none for allowed network calls: {net:?}"
    );
    let connect = net.iter().find(|e| e.kind == "connect").unwrap();
    assert_eq!(connect.verdict, "denied");
    assert_eq!(connect.pid, s.pid());
    assert_eq!(
        connect.target,
        leash::events::Target::Net {
            addr: "127.0.0.1".parse().unwrap(),
            port: other.tcp4_port(),
            protocol: "tcp".into()
        }
    );
    assert!(
        net.iter()
            .any(|e| e.kind == "send" && e.reason == "not_granted")
    );
}
