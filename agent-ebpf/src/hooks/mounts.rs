//! Mounting and re-rooting, refused to tagged processes: a bind mount, a `chroot` plus
//! a hard link or a `pivot_root` re-points a granted unix name (or the API socket's) at
//! another socket, and an unmount lets a file system's device number be reused. Also
//! the API socket's own names, which a tagged process may not unlink or rename.
//!
//! The syscall tracepoints kill the caller (the call itself completes: see
//! docs/security.md); the lsm backend refuses `mount`, `move_mount`, `umount2`,
//! `pivot_root` and `chroot` with EPERM in their LSM hooks instead, and keeps the
//! tracepoints of the calls that have no hook (`fsopen`, `fsmount`, `fspick`,
//! `open_tree`, `mount_setattr`).

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{lsm, map, tracepoint},
    maps::HashMap,
    programs::{LsmContext, TracePointContext},
};
use leash_common::{
    ExecKey, Reason,
    grant::UNIX_PATH_LEN,
    maps::{PROTECTED_CAPACITY, PROTECTED_NAMES_CAPACITY},
};

use super::{
    current_task,
    family::sys_arg,
    guard::{Unreadable, refuse, stop},
    offsets,
};

/// NUL-padded paths the daemon protects: its API socket and the directories above it.
#[map]
pub(crate) static PROTECTED_NAMES: HashMap<[u8; UNIX_PATH_LEN], u8> =
    HashMap::with_max_entries(PROTECTED_NAMES_CAPACITY, 0);

/// The same files by identity (task 0, inode, `s_dev`), for the lsm hooks.
#[map]
pub(crate) static PROTECTED_INODES: HashMap<ExecKey, u8> =
    HashMap::with_max_entries(PROTECTED_CAPACITY, 0);

const EPERM: i32 = 1;
/// `open_tree(2)`: a detached copy of a mount tree, ready for `move_mount`.
const OPEN_TREE_CLONE: u64 = 1;
/// `BPF_FS_MAGIC`.
const BPF_FS_MAGIC: u64 = 0xcafe_4a11;

/// Stops a tagged caller of a mount call.
#[inline(always)]
fn deny(call: &[u8; 8]) {
    if let Some(task) = current_task() {
        stop(task, Reason::GuardMount, call, 0);
    }
}

/// `mount(source, target, type, flags, data)`: every form (new, bind, move, remount,
/// propagation change).
#[tracepoint]
pub(crate) fn guard_mount(_ctx: TracePointContext) -> u32 {
    deny(b"mount\0\0\0");
    0
}

/// `move_mount(from_dfd, from, to_dfd, to, flags)`: attaches a detached tree.
#[tracepoint]
pub(crate) fn guard_move_mount(_ctx: TracePointContext) -> u32 {
    deny(b"move_mnt");
    0
}

/// `fsopen(fsname, flags)`: the first step of the new mount API.
#[tracepoint]
pub(crate) fn guard_fsopen(_ctx: TracePointContext) -> u32 {
    deny(b"fsopen\0\0");
    0
}

/// `fsmount(fs_fd, flags, attrs)`.
#[tracepoint]
pub(crate) fn guard_fsmount(_ctx: TracePointContext) -> u32 {
    deny(b"fsmount\0");
    0
}

/// `fspick(dfd, path, flags)`: reconfigures a mounted file system.
#[tracepoint]
pub(crate) fn guard_fspick(_ctx: TracePointContext) -> u32 {
    deny(b"fspick\0\0");
    0
}

/// `open_tree(dfd, path, flags)`: only with `OPEN_TREE_CLONE` (without it, an `O_PATH`
/// open).
#[tracepoint]
pub(crate) fn guard_open_tree(ctx: TracePointContext) -> u32 {
    if sys_arg(&ctx, 2) & OPEN_TREE_CLONE != 0 {
        deny(b"opentree");
    }
    0
}

/// `mount_setattr(dfd, path, flags, attr, size)`: propagation, idmapping, read-only.
#[tracepoint]
pub(crate) fn guard_mount_setattr(_ctx: TracePointContext) -> u32 {
    deny(b"mnt_attr");
    0
}

/// `pivot_root(new_root, put_old)`.
#[tracepoint]
pub(crate) fn guard_pivot_root(_ctx: TracePointContext) -> u32 {
    deny(b"pivot\0\0\0");
    0
}

/// `chroot(path)`: with a hard link inside, a granted name names another socket.
#[tracepoint]
pub(crate) fn guard_chroot(_ctx: TracePointContext) -> u32 {
    deny(b"chroot\0\0");
    0
}

