//! Socket families of tagged processes: unix, TCP and UDP as usual (the latter governed
//! by `net.rs`); raw IP, packet, netlink and vsock only with a `socket:` grant (route
//! netlink also with a name grant, for the C library's resolver); every other family
//! never. Unix connects and sends reach only `unix:` granted paths.
//!
//! Raw IP is refused with EPERM by the cgroup `sock_create` hook, which the kernel
//! runs for inet sockets only. Unix names are refused with EPERM by the cgroup
//! `connect_unix`/`sendmsg_unix` hooks where the kernel has them (>= 6.7). Packet,
//! netlink and vsock sockets, and unix names on older kernels, have no cgroup hook,
//! so they are checked at syscall entry and a denied caller is killed before the call
//! returns: the call itself completes (docs/security.md). There, a unix connect or
//! send to a name not granted is decided at syscall exit, once its outcome is known:
//! one that failed (no such socket: glibc tries nscd's on every user lookup) harmed no
//! one and is let be; one that reached a socket kills the caller before it can use it.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes,
        bpf_probe_read_user, bpf_probe_read_user_buf, bpf_probe_read_user_str_bytes,
    },
    macros::{cgroup_sock, cgroup_sock_addr, map, tracepoint},
    maps::HashMap,
    programs::{SockAddrContext, SockContext, TracePointContext},
};
use leash_common::{
    Action, Reason, UnixGrant, UnixKey,
    grant::UNIX_PATH_LEN,
    maps::{PROCS_CAPACITY, UNIX_GRANTS_CAPACITY},
    task::{FAMILY_NETLINK, FAMILY_NETLINK_ROUTE, FAMILY_PACKET, FAMILY_RAW, FAMILY_VSOCK},
};

use super::{Decision, Gate, PROCS, current_tid, gate, kill_current, now_ns};

const AF_UNIX: u16 = 1;
const AF_INET: u32 = 2;
const AF_INET6: u32 = 10;
const AF_NETLINK: u32 = 16;
const AF_PACKET: u32 = 17;
const AF_VSOCK: u32 = 40;
const NETLINK_ROUTE: u32 = 0;
const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;
/// Low bits of `socket()`'s type argument; the rest are `SOCK_NONBLOCK` and `SOCK_CLOEXEC`.
const SOCK_TYPE_MASK: u64 = 0xf;
/// `sun_path` length.
const SUN_PATH: usize = leash_common::grant::SUN_PATH_LEN;
/// Named messages of one `sendmmsg` that are checked (docs/security.md).
const MMSG_CHECKED: u32 = 8;

#[map]
pub(crate) static UNIX_GRANTS: HashMap<UnixKey, UnixGrant> =
    HashMap::with_max_entries(UNIX_GRANTS_CAPACITY, 0);

/// An ungranted unix name a thread's current connect or send aims at, and why.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Pending {
    key: UnixKey,
    /// 1: granted, but in another mount namespace or root ([`Reason::UnixOtherView`]).
    other_view: u64,
}

/// Thread id → the [`Pending`] name of its current connect or send, from syscall entry
/// to exit.
#[map]
pub(crate) static UNIX_PENDING: HashMap<u32, Pending> =
    HashMap::with_max_entries(PROCS_CAPACITY, BPF_F_NO_PREALLOC);

const EINPROGRESS: i64 = 115;

/// Syscall tracepoint argument `i` (after the 8-byte header and the syscall number).
#[inline(always)]
pub(crate) fn sys_arg(ctx: &TracePointContext, i: usize) -> u64 {
    super::tp_field(ctx, 16 + 8 * i)
}

/// Decides for the calling thread, `None` when it is untagged. `check` sees the task's
/// granted family bits; closed tasks deny without it.
#[inline(always)]
pub(crate) fn judge(
    action: Action,
    now: u64,
    check: impl FnOnce(u64, u32) -> Result<(), Reason>,
) -> Option<Decision> {
    // SAFETY: PROCS values are plain u64 copies.
    match gate(unsafe { PROCS.get(current_tid()) }, now) {
        Gate::Untagged => None,
        Gate::Closed { task, slot, reason } => Some(Decision::closed(task, slot, action, reason)),
        Gate::Live { task, info } => Some(Decision::of(
            task,
            &info,
            action,
            check(task, info.families),
        )),
    }
}

