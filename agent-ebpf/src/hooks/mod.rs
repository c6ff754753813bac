//! Maps and helpers shared by every hook family, and the one decision path.
// Every helper is inlined on purpose: it keeps each program one verifier-checked body
// with no BPF-to-BPF calls, whose stack and argument rules are stricter.
#![expect(clippy::inline_always, reason = "see above")]
// The program macros fix the context parameter by value.
#![expect(clippy::needless_pass_by_value, reason = "aya program signatures")]

pub(crate) mod compat;
pub(crate) mod dns;
pub(crate) mod doors;
pub(crate) mod exec;
pub(crate) mod family;
pub(crate) mod guard;
pub(crate) mod host;
pub(crate) mod lsm_guard;
pub(crate) mod mounts;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod scope;
pub(crate) mod unix_peer;
pub(crate) mod uring;

use aya_ebpf::{
    EbpfContext as _, Global,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_boot_ns, bpf_send_signal,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use leash_common::{
    Action, Event, KernelOffsets, Reason, TaskInfo, Verdict,
    event::{DECISIONS_LEN, counter_index},
    maps::{EVENTS_BYTES, PROCS_CAPACITY, STATS_LEN, Stat, TASKS_CAPACITY},
};

/// Field offsets of the running kernel, written by the loader from BTF.
#[unsafe(no_mangle)]
static LEASH_OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    bprm_file: 0,
    bprm_filename: 0,
    bprm_interp: 0,
    file_inode: 0,
    inode_ino: 0,
    inode_sb: 0,
    sb_dev: 0,
    sb_magic: 0,
    task_pid: 0,
    task_tgid: 0,
    sock_addr_uaddr: 0,
    sock_addr_uaddrlen: 0,
    inode_ctime_sec: 0,
    inode_ctime_nsec: 0,
    inode_generation: 0,
    task_ti_status: 0,
    dentry_inode: 0,
    vfsmount_sb: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    file_mode: 0,
    file_dentry: 0,
    dentry_parent: 0,
    dentry_name: 0,
    qstr_name: 0,
    inode_mode: 0,
    inode_rdev: 0,
    task_exit_code: 0,
    btrfs_vfs_inode: 0,
    btrfs_inode_root: 0,
    btrfs_root_anon_dev: 0,
    ovl_vfs_inode: 0,
    ovl_upper: 0,
    ovl_flags: 0,
    ovl_oe: 0,
    ovl_lower_dentry: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    task_fs: 0,
    fs_root_dentry: 0,
    socket_sk: 0,
    unix_sock_dentry: 0,
    unix_sock_addr: 0,
    unix_address_name: 0,
    uring_cmd: 0,
    uring_rename_old: 0,
    uring_rename_new: 0,
    uring_unlink_name: 0,
    uring_socket_domain: 0,
    uring_socket_type: 0,
    uring_socket_protocol: 0,
    filename_name: 0,
    cgroup_kn: 0,
    kernfs_node_id: 0,
    cgroup_root: 0,
    cgroup_root_hierarchy_id: 0,
    send_signal_task: 0,
    _pad: 0,
});

#[inline(always)]
pub(crate) fn offsets() -> KernelOffsets {
    LEASH_OFFSETS.load()
}

#[map]
pub(crate) static PROCS: HashMap<u32, u64> = HashMap::with_max_entries(PROCS_CAPACITY, 0);

#[map]
pub(crate) static TASKS: HashMap<u64, TaskInfo> = HashMap::with_max_entries(TASKS_CAPACITY, 0);

#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

#[map]
pub(crate) static DECISIONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DECISIONS_LEN, 0);

#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_LEN, 0);

/// A field of a tracepoint record at a constant, aligned `offset`, loaded straight from
/// the context (the verifier allows that for tracepoint programs) rather than through
/// `read_at`'s probe-read helper call, which every guard and `socket()` paid.
#[inline(always)]
pub(crate) fn tp_field<T: Copy>(ctx: &TracePointContext, offset: usize) -> T {
    // SAFETY: the record is at least `offset + size_of::<T>()` bytes long for every
    // tracepoint a caller reads (the syscall records hold six u64 arguments from
    // offset 16), and the offsets are aligned.
    unsafe { ctx.as_ptr().cast::<u8>().add(offset).cast::<T>().read() }
}

#[inline(always)]
pub(crate) fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: helper without arguments. BOOTTIME keeps counting across suspend, so a
    // grant's expiry cannot be stretched by sleeping the machine.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[inline(always)]
pub(crate) fn bump(stat: Stat) {
    if let Some(v) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *v += 1 };
    }
}

/// Stops the calling process (every thread of it) before it returns to user space.
#[inline(always)]
pub(crate) fn kill_current() {
    bump(Stat::Killed);
    // SIGKILL. SAFETY: signals the current task only.
    unsafe { bpf_send_signal(9) };
}

/// `enum pid_type`'s `PIDTYPE_TGID`: the signal goes to the whole process.
const PIDTYPE_TGID: u32 = 1;

