//! The program table: the one place a kernel program is declared, with where it
//! attaches, which backend loads it and whether it follows the attach scope.
//!
//! Loading, attaching, pinning (one link pin per program, named after it), the
//! program list of `leash status` and the per-backend guarantee lines
//! ([`crate::kernel::backend`]) all derive from [`PROGRAMS`]. Adding a hook means
//! adding its name to `leash_common::maps::programs` and one row here; a row without
//! an attach point does not compile.
//!
//! Order matters: rows load and attach top to bottom, tagging first, so nothing can
//! be created untagged once enforcement starts.

use std::{fmt, path::Path};

use aya_obj::generated::bpf_attach_type::{self, BPF_CGROUP_UNIX_CONNECT, BPF_CGROUP_UNIX_SENDMSG};
use leash_common::maps::programs as p;

use crate::kernel::{AttachScope, Backend};

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Attach {
    /// The `syscalls:<name>` tracepoint.
    Syscall(&'static str),
    /// A `syscalls:<name>` tracepoint of a call a kernel may be built without
    /// (modules, kexec, I/O ports). Where it is absent the call fails with ENOSYS for
    /// everyone, so there is nothing to guard and the program is not attached.
    OptionalSyscall(&'static str),
    /// Another tracepoint a kernel may not have (built without the subsystem, or under
    /// another name): attached where it exists.
    OptionalTracepoint(&'static str, &'static str),
    /// A BTF-enabled tracepoint (`tp_btf`).
    BtfTracepoint(&'static str),
    /// `tp_btf/sys_enter` for the compat guard, which runs on every system call of the
    /// machine: attached only where a compat system call can reach the kernel
    /// ([`crate::kernel::ia32`]), so a node booted with `ia32_emulation=0` and built
    /// without x32 pays nothing for it.
    CompatEntry,
    /// An LSM hook (BPF LSM).
    Lsm(&'static str),
    /// A cgroup `sock_addr` or `sock` hook, attached by aya; the attach type (named
    /// here) is in the program's section.
    Cgroup(&'static str),
    /// A cgroup unix hook (Linux >= 6.7), loaded and attached by `unix_hooks.rs`:
    /// aya 0.14 knows neither attach type.
    Unix(bpf_attach_type),
}

impl fmt::Display for Attach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syscall(name) | Self::OptionalSyscall(name) => write!(f, "syscalls:{name}"),
            Self::OptionalTracepoint(category, name) => {
                write!(f, "{category}:{name}")
            }
            Self::BtfTracepoint(name) => write!(f, "tp_btf {name}"),
            Self::CompatEntry => f.write_str("tp_btf sys_enter (where compat calls exist)"),
            Self::Lsm(hook) => write!(f, "lsm {hook}"),
            Self::Cgroup(attach) => write!(f, "cgroup {attach}"),
            Self::Unix(attach) => write!(f, "cgroup {attach:?}"),
        }
    }
}

impl Attach {
    /// The `tp_btf` point of a BTF tracepoint row.
    pub(crate) const fn btf_tracepoint(self) -> Option<&'static str> {
        match self {
            Self::BtfTracepoint(point) => Some(point),
            Self::CompatEntry => Some("sys_enter"),
            _ => None,
        }
    }
}

/// When a program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum On {
    /// Both backends.
    Both,
    Lsm,
    Portable,
    /// The portable backend on a kernel with the cgroup unix hooks.
    PortableUnixHooks,
    /// The portable backend on a kernel without them (before Linux 6.7).
    PortableNoUnixHooks,
    /// Both backends, in attach scope `task` only.
    TaskScope,
}

impl On {
    /// Whether a program marked so loads on `backend`; `unix_hooks`: the kernel has the
    /// cgroup unix hooks and the portable backend uses them.
    pub(crate) const fn backend(self, backend: Backend, unix_hooks: bool) -> bool {
        match (self, backend) {
            (Self::Both | Self::TaskScope, _)
            | (Self::Lsm, Backend::Lsm)
            | (Self::Portable, Backend::Portable) => true,
            (Self::PortableUnixHooks, Backend::Portable) => unix_hooks,
            (Self::PortableNoUnixHooks, Backend::Portable) => !unix_hooks,
            _ => false,
        }
    }

    const fn scope(self, scope: AttachScope) -> bool {
        !matches!(self, Self::TaskScope) || matches!(scope, AttachScope::Task)
    }
}

