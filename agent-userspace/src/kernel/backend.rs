//! The two enforcement backends and how one is chosen.

use std::{fmt, str::FromStr};

use agent_common::maps::programs as p;

use crate::kernel::attach_points::{LSM_MOUNT_DOORS, PORTABLE_MOUNT_DOORS};

/// Which backend enforces exec (network uses the cgroup hooks on both).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// BPF LSM: exec denied with EPERM in `bprm_check_security`, forks of dead tasks refused.
    Lsm,
    /// No BPF LSM: exec stopped with SIGKILL in `sched_process_exec` before the new
    /// image runs an instruction.
    Portable,
}

const SOCKETS_RAW: &str = "raw IP sockets and IP protocols other than TCP/UDP: EPERM unless socket:raw (cgroup sock_create)";
const SOCKETS_OTHER: &str = "packet, netlink, vsock sockets (unless socket: granted), other families: killed with SIGKILL at syscall entry (io_uring IORING_OP_SOCKET not seen)";
const UNIX_HOOKS: &str = "unix connect/send to names not unix: granted: EPERM (cgroup connect_unix, sendmsg_unix, Linux >= 6.7; io_uring included)";
const UNIX_TRACEPOINTS: &str = "unix connect/send that reached a name not unix: granted: killed at syscall exit (failed attempts let be; kernels before 6.7, which have no cgroup unix hooks); io_uring connects to unix paths not seen";
const GUARD: &str = "bpf(), signals or pidfd_open to the daemon, kill(-1), unlink/rename/umount on /sys/fs/bpf, unlink/rename of the API socket or a directory above it (by the path passed), cgroup moves: the caller is killed with SIGKILL (the call itself completes; see docs/security.md)";
const LSM_GUARD: &str = "bpf(): EPERM (lsm bpf); signals to the daemon: EPERM, never delivered (lsm task_kill); unlink, rmdir, rename on any bpffs mount, or of the API socket or a directory above it (by inode): EPERM (lsm inode_unlink, inode_rmdir, inode_rename); pidfd_open of the daemon, cgroup moves: the caller is killed with SIGKILL (the call itself completes; see docs/security.md)";
const MOUNTS: &str = "mount, umount2 (any mount), move_mount, fsopen, fsmount, fspick, open_tree clones, mount_setattr, pivot_root, chroot: the caller is killed with SIGKILL (a mount, unmount, pivot or attribute change lands in the caller's mount namespace; see docs/security.md)";
const LSM_MOUNTS: &str = "mount, umount2 (any mount), move_mount, pivot_root, chroot: EPERM (lsm sb_mount, move_mount, sb_umount, sb_pivotroot, path_chroot); fsopen, fsmount, fspick, open_tree clones, mount_setattr: the caller is killed with SIGKILL (no LSM hook)";
const DOORS: &str = "init_module, finit_module, delete_module, kexec_load, kexec_file_load, iopl, ioperm: the caller is killed with SIGKILL (the call itself completes)";
const LSM_DOORS: &str = "module and kexec image loads, iopl/ioperm: EPERM before anything is loaded or granted (lsm kernel_load_data, kernel_read_file, locked_down); delete_module: the caller is killed with SIGKILL (the unload lands; no LSM hook)";
const NET: &str = "connect/sendmsg: EPERM (cgroup sock_addr hooks)";
const PORTABLE_EXEC: &str = "exec: killed with SIGKILL after exec commits, before the new program runs an instruction (tp_btf sched_process_exec)";
const PORTABLE_SCRIPTS: &str =
    "shebang scripts: interpreter checked by inode, script by its granted absolute path";
const PORTABLE_PTRACE: &str = "ptrace attach, process_vm_writev outside the task, pidfd_getfd: the caller is killed with SIGKILL (a process_vm_writev lands; /proc/<pid>/mem is not watched)";
const COMPAT: &str = "compat system calls (i386: int 0x80, sysenter, 32-bit syscall; x32): the caller is killed with SIGKILL at its first one, whatever the call (tp_btf sys_enter; the call itself completes, see docs/security.md); granted 32-bit programs are stopped too";
const FORK: &str =
    "fork with a full process map: refused (the caller is killed before the child exists)";