/// Counts a family decision and reports denials (allowed ones are the hot path).
#[inline(always)]
fn report(d: &Decision, now: u64, family: u32, sock_type: u32, proto: u32) {
    d.count();
    if matches!(d.verdict, leash_common::Verdict::Allowed) {
        return;
    }
    let Some(mut entry) = d.event(now) else {
        return;
    };
    // SAFETY: `event` initialised every field.
    let ev = unsafe { entry.assume_init_mut() };
    ev.family = family as u8;
    ev.port = sock_type as u16;
    ev.proto = proto;
    entry.submit(0);
}

/// The grant bit a family needs; 0 = none can grant it.
#[inline(always)]
const fn family_bit(family: u32) -> u32 {
    match family {
        AF_PACKET => FAMILY_PACKET,
        AF_NETLINK => FAMILY_NETLINK,
        AF_VSOCK => FAMILY_VSOCK,
        _ => 0,
    }
}

/// `socket:` grants, and the route netlink socket a name grant implies.
#[inline(always)]
fn family_granted(families: u32, family: u32, proto: u32) -> Result<(), Reason> {
    if family == AF_NETLINK && proto == NETLINK_ROUTE && families & FAMILY_NETLINK_ROUTE != 0 {
        return Ok(());
    }
    bit_granted(families, family_bit(family))
}

#[inline(always)]
fn bit_granted(families: u32, bit: u32) -> Result<(), Reason> {
    if bit != 0 && families & bit == bit {
        Ok(())
    } else {
        Err(Reason::FamilyNotGranted)
    }
}

/// `BPF_CGROUP_INET_SOCK_CREATE` (>= 4.10): every inet socket a tagged process creates.
/// TCP and UDP pass (their destinations are checked by `net.rs`); raw sockets and
/// other IP protocols (ICMP, SCTP, ...) need `socket:raw`. Returning 0 fails
/// `socket()` with EPERM.
#[cgroup_sock(sock_create)]
pub(crate) fn family_sock_create(ctx: SockContext) -> i32 {
    // SAFETY: the kernel hands a valid context to the program.
    let sk = unsafe { &*ctx.sock };
    let (family, sock_type, proto) = (sk.family, sk.type_, sk.protocol);
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        // Decided where they are used, by destination (net.rs), with the task's state;
        // tested first, so the common socket costs no map lookup, tagged or not.
        return 1;
    }
    // SAFETY: PROCS values are plain u64 copies.
    if unsafe { PROCS.get(current_tid()) }.is_none() {
        return 1;
    }
    let now = now_ns();
    let Some(d) = judge(Action::Socket, now, |_, families| {
        bit_granted(families, FAMILY_RAW)
    }) else {
        return 1;
    };
    report(&d, now, family, sock_type, proto);
    i32::from(d.allows())
}

/// `socket(family, type, protocol)` at syscall entry: families other than unix and
/// inet. A denied caller is killed (the socket is created, and dies with it).
#[tracepoint]
pub(crate) fn family_socket(ctx: TracePointContext) -> u32 {
    let family = sys_arg(&ctx, 0) as u32;
    let sock_type = (sys_arg(&ctx, 1) & SOCK_TYPE_MASK) as u32;
    if socket_denied(family, sock_type, sys_arg(&ctx, 2) as u32) {
        kill_current();
    }
    0
}

/// Decides and reports `socket(family, ...)` for a tagged caller when the family is
/// neither unix nor inet; says whether it is denied.
#[inline(always)]
pub(crate) fn socket_denied(family: u32, sock_type: u32, proto: u32) -> bool {
    if family == u32::from(AF_UNIX) || family == AF_INET || family == AF_INET6 {
        return false;
    }
    // SAFETY: PROCS values are plain u64 copies.
    if unsafe { PROCS.get(current_tid()) }.is_none() {
        return false;
    }
    let now = now_ns();
    let Some(d) = judge(Action::Socket, now, |_, families| {
        family_granted(families, family, proto)
    }) else {
        return false;
    };
    report(&d, now, family, sock_type & SOCK_TYPE_MASK as u32, proto);
    !d.allows()
}

/// Builds the grant key of a user `sockaddr_un` of `len` bytes; `None` when `addr` is
/// not a unix address with a name (unnamed and non-unix addresses are not ours).
#[inline(always)]
fn unix_key(task: u64, addr: u64, len: u64) -> Option<UnixKey> {
    unix_key_in(task, addr, len, false)
}

/// Fills `dst` from `src`, in kernel or user memory.
#[inline(always)]
fn read(kernel: bool, src: *const u8, dst: &mut [u8]) -> Result<(), i32> {
    // SAFETY: probe reads into a stack buffer; a fault is an error.
    unsafe {
        if kernel {
            bpf_probe_read_kernel_buf(src, dst)
        } else {
            bpf_probe_read_user_buf(src, dst)
        }
    }
}

