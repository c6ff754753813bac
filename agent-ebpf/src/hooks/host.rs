//! Host state a task must not write, and kernel doors it must not open: decided on the
//! opened file (its file system, device number and place in procfs), never on a path
//! string, so relative paths, directory fds, symlinks, bind mounts and device nodes
//! made elsewhere are all caught.
//!
//! - Opening for write a file on sysfs, `binfmt_misc`, debugfs, tracefs, securityfs,
//!   configfs or efivarfs, or on procfs outside the per-process directories
//!   (`/proc/sys`, `/proc/sysrq-trigger`, ...): `host_state`. Reads stay allowed.
//! - Opening in any mode the raw memory devices (character devices 1:1 `/dev/mem`, 1:2
//!   `/dev/kmem`, 1:4 `/dev/port`, by the inode's device number) or `/proc/kcore`:
//!   `kernel_door`.
//!
//! The lsm backend refuses the open with EPERM (`file_open`, which also sees
//! `io_uring`'s `IORING_OP_OPENAT`). The portable backend looks at the new descriptor
//! at the exit of the open system calls and kills the caller before it returns: the
//! open itself completes, and another thread of the process that writes through the
//! descriptor before the kill lands wins that race (docs/security.md).
//!
//! The same hooks check that a granted shebang script opened for read is still as it
//! was granted (exec.rs, `script_changed`): on portable the exec hook sees only the
//! interpreter, so this is the script's check there.

use aya_ebpf::{
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
    macros::{lsm, tracepoint},
    programs::{LsmContext, TracePointContext},
};
use leash_common::Reason;

use super::{current_task, guard::refuse, kill_current, offsets, tp_field};

const EPERM: i32 = 1;
/// `FMODE_WRITE`.
const FMODE_WRITE: u32 = 0x2;
/// `FMODE_PATH`: an `O_PATH` descriptor, which reads and writes nothing (the LSM hook
/// never sees one); opening the file through it later is an open of its own.
const FMODE_PATH: u32 = 0x4000;
const S_IFMT: u16 = 0o170_000;
const S_IFCHR: u16 = 0o020_000;
/// `MKDEV(1, n)` in the kernel's `dev_t` encoding (`major << 20 | minor`).
const MEM_MAJOR: u32 = 1 << 20;
const PROC_SUPER_MAGIC: u64 = 0x9fa0;
/// The name an event gives what was opened: up to 8 bytes packed in an integer, so it
/// travels as a value (a reference to static data inside another would need a data
/// relocation the loader does not make).
type Name = u64;

const fn name(b: [u8; 8]) -> Name {
    u64::from_le_bytes(b)
}

/// Pseudo file systems whose files, written, change the kernel or what it runs.
#[inline(always)]
const fn host_fs(magic: u64) -> Option<Name> {
    Some(match magic {
        0x6265_6572 => name(*b"sysfs\0\0\0"),
        0x4249_4e4d => name(*b"binfmt\0\0"),
        0x6462_6720 => name(*b"debugfs\0"),
        0x7472_6163 => name(*b"tracefs\0"),
        0x7363_6673 => name(*b"secfs\0\0\0"),
        0x6265_6570 => name(*b"configfs"),
        0xde5e_81e4 => name(*b"efivarfs"),
        _ => return None,
    })
}

/// procfs directories deeper than this are not walked to their top: the file is taken
/// for host state (fail closed). `/proc/sys/net/ipv4/conf/<dev>/<name>` is 6 deep.
const MAX_DEPTH: u32 = 16;

