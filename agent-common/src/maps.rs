//! Map and program names: the one place both sides take them from.
//!
//! The kernel crate declares `#[map] static NAME` with exactly these identifiers; a
//! userspace test checks that every name here exists in the built object.

/// Where bpffs is mounted: every pin lives below it, and tagged processes may not
/// unlink, rename or unmount anything there.
pub const BPFFS: &str = "/sys/fs/bpf";

/// tid → task id (`u64`). A thread is tagged when it appears here.
pub const PROCS: &str = "PROCS";
/// task id → [`crate::TaskInfo`].
pub const TASKS: &str = "TASKS";
/// [`crate::ExecKey`] → [`crate::ExecGrant`].
pub const EXEC_GRANTS: &str = "EXEC_GRANTS";
/// [`crate::ScriptKey`] → [`crate::ExecGrant`] (portable backend only).
pub const SCRIPT_GRANTS: &str = "SCRIPT_GRANTS";
/// Prefixes shorter than an address, counted over every task's trie: the name the
/// config (`maps.net_grants`), metrics and `leash status` use. Not a kernel map: the
/// entries live in the tries of [`NET_PREFIXES`].
pub const NET_GRANTS: &str = "NET_GRANTS";
/// Array of maps: slot → one task's LPM trie ([`crate::NetKey`] → [`crate::NetRules`],
/// prefixes shorter than an address). Userspace fills slots ahead of need.
pub const NET_PREFIXES: &str = "NET_PREFIXES";
/// Task id → its slot in [`NET_PREFIXES`] (`u32`); tasks without prefixes have none.
pub const NET_SLOTS: &str = "NET_SLOTS";
/// Hash: [`crate::NetKey`] → [`crate::NetRules`], full addresses (looked up first).
pub const NET_HOSTS: &str = "NET_HOSTS";
/// Cgroup id → 1: the cgroups the network hooks are attached to (attach scope `task`).
pub const LEASH_CGROUPS: &str = "LEASH_CGROUPS";
/// Ring buffer of [`crate::Event`].
pub const EVENTS: &str = "EVENTS";
/// Per-CPU decision counters, indexed by [`crate::event::counter_index`].
pub const DECISIONS: &str = "DECISIONS";
/// Per-CPU health counters, indexed by [`Stat`].
pub const STATS: &str = "STATS";

/// [`crate::UnixKey`] → [`crate::UnixGrant`]: granted unix socket names, with the
/// mount namespace and root a path name holds in.
pub const UNIX_GRANTS: &str = "UNIX_GRANTS";
/// [`crate::ExecKey`] (task, inode, `s_dev` of the socket file) → [`crate::ExecGrant`]:
/// the sockets unix path grants named when they were made (lsm backend: the peer a
/// connect or send reaches must be one of them). Task 0: every task's (the API socket).
pub const UNIX_SOCKETS: &str = "UNIX_SOCKETS";
/// Process id (tgid) → 1: processes a tagged process may not signal or trace (the daemon).
pub const PROTECTED: &str = "PROTECTED";
/// NUL-padded path (`[u8; UNIX_PATH_LEN]`) → 1: the daemon's API socket and the
/// directories above it, which a tagged process may not unlink or rename (portable
/// backend, by the path string the call passes).
pub const PROTECTED_NAMES: &str = "PROTECTED_NAMES";
/// [`crate::ExecKey`] with task 0 → 1: the same files by identity (lsm backend).
pub const PROTECTED_INODES: &str = "PROTECTED_INODES";

/// Task id → [`crate::DnsTarget`]: where the task's DNS queries are redirected.
pub const DNS_TARGETS: &str = "DNS_TARGETS";
/// Socket cookie → [`crate::DnsOrigin`] (LRU): the resolver a redirected socket aimed at.
pub const DNS_ORIGINS: &str = "DNS_ORIGINS";

/// Every map of the object, for checks and for `leash status`.
pub const ALL: [&str; 18] = [
    PROCS,
    TASKS,
    EXEC_GRANTS,
    SCRIPT_GRANTS,
    NET_PREFIXES,
    NET_SLOTS,
    NET_HOSTS,
    EVENTS,
    DECISIONS,
    STATS,
    LEASH_CGROUPS,
    UNIX_GRANTS,
    UNIX_SOCKETS,
    PROTECTED,
    PROTECTED_NAMES,
    PROTECTED_INODES,
    DNS_TARGETS,
    DNS_ORIGINS,
];