/// Copies the string at `src` into `dst`, stopping at its NUL or the end of `dst`.
#[inline(always)]
pub(crate) fn read_str(kernel: bool, src: *const u8, dst: &mut [u8]) -> Result<(), i32> {
    read_str_len(kernel, src, dst).map(|_| ())
}

/// [`read_str`], returning the string's length (without its NUL).
#[inline(always)]
pub(crate) fn read_str_len(kernel: bool, src: *const u8, dst: &mut [u8]) -> Result<usize, i32> {
    // SAFETY: bounded string probe reads into a stack buffer.
    unsafe {
        if kernel {
            bpf_probe_read_kernel_str_bytes(src, dst).map(<[u8]>::len)
        } else {
            bpf_probe_read_user_str_bytes(src, dst).map(<[u8]>::len)
        }
    }
}

/// [`unix_key`] of an address in kernel memory (`kernel`) or user memory. One key on
/// the stack and no copies: the lsm hooks share the 512-byte stack with the event.
#[inline(always)]
pub(crate) fn unix_key_in(task: u64, addr: u64, len: u64, kernel: bool) -> Option<UnixKey> {
    if addr == 0 || len <= 2 {
        return None;
    }
    let mut key = UnixKey {
        task,
        path: [0; UNIX_PATH_LEN],
    };
    // The family and the name's first byte (NUL: an abstract name).
    let mut head = [0u8; 3];
    let ok = read(kernel, addr as *const u8, &mut head).is_ok();
    if ok && u16::from_ne_bytes([head[0], head[1]]) != AF_UNIX {
        return None;
    }
    // Exactly the bytes the kernel will use: it stops at `len`, and a path name also
    // at its first NUL; the rest stays zero.
    let name = (len - 2).min(SUN_PATH as u64) as usize;
    let src = (addr + 2) as *const u8;
    let ok = ok
        && if head[2] == 0 {
            read(kernel, src, &mut key.path[..name]).is_ok()
        } else {
            read_str(kernel, src, &mut key.path[..=name]).is_ok()
        };
    if !ok {
        // A read can fail where the kernel's own copy would not (a page not yet
        // mapped in, a userfaultfd range): such an address is denied, never skipped.
        key.path = UNREADABLE;
    }
    Some(key)
}

/// The key of an address that could not be read: 0xff starts no granted name, and
/// [`unix_deny`] reports it as `argument_unreadable`.
const UNREADABLE: [u8; UNIX_PATH_LEN] = [0xff; UNIX_PATH_LEN];

/// Is `key` granted to its task (or to every task: task 0, the daemon's own socket),
/// and, for a path name, is the caller in the mount namespace and under the root it
/// was granted in? `Err` says why not.
#[inline(always)]
pub(crate) fn unix_granted(key: &UnixKey, now: u64) -> Result<(), Reason> {
    let live = |g: Option<&UnixGrant>| {
        g.copied()
            .filter(|g| g.expires_ns == 0 || now < g.expires_ns)
    };
    // SAFETY: the values are copied out at once.
    let own = live(unsafe { UNIX_GRANTS.get(key) });
    let mut any = *key;
    any.task = 0;
    // SAFETY: as above.
    let every = live(unsafe { UNIX_GRANTS.get(any) });
    if own.is_none() && every.is_none() {
        return Err(Reason::NotGranted);
    }
    if key.path[0] == 0 {
        // Abstract: no file, no mount namespace; scoped by the network namespace.
        return Ok(());
    }
    let Some(here) = super::unix_peer::current_scope() else {
        return Err(Reason::ReadFailed);
    };
    if own.is_some_and(|g| g.scope == here) || every.is_some_and(|g| g.scope == here) {
        Ok(())
    } else {
        Err(Reason::UnixOtherView)
    }
}

/// Decides a unix connect or send of the calling thread to the kernel's copy of an
/// address (`addr`, `len` bytes) for its `task`, before the kernel looks the name up;
/// says whether it is refused (counted and reported then).
#[inline(always)]
pub(crate) fn unix_refused(task: u64, action: Action, addr: u64, len: u64) -> bool {
    let Some(key) = unix_key_in(task, addr, len, true) else {
        return false;
    };
    let now = now_ns();
    // Ended and expired tasks get nothing: their grants are not consulted.
    let verdict = match gate(Some(&task), now) {
        Gate::Live { .. } => unix_granted(&key, now),
        _ => Err(Reason::NotGranted),
    };
    match verdict {
        Ok(()) => false,
        Err(reason) => unix_deny(&key, action, reason, now),
    }
}