/// What a tagged process must not do with `file` opened in `f_mode`: the reason and the
/// name of what it opened, for the event; `None` when the open is none of leash's
/// business. Reads that fail count as refusals (fail closed: only tagged callers get
/// here).
#[inline(always)]
fn door(file: *const u8) -> Option<(Reason, Name)> {
    let o = offsets();
    let closed = Some((Reason::GuardHostState, name(*b"unread\0\0")));
    // SAFETY: probe reads of kernel memory at BTF offsets; a fault is an error.
    unsafe {
        let Ok(mode): Result<u32, _> = bpf_probe_read_kernel(file.add(o.file_mode as usize).cast())
        else {
            return closed;
        };
        if mode & FMODE_PATH != 0 {
            return None;
        }
        let Ok(inode): Result<*const u8, _> =
            bpf_probe_read_kernel(file.add(o.file_inode as usize).cast())
        else {
            return closed;
        };
        let Ok(i_mode): Result<u16, _> =
            bpf_probe_read_kernel(inode.add(o.inode_mode as usize).cast())
        else {
            return closed;
        };
        if i_mode & S_IFMT == S_IFCHR {
            let Ok(rdev): Result<u32, _> =
                bpf_probe_read_kernel(inode.add(o.inode_rdev as usize).cast())
            else {
                return closed;
            };
            return match rdev {
                r if r == MEM_MAJOR | 1 => Some((Reason::GuardKernel, name(*b"mem\0\0\0\0\0"))),
                r if r == MEM_MAJOR | 2 => Some((Reason::GuardKernel, name(*b"kmem\0\0\0\0"))),
                r if r == MEM_MAJOR | 4 => Some((Reason::GuardKernel, name(*b"port\0\0\0\0"))),
                _ => None,
            };
        }
        let Ok(sb): Result<*const u8, _> =
            bpf_probe_read_kernel(inode.add(o.inode_sb as usize).cast())
        else {
            return closed;
        };
        let Ok(magic): Result<u64, _> = bpf_probe_read_kernel(sb.add(o.sb_magic as usize).cast())
        else {
            return closed;
        };
        let write = mode & FMODE_WRITE != 0;
        if magic == PROC_SUPER_MAGIC {
            return proc_door(file, write);
        }
        if !write {
            return None;
        }
        host_fs(magic).map(|what| (Reason::GuardHostState, what))
    }
}

/// A procfs file: `/proc/kcore` in any mode; for write, anything outside the
/// per-process directories (whose top-level name is a number: `/proc/self` and
/// `/proc/thread-self` resolve to those), found by walking the dentry's parents to
/// the procfs root.
///
/// # Safety
/// `file` is a `struct file` the kernel handed over or the caller's fd table holds.
#[inline(always)]
unsafe fn proc_door(file: *const u8, write: bool) -> Option<(Reason, Name)> {
    let o = offsets();
    let closed = if write {
        Some((Reason::GuardHostState, name(*b"procfs\0\0")))
    } else {
        None
    };
    // SAFETY: probe reads of kernel memory at BTF offsets; a fault is an error.
    unsafe {
        let Ok(mut child): Result<*const u8, _> =
            bpf_probe_read_kernel(file.add(o.file_dentry as usize).cast())
        else {
            return closed;
        };
        let Ok(mut parent): Result<*const u8, _> =
            bpf_probe_read_kernel(child.add(o.dentry_parent as usize).cast())
        else {
            return closed;
        };
        if parent == child {
            // The procfs root itself: a directory.
            return None;
        }
        let mut depth = 0;
        loop {
            if depth >= MAX_DEPTH {
                return closed;
            }
            let Ok(grand): Result<*const u8, _> =
                bpf_probe_read_kernel(parent.add(o.dentry_parent as usize).cast())
            else {
                return closed;
            };
            if grand == parent {
                break;
            }
            child = parent;
            parent = grand;
            depth += 1;
        }
        // `child` is the top-level entry.
        let Ok(top_name): Result<*const u8, _> =
            bpf_probe_read_kernel(child.add((o.dentry_name + o.qstr_name) as usize).cast())
        else {
            return closed;
        };
        let mut top = [0u8; 8];
        if bpf_probe_read_kernel_str_bytes(top_name, &mut top).is_err() {
            return closed;
        }
        if starts_with(&top, b"kcore\0") {
            return Some((Reason::GuardKernel, name(*b"kcore\0\0\0")));
        }
        if top[0].is_ascii_digit() || !write {
            return None;
        }
    }
    closed
}

