//! Class 5, other families: raw IP, packet, netlink and vsock sockets need a `socket:`
//! grant (a name grant implies route netlink alone); unix sockets are reached only at
//! `unix:` granted names.

use std::os::unix::net::{UnixDatagram, UnixListener};

use harness::{Action, Reason};
use harness::{EPERM, Harness, Scratch, refused, spec};

use super::untagged;

const AF_INET: i32 = libc::AF_INET;
const AF_PACKET: i32 = libc::AF_PACKET;
const AF_NETLINK: i32 = libc::AF_NETLINK;
const AF_VSOCK: i32 = libc::AF_VSOCK;

#[test]
fn raw_ip_sockets_are_refused_unless_granted() {
    let h = Harness::load();
    let task = h.task(spec(&[], &[]));
    let raw = format!("socket {AF_INET} {} {}", libc::SOCK_RAW, libc::IPPROTO_ICMP);
    let ev = task.assert_denied(Action::Socket, Reason::FamilyNotGranted, EPERM, || {
        task.probe(&raw)
    });
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Socket {
            family: AF_INET as u8,
            socket_type: libc::SOCK_RAW as u16,
            protocol: libc::IPPROTO_ICMP as u32
        }
    );
    // TCP and UDP sockets are created as usual (their destinations are checked).
    assert_eq!(
        task.probe(&format!("socket {AF_INET} {} 0", libc::SOCK_STREAM)),
        "ok"
    );
    assert_eq!(
        task.probe(&format!("socket {AF_INET} {} 0", libc::SOCK_DGRAM)),
        "ok"
    );

    let granted = h.task(spec(&[], &["socket:raw"]));
    assert_eq!(granted.probe(&raw), "ok");
    assert_eq!(untagged(&raw), "ok");
}

#[test]
fn packet_netlink_and_vsock_sockets_stop_the_caller_unless_granted() {
    let h = Harness::load();
    let denied = refused(h.backend());
    let task = h.task(spec(&[], &[]));
    let packet = format!("socket {AF_PACKET} {} 0", libc::SOCK_RAW);
    let netlink = format!("socket {AF_NETLINK} {} 0", libc::SOCK_RAW);
    let vsock = format!("socket {AF_VSOCK} {} 0", libc::SOCK_STREAM);
    let ev = task.assert_denied(Action::Socket, Reason::FamilyNotGranted, denied, || {
        task.probe(&packet)
    });
    assert!(matches!(
        ev.target,
        leash::kernel::events::Target::Socket { family: 17, .. }
    ));
    task.assert_denied(Action::Socket, Reason::FamilyNotGranted, denied, || {
        task.probe(&netlink)
    });
    task.assert_denied(Action::Socket, Reason::FamilyNotGranted, denied, || {
        task.probe(&vsock)
    });
    // A family no grant can name (AF_ALG).
    task.assert_denied(Action::Socket, Reason::FamilyNotGranted, denied, || {
        task.probe(&format!(
            "socket {} {} 0",
            libc::AF_ALG,
            libc::SOCK_SEQPACKET
        ))
    });
    // Unix sockets themselves are fine.
    assert_eq!(
        task.probe(&format!("socket {} {} 0", libc::AF_UNIX, libc::SOCK_STREAM)),
        "ok"
    );

    let granted = h.task(spec(&[], &["socket:netlink", "socket:packet"]));
    assert_eq!(granted.probe(&netlink), "ok");
    assert_eq!(granted.probe(&packet), "ok");
    assert_eq!(untagged(&netlink), "ok");
    assert_eq!(untagged(&packet), "ok");
}

/// A name grant implies the route netlink socket the C library's resolver opens to sort
/// an answer of several addresses, and no other netlink protocol.
#[test]
fn a_name_grant_implies_route_netlink_and_nothing_else() {
    let h = Harness::load();
    let denied = refused(h.backend());
    let netlink = |proto: i32| format!("socket {AF_NETLINK} {} {proto}", libc::SOCK_RAW);
    let named = h.task(spec(&[], &["*.example.test:443/tcp"]));
    assert_eq!(named.probe(&netlink(libc::NETLINK_ROUTE)), "ok");
    for proto in [
        libc::NETLINK_GENERIC,
        libc::NETLINK_AUDIT,
        libc::NETLINK_NETFILTER,
    ] {
        named.assert_denied(Action::Socket, Reason::FamilyNotGranted, denied, || {
            named.probe(&netlink(proto))
        });
    }
    // An address grant implies nothing.
    let addressed = h.task(spec(&[], &["127.0.0.1:443/tcp"]));
    addressed.assert_denied(Action::Socket, Reason::FamilyNotGranted, denied, || {
        addressed.probe(&netlink(libc::NETLINK_ROUTE))
    });
}

