//! Kernel doors a tagged process may not open, even as root: loading or unloading a
//! module, loading a kexec image, raw I/O port access (`iopl`, `ioperm`).
//!
//! The syscall tracepoints kill the caller (the call itself completes: see
//! docs/security.md). The lsm backend refuses module and kexec loads with EPERM in
//! `kernel_load_data` / `kernel_read_file`, and I/O port access in `locked_down`,
//! before anything is loaded or granted; `delete_module` has no LSM hook and stays a
//! tracepoint there.

use aya_ebpf::{
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};
use leash_common::{
    Reason,
    offsets::enums::{
        LOCKDOWN_IOPORT, READING_KEXEC_IMAGE as ID_KEXEC_IMAGE,
        READING_KEXEC_INITRAMFS as ID_KEXEC_INITRAMFS, READING_MODULE as ID_MODULE,
    },
};

use super::{
    current_task,
    guard::{refuse, stop},
};

const EPERM: i32 = 1;

/// Stops a tagged caller.
#[inline(always)]
fn deny(call: &[u8; 8]) {
    if let Some(task) = current_task() {
        stop(task, Reason::GuardKernel, call, 0);
    }
}

/// `init_module(image, len, args)`.
#[tracepoint]
pub(crate) fn door_init_module(_ctx: TracePointContext) -> u32 {
    deny(b"initmod\0");
    0
}

/// `finit_module(fd, args, flags)`.
#[tracepoint]
pub(crate) fn door_finit_module(_ctx: TracePointContext) -> u32 {
    deny(b"finitmod");
    0
}

/// `delete_module(name, flags)`: unloading a module (a security module's, a driver's).
#[tracepoint]
pub(crate) fn door_delete_module(_ctx: TracePointContext) -> u32 {
    deny(b"delmod\0\0");
    0
}

/// `kexec_load(entry, nr_segments, segments, flags)`.
#[tracepoint]
pub(crate) fn door_kexec_load(_ctx: TracePointContext) -> u32 {
    deny(b"kexec\0\0\0");
    0
}

/// `kexec_file_load(kernel_fd, initrd_fd, cmdline_len, cmdline, flags)`.
#[tracepoint]
pub(crate) fn door_kexec_file_load(_ctx: TracePointContext) -> u32 {
    deny(b"kexecfil");
    0
}

/// `iopl(level)`.
#[tracepoint]
pub(crate) fn door_iopl(_ctx: TracePointContext) -> u32 {
    deny(b"iopl\0\0\0\0");
    0
}

/// `ioperm(from, num, turn_on)`.
#[tracepoint]
pub(crate) fn door_ioperm(_ctx: TracePointContext) -> u32 {
    deny(b"ioperm\0\0");
    0
}

/// EPERM for a tagged caller when `call` names a door, after counting and reporting it.
#[inline(always)]
fn refuse_door(previous: i32, call: Option<&[u8; 8]>) -> i32 {
    if previous != 0 {
        return previous;
    }
    let (Some(call), Some(task)) = (call, current_task()) else {
        return 0;
    };
    refuse(task, Reason::GuardKernel, call, 0);
    -EPERM
}

/// `int security_kernel_load_data(enum kernel_load_data_id id, bool contents)`:
/// `init_module` and `kexec_load`, before the image is looked at. Firmware and policy
/// loads a tagged process may trigger in a driver are let be.
#[lsm(hook = "kernel_load_data")]
pub(crate) fn door_lsm_load_data(ctx: LsmContext) -> i32 {
    let id: u32 = ctx.arg(0);
    let call = match id {
        ID_MODULE => Some(b"initmod\0"),
        ID_KEXEC_IMAGE => Some(b"kexec\0\0\0"),
        _ => None,
    };
    refuse_door(ctx.arg(2), call)
}

/// `int security_kernel_read_file(struct file *file, enum kernel_read_file_id id, bool
/// contents)`: `finit_module` and `kexec_file_load`, before the file is read.
#[lsm(hook = "kernel_read_file")]
pub(crate) fn door_lsm_read_file(ctx: LsmContext) -> i32 {
    let id: u32 = ctx.arg(1);
    let call = match id {
        ID_MODULE => Some(b"finitmod"),
        ID_KEXEC_IMAGE | ID_KEXEC_INITRAMFS => Some(b"kexecfil"),
        _ => None,
    };
    refuse_door(ctx.arg(3), call)
}

/// `int security_locked_down(enum lockdown_reason what)`: only `LOCKDOWN_IOPORT`, which
/// `iopl` and `ioperm` ask before they turn port access on.
#[lsm(hook = "locked_down")]
pub(crate) fn door_lsm_locked_down(ctx: LsmContext) -> i32 {
    let what: u32 = ctx.arg(0);
    refuse_door(
        ctx.arg(1),
        (what == LOCKDOWN_IOPORT).then_some(b"ioport\0\0"),
    )
}