/// Sends SIGKILL to the process of `task` (a trusted `struct task_struct *`, such as a
/// `tp_btf` argument) with the kfunc `bpf_send_signal_task`, where the loader found it
/// (Linux >= 6.13). Returns whether the signal was sent; without the kfunc the branch
/// is dead for the verifier (the flag is a frozen load-time constant), so the
/// placeholder call it holds is never checked nor kept.
#[inline(always)]
pub(crate) fn kill_task(task: *const core::ffi::c_void) -> bool {
    if offsets().send_signal_task == 0 {
        return false;
    }
    // SAFETY: the loader rewrote this call into `bpf_send_signal_task(task, sig,
    // type, value)`, whose arguments are these; the verifier checks `task`.
    let rc = unsafe {
        let kfunc: unsafe extern "C" fn(*const core::ffi::c_void, i32, u32, u64) -> i64 =
            core::mem::transmute(leash_common::offsets::SEND_SIGNAL_TASK_CALL as usize);
        kfunc(task, 9, PIDTYPE_TGID, 0)
    };
    if rc == 0 {
        bump(Stat::Killed);
    }
    rc == 0
}

/// The task of the calling thread, if it is tagged.
#[inline(always)]
pub(crate) fn current_task() -> Option<u64> {
    // SAFETY: PROCS values are plain u64 copies.
    unsafe { PROCS.get(current_tid()) }.copied()
}

/// The task a tagged thread belongs to, and whether its grants may be consulted.
pub(crate) enum Gate {
    /// Not in any task: allow, touch nothing else.
    Untagged,
    /// Live task: decide on its grants.
    Live { task: u64, info: TaskInfo },
    /// Tagged but the task is gone, ended or expired: deny without looking at grants.
    Closed {
        task: u64,
        slot: u32,
        reason: Reason,
    },
}

/// Classifies a tag. `tag` is the result of the `PROCS` lookup.
#[inline(always)]
pub(crate) fn gate(tag: Option<&u64>, now: u64) -> Gate {
    let Some(&task) = tag else {
        return Gate::Untagged;
    };
    // SAFETY: the map value is read once into a copy.
    let Some(info) = (unsafe { TASKS.get(task) }).copied() else {
        return Gate::Closed {
            task,
            slot: 0,
            reason: Reason::UnknownTask,
        };
    };
    if !info.is_active() {
        return Gate::Closed {
            task,
            slot: info.counter_slot,
            reason: Reason::TaskEnded,
        };
    }
    if info.expired_at(now) {
        return Gate::Closed {
            task,
            slot: info.counter_slot,
            reason: Reason::TaskExpired,
        };
    }
    Gate::Live { task, info }
}

/// Outcome of a decision, with what the event needs to say about it.
#[derive(Clone, Copy)]
pub(crate) struct Decision {
    pub task: u64,
    pub slot: u32,
    pub action: Action,
    pub verdict: Verdict,
    pub reason: Reason,
}

impl Decision {
    /// Turns a grant lookup result into a decision, honouring audit mode.
    #[inline(always)]
    pub(crate) fn of(
        task: u64,
        info: &TaskInfo,
        action: Action,
        result: Result<(), Reason>,
    ) -> Self {
        let (verdict, reason) = match result {
            Ok(()) => (Verdict::Allowed, Reason::Granted),
            Err(reason) if info.is_audit() => (Verdict::Audited, reason),
            Err(reason) => (Verdict::Denied, reason),
        };
        Self {
            task,
            slot: info.counter_slot,
            action,
            verdict,
            reason,
        }
    }

    #[inline(always)]
    pub(crate) fn closed(task: u64, slot: u32, action: Action, reason: Reason) -> Self {
        Self {
            task,
            slot,
            action,
            verdict: Verdict::Denied,
            reason,
        }
    }

    /// A denial that no grant can lift (self-protection, a full map); the counter slot
    /// comes from the task while it exists.
    #[inline(always)]
    pub(crate) fn forced(task: u64, action: Action, reason: Reason) -> Self {
        // SAFETY: the value is copied out at once.
        let slot = unsafe { TASKS.get(task) }.map_or(0, |i| i.counter_slot);
        Self::closed(task, slot, action, reason)
    }

    #[inline(always)]
    pub(crate) fn allows(&self) -> bool {
        !matches!(self.verdict, Verdict::Denied)
    }

    /// Counts the decision in the per-CPU counters.
    #[inline(always)]
    pub(crate) fn count(&self) {
        if let Some(v) = DECISIONS.get_ptr_mut(counter_index(self.slot, self.action, self.verdict))
        {
            // SAFETY: per-CPU slot, no concurrent writer on this CPU.
            unsafe { *v += 1 };
        }
    }

    /// Reserves an event with the common fields filled in; the caller adds the target
    /// and submits. A full ring buffer is counted, never silent.
    #[inline(always)]
    pub(crate) fn event(&self, now: u64) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<Event>> {
        let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
            bump(Stat::EventsLost);
            return None;
        };
        let pid_tgid = bpf_get_current_pid_tgid();
        entry.write(Event {
            ts_ns: now,
            task: self.task,
            ino: 0,
            tid: pid_tgid as u32,
            pid: (pid_tgid >> 32) as u32,
            dev: 0,
            action: self.action as u8,
            verdict: self.verdict as u8,
            reason: self.reason as u8,
            family: 0,
            port: 0,
            _pad: [0; 2],
            proto: 0,
            addr: [0; 16],
            comm: bpf_get_current_comm().unwrap_or_default(),
            path: [0; leash_common::event::PATH_LEN],
        });
        Some(entry)
    }
}