/// Is the path at `ptr` (in user memory, or the kernel's with `kernel`) one of the
/// protected names, as passed (a trailing `/` dropped)? A relative name or another path
/// to the same file is not recognised (docs/security.md); the lsm hooks compare inodes
/// instead. A NULL pointer is not (the kernel fails the call with `EFAULT`); a path
/// that cannot be read is an error.
#[inline(always)]
pub(crate) fn protected_name(ptr: u64, kernel: bool) -> Result<bool, Unreadable> {
    if ptr == 0 {
        return Ok(false);
    }
    let mut buf = [0u8; UNIX_PATH_LEN];
    let Ok(len) = super::family::read_str_len(kernel, ptr as *const u8, &mut buf) else {
        return Err(Unreadable);
    };
    if len > 1 && len <= buf.len() && buf[len - 1] == b'/' {
        buf[len - 1] = 0;
    }
    // SAFETY: presence check only.
    Ok(unsafe { PROTECTED_NAMES.get(buf) }.is_some())
}

/// Is the file behind `dentry` (a `struct dentry *`) protected? A negative dentry
/// (no file) is not.
#[inline(always)]
pub(crate) fn protected_inode(dentry: *const u8) -> bool {
    let o = offsets();
    // SAFETY: probe reads of `dentry.d_inode`, `inode.i_ino`, `inode.i_sb` and
    // `super_block.s_dev`; a failed read or a NULL inode is "not protected".
    unsafe {
        let Ok(inode): Result<*const u8, _> =
            bpf_probe_read_kernel(dentry.add(o.dentry_inode as usize).cast())
        else {
            return false;
        };
        if inode.is_null() {
            return false;
        }
        let Ok(ino): Result<u64, _> = bpf_probe_read_kernel(inode.add(o.inode_ino as usize).cast())
        else {
            return false;
        };
        let Ok(sb): Result<*const u8, _> =
            bpf_probe_read_kernel(inode.add(o.inode_sb as usize).cast())
        else {
            return false;
        };
        let Ok(dev): Result<u32, _> = bpf_probe_read_kernel(sb.add(o.sb_dev as usize).cast())
        else {
            return false;
        };
        let key = ExecKey {
            task: 0,
            ino,
            dev,
            _pad: 0,
        };
        PROTECTED_INODES.get(key).is_some()
    }
}

/// EPERM for a tagged caller, after counting and reporting it; `previous` is passed on.
#[inline(always)]
fn refuse_mount(previous: i32, reason: Reason, call: &[u8; 8]) -> i32 {
    if previous != 0 {
        return previous;
    }
    let Some(task) = current_task() else {
        return 0;
    };
    refuse(task, reason, call, 0);
    -EPERM
}

/// `int security_sb_mount(const char *dev_name, const struct path *path, const char
/// *type, unsigned long flags, void *data)`: every form of `mount(2)`.
#[lsm(hook = "sb_mount")]
pub(crate) fn guard_lsm_mount(ctx: LsmContext) -> i32 {
    refuse_mount(ctx.arg(5), Reason::GuardMount, b"mount\0\0\0")
}

/// `int security_move_mount(const struct path *from_path, const struct path
/// *to_path)` (>= 5.2): `move_mount(2)`.
#[lsm(hook = "move_mount")]
pub(crate) fn guard_lsm_move_mount(ctx: LsmContext) -> i32 {
    refuse_mount(ctx.arg(2), Reason::GuardMount, b"move_mnt")
}

/// `int security_sb_umount(struct vfsmount *mnt, int flags)`: any unmount, reported as
/// an attempt on the pins when the mount is a bpffs instance.
#[lsm(hook = "sb_umount")]
pub(crate) fn guard_lsm_umount(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(2);
    if previous != 0 || current_task().is_none() {
        return previous;
    }
    let mnt: *const u8 = ctx.arg(0);
    let o = offsets();
    // SAFETY: probe reads of `vfsmount.mnt_sb` and `super_block.s_magic`.
    let magic: u64 = unsafe {
        bpf_probe_read_kernel::<*const u8>(mnt.add(o.vfsmount_sb as usize).cast())
            .and_then(|sb| bpf_probe_read_kernel(sb.add(o.sb_magic as usize).cast()))
            .unwrap_or(0)
    };
    let reason = if magic == BPF_FS_MAGIC {
        Reason::GuardPins
    } else {
        Reason::GuardMount
    };
    refuse_mount(0, reason, b"umount\0\0")
}

/// `int security_sb_pivotroot(const struct path *old_path, const struct path
/// *new_path)`.
#[lsm(hook = "sb_pivotroot")]
pub(crate) fn guard_lsm_pivot_root(ctx: LsmContext) -> i32 {
    refuse_mount(ctx.arg(2), Reason::GuardMount, b"pivot\0\0\0")
}

/// `int security_path_chroot(const struct path *path)` (`CONFIG_SECURITY_PATH`).
#[lsm(hook = "path_chroot")]
pub(crate) fn guard_lsm_chroot(ctx: LsmContext) -> i32 {
    refuse_mount(ctx.arg(1), Reason::GuardMount, b"chroot\0\0")
}
