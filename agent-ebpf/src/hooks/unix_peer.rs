//! A unix grant means the socket that was granted, not whatever its name names later.
//!
//! Both backends: a unix path name holds only for a caller in the mount namespace and
//! under the root it was granted in ([`current_scope`], checked in `family.rs`); elsewhere the same bytes can name
//! another socket (a bind mount that landed in a namespace the task shares, `chroot`
//! by a process sharing the caller's `fs_struct`).
//!
//! The lsm backend also decides on the peer: `unix_stream_connect` and `unix_may_send`
//! see the socket a connect or send reaches, after the name lookup, and refuse it
//! unless its file (inode, `s_dev`) is one the daemon recorded for the task when it
//! made the grant (`UNIX_SOCKETS`). So a symlink or hard link put on a granted path,
//! or a directory renamed above it, reaches nothing. Abstract and unnamed peers have
//! no file: they are decided by name at `socket_connect`/`socket_sendmsg`.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{lsm, map},
    maps::HashMap,
    programs::LsmContext,
};
use leash_common::{Action, ExecGrant, ExecKey, Reason, UnixScope, maps::UNIX_GRANTS_CAPACITY};

use super::{Gate, PROCS, current_tid, gate, now_ns, offsets};

const EPERM: i32 = 1;
const AF_UNIX: u8 = 1;

/// The socket files unix path grants named when they were made: (task, inode,
/// `s_dev`) → expiry. Task 0: every task's (the daemon's API socket).
#[map]
pub(crate) static UNIX_SOCKETS: HashMap<ExecKey, ExecGrant> =
    HashMap::with_max_entries(UNIX_GRANTS_CAPACITY, 0);

/// Reads a kernel pointer or value at `base + off`.
#[inline(always)]
fn at<T>(base: *const u8, off: u32) -> Option<T> {
    if base.is_null() {
        return None;
    }
    // SAFETY: a probe read; a fault is `None`.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) }.ok()
}

/// (inode number, `s_dev`) of the file behind `dentry`; `None` for a negative dentry
/// or a failed read.
#[inline(always)]
fn file_of(dentry: *const u8) -> Option<(u64, u32)> {
    let o = offsets();
    let inode: *const u8 = at(dentry, o.dentry_inode)?;
    let ino: u64 = at(inode, o.inode_ino)?;
    let sb: *const u8 = at(inode, o.inode_sb)?;
    let dev: u32 = at(sb, o.sb_dev)?;
    Some((ino, dev))
}

/// The calling process's mount namespace and root; `None` when it cannot be read
/// (a kernel thread has no `fs`), which callers treat as another view (fail closed).
#[inline(always)]
pub(crate) fn current_scope() -> Option<UnixScope> {
    let o = offsets();
    // SAFETY: the helper returns the current task_struct, read only through probe reads.
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let nsproxy: *const u8 = at(task, o.task_nsproxy)?;
    let mnt_ns: *const u8 = at(nsproxy, o.nsproxy_mnt_ns)?;
    let inum: u32 = at(mnt_ns, o.mnt_ns_inum)?;
    let fs: *const u8 = at(task, o.task_fs)?;
    let root: *const u8 = at(fs, o.fs_root_dentry)?;
    let (root_ino, root_dev) = file_of(root)?;
    Some(UnixScope {
        root_ino,
        root_dev,
        mnt_ns: inum,
    })
}

/// Is `key` (a socket file of the caller's `task`, or of every task) granted now?
#[inline(always)]
fn socket_granted(key: &mut ExecKey, now: u64) -> bool {
    let live = |g: Option<&ExecGrant>| g.is_some_and(|g| g.expires_ns == 0 || now < g.expires_ns);
    // SAFETY: the values are read at once.
    if live(unsafe { UNIX_SOCKETS.get(*key) }) {
        return true;
    }
    key.task = 0;
    live(unsafe { UNIX_SOCKETS.get(*key) })
}

/// Decides a unix connect or send of the calling thread by the socket it reaches
/// (`other`, a `struct sock *` of a unix socket); says whether it is refused (counted
/// and reported then).
#[inline(always)]
fn peer_refused(other: *const u8, action: Action) -> bool {
    // SAFETY: PROCS values are plain u64 copies.
    let Some(&task) = (unsafe { PROCS.get(current_tid()) }) else {
        return false;
    };
    let o = offsets();
    let dentry: Option<*const u8> = at(other, o.unix_sock_dentry);
    if dentry.is_some_and(<*const u8>::is_null) {
        // Abstract or unnamed: no file, decided by name before the lookup.
        return false;
    }
    let now = now_ns();
    let file = dentry.and_then(file_of);
    let result = match (file, gate(Some(&task), now)) {
        (None, _) => Err(Reason::ReadFailed),
        (Some((ino, dev)), Gate::Live { .. }) => {
            let mut key = ExecKey {
                task,
                ino,
                dev,
                _pad: 0,
            };
            if socket_granted(&mut key, now) {
                return false;
            }
            Err(Reason::UnixOtherSocket)
        }
        // Ended and expired tasks get nothing; `judge` says why.
        (Some(_), _) => Err(Reason::NotGranted),
    };
    let Some(d) = super::family::judge(action, now, |_, _| result) else {
        return false;
    };
    d.count();
    if let Some(mut entry) = d.event(now) {
        // SAFETY: `event` initialised every field.
        let ev = unsafe { entry.assume_init_mut() };
        ev.family = AF_UNIX;
        if let Some((ino, dev)) = file {
            ev.ino = ino;
            ev.dev = dev;
        }
        // The name the peer is bound at: which socket the caller reached.
        let addr: Option<*const u8> = at(other, o.unix_sock_addr);
        if let Some(addr) = addr.filter(|a| !a.is_null()) {
            let sun_path = addr.wrapping_add(o.unix_address_name as usize + 2);
            // SAFETY: a bounded string probe read into the event.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(sun_path, &mut ev.path) };
        }
        entry.submit(0);
    }
    !d.allows()
}

/// `int security_unix_stream_connect(struct sock *sock, struct sock *other, struct
/// sock *newsk)`: stream and seqpacket connects, `other` is the listener found.
#[lsm(hook = "unix_stream_connect")]
pub(crate) fn family_lsm_unix_stream_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if peer_refused(ctx.arg(1), Action::Connect) {
        -EPERM
    } else {
        0
    }
}

/// `int security_unix_may_send(struct socket *sock, struct socket *other)`: datagram
/// connects and every datagram send, connected or not.
#[lsm(hook = "unix_may_send")]
pub(crate) fn family_lsm_unix_may_send(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let other: *const u8 = ctx.arg(1);
    // An unreadable peer is decided as one with no readable file: refused.
    let sk = at::<*const u8>(other, offsets().socket_sk).unwrap_or_default();
    if peer_refused(sk, Action::Send) {
        -EPERM
    } else {
        0
    }
}