/// Default capacities; userspace may resize before load.
pub const PROCS_CAPACITY: u32 = 65_536;
pub const TASKS_CAPACITY: u32 = 16_384;
pub const EXEC_GRANTS_CAPACITY: u32 = 65_536;
pub const SCRIPT_GRANTS_CAPACITY: u32 = 4_096;
/// Entries of `NET_HOSTS`, and of each task's prefix trie (allocated per entry).
/// `NET_PREFIXES` and `NET_SLOTS` hold one slot per task at most (`TASKS_CAPACITY`).
pub const NET_GRANTS_CAPACITY: u32 = 65_536;
pub const EVENTS_BYTES: u32 = 1 << 22;
/// Leash cgroups (one per cgroup that holds tasks' processes).
pub const LEASH_CGROUPS_CAPACITY: u32 = 4_096;
pub const UNIX_GRANTS_CAPACITY: u32 = 4_096;
pub const PROTECTED_CAPACITY: u32 = 64;
/// The API socket, its directories, and the canonical forms of both.
pub const PROTECTED_NAMES_CAPACITY: u32 = 32;
/// Sockets whose original resolver is remembered (least recently used go first).
pub const DNS_ORIGINS_CAPACITY: u32 = 65_536;

/// Keys of [`PROCS`] at or above this are fork reservations, not thread ids: a tagged
/// thread holds one (`RESERVED | tid`) from fork entry until its child is tagged, so a
/// fork that could not be tagged is refused before the child exists. Thread ids stay
/// below `PID_MAX_LIMIT` (2^22).
pub const RESERVED: u32 = 1 << 31;

/// Indexes of the [`STATS`] per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    /// An event could not be reserved in the ring buffer.
    EventsLost = 0,
    /// A tagged parent's child could not be entered in [`PROCS`].
    TagFailed = 1,
    /// A tagged process was killed because it could not be handled safely.
    Killed = 2,
    /// A tagged thread was moved out of the leash cgroups (attach scope `task`).
    Escaped = 3,
}

pub const STATS_LEN: u32 = 4;

