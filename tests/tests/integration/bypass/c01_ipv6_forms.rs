//! Class 1, IPv6 forms of the same address: IPv6 itself, IPv4-mapped IPv6 on an
//! `AF_INET6` socket, and the unspecified addresses `0.0.0.0` and `::`.

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, spec};

use super::untagged;

#[test]
fn ipv6_loopback_and_ipv4_mapped() {
    let h = Harness::load();
    let l = Listeners::new();
    let Some(tcp6) = l.tcp6.as_ref() else {
        eprintln!("skipped: no IPv6 on loopback in this kernel/namespace");
        return;
    };
    let p6 = tcp6.local_addr().unwrap().port();
    let p4 = l.tcp4_port();
    let other = Listeners::new();
    let task = h.task(spec(
        &[],
        &[&format!("[::1]:{p6}"), &format!("127.0.0.1:{p4}")],
    ));

    assert_eq!(task.probe(&format!("connect tcp ::1 {p6}")), "ok");
    let o6 = other.tcp6.as_ref().unwrap().local_addr().unwrap().port();
    assert_eq!(task.probe(&format!("connect tcp ::1 {o6}")), EPERM);
    // ::ffff:127.0.0.1 on an AF_INET6 socket matches the IPv4 grant...
    assert_eq!(
        task.probe(&format!("connect tcp mapped:127.0.0.1 {p4}")),
        "ok"
    );
    // ...and is denied where the IPv4 grant does not reach.
    let o4 = other.tcp4_port();
    let ev = task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
        task.probe(&format!("connect tcp mapped:127.0.0.1 {o4}"))
    });
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Net {
            addr: "127.0.0.1".parse().unwrap(),
            port: o4,
            protocol: "tcp".into()
        },
        "reported as the IPv4 address it is"
    );
    assert_eq!(
        task.probe(&format!("sendto mapped:127.0.0.1 {}", other.udp4_port())),
        EPERM
    );
    assert_eq!(
        untagged(&format!("connect tcp mapped:127.0.0.1 {o4}")),
        "ok"
    );
}

#[test]
fn unspecified_destinations_are_denied_unless_granted() {
    let h = Harness::load();
    let l = Listeners::new();
    let port = l.tcp4_port();
    let task = h.task(spec(&[], &["127.0.0.1:1/tcp"]));
    // 0.0.0.0 and :: reach local listeners; they are addresses like any other.
    task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
        task.probe(&format!("connect tcp 0.0.0.0 {port}"))
    });
    task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
        task.probe(&format!("connect tcp :: {port}"))
    });
    assert_eq!(
        task.probe(&format!("sendto 0.0.0.0 {}", l.udp4_port())),
        EPERM
    );
    assert_eq!(untagged(&format!("connect tcp 0.0.0.0 {port}")), "ok");
}