/// One kernel program.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Program {
    /// Its function name in the kernel crate, and the name of its link pin.
    pub(crate) name: &'static str,
    pub(crate) attach: Attach,
    pub(crate) on: On,
    /// In attach scope `task`, attached to each leash cgroup instead of the cgroup2
    /// root, so untagged processes elsewhere run none of it.
    pub(crate) scoped: bool,
}

const fn prog(name: &'static str, attach: Attach, on: On) -> Program {
    Program {
        name,
        attach,
        on,
        scoped: false,
    }
}

/// A cgroup program that follows the attach scope.
const fn scoped(name: &'static str, attach: Attach, on: On) -> Program {
    Program {
        name,
        attach,
        on,
        scoped: true,
    }
}

use Attach::{
    BtfTracepoint, Cgroup, CompatEntry, Lsm, OptionalSyscall, OptionalTracepoint, Syscall, Unix,
};

/// Every program of the object, in load order.
#[rustfmt::skip]
pub(crate) const PROGRAMS: [Program; 96] = [
    // Both backends: tagging, the cgroup network hooks, socket families (family.rs),
    // self-protection (guard.rs, mounts.rs, doors.rs) and compat system calls.
    prog(p::PROCESS_NEWTASK, BtfTracepoint("task_newtask"), On::Both),
    prog(p::PROCESS_EXIT, BtfTracepoint("sched_process_exit"), On::Both),
    scoped(p::NET_CONNECT4, Cgroup("connect4"), On::Both),
    scoped(p::NET_CONNECT6, Cgroup("connect6"), On::Both),
    scoped(p::NET_SENDMSG4, Cgroup("sendmsg4"), On::Both),
    scoped(p::NET_SENDMSG6, Cgroup("sendmsg6"), On::Both),
    scoped(p::DNS_RECVMSG4, Cgroup("recvmsg4"), On::Both),
    scoped(p::DNS_RECVMSG6, Cgroup("recvmsg6"), On::Both),
    scoped(p::DNS_GETPEERNAME4, Cgroup("getpeername4"), On::Both),
    scoped(p::DNS_GETPEERNAME6, Cgroup("getpeername6"), On::Both),
    scoped(p::FAMILY_SOCK_CREATE, Cgroup("sock_create"), On::Both),
    prog(p::GUARD_PIDFD_OPEN, Syscall("sys_enter_pidfd_open"), On::Both),
    prog(p::GUARD_CGROUP, BtfTracepoint("cgroup_attach_task"), On::Both),
    prog(p::GUARD_CLONE, Syscall("sys_enter_clone"), On::Both),
    prog(p::GUARD_CLONE3, Syscall("sys_enter_clone3"), On::Both),
    prog(p::GUARD_FORK, Syscall("sys_enter_fork"), On::Both),
    prog(p::GUARD_VFORK, Syscall("sys_enter_vfork"), On::Both),
    prog(p::COMPAT_SYS_ENTER, CompatEntry, On::Both),
    // Mount calls and module unloading, which no LSM hook sees (mounts.rs, doors.rs).
    prog(p::GUARD_FSOPEN, Syscall("sys_enter_fsopen"), On::Both),
    prog(p::GUARD_FSMOUNT, Syscall("sys_enter_fsmount"), On::Both),
    prog(p::GUARD_FSPICK, Syscall("sys_enter_fspick"), On::Both),
    prog(p::GUARD_OPEN_TREE, Syscall("sys_enter_open_tree"), On::Both),
    prog(p::GUARD_MOUNT_SETATTR, Syscall("sys_enter_mount_setattr"), On::Both),
    prog(p::DOOR_DELETE_MODULE, OptionalSyscall("sys_enter_delete_module"), On::Both),
    // Portable: exec stopped in sched_process_exec (which also carries a tag across an
    // exec from a non-leader thread), socket families at syscall entry.
    prog(p::EXEC_SCHED_EXEC, BtfTracepoint("sched_process_exec"), On::Portable),
    prog(p::FAMILY_SOCKET, Syscall("sys_enter_socket"), On::Portable),
    // Unix names at syscall entry and exit, before Linux 6.7 (family.rs).
    prog(p::FAMILY_CONNECT, Syscall("sys_enter_connect"), On::PortableNoUnixHooks),
    prog(p::FAMILY_SENDTO, Syscall("sys_enter_sendto"), On::PortableNoUnixHooks),
    prog(p::FAMILY_SENDMSG, Syscall("sys_enter_sendmsg"), On::PortableNoUnixHooks),
    prog(p::FAMILY_SENDMMSG, Syscall("sys_enter_sendmmsg"), On::PortableNoUnixHooks),
    prog(p::FAMILY_CONNECT_EXIT, Syscall("sys_exit_connect"), On::PortableNoUnixHooks),
    prog(p::FAMILY_SENDTO_EXIT, Syscall("sys_exit_sendto"), On::PortableNoUnixHooks),
    prog(p::FAMILY_SENDMSG_EXIT, Syscall("sys_exit_sendmsg"), On::PortableNoUnixHooks),
    prog(p::FAMILY_SENDMMSG_EXIT, Syscall("sys_exit_sendmmsg"), On::PortableNoUnixHooks),
    // Self-protection where the lsm backend has an LSM hook that refuses the call
    // instead (lsm_guard.rs).
    prog(p::GUARD_PTRACE, Syscall("sys_enter_ptrace"), On::Portable),
    prog(p::GUARD_PROCESS_VM_WRITEV, Syscall("sys_enter_process_vm_writev"), On::Portable),
    prog(p::GUARD_PIDFD_GETFD, Syscall("sys_enter_pidfd_getfd"), On::Portable),
    prog(p::GUARD_BPF, Syscall("sys_enter_bpf"), On::Portable),
    prog(p::GUARD_KILL, Syscall("sys_enter_kill"), On::Portable),
    prog(p::GUARD_TKILL, Syscall("sys_enter_tkill"), On::Portable),
    prog(p::GUARD_TGKILL, Syscall("sys_enter_tgkill"), On::Portable),
    prog(p::GUARD_RT_SIGQUEUEINFO, Syscall("sys_enter_rt_sigqueueinfo"), On::Portable),
    prog(p::GUARD_RT_TGSIGQUEUEINFO, Syscall("sys_enter_rt_tgsigqueueinfo"), On::Portable),
    prog(p::GUARD_UNLINK, Syscall("sys_enter_unlink"), On::Portable),
    prog(p::GUARD_UNLINKAT, Syscall("sys_enter_unlinkat"), On::Portable),
    prog(p::GUARD_RMDIR, Syscall("sys_enter_rmdir"), On::Portable),
    prog(p::GUARD_RENAME, Syscall("sys_enter_rename"), On::Portable),
    prog(p::GUARD_RENAMEAT, Syscall("sys_enter_renameat"), On::Portable),
    prog(p::GUARD_RENAMEAT2, Syscall("sys_enter_renameat2"), On::Portable),
    // Mounts and kernel doors where the lsm backend has an LSM hook instead.
    prog(p::GUARD_MOUNT, Syscall("sys_enter_mount"), On::Portable),
    prog(p::GUARD_MOVE_MOUNT, Syscall("sys_enter_move_mount"), On::Portable),
    prog(p::GUARD_UMOUNT, Syscall("sys_enter_umount"), On::Portable),
    prog(p::GUARD_PIVOT_ROOT, Syscall("sys_enter_pivot_root"), On::Portable),
    prog(p::GUARD_CHROOT, Syscall("sys_enter_chroot"), On::Portable),
    prog(p::DOOR_INIT_MODULE, OptionalSyscall("sys_enter_init_module"), On::Portable),
    prog(p::DOOR_FINIT_MODULE, OptionalSyscall("sys_enter_finit_module"), On::Portable),
    prog(p::DOOR_KEXEC_LOAD, OptionalSyscall("sys_enter_kexec_load"), On::Portable),
    prog(p::DOOR_KEXEC_FILE_LOAD, OptionalSyscall("sys_enter_kexec_file_load"), On::Portable),
    prog(p::DOOR_IOPL, OptionalSyscall("sys_enter_iopl"), On::Portable),
    prog(p::DOOR_IOPERM, OptionalSyscall("sys_enter_ioperm"), On::Portable),
    // Open exits for host state and kernel doors, and the io_uring_setup guard, where
    // the lsm backend refuses in file_open and inode_init_security_anon (host.rs,
    // uring.rs).
    prog(p::HOST_OPEN_EXIT, Syscall("sys_exit_open"), On::Portable),
    prog(p::HOST_OPENAT_EXIT, Syscall("sys_exit_openat"), On::Portable),
    prog(p::HOST_OPENAT2_EXIT, Syscall("sys_exit_openat2"), On::Portable),
    prog(p::HOST_OPEN_BY_HANDLE_AT_EXIT, Syscall("sys_exit_open_by_handle_at"), On::Portable),
    prog(p::HOST_CREAT_EXIT, Syscall("sys_exit_creat"), On::Portable),
    prog(p::URING_SETUP, Syscall("sys_enter_io_uring_setup"), On::Portable),
    // A granted ring's UNLINKAT/RENAMEAT/SOCKET requests; one name per kernel.
    prog(p::URING_SUBMIT_REQ, OptionalTracepoint("io_uring", "io_uring_submit_req"), On::Portable),
    prog(p::URING_SUBMIT_SQE, OptionalTracepoint("io_uring", "io_uring_submit_sqe"), On::Portable),
    // Unix names by the cgroup unix hooks where the kernel has them (unix_hooks.rs).
    scoped(p::FAMILY_CONNECT_UNIX, Unix(BPF_CGROUP_UNIX_CONNECT), On::PortableUnixHooks),
    scoped(p::FAMILY_SENDMSG_UNIX, Unix(BPF_CGROUP_UNIX_SENDMSG), On::PortableUnixHooks),
    // Lsm: exec and fork refused, the tag carried across an exec from a non-leader
    // thread (process_sched_exec), the rest refused in LSM hooks.
    prog(p::EXEC_BPRM_CHECK, Lsm("bprm_check_security"), On::Lsm),
    prog(p::PROCESS_TASK_ALLOC, Lsm("task_alloc"), On::Lsm),
    prog(p::PROCESS_SCHED_EXEC, BtfTracepoint("sched_process_exec"), On::Lsm),
    prog(p::GUARD_LSM_PTRACE, Lsm("ptrace_access_check"), On::Lsm),
    prog(p::GUARD_LSM_TASK_KILL, Lsm("task_kill"), On::Lsm),
    prog(p::GUARD_LSM_BPF, Lsm("bpf"), On::Lsm),
    prog(p::GUARD_LSM_UNLINK, Lsm("inode_unlink"), On::Lsm),
    prog(p::GUARD_LSM_RMDIR, Lsm("inode_rmdir"), On::Lsm),
    prog(p::GUARD_LSM_RENAME, Lsm("inode_rename"), On::Lsm),
    prog(p::FAMILY_LSM_SOCKET_CREATE, Lsm("socket_create"), On::Lsm),
    prog(p::FAMILY_LSM_SOCKET_CONNECT, Lsm("socket_connect"), On::Lsm),
    prog(p::FAMILY_LSM_SOCKET_SENDMSG, Lsm("socket_sendmsg"), On::Lsm),
    // The peer a unix connect or send reaches must be the socket granted (unix_peer.rs).
    prog(p::FAMILY_LSM_UNIX_STREAM_CONNECT, Lsm("unix_stream_connect"), On::Lsm),
    prog(p::FAMILY_LSM_UNIX_MAY_SEND, Lsm("unix_may_send"), On::Lsm),
    prog(p::HOST_LSM_FILE_OPEN, Lsm("file_open"), On::Lsm),
    prog(p::URING_LSM_ANON_INODE, Lsm("inode_init_security_anon"), On::Lsm),
    prog(p::GUARD_LSM_MOUNT, Lsm("sb_mount"), On::Lsm),
    prog(p::GUARD_LSM_MOVE_MOUNT, Lsm("move_mount"), On::Lsm),
    prog(p::GUARD_LSM_UMOUNT, Lsm("sb_umount"), On::Lsm),
    prog(p::GUARD_LSM_PIVOT_ROOT, Lsm("sb_pivotroot"), On::Lsm),
    prog(p::GUARD_LSM_CHROOT, Lsm("path_chroot"), On::Lsm),
    prog(p::DOOR_LSM_LOAD_DATA, Lsm("kernel_load_data"), On::Lsm),
    prog(p::DOOR_LSM_READ_FILE, Lsm("kernel_read_file"), On::Lsm),
    prog(p::DOOR_LSM_LOCKED_DOWN, Lsm("locked_down"), On::Lsm),
    // Attach scope `task`: kills a tagged process moved out of its task's leash cgroups
    // (scope.rs; a tagged mover is guard_cgroup's).
    prog(p::SCOPE_CGROUP_ATTACH, BtfTracepoint("cgroup_attach_task"), On::TaskScope),
    prog(p::SCOPE_SOCKET_EXIT, Syscall("sys_exit_socket"), On::TaskScope),
];

