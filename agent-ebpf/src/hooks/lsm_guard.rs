//! The lsm backend's socket-family and self-protection checks: where an LSM hook
//! exists, the call fails with EPERM (nothing happens) instead of the caller being
//! killed after it, and the hook also sees what syscall tracepoints cannot: `io_uring`
//! sockets and unix connects, `/proc/<pid>/mem`, the kernel's own copy of an address.
//! The portable backend's tracepoint versions are in `family.rs` and `guard.rs`.

use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::lsm, programs::LsmContext};
use leash_common::{Action, Reason};

use super::{
    current_task,
    family::{socket_denied, unix_refused},
    guard::{protected, refuse, same_task},
    mounts::protected_inode,
    offsets,
};

const EPERM: i32 = 1;
/// `PTRACE_MODE_ATTACH`: ptrace attach, `process_vm_*`, `/proc/<pid>/mem`, `pidfd_getfd`.
const PTRACE_MODE_ATTACH: u32 = 0x02;

/// `int security_ptrace_access_check(struct task_struct *child, unsigned int mode)`
/// (>= 5.7 for BPF LSM): attach-mode access to a process outside the task.
#[lsm(hook = "ptrace_access_check")]
pub(crate) fn guard_lsm_ptrace(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let mode: u32 = ctx.arg(1);
    if mode & PTRACE_MODE_ATTACH == 0 {
        return 0;
    }
    let Some(task) = current_task() else {
        return 0;
    };
    let child: *const u8 = ctx.arg(0);
    // SAFETY: probe read of `task_struct.pid`.
    let pid: i32 = unsafe { bpf_probe_read_kernel(child.add(offsets().task_pid as usize).cast()) }
        .unwrap_or(0);
    if same_task(task, u64::from(pid as u32)) {
        return 0;
    }
    refuse(task, Reason::GuardProcess, b"ptrace\0\0", pid as u32);
    -EPERM
}

/// `int security_bpf(int cmd, union bpf_attr *attr, unsigned int size, ...)`: every
/// `bpf()` call of a tagged process fails, whatever the command, before it does
/// anything. Only the caller matters, so the arguments (a fourth came in 6.14) are not
/// read; a denial by an earlier program on the hook never reaches this one (the
/// trampoline stops at the first non-zero return).
#[lsm(hook = "bpf")]
pub(crate) fn guard_lsm_bpf(_ctx: LsmContext) -> i32 {
    let Some(task) = current_task() else {
        return 0;
    };
    refuse(task, Reason::GuardBpf, b"bpf\0\0\0\0\0", 0);
    -EPERM
}

/// `BPF_FS_MAGIC`: a bpffs superblock, wherever it is mounted.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Is the directory inode `dir` on bpffs (any mount of it, by any path)?
#[inline(always)]
fn on_bpffs(dir: *const u8) -> bool {
    let o = offsets();
    // SAFETY: probe reads of `inode.i_sb` and `super_block.s_magic`.
    unsafe {
        let Ok(sb): Result<*const u8, _> =
            bpf_probe_read_kernel(dir.add(o.inode_sb as usize).cast())
        else {
            return false;
        };
        let magic: Result<u64, _> = bpf_probe_read_kernel(sb.add(o.sb_magic as usize).cast());
        magic == Ok(BPF_FS_MAGIC)
    }
}

/// Refuses a tagged caller's change on bpffs or to the API socket's names (the
/// portable guard compares path strings instead); `bpffs` is asked only for a tagged
/// caller, `call` names it in the event.
#[inline(always)]
fn bpffs_change(bpffs: impl FnOnce() -> bool, call: &[u8; 8]) -> i32 {
    let Some(task) = current_task() else {
        return 0;
    };
    if !bpffs() {
        return 0;
    }
    refuse(task, Reason::GuardPins, call, 0);
    -EPERM
}

/// `int security_inode_unlink(struct inode *dir, struct dentry *dentry)`: a pin removed.
#[lsm(hook = "inode_unlink")]
pub(crate) fn guard_lsm_unlink(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    bpffs_change(
        || on_bpffs(ctx.arg(0)) || protected_inode(ctx.arg(1)),
        b"unlink\0\0",
    )
}