const LSM_HOST: &str = "opening for write /proc/sys (procfs outside /proc/<pid>), sysfs, binfmt_misc, debugfs, tracefs, securityfs, configfs, efivarfs; opening /dev/mem, /dev/kmem, /dev/port (by device number) or /proc/kcore: EPERM (lsm file_open; io_uring opens included)";
const LSM_URING: &str = "io_uring without socket:io_uring: EPERM (lsm inode_init_security_anon)";
const PORTABLE_HOST_STATE: &str = "opening for write /proc/sys (procfs outside /proc/<pid>), sysfs, binfmt_misc, debugfs, tracefs, securityfs, configfs, efivarfs; opening /dev/mem, /dev/kmem, /dev/port (by device number) or /proc/kcore: killed with SIGKILL at the open's exit (the open completes, nothing is written; another thread writing through the new descriptor first wins the race; io_uring opens not seen)";
const PORTABLE_URING: &str = "io_uring without socket:io_uring: killed with SIGKILL at io_uring_setup (the ring dies with the caller)";

impl Backend {
    /// What a tagged process meets on this backend, for `leash status` and the docs;
    /// `unix_hooks`: the kernel has the cgroup unix hooks and the portable backend uses
    /// them.
    #[must_use]
    pub const fn guarantees(self, unix_hooks: bool) -> &'static [&'static str] {
        match self {
            Self::Lsm => &[
                "exec: refused with EPERM before the new program loads (lsm bprm_check_security; script and interpreter both checked)",
                "fork: refused once the task has ended or expired (lsm task_alloc)",
                NET,
                SOCKETS_RAW,
                "packet, netlink, vsock sockets (unless socket: granted), other families, unix connect/send to names not unix: granted: EPERM (lsm socket_create, socket_connect, socket_sendmsg; io_uring included)",
                "ptrace attach, process_vm_*, /proc/<pid>/mem, pidfd_getfd outside the task: EPERM (lsm ptrace_access_check)",
                LSM_GUARD,
                FORK,
                COMPAT,
                LSM_MOUNTS,
                LSM_DOORS,
                LSM_HOST,
                LSM_URING,
            ],
            Self::Portable if unix_hooks => &[
                PORTABLE_EXEC,
                PORTABLE_SCRIPTS,
                NET,
                SOCKETS_RAW,
                SOCKETS_OTHER,
                UNIX_HOOKS,
                PORTABLE_PTRACE,
                GUARD,
                FORK,
                COMPAT,
                MOUNTS,
                DOORS,
                PORTABLE_HOST_STATE,
                PORTABLE_URING,
            ],
            Self::Portable => &[
                PORTABLE_EXEC,
                PORTABLE_SCRIPTS,
                NET,
                SOCKETS_RAW,
                SOCKETS_OTHER,
                UNIX_TRACEPOINTS,
                PORTABLE_PTRACE,
                GUARD,
                FORK,
                COMPAT,
                MOUNTS,
                DOORS,
                PORTABLE_HOST_STATE,
                PORTABLE_URING,
            ],
        }
    }

    /// Programs this backend loads in addition to [`COMMON_PROGRAMS`]; `unix_hooks` as
    /// for [`Self::guarantees`].
    #[must_use]
    pub fn programs(self, unix_hooks: bool) -> Vec<&'static str> {
        match self {
            // process_sched_exec only carries a tag across an exec from a non-leader
            // thread; exec_sched_exec (portable) does that itself.
            Self::Lsm => [
                p::EXEC_BPRM_CHECK,
                p::PROCESS_TASK_ALLOC,
                p::PROCESS_SCHED_EXEC,
                p::GUARD_LSM_PTRACE,
                p::GUARD_LSM_TASK_KILL,
                p::GUARD_LSM_BPF,
                p::GUARD_LSM_UNLINK,
                p::GUARD_LSM_RMDIR,
                p::GUARD_LSM_RENAME,
                p::FAMILY_LSM_SOCKET_CREATE,
                p::FAMILY_LSM_SOCKET_CONNECT,
                p::FAMILY_LSM_SOCKET_SENDMSG,
                p::HOST_LSM_FILE_OPEN,
                p::URING_LSM_ANON_INODE,
            ]
            .into_iter()
            .chain(LSM_MOUNT_DOORS)
            .collect(),
            // Unix names by the cgroup unix hooks where the kernel has them.
            Self::Portable => [p::EXEC_SCHED_EXEC, p::FAMILY_SOCKET]
                .into_iter()
                .chain(
                    if unix_hooks {
                        &[p::FAMILY_CONNECT_UNIX, p::FAMILY_SENDMSG_UNIX][..]
                    } else {
                        &UNIX_TRACEPOINT_PROGRAMS[..]
                    }
                    .iter()
                    .copied(),
                )
                .chain(PORTABLE_GUARDS)
                .chain(PORTABLE_MOUNT_DOORS)
                .chain(PORTABLE_HOST)
                .collect(),
        }
    }
}