/// Program names, as the kernel crate names its functions.
pub mod programs {
    pub const PROCESS_NEWTASK: &str = "process_newtask";
    pub const PROCESS_EXIT: &str = "process_exit";
    pub const EXEC_SCHED_EXEC: &str = "exec_sched_exec";
    pub const EXEC_BPRM_CHECK: &str = "exec_bprm_check";
    pub const PROCESS_TASK_ALLOC: &str = "process_task_alloc";
    pub const PROCESS_SCHED_EXEC: &str = "process_sched_exec";
    pub const NET_CONNECT4: &str = "net_connect4";
    pub const NET_CONNECT6: &str = "net_connect6";
    pub const NET_SENDMSG4: &str = "net_sendmsg4";
    pub const NET_SENDMSG6: &str = "net_sendmsg6";
    pub const DNS_RECVMSG4: &str = "dns_recvmsg4";
    pub const DNS_RECVMSG6: &str = "dns_recvmsg6";
    pub const DNS_GETPEERNAME4: &str = "dns_getpeername4";
    pub const DNS_GETPEERNAME6: &str = "dns_getpeername6";
    pub const SCOPE_CGROUP_ATTACH: &str = "scope_cgroup_attach";
    pub const SCOPE_SOCKET_EXIT: &str = "scope_socket_exit";
    pub const FAMILY_SOCK_CREATE: &str = "family_sock_create";
    pub const FAMILY_SOCKET: &str = "family_socket";
    pub const FAMILY_CONNECT: &str = "family_connect";
    pub const FAMILY_SENDTO: &str = "family_sendto";
    pub const FAMILY_SENDMSG: &str = "family_sendmsg";
    pub const FAMILY_SENDMMSG: &str = "family_sendmmsg";
    pub const FAMILY_CONNECT_EXIT: &str = "family_connect_exit";
    pub const FAMILY_SENDTO_EXIT: &str = "family_sendto_exit";
    pub const FAMILY_SENDMSG_EXIT: &str = "family_sendmsg_exit";
    pub const FAMILY_SENDMMSG_EXIT: &str = "family_sendmmsg_exit";
    pub const FAMILY_CONNECT_UNIX: &str = "family_connect_unix";
    pub const FAMILY_SENDMSG_UNIX: &str = "family_sendmsg_unix";
    pub const GUARD_BPF: &str = "guard_bpf";
    pub const GUARD_PTRACE: &str = "guard_ptrace";
    pub const GUARD_PROCESS_VM_WRITEV: &str = "guard_process_vm_writev";
    pub const GUARD_PIDFD_OPEN: &str = "guard_pidfd_open";
    pub const GUARD_PIDFD_GETFD: &str = "guard_pidfd_getfd";
    pub const GUARD_KILL: &str = "guard_kill";
    pub const GUARD_TKILL: &str = "guard_tkill";
    pub const GUARD_TGKILL: &str = "guard_tgkill";
    pub const GUARD_RT_SIGQUEUEINFO: &str = "guard_rt_sigqueueinfo";
    pub const GUARD_RT_TGSIGQUEUEINFO: &str = "guard_rt_tgsigqueueinfo";
    pub const GUARD_UNLINK: &str = "guard_unlink";
    pub const GUARD_UNLINKAT: &str = "guard_unlinkat";
    pub const GUARD_RMDIR: &str = "guard_rmdir";
    pub const GUARD_RENAME: &str = "guard_rename";
    pub const GUARD_RENAMEAT: &str = "guard_renameat";
    pub const GUARD_RENAMEAT2: &str = "guard_renameat2";
    pub const GUARD_UMOUNT: &str = "guard_umount";
    pub const GUARD_CGROUP: &str = "guard_cgroup";
    pub const GUARD_CLONE: &str = "guard_clone";
    pub const GUARD_CLONE3: &str = "guard_clone3";
    pub const GUARD_FORK: &str = "guard_fork";
    pub const GUARD_VFORK: &str = "guard_vfork";
    pub const GUARD_LSM_PTRACE: &str = "guard_lsm_ptrace";
    pub const GUARD_LSM_TASK_KILL: &str = "guard_lsm_task_kill";
    pub const GUARD_LSM_BPF: &str = "guard_lsm_bpf";
    pub const GUARD_LSM_UNLINK: &str = "guard_lsm_unlink";
    pub const GUARD_LSM_RMDIR: &str = "guard_lsm_rmdir";
    pub const GUARD_LSM_RENAME: &str = "guard_lsm_rename";
    pub const FAMILY_LSM_SOCKET_CREATE: &str = "family_lsm_socket_create";
    pub const FAMILY_LSM_SOCKET_CONNECT: &str = "family_lsm_socket_connect";
    pub const FAMILY_LSM_SOCKET_SENDMSG: &str = "family_lsm_socket_sendmsg";
    pub const FAMILY_LSM_UNIX_STREAM_CONNECT: &str = "family_lsm_unix_stream_connect";
    pub const FAMILY_LSM_UNIX_MAY_SEND: &str = "family_lsm_unix_may_send";
    pub const COMPAT_SYS_ENTER: &str = "compat_sys_enter";
    pub const GUARD_MOUNT: &str = "guard_mount";
    pub const GUARD_MOVE_MOUNT: &str = "guard_move_mount";
    pub const GUARD_FSOPEN: &str = "guard_fsopen";
    pub const GUARD_FSMOUNT: &str = "guard_fsmount";
    pub const GUARD_FSPICK: &str = "guard_fspick";
    pub const GUARD_OPEN_TREE: &str = "guard_open_tree";
    pub const GUARD_MOUNT_SETATTR: &str = "guard_mount_setattr";
    pub const GUARD_PIVOT_ROOT: &str = "guard_pivot_root";
    pub const GUARD_CHROOT: &str = "guard_chroot";
    pub const GUARD_LSM_MOUNT: &str = "guard_lsm_mount";
    pub const GUARD_LSM_MOVE_MOUNT: &str = "guard_lsm_move_mount";
    pub const GUARD_LSM_UMOUNT: &str = "guard_lsm_umount";
    pub const GUARD_LSM_PIVOT_ROOT: &str = "guard_lsm_pivot_root";
    pub const GUARD_LSM_CHROOT: &str = "guard_lsm_chroot";
    pub const DOOR_INIT_MODULE: &str = "door_init_module";
    pub const DOOR_FINIT_MODULE: &str = "door_finit_module";
    pub const DOOR_DELETE_MODULE: &str = "door_delete_module";
    pub const DOOR_KEXEC_LOAD: &str = "door_kexec_load";
    pub const DOOR_KEXEC_FILE_LOAD: &str = "door_kexec_file_load";
    pub const DOOR_IOPL: &str = "door_iopl";
    pub const DOOR_IOPERM: &str = "door_ioperm";
    pub const DOOR_LSM_LOAD_DATA: &str = "door_lsm_load_data";
    pub const DOOR_LSM_READ_FILE: &str = "door_lsm_read_file";
    pub const DOOR_LSM_LOCKED_DOWN: &str = "door_lsm_locked_down";
    pub const HOST_OPEN_EXIT: &str = "host_open_exit";
    pub const HOST_OPENAT_EXIT: &str = "host_openat_exit";
    pub const HOST_OPENAT2_EXIT: &str = "host_openat2_exit";
    pub const HOST_OPEN_BY_HANDLE_AT_EXIT: &str = "host_open_by_handle_at_exit";
    pub const HOST_CREAT_EXIT: &str = "host_creat_exit";
    pub const HOST_LSM_FILE_OPEN: &str = "host_lsm_file_open";
    pub const URING_SETUP: &str = "uring_setup";
    pub const URING_LSM_ANON_INODE: &str = "uring_lsm_anon_inode";
    pub const URING_SUBMIT_REQ: &str = "uring_submit_req";
    pub const URING_SUBMIT_SQE: &str = "uring_submit_sqe";
}
