//! `io_uring` only with a `socket:io_uring` grant: its operations (`OPENAT`, `SOCKET`,
//! `RENAMEAT`, `UNLINKAT`, ...) run in the kernel without the system calls the
//! portable backend's tracepoints watch, so a task that has not been granted it may not
//! create a ring at all. Audit mode reports and allows, as for any grant.
//!
//! The lsm backend refuses `io_uring_setup` with EPERM when the kernel creates the
//! ring's anonymous inode (`inode_init_security_anon`, named `[io_uring]`); the portable
//! backend kills the caller at `io_uring_setup` entry (the ring dies with it).
//!
//! For a granted ring the portable backend also looks at each request as it is
//! submitted (`io_uring:io_uring_submit_req`, `io_uring_submit_sqe` on older kernels),
//! once the kernel has copied its arguments: `UNLINKAT`/`RENAMEAT` of bpffs or the API
//! socket's names and `SOCKET` of a family not granted kill the submitter, as their
//! system calls do (the request itself still runs: docs/security.md). The lsm backend's
//! inode and socket hooks see these requests themselves.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};
use leash_common::{Action, Reason, task::FAMILY_IO_URING};

use super::{
    Decision, Gate, PROCS, current_task, current_tid, gate,
    guard::{reaches_bpffs, stop},
    kill_current, now_ns, offsets, tp_field,
};

const EPERM: i32 = 1;
/// The name `io_uring` gives its anonymous inode, NUL included.
const RING_NAME: &[u8; 11] = b"[io_uring]\0";

/// Decides a tagged caller's new ring, counts it and reports a denial; says whether it
/// is denied. Untagged callers are allowed without anything else.
#[inline(always)]
fn ring_denied() -> bool {
    let now = now_ns();
    // SAFETY: PROCS values are plain u64 copies.
    let d = match gate(unsafe { PROCS.get(current_tid()) }, now) {
        Gate::Untagged => return false,
        Gate::Closed { task, slot, reason } => Decision::closed(task, slot, Action::Tamper, reason),
        Gate::Live { task, info } => {
            let granted = if info.families & FAMILY_IO_URING == FAMILY_IO_URING {
                Ok(())
            } else {
                Err(Reason::IoUringNotGranted)
            };
            Decision::of(task, &info, Action::Tamper, granted)
        }
    };
    d.count();
    if matches!(d.verdict, leash_common::Verdict::Allowed) {
        return false;
    }
    if let Some(mut entry) = d.event(now) {
        // SAFETY: `event` initialised every field.
        let ev = unsafe { entry.assume_init_mut() };
        let call = b"io_uring";
        let mut i = 0;
        while i < call.len() {
            ev.path[i] = call[i];
            i += 1;
        }
        entry.submit(0);
    }
    !d.allows()
}

/// `io_uring_setup(entries, params)` at entry (portable).
#[tracepoint]
pub(crate) fn uring_setup(_ctx: TracePointContext) -> u32 {
    if ring_denied() {
        kill_current();
    }
    0
}

/// `int security_inode_init_security_anon(struct inode *inode, const struct qstr *name,
/// const struct inode *context_inode)` (>= 5.12; `io_uring` creates its ring's inode
/// through it from 5.16 on): the new ring, before its file exists (lsm).
#[lsm(hook = "inode_init_security_anon")]
pub(crate) fn uring_lsm_anon_inode(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if current_task().is_none() {
        return 0;
    }
    let name: *const u8 = ctx.arg(1);
    let mut got = [0u8; 11];
    // SAFETY: probe reads of the kernel's qstr and its name; a fault is an error.
    let read = unsafe {
        bpf_probe_read_kernel::<*const u8>(name.add(offsets().qstr_name as usize).cast())
            .and_then(|s| bpf_probe_read_kernel_buf(s, &mut got))
    };
    // Other anonymous inodes (userfaultfd, ...) are not ours; one whose name cannot be
    // read is decided as a ring (fail closed).
    if read.is_ok() && !super::host::starts_with(&got, RING_NAME) {
        return 0;
    }
    if ring_denied() { -EPERM } else { 0 }
}

/// `IORING_OP_*` numbers (uapi).
const OP_RENAMEAT: u8 = 35;
const OP_UNLINKAT: u8 = 36;
const OP_SOCKET: u8 = 45;

/// Does the kernel's copy of a request's path (the `struct filename *` at `field` of
/// the request) name bpffs or one of the API socket's names? One that cannot be read
/// counts (fail closed).
///
/// # Safety
/// `field` points into a live `io_kiocb`.
#[inline(always)]
unsafe fn protected_path(field: *const u8) -> bool {
    // SAFETY: probe reads of kernel memory; a fault is an error.
    let name: Result<u64, _> = unsafe {
        bpf_probe_read_kernel::<*const u8>(field.cast())
            .and_then(|f| bpf_probe_read_kernel(f.add(offsets().filename_name as usize).cast()))
    };
    let Ok(name) = name else {
        return true;
    };
    !matches!(reaches_bpffs(name, false, true), Ok(false))
        || !matches!(super::mounts::protected_name(name, true), Ok(false))
}

/// Decides one submitted request of a tagged thread (portable, granted rings only: no
/// other task has a ring). `record` fields: `req` at 16, `opcode` at 32 in both
/// `io_uring_submit_req` and the older `io_uring_submit_sqe`.
#[inline(always)]
fn submitted(ctx: &TracePointContext) {
    let Some(task) = current_task() else {
        return;
    };
    let opcode: u8 = tp_field(ctx, 32);
    if opcode != OP_UNLINKAT && opcode != OP_RENAMEAT && opcode != OP_SOCKET {
        return;
    }
    let o = offsets();
    let req: u64 = tp_field(ctx, 16);
    let cmd = (req + u64::from(o.uring_cmd)) as *const u8;
    if opcode == OP_SOCKET {
        let at = |off: u32| -> u32 {
            // SAFETY: probe read of the request's `io_socket`; a fault reads as an
            // unknown family, denied.
            unsafe { bpf_probe_read_kernel(cmd.add(off as usize).cast()) }.unwrap_or(u32::MAX)
        };
        let family = at(o.uring_socket_domain);
        if super::family::socket_denied(
            family,
            at(o.uring_socket_type),
            at(o.uring_socket_protocol),
        ) {
            kill_current();
        }
        return;
    }
    // SAFETY: offsets into the live request the tracepoint hands over.
    let hit = unsafe {
        if opcode == OP_UNLINKAT {
            protected_path(cmd.add(o.uring_unlink_name as usize))
        } else {
            protected_path(cmd.add(o.uring_rename_old as usize))
                || protected_path(cmd.add(o.uring_rename_new as usize))
        }
    };
    if hit {
        let call = if opcode == OP_UNLINKAT {
            b"u_unlink"
        } else {
            b"u_rename"
        };
        stop(task, Reason::GuardPins, call, 0);
    }
}

/// `io_uring:io_uring_submit_req`: a request about to be issued, after its preparation
/// copied its arguments.
#[tracepoint]
pub(crate) fn uring_submit_req(ctx: TracePointContext) -> u32 {
    submitted(&ctx);
    0
}

/// `io_uring:io_uring_submit_sqe`: the same tracepoint's older name (Debian's 6.1).
#[tracepoint]
pub(crate) fn uring_submit_sqe(ctx: TracePointContext) -> u32 {
    submitted(&ctx);
    0
}
