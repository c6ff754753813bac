//! The two enforcement backends and what each guarantees.

use std::fmt;

use leash_common::maps::programs as p;

use crate::kernel::programs;

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

const LSM_EXEC: &str = "exec: refused with EPERM before the new program loads (lsm bprm_check_security; script and interpreter both checked)";
const LSM_FORK: &str = "fork: refused once the task has ended or expired (lsm task_alloc)";
const LSM_SOCKETS: &str = "packet, netlink, vsock sockets (unless socket: granted), other families, unix connect/send to names not unix: granted: EPERM (lsm socket_create, socket_connect, socket_sendmsg; io_uring included)";
const LSM_UNIX_PEER: &str = "unix connect/send whose peer is not the socket a unix: path grant named when it was made (a symlink, hard link, mount or rename put on the path), or to a path granted in another mount namespace or root: EPERM (lsm unix_stream_connect, unix_may_send, socket_connect, socket_sendmsg)";
const LSM_PTRACE: &str = "ptrace attach, process_vm_*, /proc/<pid>/mem, pidfd_getfd outside the task: EPERM (lsm ptrace_access_check)";
const SOCKETS_RAW: &str = "raw IP sockets and IP protocols other than TCP/UDP: EPERM unless socket:raw (cgroup sock_create)";
const SOCKETS_OTHER: &str = "packet, netlink, vsock sockets (unless socket: granted), other families: killed with SIGKILL at syscall entry (io_uring IORING_OP_SOCKET: the submitter, when the ring is granted)";
const UNIX_HOOKS: &str = "unix connect/send to names not unix: granted, or to a path granted in another mount namespace or root: EPERM (cgroup connect_unix, sendmsg_unix, Linux >= 6.7; io_uring included)";
const UNIX_TRACEPOINTS: &str = "unix connect/send that reached a name not unix: granted, or a path granted in another mount namespace or root: killed at syscall exit (failed attempts let be; kernels before 6.7, which have no cgroup unix hooks); io_uring connects to unix paths not seen";
const GUARD: &str = "bpf(), signals or pidfd_open to the daemon, kill(-1), unlink/rename/umount on /sys/fs/bpf, unlink/rename of the API socket or a directory above it (by the path passed; a path the guard cannot read counts), cgroup moves: the caller is killed with SIGKILL (the call itself completes; see docs/security.md)";
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
const PORTABLE_URING: &str = "io_uring without socket:io_uring: killed with SIGKILL at io_uring_setup (the ring dies with the caller); with it, UNLINKAT/RENAMEAT of /sys/fs/bpf or the API socket's names and SOCKET of a family not granted kill the submitter (the request still runs), OPENAT of host state is not seen";

/// What a tagged process meets, in the order `leash status` lists it, each line with
/// the program that provides it: a backend shows the lines of the programs it loads
/// ([`programs::PROGRAMS`]).
const GUARANTEES: [(&str, &str); 25] = [
    (p::EXEC_BPRM_CHECK, LSM_EXEC),
    (p::PROCESS_TASK_ALLOC, LSM_FORK),
    (p::EXEC_SCHED_EXEC, PORTABLE_EXEC),
    (p::EXEC_SCHED_EXEC, PORTABLE_SCRIPTS),
    (p::NET_CONNECT4, NET),
    (p::FAMILY_SOCK_CREATE, SOCKETS_RAW),
    (p::FAMILY_LSM_SOCKET_CREATE, LSM_SOCKETS),
    (p::FAMILY_LSM_UNIX_STREAM_CONNECT, LSM_UNIX_PEER),
    (p::FAMILY_SOCKET, SOCKETS_OTHER),
    (p::FAMILY_CONNECT_UNIX, UNIX_HOOKS),
    (p::FAMILY_CONNECT, UNIX_TRACEPOINTS),
    (p::GUARD_LSM_PTRACE, LSM_PTRACE),
    (p::GUARD_PTRACE, PORTABLE_PTRACE),
    (p::GUARD_LSM_BPF, LSM_GUARD),
    (p::GUARD_BPF, GUARD),
    (p::GUARD_CLONE, FORK),
    (p::COMPAT_SYS_ENTER, COMPAT),
    (p::GUARD_LSM_MOUNT, LSM_MOUNTS),
    (p::GUARD_MOUNT, MOUNTS),
    (p::DOOR_LSM_LOAD_DATA, LSM_DOORS),
    (p::DOOR_INIT_MODULE, DOORS),
    (p::HOST_LSM_FILE_OPEN, LSM_HOST),
    (p::HOST_OPEN_EXIT, PORTABLE_HOST_STATE),
    (p::URING_LSM_ANON_INODE, LSM_URING),
    (p::URING_SETUP, PORTABLE_URING),
];

impl Backend {
    /// What a tagged process meets on this backend, for `leash status` and the docs;
    /// `unix_hooks`: the kernel has the cgroup unix hooks and the portable backend uses
    /// them.
    #[must_use]
    pub fn guarantees(self, unix_hooks: bool) -> Vec<&'static str> {
        GUARANTEES
            .iter()
            .filter(|(program, _)| {
                programs::find(program).is_some_and(|p| p.on.backend(self, unix_hooks))
            })
            .map(|(_, line)| *line)
            .collect()
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Lsm => "lsm",
            Self::Portable => "portable",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_backend_lists_its_guarantees_in_order() {
        assert_eq!(
            Backend::Lsm.guarantees(false),
            [
                LSM_EXEC,
                LSM_FORK,
                NET,
                SOCKETS_RAW,
                LSM_SOCKETS,
                LSM_UNIX_PEER,
                LSM_PTRACE,
                LSM_GUARD,
                FORK,
                COMPAT,
                LSM_MOUNTS,
                LSM_DOORS,
                LSM_HOST,
                LSM_URING,
            ]
        );
        for (unix_hooks, unix) in [(true, UNIX_HOOKS), (false, UNIX_TRACEPOINTS)] {
            assert_eq!(
                Backend::Portable.guarantees(unix_hooks),
                [
                    PORTABLE_EXEC,
                    PORTABLE_SCRIPTS,
                    NET,
                    SOCKETS_RAW,
                    SOCKETS_OTHER,
                    unix,
                    PORTABLE_PTRACE,
                    GUARD,
                    FORK,
                    COMPAT,
                    MOUNTS,
                    DOORS,
                    PORTABLE_HOST_STATE,
                    PORTABLE_URING,
                ]
            );
        }
    }
}
