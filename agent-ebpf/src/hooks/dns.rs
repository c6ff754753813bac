//! DNS of tagged processes goes to the leash responder (docs/dns.md).
//!
//! `net.rs` hands every connect or send of a live task to port 53 to [`redirect`], which
//! rewrites the destination to the task's [`DnsTarget`] (a loopback address encoding its
//! DNS slot, at the responder's port) and remembers the original resolver by socket
//! cookie. The reverse hooks put that resolver back where the caller reads a peer
//! address (`recvfrom`'s source, `getpeername`), so resolvers that check the source of
//! an answer (glibc, musl) accept it. Untagged processes are never rewritten: the
//! reverse hooks only touch sockets that [`redirect`] recorded.

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, bpf_sock_addr},
    helpers::bpf_get_socket_cookie,
    macros::{cgroup_sock_addr, map},
    maps::{HashMap, LruHashMap},
    programs::SockAddrContext,
};
use leash_common::{
    DnsOrigin, DnsTarget, Reason,
    maps::{DNS_ORIGINS_CAPACITY, TASKS_CAPACITY},
};

#[map]
pub(crate) static DNS_TARGETS: HashMap<u64, DnsTarget> =
    HashMap::with_max_entries(TASKS_CAPACITY, BPF_F_NO_PREALLOC);

#[map]
pub(crate) static DNS_ORIGINS: LruHashMap<u64, DnsOrigin> =
    LruHashMap::with_max_entries(DNS_ORIGINS_CAPACITY, 0);

const IPPROTO_TCP: u32 = 6;
/// `::ffff:0:0/96` as the third `user_ip6` word, network order.
const MAPPED_WORD: u32 = u32::from_be(0x0000_ffff);
/// Reverse hooks must return 1.
const OK: i32 = 1;

/// Rewrites a live task's DNS destination to its responder. `Err` when it cannot (no
/// responder for the task, or an unconnected IPv6 send, which the kernel cannot turn
/// into the IPv4 loopback): the caller denies (fail closed).
#[inline(always)]
pub(crate) fn redirect(
    ctx: &SockAddrContext,
    task: u64,
    v6: bool,
    send: bool,
) -> Result<(), Reason> {
    // SAFETY: a plain copy of the value.
    let Some(target) = (unsafe { DNS_TARGETS.get(task) }).copied() else {
        return Err(Reason::DnsUnredirectable);
    };
    if v6 && send {
        return Err(Reason::DnsUnredirectable);
    }
    // SAFETY: the kernel hands a valid, writable context to the program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let port = if sa.protocol == IPPROTO_TCP {
        target.tcp_port
    } else {
        target.udp_port
    };
    let origin = origin_of(sa, v6, target.addr, u32::from(port));
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // No room or an error: the reply keeps the responder's address, which the caller's
    // resolver then ignores (the query fails, it is not let through).
    let _ = DNS_ORIGINS.insert(cookie, origin, 0);
    if v6 {
        // A dual-stack socket reaches the IPv4 loopback through its mapped form; an
        // IPV6_V6ONLY one fails with ENETUNREACH (it cannot reach the responder).
        sa.user_ip6[0] = 0;
        sa.user_ip6[1] = 0;
        sa.user_ip6[2] = MAPPED_WORD;
        sa.user_ip6[3] = target.addr;
    } else {
        sa.user_ip4 = target.addr;
    }
    sa.user_port = u32::from(port);
    Ok(())
}

/// Is `addr` (mapped form) at `port` (host order) the task's own responder? A send
/// there is the task's DNS too: an IPv6 socket connected to the mapped responder
/// address sends through the IPv4 path with the destination named, and a query sent
/// there directly is attributed to the same task anyway.
#[inline(always)]
pub(crate) fn is_own_target(task: u64, addr: &[u8; 16], port: u16) -> bool {
    if addr[12] != 127 || addr[10] != 0xff || addr[11] != 0xff {
        return false;
    }
    // SAFETY: a plain copy of the value.
    let Some(target) = (unsafe { DNS_TARGETS.get(task) }).copied() else {
        return false;
    };
    let t = target.addr.to_ne_bytes();
    addr[12] == t[0]
        && addr[13] == t[1]
        && addr[14] == t[2]
        && addr[15] == t[3]
        && (port == u16::from_be(target.udp_port) || port == u16::from_be(target.tcp_port))
}

#[inline(always)]
fn origin_of(sa: &bpf_sock_addr, v6: bool, target_addr: u32, target_port: u32) -> DnsOrigin {
    let addr = if v6 {
        [
            sa.user_ip6[0],
            sa.user_ip6[1],
            sa.user_ip6[2],
            sa.user_ip6[3],
        ]
    } else {
        [sa.user_ip4, 0, 0, 0]
    };
    DnsOrigin {
        addr,
        port: sa.user_port,
        target_addr,
        target_port,
        family: if v6 { 6 } else { 4 },
    }
}

/// Puts the original resolver back as the peer the caller reads, if this socket was
/// redirected and the peer is its responder. First test: the peer is an IPv4 loopback
/// address (one compare for everyone else).
#[inline(always)]
fn restore(ctx: &SockAddrContext, v6: bool) -> i32 {
    // SAFETY: the kernel hands a valid, writable context to the program.
    let sa = unsafe { &mut *ctx.sock_addr };
    let peer = if v6 {
        if sa.user_ip6[0] != 0 || sa.user_ip6[1] != 0 || sa.user_ip6[2] != MAPPED_WORD {
            return OK;
        }
        sa.user_ip6[3]
    } else {
        sa.user_ip4
    };
    // Network order in memory: the first byte is the top octet.
    if peer.to_ne_bytes()[0] != 127 {
        return OK;
    }
    // SAFETY: the helper takes the program's own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: a plain copy of the value.
    let Some(origin) = (unsafe { DNS_ORIGINS.get(cookie) }).copied() else {
        return OK;
    };
    if origin.target_addr != peer || origin.target_port != sa.user_port {
        return OK;
    }
    if v6 {
        if origin.family == 6 {
            sa.user_ip6[0] = origin.addr[0];
            sa.user_ip6[1] = origin.addr[1];
            sa.user_ip6[2] = origin.addr[2];
            sa.user_ip6[3] = origin.addr[3];
        } else {
            sa.user_ip6[3] = origin.addr[0];
        }
    } else {
        sa.user_ip4 = origin.addr[0];
    }
    sa.user_port = origin.port;
    OK
}

/// `BPF_CGROUP_UDP4_RECVMSG` (>= 5.2): the source `recvfrom`/`recvmsg` reports.
#[cgroup_sock_addr(recvmsg4)]
pub(crate) fn dns_recvmsg4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false)
}

/// `BPF_CGROUP_UDP6_RECVMSG` (>= 5.2), IPv4 sources in mapped form.
#[cgroup_sock_addr(recvmsg6)]
pub(crate) fn dns_recvmsg6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, true)
}

/// `BPF_CGROUP_INET4_GETPEERNAME` (>= 5.8).
#[cgroup_sock_addr(getpeername4)]
pub(crate) fn dns_getpeername4(ctx: SockAddrContext) -> i32 {
    restore(&ctx, false)
}

/// `BPF_CGROUP_INET6_GETPEERNAME` (>= 5.8).
#[cgroup_sock_addr(getpeername6)]
pub(crate) fn dns_getpeername6(ctx: SockAddrContext) -> i32 {
    restore(&ctx, true)
}