/// The cgroup `sock_addr` hooks for unix sockets (Linux >= 6.7): `connect()` of stream
/// and datagram sockets, and `sendmsg()`/`sendto()`/`sendmmsg()` with an address, from
/// syscalls and `io_uring` alike. They run before the kernel looks the name up, and a
/// refusal fails the call with EPERM, so on such kernels the portable backend needs none
/// of the syscall tracepoints below for unix names.
///
/// aya 0.14 has no attach type for them: the macro's `connect4`/`sendmsg4` only name
/// the ELF section, and the loader (`unix_hooks.rs` in userspace) loads these two with
/// `BPF_CGROUP_UNIX_CONNECT`/`BPF_CGROUP_UNIX_SENDMSG`. The context is a
/// `bpf_sock_addr_kern` whose address the `bpf_sock_addr` view does not expose for
/// unix sockets, so it is read at the offsets the loader took from the kernel's BTF.
#[inline(always)]
fn unix_sock_addr(ctx: &SockAddrContext, action: Action) -> i32 {
    let Some(task) = super::current_task() else {
        return 1;
    };
    let o = super::offsets();
    let base = ctx.sock_addr.cast::<u8>().cast_const();
    // SAFETY: probe reads of the program's own context, at BTF offsets.
    let addr: u64 =
        unsafe { bpf_probe_read_kernel(base.wrapping_add(o.sock_addr_uaddr as usize).cast()) }
            .unwrap_or(0);
    let len: u32 =
        unsafe { bpf_probe_read_kernel(base.wrapping_add(o.sock_addr_uaddrlen as usize).cast()) }
            .unwrap_or(0);
    i32::from(!unix_refused(task, action, addr, u64::from(len)))
}

/// `BPF_CGROUP_UNIX_CONNECT`, see [`unix_sock_addr`].
#[cgroup_sock_addr(connect4)]
pub(crate) fn family_connect_unix(ctx: SockAddrContext) -> i32 {
    unix_sock_addr(&ctx, Action::Connect)
}

/// `BPF_CGROUP_UNIX_SENDMSG`, see [`unix_sock_addr`].
#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn family_sendmsg_unix(ctx: SockAddrContext) -> i32 {
    unix_sock_addr(&ctx, Action::Send)
}

/// At syscall entry: notes a unix connect or send to an ungranted name, for the exit
/// to decide on. Says whether it did. `addr` is `None` when the `msghdr` that holds it
/// could not be read: decided as an unreadable unix address (fail closed).
#[inline(always)]
fn unix_enter(addr: Option<u64>, len: u64) -> bool {
    let Some(task) = super::current_task() else {
        return false;
    };
    // A note left by a thread killed between entry and exit must not outlive it.
    let _ = UNIX_PENDING.remove(current_tid());
    let key = match addr {
        Some(addr) => unix_key(task, addr, len),
        None => Some(UnixKey {
            task,
            path: UNREADABLE,
        }),
    };
    let Some(key) = key else {
        return false;
    };
    let now = now_ns();
    // Ended and expired tasks get nothing: their grants are not consulted.
    let verdict = match gate(Some(&task), now) {
        Gate::Live { .. } => unix_granted(&key, now),
        _ => Err(Reason::NotGranted),
    };
    let Err(reason) = verdict else {
        return false;
    };
    let pending = Pending {
        key,
        other_view: u64::from(matches!(reason, Reason::UnixOtherView)),
    };
    if UNIX_PENDING.insert(current_tid(), pending, 0).is_err()
        && unix_deny(&key, Action::Connect, reason, now)
    {
        // No room to remember it: decided now, failing closed.
        kill_current();
    }
    true
}

/// At syscall exit: a noted call that reached a socket (`reached`) is denied, counted,
/// reported, and its caller killed before it returns to user space.
#[inline(always)]
fn unix_exit(action: Action, reached: bool) {
    let tid = current_tid();
    // SAFETY: the value is copied out at once.
    let Some(pending) = (unsafe { UNIX_PENDING.get(tid) }).copied() else {
        return;
    };
    let _ = UNIX_PENDING.remove(tid);
    let reason = if pending.other_view == 0 {
        Reason::NotGranted
    } else {
        Reason::UnixOtherView
    };
    if reached && unix_deny(&pending.key, action, reason, now_ns()) {
        kill_current();
    }
}

