//! Class 4, unconnected datagrams: UDP `sendto`, `sendmsg` and `sendmmsg` with a
//! destination and no connect (how QUIC and DNS send).

use harness::{Action, Reason};
use harness::{EPERM, Harness, Listeners, spec};

use super::untagged;

#[test]
fn udp_connected_and_unconnected_sends() {
    let h = Harness::load();
    let l = Listeners::new();
    let other = Listeners::new();
    let granted = l.udp4_port();
    let denied = other.udp4_port();
    let task = h.task(spec(&[], &[&format!("127.0.0.1:{granted}/udp")]));

    assert_eq!(
        task.probe(&format!("connect udp 127.0.0.1 {granted}")),
        "ok"
    );
    assert_eq!(
        task.probe(&format!("connect udp 127.0.0.1 {denied}")),
        EPERM
    );
    assert_eq!(task.probe(&format!("sendto 127.0.0.1 {granted}")), "ok");
    task.assert_denied(Action::Send, Reason::NotGranted, EPERM, || {
        task.probe(&format!("sendto 127.0.0.1 {denied}"))
    });
    task.assert_denied(Action::Send, Reason::NotGranted, EPERM, || {
        task.probe(&format!("sendmmsg 127.0.0.1 {denied}"))
    });
    // The grant is UDP only: TCP to the same port is denied.
    assert_eq!(
        task.probe(&format!("connect tcp 127.0.0.1 {granted}")),
        EPERM
    );

    assert_eq!(untagged(&format!("sendto 127.0.0.1 {denied}")), "ok");
    assert_eq!(untagged(&format!("sendmmsg 127.0.0.1 {denied}")), "ok");
}