#[test]
fn unix_sockets_only_at_granted_names() {
    let h = Harness::load();
    let denied = h.unix_refused();
    let s = Scratch::new("unix");
    let granted = s.path("granted.sock");
    let other = s.path("other.sock");
    let _l1 = UnixListener::bind(&granted).unwrap();
    let _l2 = UnixListener::bind(&other).unwrap();
    let dgram = s.path("dgram.sock");
    let _d = UnixDatagram::bind(&dgram).unwrap();
    let abstract_name = format!("@leash-bypass-{}", std::process::id());
    let _a = UnixListener::bind_addr(
        &<std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            &abstract_name.as_bytes()[1..],
        )
        .unwrap(),
    )
    .unwrap();
    // io_uring needs its own grant (c21): granted here, its unix connects still are not.
    let task = h.task(spec(&[], &[&format!("unix:{granted}"), "socket:io_uring"]));

    assert_eq!(task.probe(&format!("unix-connect {granted}")), "ok");
    let ev = task.assert_denied(Action::Connect, Reason::NotGranted, denied, || {
        task.probe(&format!("unix-connect {other}"))
    });
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Unix {
            path: other.clone()
        }
    );
    // A name with no socket behind it: the portable syscall tracepoints decide once
    // the call has failed and let it be (glibc tries nscd's socket on every user
    // lookup); the lsm and cgroup unix hooks run before the lookup and refuse it like
    // any other name.
    let absent = format!("unix-connect {}", s.path("absent.sock"));
    if denied == EPERM {
        task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
            task.probe(&absent)
        });
    } else {
        assert_eq!(task.probe(&absent), "errno 2");
    }
    let ev = task.assert_denied(Action::Connect, Reason::NotGranted, denied, || {
        task.probe(&format!("unix-connect {abstract_name}"))
    });
    assert_eq!(
        ev.target,
        leash::kernel::events::Target::Unix {
            path: abstract_name.clone()
        }
    );
    for op in ["unix-sendto", "unix-sendmsg", "unix-sendmmsg"] {
        task.assert_denied(Action::Send, Reason::NotGranted, denied, || {
            task.probe(&format!("{op} {dgram}"))
        });
    }
    // Where the kernel decides per call and message (lsm, cgroup unix hooks), io_uring
    // connects and a sendmmsg's later messages are refused too; the syscall
    // tracepoints see neither (docs/security.md).
    if denied == EPERM {
        task.assert_denied(Action::Connect, Reason::NotGranted, EPERM, || {
            task.probe(&format!("unix-uring-connect {other}"))
        });
        let granted_dgram = s.path("granted-dgram.sock");
        let _g = UnixDatagram::bind(&granted_dgram).unwrap();
        let tail = h.task(spec(&[], &[&format!("unix:{granted_dgram}")]));
        tail.assert_denied(Action::Send, Reason::NotGranted, "sent 8", || {
            tail.probe(&format!("unix-sendmmsg-tail {granted_dgram} {dgram}"))
        });
        // A fresh receiver: the first holds eight datagrams already.
        let fresh = s.path("fresh-dgram.sock");
        let _f = UnixDatagram::bind(&fresh).unwrap();
        assert_eq!(
            untagged(&format!("unix-sendmmsg-tail {fresh} {dgram}")),
            "sent 9"
        );
    }

    let both = h.task(spec(
        &[],
        &[&format!("unix:{abstract_name}"), &format!("unix:{dgram}")],
    ));
    assert_eq!(both.probe(&format!("unix-connect {abstract_name}")), "ok");
    assert_eq!(both.probe(&format!("unix-sendto {dgram}")), "ok");
    assert_eq!(untagged(&format!("unix-connect {other}")), "ok");
    assert_eq!(untagged(&format!("unix-sendmsg {dgram}")), "ok");
}

/// A `msghdr` in memory the portable syscall tracepoints cannot read (a page not
/// faulted in yet, a userfaultfd range) still names a unix socket for the kernel's own
/// copy: before Linux 6.7, where those tracepoints decide, the send is stopped as
/// `argument_unreadable`; the lsm and cgroup unix hooks read the kernel's copy and
/// refuse the name itself.
#[test]
fn an_unreadable_msghdr_is_no_way_to_a_unix_name() {
    let h = Harness::load();
    let s = Scratch::new("unix-unpaged");
    let dgram = s.path("dgram.sock");
    let _d = UnixDatagram::bind(&dgram).unwrap();
    let task = h.task(spec(&[], &[]));
    let denied = h.unix_refused();
    let reason = if denied == EPERM {
        Reason::NotGranted
    } else {
        Reason::ArgumentUnreadable
    };
    for mode in ["file", "uffd"] {
        let attempt = format!("unpaged {mode} sendmsg-unix {dgram}");
        task.assert_denied(Action::Send, reason, denied, || task.probe(&attempt));
        assert_eq!(untagged(&attempt), "ok", "untagged {mode}");
    }
}