/// Counts and reports a unix connect or send to `key` that is not granted (`reason`);
/// says whether it is denied (audit mode allows).
#[inline(always)]
pub(crate) fn unix_deny(key: &UnixKey, action: Action, reason: Reason, now: u64) -> bool {
    let reason = if key.path[0] == UNREADABLE[0] {
        Reason::ArgumentUnreadable
    } else {
        reason
    };
    let Some(d) = judge(action, now, |_, _| Err(reason)) else {
        return false;
    };
    d.count();
    if let Some(mut entry) = d.event(now) {
        // SAFETY: `event` initialised every field.
        let ev = unsafe { entry.assume_init_mut() };
        ev.family = AF_UNIX as u8;
        let mut i = 0;
        while i < UNIX_PATH_LEN {
            ev.path[i] = key.path[i];
            i += 1;
        }
        if key.path[0] == 0 {
            ev.path[0] = b'@';
        }
        entry.submit(0);
    }
    !d.allows()
}

/// The return value of a `sys_exit_*` tracepoint.
#[inline(always)]
fn sys_ret(ctx: &TracePointContext) -> i64 {
    // `long ret` at offset 16 of every sys_exit record.
    super::tp_field(ctx, 16)
}

/// `connect(fd, addr, len)` entry: unix destinations (inet ones are decided by `net.rs`).
#[tracepoint]
pub(crate) fn family_connect(ctx: TracePointContext) -> u32 {
    let _ = unix_enter(Some(sys_arg(&ctx, 1)), sys_arg(&ctx, 2));
    0
}

/// `connect` exit: connected, or connecting (non-blocking), reached the socket.
#[tracepoint]
pub(crate) fn family_connect_exit(ctx: TracePointContext) -> u32 {
    let ret = sys_ret(&ctx);
    unix_exit(Action::Connect, ret == 0 || ret == -EINPROGRESS);
    0
}

/// `sendto(fd, buf, n, flags, addr, len)` entry.
#[tracepoint]
pub(crate) fn family_sendto(ctx: TracePointContext) -> u32 {
    let _ = unix_enter(Some(sys_arg(&ctx, 4)), sys_arg(&ctx, 5));
    0
}

/// `sendto` exit: a message went out.
#[tracepoint]
pub(crate) fn family_sendto_exit(ctx: TracePointContext) -> u32 {
    unix_exit(Action::Send, sys_ret(&ctx) >= 0);
    0
}

/// `sendmsg` exit.
#[tracepoint]
pub(crate) fn family_sendmsg_exit(ctx: TracePointContext) -> u32 {
    unix_exit(Action::Send, sys_ret(&ctx) >= 0);
    0
}

/// `sendmmsg` exit: at least one message went out.
#[tracepoint]
pub(crate) fn family_sendmmsg_exit(ctx: TracePointContext) -> u32 {
    unix_exit(Action::Send, sys_ret(&ctx) > 0);
    0
}

/// Notes the destination of one user `msghdr` (`msg_name` at 0, `msg_namelen` at 8).
/// A `msghdr` the guard cannot read (a page not faulted in yet) is noted as an
/// unreadable address: the kernel's own copy could still find a unix name there.
#[inline(always)]
fn msghdr_enter(msg: u64) -> bool {
    // SAFETY: probe reads of user memory.
    let name: Result<u64, _> = unsafe { bpf_probe_read_user(msg as *const u64) };
    let len: Result<u32, _> = unsafe { bpf_probe_read_user((msg + 8) as *const u32) };
    match (name, len) {
        (Ok(name), Ok(len)) => unix_enter(Some(name), u64::from(len)),
        // A NULL `msghdr` fails with EFAULT in the kernel too.
        _ if msg == 0 => false,
        _ => unix_enter(None, 0),
    }
}

/// `sendmsg(fd, msg, flags)` entry.
#[tracepoint]
pub(crate) fn family_sendmsg(ctx: TracePointContext) -> u32 {
    if super::current_task().is_some() {
        let _ = msghdr_enter(sys_arg(&ctx, 1));
    }
    0
}

/// `sendmmsg(fd, msgs, vlen, flags)` entry: the first [`MMSG_CHECKED`] messages
/// (64-byte `mmsghdr` each).
#[tracepoint]
pub(crate) fn family_sendmmsg(ctx: TracePointContext) -> u32 {
    if super::current_task().is_none() {
        return 0;
    }
    let msgs = sys_arg(&ctx, 1);
    let vlen = sys_arg(&ctx, 2) as u32;
    let mut i = 0;
    while i < MMSG_CHECKED {
        if i >= vlen {
            break;
        }
        if msghdr_enter(msgs + u64::from(i) * 64) {
            break;
        }
        i += 1;
    }
    0
}