/// The row of `name`.
pub(crate) fn find(name: &str) -> Option<&'static Program> {
    PROGRAMS.iter().find(|p| p.name == name)
}

impl Program {
    /// Whether it attaches on this kernel; `tracefs` is where tracefs is mounted.
    fn available(&self, tracefs: &Path) -> bool {
        match self.attach {
            OptionalSyscall(name) => tracefs.join("events/syscalls").join(name).exists(),
            CompatEntry => crate::kernel::ia32::detect().compat_entries(),
            OptionalTracepoint(category, name) => {
                tracefs.join("events").join(category).join(name).exists()
            }
            _ => true,
        }
    }
}

/// The rows `backend` loads and attaches in attach scope `scope`, in load order;
/// `unix_hooks`: the portable backend uses the cgroup unix hooks.
pub(crate) fn selected(
    backend: Backend,
    unix_hooks: bool,
    scope: AttachScope,
    tracefs: &Path,
) -> impl Iterator<Item = &'static Program> {
    PROGRAMS.iter().filter(move |p| {
        p.on.backend(backend, unix_hooks) && p.on.scope(scope) && p.available(tracefs)
    })
}

/// The names of [`selected`] attached at the cgroup2 root: the daemon pins one link per
/// program of this list under `links/` (in attach scope `task` the scoped ones are
/// pinned per leash cgroup instead).
#[must_use]
pub fn attached_by(
    backend: Backend,
    unix_hooks: bool,
    scope: AttachScope,
    tracefs: &Path,
) -> Vec<&'static str> {
    selected(backend, unix_hooks, scope, tracefs)
        .filter(|p| !(p.scoped && scope == AttachScope::Task))
        .map(|p| p.name)
        .collect()
}

