//! Self-protection: a tagged process, even root with every capability, may not reach
//! leash itself, and a fork the process map cannot tag is refused.
//!
//! These are syscall-entry tracepoints: they cannot make a call fail, so the caller is
//! killed with SIGKILL before the call returns to user space. For most calls that is
//! enough (the effect needs a second call that never comes, or dies with the caller);
//! where the call's own effect lands first (a signal, an unlink), docs/security.md
//! says so. A pending SIGKILL does cancel a fork: `copy_process` checks for it.

use aya_ebpf::{
    helpers::bpf_probe_read_user,
    macros::{btf_tracepoint, map, tracepoint},
    maps::HashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use leash_common::{
    Action, Reason,
    maps::{PROTECTED_CAPACITY, RESERVED, Stat},
};

use super::{
    Decision, PROCS, bump, current_task, current_tid, family::sys_arg, kill_current, now_ns,
};

/// Process ids (tgids) of leash's own processes: the daemon writes its own at start.
#[map]
pub(crate) static PROTECTED: HashMap<u32, u32> = HashMap::with_max_entries(PROTECTED_CAPACITY, 0);

const PTRACE_ATTACH: u64 = 16;
const PTRACE_SEIZE: u64 = 0x4206;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Where bpffs is mounted and leash pins by default.
const BPFFS: &[u8] = leash_common::maps::BPFFS.as_bytes();

/// Denies `call` for task `task`: counts it, reports it and kills the caller.
#[inline(always)]
pub(crate) fn stop(task: u64, reason: Reason, call: &[u8; 8], target: u32) {
    refuse(task, reason, call, target);
    kill_current();
}

/// Counts and reports a denied `call` of task `task` (`target` in the event's `dev`).
#[inline(always)]
pub(crate) fn refuse(task: u64, reason: Reason, call: &[u8; 8], target: u32) {
    let now = now_ns();
    let d = Decision::forced(task, Action::Tamper, reason);
    d.count();
    if let Some(mut entry) = d.event(now) {
        // SAFETY: `event` initialised every field.
        let ev = unsafe { entry.assume_init_mut() };
        ev.dev = target;
        let mut i = 0;
        while i < call.len() {
            ev.path[i] = call[i];
            i += 1;
        }
        entry.submit(0);
    }
}

/// Is `pid` a thread of the same task as the caller?
#[inline(always)]
pub(crate) fn same_task(task: u64, pid: u64) -> bool {
    // SAFETY: PROCS values are plain u64 copies.
    pid != 0 && pid < u64::from(RESERVED) && unsafe { PROCS.get(pid as u32) } == Some(&task)
}

#[inline(always)]
pub(crate) fn protected(pid: u64) -> bool {
    // SAFETY: presence check only.
    match u32::try_from(pid) {
        Ok(0) | Err(_) => false,
        Ok(pid) => unsafe { PROTECTED.get(pid) }.is_some(),
    }
}

/// `bpf(cmd, attr, size)`: any command. Every way to leash's maps and links starts with
/// a `bpf()` call that yields an fd (`BPF_OBJ_GET`, `*_GET_FD_BY_ID`), so a caller killed
/// at its first call never holds one (an fd passed in from outside: docs/security.md).
#[tracepoint]
pub(crate) fn guard_bpf(_ctx: TracePointContext) -> u32 {
    if let Some(task) = current_task() {
        stop(task, Reason::GuardBpf, b"bpf\0\0\0\0\0", 0);
    }
    0
}

/// `ptrace(request, pid, ...)`: attaching to a process outside the task would let the
/// task run code untagged, or read the daemon.
#[tracepoint]
pub(crate) fn guard_ptrace(ctx: TracePointContext) -> u32 {
    let Some(task) = current_task() else {
        return 0;
    };
    let request = sys_arg(&ctx, 0);
    let pid = sys_arg(&ctx, 1);
    if (request == PTRACE_ATTACH || request == PTRACE_SEIZE) && !same_task(task, pid) {
        stop(task, Reason::GuardProcess, b"ptrace\0\0", pid as u32);
    }
    0
}

/// `process_vm_writev(pid, ...)`: writes another process's memory, as ptrace does.
#[tracepoint]
pub(crate) fn guard_process_vm_writev(ctx: TracePointContext) -> u32 {
    let Some(task) = current_task() else {
        return 0;
    };
    let pid = sys_arg(&ctx, 0);
    if !same_task(task, pid) {
        stop(task, Reason::GuardProcess, b"vm_write", pid as u32);
    }
    0
}

/// `pidfd_open(pid, flags)` of a leash process: the first step to `pidfd_send_signal`
/// and `pidfd_getfd` on it.
#[tracepoint]
pub(crate) fn guard_pidfd_open(ctx: TracePointContext) -> u32 {
    if let Some(task) = current_task() {
        let pid = sys_arg(&ctx, 0);
        if protected(pid) {
            stop(task, Reason::GuardProcess, b"pidfd\0\0\0", pid as u32);
        }
    }
    0
}

/// `pidfd_getfd(pidfd, fd, flags)`: copies an fd out of another process, which could be
/// a connected socket or a leash map. The target is not known here, so any call is
/// stopped.
#[tracepoint]
pub(crate) fn guard_pidfd_getfd(_ctx: TracePointContext) -> u32 {
    if let Some(task) = current_task() {
        stop(task, Reason::GuardProcess, b"getfd\0\0\0", 0);
    }
    0
}

/// Checks a signal's target pid (`kill`, `tgkill` and the queued signals take a process
/// id first): leash's own processes, and -1 (every process).
#[inline(always)]
fn signal_check(ctx: &TracePointContext, call: &[u8; 8]) {
    let Some(task) = current_task() else {
        return;
    };
    let pid = sys_arg(ctx, 0) as i32;
    if pid == -1 || protected(u64::from(pid as u32)) {
        stop(task, Reason::GuardProcess, call, pid as u32);
    }
}

/// `kill(pid, sig)`.
#[tracepoint]
pub(crate) fn guard_kill(ctx: TracePointContext) -> u32 {
    signal_check(&ctx, b"kill\0\0\0\0");
    0
}

/// `tgkill(tgid, tid, sig)`.
#[tracepoint]
pub(crate) fn guard_tgkill(ctx: TracePointContext) -> u32 {
    signal_check(&ctx, b"tgkill\0\0");
    0
}

/// `rt_sigqueueinfo(tgid, sig, info)`: a queued signal (`sigqueue(3)`).
#[tracepoint]
pub(crate) fn guard_rt_sigqueueinfo(ctx: TracePointContext) -> u32 {
    signal_check(&ctx, b"sigqueue");
    0
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, info)`: a queued signal to one thread.
#[tracepoint]
pub(crate) fn guard_rt_tgsigqueueinfo(ctx: TracePointContext) -> u32 {
    signal_check(&ctx, b"tgsigque");
    0
}

/// `tkill(tid, sig)` names a thread, whose process is not known here: only threads of
/// the caller's own task may be signalled this way (threading libraries do just that).
#[tracepoint]
pub(crate) fn guard_tkill(ctx: TracePointContext) -> u32 {
    let Some(task) = current_task() else {
        return 0;
    };
    let tid = sys_arg(&ctx, 0);
    if !same_task(task, tid) {
        stop(task, Reason::GuardProcess, b"tkill\0\0\0", tid as u32);
    }
    0
}

/// A user argument a guard could not read. `bpf_probe_read_user` cannot fault a page
/// in: a page not touched yet, one evicted from a file mapping, or a userfaultfd range
/// makes the read fail while the kernel's own copy, a moment later, succeeds (with
/// whatever the attacker put there meanwhile). Callers stop the caller on it.
pub(crate) struct Unreadable;

/// Does the path at `ptr`, in user memory or (`kernel`) the kernel's, name bpffs (or,
/// for `umount`, a mount above it)? A NULL pointer does not (the kernel fails the call
/// with `EFAULT`).
#[inline(always)]
pub(crate) fn reaches_bpffs(ptr: u64, umount: bool, kernel: bool) -> Result<bool, Unreadable> {
    if ptr == 0 {
        return Ok(false);
    }
    let mut buf = [0u8; 16];
    if super::family::read_str(kernel, ptr as *const u8, &mut buf).is_err() {
        return Err(Unreadable);
    }
    let mut i = 0;
    while i < BPFFS.len() {
        if buf[i] != BPFFS[i] {
            // A path that stops at a directory above bpffs ("/", "/sys", "/sys/fs/"):
            // unmounting it takes bpffs along.
            return Ok(umount
                && i > 0
                && buf[i] == 0
                && (BPFFS[i] == b'/' || BPFFS[i - 1] == b'/'));
        }
        i += 1;
    }
    Ok(buf[BPFFS.len()] == 0 || buf[BPFFS.len()] == b'/')
}

/// A path argument of an unlink, rmdir or rename: bpffs, or the API socket's names.
/// A path the guard cannot read is stopped too (fail closed), as `argument_unreadable`.
#[inline(always)]
fn path_check(ctx: &TracePointContext, arg: usize, call: &[u8; 8]) {
    let Some(task) = current_task() else {
        return;
    };
    let path = sys_arg(ctx, arg);
    let reason = match reaches_bpffs(path, false, false) {
        Ok(true) => Reason::GuardPins,
        Ok(false) => match super::mounts::protected_name(path, false) {
            Ok(false) => return,
            Ok(true) => Reason::GuardPins,
            Err(Unreadable) => Reason::ArgumentUnreadable,
        },
        Err(Unreadable) => Reason::ArgumentUnreadable,
    };
    stop(task, reason, call, 0);
}

/// `unlink(path)`: removing a link's pin detaches the program when no one else holds it.
#[tracepoint]
pub(crate) fn guard_unlink(ctx: TracePointContext) -> u32 {
    path_check(&ctx, 0, b"unlink\0\0");
    0
}

/// `unlinkat(dirfd, path, flags)`.
#[tracepoint]
pub(crate) fn guard_unlinkat(ctx: TracePointContext) -> u32 {
    path_check(&ctx, 1, b"unlinkat");
    0
}

/// `rmdir(path)`.
#[tracepoint]
pub(crate) fn guard_rmdir(ctx: TracePointContext) -> u32 {
    path_check(&ctx, 0, b"rmdir\0\0\0");
    0
}

/// `rename(old, new)`: either side.
#[tracepoint]
pub(crate) fn guard_rename(ctx: TracePointContext) -> u32 {
    path_check(&ctx, 0, b"rename\0\0");
    path_check(&ctx, 1, b"rename\0\0");
    0
}

/// `renameat(olddirfd, old, newdirfd, new)`.
#[tracepoint]
pub(crate) fn guard_renameat(ctx: TracePointContext) -> u32 {
    path_check(&ctx, 1, b"renameat");
    path_check(&ctx, 3, b"renameat");
    0
}

/// `renameat2(olddirfd, old, newdirfd, new, flags)`.
#[tracepoint]
pub(crate) fn guard_renameat2(ctx: TracePointContext) -> u32 {
    path_check(&ctx, 1, b"renameat");
    path_check(&ctx, 3, b"renameat");
    0
}

/// `umount2(target, flags)`: any unmount (a task must not recycle a file system's
/// device number, nor uncover what a mount hides); the last mount of a bpffs instance
/// would also take leash's pins along, which is reported as such.
#[tracepoint]
pub(crate) fn guard_umount(ctx: TracePointContext) -> u32 {
    let Some(task) = current_task() else {
        return 0;
    };
    // Stopped whatever it names; an unreadable path is reported as a mount.
    let reason = if matches!(reaches_bpffs(sys_arg(&ctx, 0), true, false), Ok(true)) {
        Reason::GuardPins
    } else {
        Reason::GuardMount
    };
    stop(task, reason, b"umount\0\0", 0);
    0
}

/// `trace_cgroup_attach_task(dst, path, task, threadgroup)`, after a migration: a
/// tagged process that moves a process between cgroups is stopped (its tag would
/// follow, but a cgroup below leash's attach point could leave the network hooks).
#[btf_tracepoint(function = "cgroup_attach_task")]
pub(crate) fn guard_cgroup(_ctx: BtfTracePointContext) -> i32 {
    if let Some(task) = current_task() {
        stop(task, Reason::GuardCgroup, b"cgroup\0\0", 0);
    }
    0
}

/// A tagged thread about to fork takes a second slot of the process map, keyed
/// `RESERVED | tid`, which `process_newtask` trades for the child's entry. When even
/// that fails the map is full: the caller is killed now, and the pending SIGKILL makes
/// `copy_process` give up, so no untagged child is ever created.
#[inline(always)]
fn reserve() {
    let tid = current_tid();
    let Some(task) = current_task() else {
        return;
    };
    if PROCS.insert(RESERVED | tid, task, 0).is_ok() {
        return;
    }
    bump(Stat::TagFailed);
    let now = now_ns();
    let d = Decision::forced(task, Action::Fork, Reason::MapFull);
    d.count();
    if let Some(entry) = d.event(now) {
        entry.submit(0);
    }
    kill_current();
}

/// `clone(flags, ...)`.
#[tracepoint]
pub(crate) fn guard_clone(_ctx: TracePointContext) -> u32 {
    reserve();
    0
}

/// `fork()`.
#[tracepoint]
pub(crate) fn guard_fork(_ctx: TracePointContext) -> u32 {
    reserve();
    0
}

/// `vfork()`.
#[tracepoint]
pub(crate) fn guard_vfork(_ctx: TracePointContext) -> u32 {
    reserve();
    0
}

/// `clone3(args, size)`: also refuses `CLONE_INTO_CGROUP`, a cgroup migration at birth.
#[tracepoint]
pub(crate) fn guard_clone3(ctx: TracePointContext) -> u32 {
    let Some(task) = current_task() else {
        return 0;
    };
    let args = sys_arg(&ctx, 0);
    // SAFETY: probe read of `clone_args.flags`, the first field.
    let Ok(flags) = (unsafe { bpf_probe_read_user(args as *const u64) }) else {
        // Unreadable here, readable by the kernel's copy (see `Unreadable`): the flags
        // are unknown, so the fork is stopped (a NULL `args` fails with EFAULT anyway).
        if args != 0 {
            stop(task, Reason::ArgumentUnreadable, b"clone3\0\0", 0);
        }
        return 0;
    };
    if flags & CLONE_INTO_CGROUP != 0 {
        stop(task, Reason::GuardCgroup, b"clone3\0\0", 0);
        return 0;
    }
    reserve();
    0
}
