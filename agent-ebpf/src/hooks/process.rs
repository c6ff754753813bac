//! Tagging: a task's tag follows every thread and process created from a tagged one.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_send_signal},
    macros::{btf_tracepoint, lsm},
    programs::{BtfTracePointContext, LsmContext},
};
use aya_log_ebpf::warn;
use leash_common::{
    Action, Reason, Verdict,
    maps::{RESERVED, Stat},
};

use super::{Decision, Gate, PROCS, bump, current_tid, gate, kill_task, now_ns, offsets};

const SIGKILL: u32 = 9;
const EPERM: i32 = 1;

/// `trace_task_newtask(struct task_struct *task, u64 clone_flags)`, at the end of
/// `copy_process` (>= 3.x), in the parent, before the child can run. Unlike
/// `sched_process_fork` it also fires for `io_uring` workers and other
/// `create_io_thread` children, which would otherwise be untagged threads of a task.
#[btf_tracepoint(function = "task_newtask")]
pub(crate) fn process_newtask(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: PROCS values are plain u64 copies.
    let Some(&task) = (unsafe { PROCS.get(current_tid()) }) else {
        return 0;
    };
    let child: *const core::ffi::c_void = ctx.arg(0);
    // SAFETY: reads kernel memory through the probe helper, which checks the access.
    let pid =
        unsafe { bpf_probe_read_kernel(child.byte_add(offsets().task_pid as usize).cast::<i32>()) };
    let reservation = RESERVED | current_tid();
    // The child's entry goes in before the slot reserved at fork entry (guard.rs) is
    // given back: only when the map is full does the reservation's own slot have to be
    // freed first, and another thread may take it in that window.
    let inserted = if let Ok(pid) = pid {
        let pid = pid as u32;
        let first = PROCS.insert(pid, task, 0).is_ok();
        let _ = PROCS.remove(reservation);
        first || PROCS.insert(pid, task, 0).is_ok()
    } else {
        let _ = PROCS.remove(reservation);
        false
    };
    if !inserted {
        // Fail closed: an untagged child of a tagged parent would escape. Where the
        // kernel has `bpf_send_signal_task`, the child is killed before it ever runs;
        // the parent (which holds the task's work) is killed either way, and the
        // failure is counted for the daemon to report.
        bump(Stat::TagFailed);
        bump(Stat::Killed);
        let child_killed = kill_task(child);
        warn!(
            &ctx,
            "leash: cannot tag a child of task {}; killing the parent (child killed: {})",
            task,
            u8::from(child_killed)
        );
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}

/// `trace_sched_process_exit(struct task_struct *p, ...)` in `do_exit`, once per
/// thread. Dropping the entry here is what keeps a recycled tid from inheriting a tag.
/// When a process's leader exits, the daemon is told, so it can end a task whose last
/// process is gone (it checks for remaining threads itself: a leader may exit first).
#[btf_tracepoint(function = "sched_process_exit")]
pub(crate) fn process_exit(_ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    // SAFETY: PROCS values are plain u64 copies.
    let Some(&task) = (unsafe { PROCS.get(tid) }) else {
        return 0;
    };
    super::compat::report_filtered(task);
    let _ = PROCS.remove(tid);
    let _ = PROCS.remove(RESERVED | tid);
    if (pid_tgid >> 32) as u32 == tid {
        let exit = Decision {
            task,
            slot: 0,
            action: Action::Exit,
            verdict: Verdict::Allowed,
            reason: Reason::Granted,
        };
        if let Some(entry) = exit.event(now_ns()) {
            entry.submit(0);
        }
    }
    0
}

/// `int security_task_alloc(struct task_struct *task, unsigned long clone_flags)`
/// (lsm backend, >= 5.7). A tagged process whose task is gone may not create more
/// processes; tagging itself happens in [`process_newtask`], once the child has a pid.
#[lsm(hook = "task_alloc")]
pub(crate) fn process_task_alloc(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    // SAFETY: PROCS values are plain u64 copies.
    match gate(unsafe { PROCS.get(current_tid()) }, now_ns()) {
        Gate::Closed {
            reason: Reason::UnknownTask | Reason::TaskEnded | Reason::TaskExpired,
            ..
        } => -EPERM,
        _ => 0,
    }
}

/// `trace_sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
/// (lsm backend, >= 5.5 for `tp_btf`). When a non-leader thread execs, it takes over the
/// leader's pid, and the leader's entry left with the leader: carry the tag to the new
/// pid, or the new image would run untagged. The portable backend's `exec_sched_exec`
/// does the same before it decides.
#[btf_tracepoint(function = "sched_process_exec")]
pub(crate) fn process_sched_exec(ctx: BtfTracePointContext) -> i32 {
    let old_tid: i32 = ctx.arg(1);
    let old_tid = old_tid as u32;
    let tid = current_tid();
    if tid == old_tid {
        return 0;
    }
    // SAFETY: PROCS values are plain u64 copies.
    let Some(task) = (unsafe { PROCS.get(old_tid) }).copied() else {
        return 0;
    };
    let _ = PROCS.remove(old_tid);
    if PROCS.insert(tid, task, 0).is_err() {
        // Fail closed, as in `process_newtask`: the image must not run untagged.
        bump(Stat::TagFailed);
        bump(Stat::Killed);
        // SAFETY: signals the current task only.
        unsafe { bpf_send_signal(SIGKILL) };
    }
    0
}