/// `int security_inode_rmdir(struct inode *dir, struct dentry *dentry)`.
#[lsm(hook = "inode_rmdir")]
pub(crate) fn guard_lsm_rmdir(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    bpffs_change(
        || on_bpffs(ctx.arg(0)) || protected_inode(ctx.arg(1)),
        b"rmdir\0\0\0",
    )
}

/// `int security_inode_rename(struct inode *old_dir, struct dentry *old_dentry,
/// struct inode *new_dir, struct dentry *new_dentry)`: either side on bpffs, the API
/// socket (or a directory above it) moved, or replaced by what is renamed over it.
#[lsm(hook = "inode_rename")]
pub(crate) fn guard_lsm_rename(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    bpffs_change(
        || {
            on_bpffs(ctx.arg(0))
                || on_bpffs(ctx.arg(2))
                || protected_inode(ctx.arg(1))
                || protected_inode(ctx.arg(3))
        },
        b"rename\0\0",
    )
}

/// `int security_task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig,
/// const struct cred *cred)`: every signal a process sends (`kill`, `tkill`, `tgkill`,
/// queued signals, `pidfd_send_signal` with a pidfd got from anywhere, each target of
/// `kill(-1)`), refused towards leash's own processes: the signal never arrives.
#[lsm(hook = "task_kill")]
pub(crate) fn guard_lsm_task_kill(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let Some(task) = current_task() else {
        return 0;
    };
    let target: *const u8 = ctx.arg(0);
    // SAFETY: probe read of `task_struct.tgid`.
    let tgid: i32 =
        unsafe { bpf_probe_read_kernel(target.add(offsets().task_tgid as usize).cast()) }
            .unwrap_or(0);
    if !protected(u64::from(tgid as u32)) {
        return 0;
    }
    refuse(task, Reason::GuardProcess, b"signal\0\0", tgid as u32);
    -EPERM
}

/// `int security_socket_create(int family, int type, int protocol, int kern)`: families
/// other than unix and inet, `io_uring`'s `IORING_OP_SOCKET` included.
#[lsm(hook = "socket_create")]
pub(crate) fn family_lsm_socket_create(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let kern: i32 = ctx.arg(3);
    if kern != 0 {
        return 0;
    }
    let (family, sock_type, proto): (i32, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2));
    if socket_denied(family as u32, sock_type as u32, proto as u32) {
        -EPERM
    } else {
        0
    }
}

/// EPERM for a unix connect or send to the kernel address `addr` that is refused.
#[inline(always)]
fn unix_decide(action: Action, addr: u64, len: u64) -> i32 {
    let Some(task) = current_task() else {
        return 0;
    };
    if unix_refused(task, action, addr, len) {
        -EPERM
    } else {
        0
    }
}

/// `int security_socket_connect(struct socket *sock, struct sockaddr *address, int
/// addrlen)`: the kernel's copy of the address, `io_uring` connects included.
#[lsm(hook = "socket_connect")]
pub(crate) fn family_lsm_socket_connect(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let addr: u64 = ctx.arg(1);
    let len: i32 = ctx.arg(2);
    unix_decide(Action::Connect, addr, u64::from(len as u32))
}

/// `int security_socket_sendmsg(struct socket *sock, struct msghdr *msg, int size)`:
/// `msg->msg_name` (offset 0) and `msg_namelen` (offset 8) are the kernel's copy.
#[lsm(hook = "socket_sendmsg")]
pub(crate) fn family_lsm_socket_sendmsg(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    if current_task().is_none() {
        return 0;
    }
    let msg: u64 = ctx.arg(1);
    // SAFETY: probe reads of the kernel's msghdr (the helper copies; no alignment needed).
    let name: u64 = unsafe { bpf_probe_read_kernel(msg as *const u64) }.unwrap_or(0);
    let len: i32 = unsafe { bpf_probe_read_kernel((msg + 8) as *const i32) }.unwrap_or(0);
    unix_decide(Action::Send, name, u64::from(len as u32))
}