/// Every program some backend attaches in attach scope `root`, for `leash status`.
#[must_use]
pub(crate) fn all_programs() -> Vec<&'static str> {
    PROGRAMS
        .iter()
        .filter(|p| p.on != On::TaskScope)
        .map(|p| p.name)
        .collect()
}

/// Whether program `name` belongs to `backend` at all (on this kernel's unix hooks): a
/// program of the other backend is not applicable, which `leash status` says rather
/// than "not attached".
pub(crate) fn applies(name: &str, backend: Backend, unix_hooks: bool) -> bool {
    PROGRAMS
        .iter()
        .any(|p| p.name == name && p.on.backend(backend, unix_hooks))
}

/// The programs attached per leash cgroup by aya (the unix hooks are apart).
pub(crate) fn scoped_cgroup() -> impl Iterator<Item = &'static str> {
    PROGRAMS
        .iter()
        .filter(|p| p.scoped && matches!(p.attach, Cgroup(_)))
        .map(|p| p.name)
}

/// The cgroup unix hooks and their attach types.
pub(crate) fn unix_hooks() -> impl Iterator<Item = (&'static str, u32)> {
    PROGRAMS.iter().filter_map(|p| match p.attach {
        Unix(attach) => Some((p.name, attach as u32)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_is_declared_once() {
        for (i, a) in PROGRAMS.iter().enumerate() {
            assert!(
                PROGRAMS[i + 1..].iter().all(|b| b.name != a.name),
                "{} twice",
                a.name
            );
        }
    }

    #[test]
    fn only_cgroup_hooks_follow_the_scope() {
        for p in PROGRAMS {
            assert!(
                !p.scoped || matches!(p.attach, Cgroup(_) | Unix(_)),
                "{}",
                p.name
            );
        }
        assert_eq!(unix_hooks().count(), 2);
    }

    #[test]
    fn every_program_is_in_the_object_with_its_kind() {
        let obj = aya_obj::Object::parse(crate::EBPF_OBJECT).unwrap();
        for p in PROGRAMS {
            let prog = obj
                .programs
                .get(p.name)
                .unwrap_or_else(|| panic!("{} is not in the object", p.name));
            let section = format!("{:?}", prog.section);
            let kind = match p.attach {
                Syscall(_) | OptionalSyscall(_) | OptionalTracepoint(..) => "TracePoint",
                BtfTracepoint(_) | CompatEntry => "BtfTracePoint",
                Lsm(_) => "Lsm",
                Cgroup("sock_create") => "CgroupSock",
                Cgroup(_) | Unix(_) => "CgroupSockAddr",
            };
            assert!(section.starts_with(kind), "{}: {section}", p.name);
        }
    }
}
