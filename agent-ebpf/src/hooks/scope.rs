//! Attach scope `task`: the network hooks run only in leash cgroups, so a tagged
//! process must not leave them. A tagged thread moved to any other cgroup2 cgroup is an
//! escape: its process is killed at the move where the kernel has the kfunc
//! `bpf_send_signal_task`, else the daemon kills it when it reads the event. A tagged
//! mover (a process moving itself, or a tagged process moving another) is stopped by
//! `guard_cgroup` on every backend and scope.

use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map, tracepoint},
    maps::HashMap,
    programs::{BtfTracePointContext, TracePointContext},
};
use leash_common::{
    Action, Reason,
    maps::{LEASH_CGROUPS_CAPACITY, Stat},
};

use super::{
    Decision, PROCS, bump, current_task, current_tid, kill_current, kill_task, now_ns, offsets,
};

/// Cgroup ids (kernfs ids) of the cgroups the network hooks are attached to.
#[map]
pub(crate) static LEASH_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(LEASH_CGROUPS_CAPACITY, 0);

/// Reads a kernel value at `base + offset`.
#[inline(always)]
fn read<T>(base: *const u8, offset: u32) -> Option<T> {
    // SAFETY: the probe helper checks the access.
    unsafe { bpf_probe_read_kernel(base.add(offset as usize).cast::<T>()) }.ok()
}

/// `trace_cgroup_attach_task(struct cgroup *dst, const char *path, struct task_struct
/// *task, bool threadgroup)` (`tp_btf`, >= 5.5 for the 64-bit kernfs id), in the
/// writer's context, once the move is complete: once per write, naming the thread
/// written (a whole process's leader for `cgroup.procs`). A process whose leader has
/// exited is not recognised here (the leader's entry left with it); its next socket
/// still kills it ([`scope_socket_exit`]). The default (cgroup2) hierarchy has id 0;
/// moves in cgroup v1 hierarchies do not change where the hooks run.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub(crate) fn scope_cgroup_attach(ctx: BtfTracePointContext) -> i32 {
    let dst: *const u8 = ctx.arg(0);
    let task: *const core::ffi::c_void = ctx.arg(2);
    let o = offsets();
    let Some(tid) = read::<i32>(task.cast(), o.task_pid) else {
        return 0;
    };
    // SAFETY: PROCS values are plain u64 copies.
    let Some(&tagged) = (unsafe { PROCS.get(tid as u32) }) else {
        return 0;
    };
    let Some(root) = read::<*const u8>(dst, o.cgroup_root) else {
        return 0;
    };
    if read::<i32>(root, o.cgroup_root_hierarchy_id) != Some(0) {
        return 0;
    }
    // An unreadable id is taken for an escape (fail closed for the tagged process).
    let id = read::<*const u8>(dst, o.cgroup_kn).and_then(|kn| read::<u64>(kn, o.kernfs_node_id));
    // SAFETY: read-only presence check.
    if let Some(id) = id
        && unsafe { LEASH_CGROUPS.get(id) }.is_some()
    {
        return 0;
    }
    bump(Stat::Escaped);
    let killed = kill_task(task);
    report(tagged, tid as u32, id.unwrap_or(0), killed);
    0
}

/// Reports an escape of task `task`'s thread `tid` to cgroup `cgroup` from the
/// current (the mover's) context: the event's pid and comm are the mover's, `dev` the
/// moved thread, `ino` the destination cgroup, `proto` 1 when the kernel killed it
/// (else the daemon must).
#[inline(always)]
fn report(task: u64, tid: u32, cgroup: u64, killed: bool) {
    let d = Decision::forced(task, Action::Tamper, Reason::ScopeEscape);
    d.count();
    if let Some(mut entry) = d.event(now_ns()) {
        // SAFETY: `event` initialised every field.
        let ev = unsafe { entry.assume_init_mut() };
        ev.dev = tid;
        ev.ino = cgroup;
        ev.proto = u32::from(killed);
        let call = b"escape\0\0";
        let mut i = 0;
        while i < call.len() {
            ev.path[i] = call[i];
            i += 1;
        }
        entry.submit(0);
    }
}

/// `socket()` at syscall exit, in attach scope `task`: a tagged caller outside every
/// leash cgroup has been moved out, and its new socket belongs to a cgroup where no
/// network hook runs. It is killed before it returns to user space, so the socket dies
/// unused. This closes the window between the move and the kill from
/// [`scope_cgroup_attach`], which the kernel runs only once the move is complete: a
/// socket allocated before the move belongs to the leash cgroup (its hooks follow the
/// socket), one allocated after it is seen here, since the check comes later still.
#[tracepoint]
pub(crate) fn scope_socket_exit(_ctx: TracePointContext) -> u32 {
    let Some(task) = current_task() else {
        return 0;
    };
    // SAFETY: helper without arguments.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: read-only presence check.
    if unsafe { LEASH_CGROUPS.get(cgroup) }.is_some() {
        return 0;
    }
    kill_current();
    report(task, current_tid(), cgroup, true);
    0
}
