//! Attach scope `task`: the network hooks run only in leash cgroups, so a tagged
//! process must not leave them. A tagged thread moved to any other cgroup2 cgroup is
//! counted as an escape; a tagged mover (a process moving itself, or a tagged process
//! moving another) is stopped by `guard_cgroup` on every backend and scope.

use aya_ebpf::{
    macros::{map, tracepoint},
    maps::HashMap,
    programs::TracePointContext,
};
use leash_common::maps::{LEASH_CGROUPS_CAPACITY, Stat};

use super::{PROCS, bump, tp_field};

/// Cgroup ids (kernfs ids) of the cgroups the network hooks are attached to.
#[map]
pub(crate) static LEASH_CGROUPS: HashMap<u64, u8> =
    HashMap::with_max_entries(LEASH_CGROUPS_CAPACITY, 0);

/// Field offsets of the `cgroup:cgroup_attach_task` record (stable since 5.5, when
/// `dst_id` became the 64-bit kernfs id); userspace checks them against the format
/// file before attaching.
pub(crate) const DST_ROOT: usize = 8;
pub(crate) const DST_ID: usize = 16;
pub(crate) const PID: usize = 24;

/// `trace_cgroup_attach_task`, once per migrated thread, in the writer's context,
/// after the move. The default (cgroup2) hierarchy has id 0; moves in cgroup v1
/// hierarchies do not change where the hooks run.
#[tracepoint(category = "cgroup", name = "cgroup_attach_task")]
pub(crate) fn scope_cgroup_attach(ctx: TracePointContext) -> u32 {
    let (root, dst, pid): (i32, u64, i32) = (
        tp_field(&ctx, DST_ROOT),
        tp_field(&ctx, DST_ID),
        tp_field(&ctx, PID),
    );
    if root != 0 {
        return 0;
    }
    // SAFETY: PROCS values are plain u64 copies.
    if unsafe { PROCS.get(pid as u32) }.is_none() {
        return 0;
    }
    // SAFETY: read-only presence check.
    if unsafe { LEASH_CGROUPS.get(dst) }.is_some() {
        return 0;
    }
    bump(Stat::Escaped);
    0
}