/// The portable backend's unix-name tracepoints, before Linux 6.7 (`family.rs`).
const UNIX_TRACEPOINT_PROGRAMS: [&str; 8] = [
    p::FAMILY_CONNECT,
    p::FAMILY_SENDTO,
    p::FAMILY_SENDMSG,
    p::FAMILY_SENDMMSG,
    p::FAMILY_CONNECT_EXIT,
    p::FAMILY_SENDTO_EXIT,
    p::FAMILY_SENDMSG_EXIT,
    p::FAMILY_SENDMMSG_EXIT,
];

/// Syscall tracepoints of the portable backend's self-protection where the lsm backend
/// has an LSM hook that refuses the call instead (`lsm_guard.rs`).
const PORTABLE_GUARDS: [&str; 15] = [
    p::GUARD_PTRACE,
    p::GUARD_PROCESS_VM_WRITEV,
    p::GUARD_PIDFD_GETFD,
    p::GUARD_BPF,
    p::GUARD_KILL,
    p::GUARD_TKILL,
    p::GUARD_TGKILL,
    p::GUARD_RT_SIGQUEUEINFO,
    p::GUARD_RT_TGSIGQUEUEINFO,
    p::GUARD_UNLINK,
    p::GUARD_UNLINKAT,
    p::GUARD_RMDIR,
    p::GUARD_RENAME,
    p::GUARD_RENAMEAT,
    p::GUARD_RENAMEAT2,
];

/// The portable backend's open-exit tracepoints for host state and kernel doors, and
/// its `io_uring_setup` guard, where the lsm backend refuses in `file_open` and
/// `inode_init_security_anon` (`host.rs`, `uring.rs`).
const PORTABLE_HOST: [&str; 6] = [
    p::HOST_OPEN_EXIT,
    p::HOST_OPENAT_EXIT,
    p::HOST_OPENAT2_EXIT,
    p::HOST_OPEN_BY_HANDLE_AT_EXIT,
    p::HOST_CREAT_EXIT,
    p::URING_SETUP,
];

/// Programs both backends load: tagging, the cgroup network hooks, socket families
/// (family.rs), self-protection (guard.rs, mounts.rs, doors.rs) and compat system
/// calls (compat.rs).
pub const COMMON_PROGRAMS: [&str; 20] = [
    p::PROCESS_NEWTASK,
    p::PROCESS_EXIT,
    p::NET_CONNECT4,
    p::NET_CONNECT6,
    p::NET_SENDMSG4,
    p::NET_SENDMSG6,
    p::FAMILY_SOCK_CREATE,
    p::GUARD_PIDFD_OPEN,
    p::GUARD_CGROUP,
    p::GUARD_CLONE,
    p::GUARD_CLONE3,
    p::GUARD_FORK,
    p::GUARD_VFORK,
    p::COMPAT_SYS_ENTER,
    // Mount calls and module unloading, which no LSM hook sees (mounts.rs, doors.rs).
    p::GUARD_FSOPEN,
    p::GUARD_FSMOUNT,
    p::GUARD_FSPICK,
    p::GUARD_OPEN_TREE,
    p::GUARD_MOUNT_SETATTR,
    p::DOOR_DELETE_MODULE,
];

/// Every program of the object that some backend attaches, each once.
#[must_use]
pub fn all_programs() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = COMMON_PROGRAMS.to_vec();
    for backend in [Backend::Portable, Backend::Lsm] {
        for unix_hooks in [false, true] {
            for p in backend.programs(unix_hooks) {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
    }
    all
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lsm => "lsm",
            Self::Portable => "portable",
        })
    }
}

/// What the operator asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// `lsm` where the kernel allows BPF LSM programs, else `portable`.
    #[default]
    Auto,
    Lsm,
    Portable,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "lsm" => Ok(Self::Lsm),
            "portable" => Ok(Self::Portable),
            other => Err(format!(
                "unknown backend {other:?}: use one of auto, lsm, portable"
            )),
        }
    }
}
