//! Compat system calls: a 64-bit process can enter the kernel's i386 table (`int $0x80`,
//! `sysenter`, the 32-bit `syscall`) or its x32 table (native `syscall` with bit 30 of
//! the number set). The kernel fires none of the per-syscall `syscalls:sys_enter_*`
//! tracepoints for those entries, so every guard in `guard.rs` and `family.rs` is blind
//! to them. The generic `sys_enter` tracepoint fires for every entry path: a tagged
//! process is stopped at its first compat or x32 system call, whatever it is.
//!
//! This program runs for every system call of every process on the machine, so it
//! decides "not compat" before any map lookup: one mask of the number (x32), then one
//! load of the caller's `thread_info.status` (i386).

use aya_ebpf::{
    helpers::bpf_get_current_task_btf, macros::btf_tracepoint, programs::BtfTracePointContext,
};
use leash_common::Reason;

use super::{current_task, guard::refuse, kill_current, offsets};

/// `__X32_SYSCALL_BIT`. The number is the kernel's `int nr` sign-extended, so an x32
/// call is a non-negative number with this bit set: the sign bits are in the mask.
const X32_MASK: u64 = 0xffff_ffff_c000_0000;
const X32_SYSCALL_BIT: u64 = 0x4000_0000;
/// `TS_COMPAT` in x86's `thread_info.status`: set at every 32-bit entry (`int $0x80`,
/// `sysenter`, 32-bit `syscall`) and cleared on the way back to user space.
const TS_COMPAT: u32 = 0x0002;

/// Is the current system call an i386 one? Also true in `sched_process_exit` for a
/// thread that dies inside one: the flag is cleared only on the way back to user space.
#[inline(always)]
pub(crate) fn in_ia32_syscall() -> bool {
    // SAFETY: `current` is a trusted BTF pointer in a tp_btf program; the offset is a
    // load-time constant (read-only data) the verifier checks against the task_struct's
    // BTF, and the load of `thread_info.status` cannot fault.
    let status = unsafe {
        bpf_get_current_task_btf()
            .cast::<u32>()
            .byte_add(offsets().task_ti_status as usize)
            .read_volatile()
    };
    status & TS_COMPAT != 0
}

/// `sys_enter(struct pt_regs *regs, long id)`: stops a tagged caller of a compat or x32
/// system call (SIGKILL before the call returns to user space; the call itself runs, as
/// with the other syscall-entry guards). The event names the table and the number.
#[btf_tracepoint(function = "sys_enter")]
pub(crate) fn compat_sys_enter(ctx: BtfTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    let call = if (id as u64) & X32_MASK == X32_SYSCALL_BIT {
        b"x32\0\0\0\0\0"
    } else if in_ia32_syscall() {
        b"compat\0\0"
    } else {
        return 0;
    };
    if let Some(task) = current_task() {
        refuse(task, Reason::CompatSyscall, call, id as u32);
        kill_current();
    }
    0
}

/// `SIGSYS`: the signal a seccomp filter kills with.
const SIGSYS: u32 = 31;

/// Called from `sched_process_exit` for a tagged thread: reports one that a seccomp
/// filter killed at an i386 call (`leash run` puts one on the command: the call never
/// ran, so [`compat_sys_enter`] did not fire). A thread this guard killed dies of
/// SIGKILL, and is reported at the call, with its number.
#[inline(always)]
pub(crate) fn report_filtered(task: u64) {
    if !in_ia32_syscall() {
        return;
    }
    // SAFETY: as in `in_ia32_syscall`: a trusted BTF pointer, a checked constant offset.
    let code = unsafe {
        bpf_get_current_task_btf()
            .cast::<u32>()
            .byte_add(offsets().task_exit_code as usize)
            .read_volatile()
    };
    if code & 0x7f == SIGSYS {
        // The number is gone with the skipped call: 0.
        refuse(task, Reason::CompatSyscall, b"compat\0\0", 0);
    }
}
