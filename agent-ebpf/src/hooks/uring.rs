//! `io_uring` only with a `socket:io_uring` grant: its operations (`OPENAT`, `SOCKET`,
//! `RENAMEAT`, `UNLINKAT`, ...) run in the kernel without the system calls the
//! portable backend's tracepoints watch, so a task that has not been granted it may not
//! create a ring at all. Audit mode reports and allows, as for any grant.
//!
//! The lsm backend refuses `io_uring_setup` with EPERM when the kernel creates the
//! ring's anonymous inode (`inode_init_security_anon`, named `[io_uring]`); the portable
//! backend kills the caller at `io_uring_setup` entry (the ring dies with it).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_buf,
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};
use leash_common::{Action, Reason, task::FAMILY_IO_URING};

use super::{Decision, Gate, PROCS, current_tid, gate, kill_current, now_ns, offsets};

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
    if super::current_task().is_none() {
        return 0;
    }
    let name: *const u8 = ctx.arg(1);
    let mut got = [0u8; 11];
    // SAFETY: probe reads of the kernel's qstr and its name; a fault is an error.
    let read = unsafe {
        aya_ebpf::helpers::bpf_probe_read_kernel::<*const u8>(
            name.add(offsets().qstr_name as usize).cast(),
        )
        .and_then(|s| bpf_probe_read_kernel_buf(s, &mut got))
    };
    // Other anonymous inodes (userfaultfd, ...) are not ours; one whose name cannot be
    // read is decided as a ring (fail closed).
    if read.is_ok() && !super::host::starts_with(&got, RING_NAME) {
        return 0;
    }
    if ring_denied() { -EPERM } else { 0 }
}