/// Does `buf` start with `prefix`? A loop, not a slice comparison: that would call
/// `memcmp`, which BPF programs do not have.
#[inline(always)]
pub(crate) fn starts_with(buf: &[u8], prefix: &[u8]) -> bool {
    if buf.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if buf[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `int security_file_open(struct file *file)` (>= 5.7 for BPF LSM): every open, by
/// any system call, `io_uring` or the kernel on the caller's behalf, after the file is
/// set up and before the caller gets it.
#[lsm(hook = "file_open")]
pub(crate) fn host_lsm_file_open(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let Some(task) = current_task() else {
        return 0;
    };
    let file = ctx.arg(0);
    match door(file) {
        Some((reason, what)) => {
            refuse(task, reason, &what.to_le_bytes(), 0);
            -EPERM
        }
        None if super::exec::script_changed(task, file) => -EPERM,
        None => 0,
    }
}

/// At the exit of an open system call: the new descriptor of a tagged caller, looked up
/// in its file table (`current->files->fdt->fd[ret]`); a refused file kills the caller.
#[inline(always)]
fn opened(ctx: &TracePointContext) {
    let Some(task) = current_task() else {
        return;
    };
    // `long ret` at offset 16 of every sys_exit record.
    let ret: i64 = tp_field(ctx, 16);
    if ret < 0 {
        return;
    }
    let o = offsets();
    // SAFETY: the current task, then probe reads along its file table at BTF offsets.
    let file: Option<*const u8> = unsafe {
        let current = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel::<*const u8>(current.add(o.task_files as usize).cast())
            .and_then(|files| bpf_probe_read_kernel(files.add(o.files_fdt as usize).cast()))
            .and_then(|fdt: *const u8| bpf_probe_read_kernel(fdt.add(o.fdtable_fd as usize).cast()))
            .and_then(|fds: *const u8| bpf_probe_read_kernel(fds.add(ret as usize * 8).cast()))
            .ok()
    };
    let found = match file {
        Some(f) if !f.is_null() => door(f),
        // The descriptor is gone already (another thread closed it): what it was is
        // unknown, so the caller is stopped (fail closed).
        _ => Some((Reason::GuardHostState, name(*b"unread\0\0"))),
    };
    if let Some((reason, what)) = found {
        refuse(task, reason, &what.to_le_bytes(), 0);
        kill_current();
        return;
    }
    if let Some(f) = file
        && super::exec::script_changed(task, f)
    {
        // A granted script that changed since its grant, opened by its interpreter.
        kill_current();
    }
}

/// `open(path, flags, mode)` exit.
#[tracepoint]
pub(crate) fn host_open_exit(ctx: TracePointContext) -> u32 {
    opened(&ctx);
    0
}

/// `openat(dirfd, path, flags, mode)` exit.
#[tracepoint]
pub(crate) fn host_openat_exit(ctx: TracePointContext) -> u32 {
    opened(&ctx);
    0
}

/// `openat2(dirfd, path, how, size)` exit.
#[tracepoint]
pub(crate) fn host_openat2_exit(ctx: TracePointContext) -> u32 {
    opened(&ctx);
    0
}

/// `open_by_handle_at(mount_fd, handle, flags)` exit.
#[tracepoint]
pub(crate) fn host_open_by_handle_at_exit(ctx: TracePointContext) -> u32 {
    opened(&ctx);
    0
}

/// `creat(path, mode)` exit: `O_CREAT | O_WRONLY | O_TRUNC`, an existing file included.
#[tracepoint]
pub(crate) fn host_creat_exit(ctx: TracePointContext) -> u32 {
    opened(&ctx);
    0
}
