//! Exec enforcement: a tagged process may start only the files its task was granted.

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_send_signal},
    macros::{btf_tracepoint, lsm, map},
    maps::HashMap,
    programs::{BtfTracePointContext, LsmContext},
};
use leash_common::{
    Action, ExecFileGrant, ExecGrant, ExecKey, Reason, ScriptKey, TaskInfo,
    grant::{CHECK_CTIME, CHECK_GENERATION, CHECK_SCRIPT, CHECK_TREE, SCRIPT_PATH_LEN, TREE_DEPTH},
    maps::{EXEC_GRANTS_CAPACITY, SCRIPT_GRANTS_CAPACITY, Stat},
    offsets::enums::OVL_UPPERDATA,
};

use super::{Decision, Gate, PROCS, bump, current_tid, gate, now_ns, offsets};

const SIGKILL: u32 = 9;
const EPERM: i32 = 1;

#[map]
pub(crate) static EXEC_GRANTS: HashMap<ExecKey, ExecFileGrant> =
    HashMap::with_max_entries(EXEC_GRANTS_CAPACITY, 0);

#[map]
pub(crate) static SCRIPT_GRANTS: HashMap<ScriptKey, ExecGrant> =
    HashMap::with_max_entries(SCRIPT_GRANTS_CAPACITY, 0);

/// A file's identity: (device in `s_dev` encoding, inode number), and the inode whose
/// change time and generation tell its content.
#[derive(Clone, Copy)]
struct FileId {
    dev: u32,
    ino: u64,
    /// The inode itself, or on overlayfs the layer's inode that holds the data: the
    /// overlay's own inode keeps a copy of the attributes that a write to a layer
    /// under it does not update.
    state: *const u8,
    /// On FUSE, whose server makes up content and attributes: never granted.
    fuse: bool,
}

/// Multigrain timestamps (6.13) keep a flag in the top bit of `i_ctime_nsec`;
/// nanoseconds never reach it, so masking is right on every kernel.
const CTIME_NSEC_MASK: u32 = 0x7fff_ffff;
const BTRFS_SUPER_MAGIC: u64 = 0x9123_683e;
const FUSE_SUPER_MAGIC: u64 = 0x6573_5546;
const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;

/// Reads `file->f_inode->{i_sb->s_dev, i_ino}`, with what the file system needs (see
/// [`FileId`]). A file system whose offsets the loader did not find has no identity:
/// an error, so the exec is denied (fail closed).
#[inline(always)]
fn file_id(file: *const u8) -> Result<FileId, i32> {
    let o = offsets();
    // SAFETY: probe read of a pointer field.
    let inode: *const u8 =
        unsafe { bpf_probe_read_kernel(file.add(o.file_inode as usize).cast())? };
    let (dev, ino, magic) = inode_id(inode)?;
    let state = if magic == OVERLAYFS_SUPER_MAGIC {
        // SAFETY: the magic says this is an overlayfs inode.
        unsafe { ovl_data_inode(inode)? }
    } else {
        inode
    };
    Ok(FileId {
        dev,
        ino,
        state,
        fuse: magic == FUSE_SUPER_MAGIC,
    })
}

/// An inode's (device, number) as `stat` reports them, and its file system's magic.
/// On btrfs the device is the subvolume's (`btrfs_inode.root->anon_dev`): the
/// superblock's is shared by every subvolume, whose inode numbers repeat.
#[inline(always)]
fn inode_id(inode: *const u8) -> Result<(u32, u64, u64), i32> {
    let o = offsets();
    // SAFETY: every read goes through bpf_probe_read_kernel, which faults safely.
    unsafe {
        let ino: u64 = bpf_probe_read_kernel(inode.add(o.inode_ino as usize).cast())?;
        let sb: *const u8 = bpf_probe_read_kernel(inode.add(o.inode_sb as usize).cast())?;
        let mut dev: u32 = bpf_probe_read_kernel(sb.add(o.sb_dev as usize).cast())?;
        let magic: u64 = bpf_probe_read_kernel(sb.add(o.sb_magic as usize).cast())?;
        if magic == BTRFS_SUPER_MAGIC {
            if o.btrfs_vfs_inode == 0 {
                return Err(-1);
            }
            // container_of(inode, struct btrfs_inode, vfs_inode)->root->anon_dev
            let outer = inode.wrapping_sub(o.btrfs_vfs_inode as usize);
            let root: *const u8 =
                bpf_probe_read_kernel(outer.wrapping_add(o.btrfs_inode_root as usize).cast())?;
            dev = bpf_probe_read_kernel(root.add(o.btrfs_root_anon_dev as usize).cast())?;
        }
        Ok((dev, ino, magic))
    }
}

/// Whether a directory above `file`, on its file system (its device: a btrfs
/// subvolume's or a mount's root ends the walk) and at most [`TREE_DEPTH`] levels up, is
/// a live `DIR/**` grant of `task`. Decided by the file's place in the tree, not by a
/// path: a rename or link into the directory is what puts a file under it.
#[inline(never)]
fn tree_granted(task: u64, file: *const u8, dev: u32, now: u64) -> bool {
    let o = offsets();
    let Ok(mut dentry) = read_ptr(file, o.file_dentry) else {
        return false;
    };
    let mut depth = 0;
    while depth < TREE_DEPTH {
        let Ok(parent) = read_ptr(dentry, o.dentry_parent) else {
            return false;
        };
        if parent.is_null() || parent == dentry {
            return false;
        }
        let Ok(inode) = read_ptr(parent, o.dentry_inode) else {
            return false;
        };
        let Ok((parent_dev, ino, _)) = inode_id(inode) else {
            return false;
        };
        if parent_dev != dev {
            return false;
        }
        let key = ExecKey {
            task,
            ino,
            dev,
            _pad: 0,
        };
        // SAFETY: the value is copied out at once.
        if let Some(g) = unsafe { EXEC_GRANTS.get(key) }.copied()
            && g.checks & CHECK_TREE != 0
            && granted(g.expires_ns, now)
        {
            return true;
        }
        dentry = parent;
        depth += 1;
    }
    false
}

/// The inode of the layer that holds an overlay file's data: the upper file once
/// copied up (unless only its metadata was, `metacopy`: an error), else the lower
/// one. A layer that is an overlay itself is an error too (its attributes would be
/// a copy again).
///
/// # Safety
/// `inode` is an overlayfs inode.
#[inline(always)]
unsafe fn ovl_data_inode(inode: *const u8) -> Result<*const u8, i32> {
    let o = offsets();
    if o.ovl_vfs_inode == 0 {
        return Err(-1);
    }
    // SAFETY: probe reads along container_of(inode, struct ovl_inode, vfs_inode).
    unsafe {
        let outer = inode.wrapping_sub(o.ovl_vfs_inode as usize);
        let upper: *const u8 =
            bpf_probe_read_kernel(outer.wrapping_add(o.ovl_upper as usize).cast())?;
        let dentry: *const u8 = if upper.is_null() {
            let base: *const u8 = if o.ovl_oe == 0 {
                outer
            } else {
                bpf_probe_read_kernel(outer.wrapping_add(o.ovl_oe as usize).cast())?
            };
            bpf_probe_read_kernel(base.wrapping_add(o.ovl_lower_dentry as usize).cast())?
        } else {
            let flags: u64 =
                bpf_probe_read_kernel(outer.wrapping_add(o.ovl_flags as usize).cast())?;
            if flags & (1 << OVL_UPPERDATA) == 0 {
                return Err(-1);
            }
            upper
        };
        if dentry.is_null() {
            return Err(-1);
        }
        let real: *const u8 = bpf_probe_read_kernel(dentry.add(o.dentry_inode as usize).cast())?;
        let sb: *const u8 = bpf_probe_read_kernel(real.add(o.inode_sb as usize).cast())?;
        let magic: u64 = bpf_probe_read_kernel(sb.add(o.sb_magic as usize).cast())?;
        if magic == OVERLAYFS_SUPER_MAGIC {
            return Err(-1);
        }
        Ok(real)
    }
}

#[inline(always)]
fn read_ptr(bprm: *const u8, off: u32) -> Result<*const u8, i32> {
    // SAFETY: probe read of a pointer field.
    unsafe { bpf_probe_read_kernel(bprm.add(off as usize).cast()) }
}

#[inline(always)]
fn granted(expires_ns: u64, now: u64) -> bool {
    expires_ns == 0 || now < expires_ns
}

#[inline(always)]
fn file_granted(task: u64, id: FileId, now: u64) -> Result<(), Reason> {
    if id.fuse {
        // Grants of FUSE files are refused; this (device, inode) can only be a
        // recycled identity whose attributes a FUSE server forged.
        return Err(Reason::NotGranted);
    }
    let key = ExecKey {
        task,
        ino: id.ino,
        dev: id.dev,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    match unsafe { EXEC_GRANTS.get(key) }.copied() {
        Some(g) if granted(g.expires_ns, now) => unchanged(id.state, &g),
        _ => Err(Reason::NotGranted),
    }
}

/// Is the file still as it was granted: same change time (a write, chmod or link
/// changes it, and a new inode that reused the number has its own), same generation?
#[inline(always)]
fn unchanged(inode: *const u8, g: &ExecFileGrant) -> Result<(), Reason> {
    let o = offsets();
    // SAFETY: every read goes through bpf_probe_read_kernel, which faults safely.
    unsafe {
        if g.checks & CHECK_CTIME != 0 {
            let sec: i64 = bpf_probe_read_kernel(inode.add(o.inode_ctime_sec as usize).cast())
                .map_err(|_| Reason::ReadFailed)?;
            let nsec: u32 = bpf_probe_read_kernel(inode.add(o.inode_ctime_nsec as usize).cast())
                .map_err(|_| Reason::ReadFailed)?;
            if sec != g.ctime_sec || nsec & CTIME_NSEC_MASK != g.ctime_nsec {
                return Err(Reason::ChangedSinceGrant);
            }
        }
        if g.checks & CHECK_GENERATION != 0 {
            let generation: u32 =
                bpf_probe_read_kernel(inode.add(o.inode_generation as usize).cast())
                    .map_err(|_| Reason::ReadFailed)?;
            if generation != g.generation {
                return Err(Reason::ChangedSinceGrant);
            }
        }
    }
    Ok(())
}

/// Portable backend: the script of a shebang exec must be granted by path (see
/// [`ScriptKey`]), or lie below a `DIR/**` grant by a clean absolute path; relative
/// paths and `/dev/fd/N` never match, so they fail closed.
#[inline(never)]
fn script_granted(task: u64, filename: *const u8, now: u64) -> Result<(), Reason> {
    let mut key = ScriptKey {
        task,
        path: [0; SCRIPT_PATH_LEN],
    };
    // SAFETY: bounded string probe read into a stack buffer.
    let len = match unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut key.path) } {
        Ok(read) => read.len(),
        Err(_) => return Err(Reason::ReadFailed),
    };
    // SAFETY: the value is copied out at once.
    if let Some(g) = unsafe { SCRIPT_GRANTS.get(key) }
        && granted(g.expires_ns, now)
    {
        return Ok(());
    }
    // A path cut at the buffer's end could hide a `..` in what was cut.
    if len + 1 < SCRIPT_PATH_LEN && script_in_tree(&mut key, now) {
        return Ok(());
    }
    Err(Reason::ScriptNotGranted)
}

/// Whether the absolute path in `key` lies below a live tree grant's directory: each
/// directory prefix (`/a/b/` of `/a/b/s.sh`) is looked up, longest first, as long as
/// what follows it has no `.`, `..` or empty component (`/a/b/../../etc/s` is below
/// nothing). Clears `key.path` on the way.
#[inline(always)]
fn script_in_tree(key: &mut ScriptKey, now: u64) -> bool {
    if key.path[0] != b'/' {
        return false;
    }
    // The component after position `i`: its length (counted to 3 at most, which keeps
    // the verifier's states few) and its first two bytes.
    let (mut len, mut first, mut second) = (0u8, 0u8, 0u8);
    for i in (1..SCRIPT_PATH_LEN).rev() {
        let Some(&c) = key.path.get(i) else {
            return false;
        };
        if c == b'/' {
            let dots = (len == 1 && first == b'.') || (len == 2 && first == b'.' && second == b'.');
            if len == 0 || dots {
                return false;
            }
            // SAFETY: the value is copied out at once.
            if let Some(g) = unsafe { SCRIPT_GRANTS.get(*key) }
                && granted(g.expires_ns, now)
            {
                return true;
            }
            len = 0;
        } else if c != 0 {
            if len < 3 {
                len += 1;
            }
            second = first;
            first = c;
        }
        if let Some(byte) = key.path.get_mut(i) {
            *byte = 0;
        }
    }
    false
}

/// `FMODE_READ`.
const FMODE_READ: u32 = 0x1;

/// At an open by a tagged process (host.rs: the open exits on portable, `file_open` on
/// lsm): a granted shebang script opened for read, i.e. by its interpreter, must still
/// be as it was granted. The portable exec hook saw only the interpreter; on lsm the
/// script was checked at exec, and this narrows the window to the interpreter's open.
/// Reports a change (`changed_since_grant`) and returns whether the caller must be
/// stopped (not in audit mode).
#[inline(always)]
pub(crate) fn script_changed(task: u64, file: *const u8) -> bool {
    let o = offsets();
    // SAFETY: probe read of the file's mode.
    let Ok(mode): Result<u32, _> =
        (unsafe { bpf_probe_read_kernel(file.add(o.file_mode as usize).cast()) })
    else {
        return false;
    };
    if mode & FMODE_READ == 0 {
        return false;
    }
    let Ok(id) = file_id(file) else {
        return false;
    };
    let key = ExecKey {
        task,
        ino: id.ino,
        dev: id.dev,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(g) = (unsafe { EXEC_GRANTS.get(key) }).copied() else {
        return false;
    };
    if g.checks & CHECK_SCRIPT == 0 {
        return false;
    }
    let Err(reason) = unchanged(id.state, &g) else {
        return false;
    };
    let now = now_ns();
    let Gate::Live { task, info } = gate(Some(&task), now) else {
        // An ended task's processes are stopped at their next exec or connect anyway.
        return false;
    };
    let decision = Decision::of(task, &info, Action::Exec, Err(reason));
    decision.count();
    if let Some(mut entry) = decision.event(now) {
        // SAFETY: `event` initialised every field.
        let ev = unsafe { entry.assume_init_mut() };
        ev.dev = id.dev;
        ev.ino = id.ino;
        // The script's own name, for the event (its full path is not at hand).
        // SAFETY: probe reads along file->f_path.dentry->d_name.name.
        if let Ok(name) = unsafe {
            bpf_probe_read_kernel::<*const u8>(file.add(o.file_dentry as usize).cast()).and_then(
                |d| bpf_probe_read_kernel(d.add((o.dentry_name + o.qstr_name) as usize).cast()),
            )
        } {
            // SAFETY: bounded string probe read into the reserved event.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name, &mut ev.path) };
        }
        entry.submit(0);
    }
    !decision.allows()
}

/// Decides an exec of `bprm->file` for a tagged thread and reports it.
/// `check_script` is set on the portable backend, which sees only the final image.
#[inline(always)]
fn decide(task: u64, info: &TaskInfo, bprm: *const u8, now: u64, check_script: bool) -> Decision {
    let o = offsets();
    let file = read_ptr(bprm, o.bprm_file);
    let id = file.and_then(file_id);
    let result = match id {
        Err(_) => Err(Reason::ReadFailed),
        Ok(id) => file_granted(task, id, now)
            .or_else(|reason| match file {
                // A file of its own that changed may still be one the task wrote below
                // a tree grant.
                Ok(f) if !id.fuse && tree_granted(task, f, id.dev, now) => Ok(()),
                _ => Err(reason),
            })
            .and_then(|()| {
                if !check_script {
                    return Ok(());
                }
                // `interp` starts as `filename` and changes only when a binfmt handler
                // (shebang, binfmt_misc) substituted an interpreter.
                match (
                    read_ptr(bprm, o.bprm_filename),
                    read_ptr(bprm, o.bprm_interp),
                ) {
                    (Ok(f), Ok(i)) if f == i => Ok(()),
                    (Ok(f), Ok(_)) => script_granted(task, f, now),
                    _ => Err(Reason::ReadFailed),
                }
            }),
    };
    let decision = Decision::of(task, info, Action::Exec, result);
    report(&decision, bprm, id.ok(), now);
    decision
}

/// Counts and emits an exec decision. Allowed execs are reported too: they are the
/// audit trail of what a task ran.
#[inline(always)]
fn report(decision: &Decision, bprm: *const u8, id: Option<FileId>, now: u64) {
    decision.count();
    let Some(mut entry) = decision.event(now) else {
        return;
    };
    // SAFETY: `event` initialised every field.
    let ev = unsafe { entry.assume_init_mut() };
    if let Some(id) = id {
        ev.dev = id.dev;
        ev.ino = id.ino;
    }
    if let Ok(filename) = read_ptr(bprm, offsets().bprm_filename) {
        // SAFETY: bounded string probe read into the reserved event.
        let _ = unsafe { bpf_probe_read_kernel_str_bytes(filename, &mut ev.path) };
    }
    entry.submit(0);
}

/// `trace_sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
/// (portable backend, >= 5.5 for `tp_btf`). The exec has committed but the new image has
/// run no instruction; a denied exec is killed here (the caller sees SIGKILL, not EPERM).
#[btf_tracepoint(function = "sched_process_exec")]
pub(crate) fn exec_sched_exec(ctx: BtfTracePointContext) -> i32 {
    let old_tid: i32 = ctx.arg(1);
    let old_tid = old_tid as u32;
    // SAFETY: PROCS values are plain u64 copies.
    let tag = unsafe { PROCS.get(old_tid) }.copied();
    let Some(task) = tag else {
        return 0;
    };
    let tid = current_tid();
    if tid != old_tid {
        // A non-leader thread exec'd and took over the leader's pid; the leader's
        // entry left with it, so carry the tag to the new pid.
        let _ = PROCS.remove(old_tid);
        if PROCS.insert(tid, task, 0).is_err() {
            bump(Stat::TagFailed);
            kill();
            return 0;
        }
    }
    let now = now_ns();
    let bprm: *const u8 = ctx.arg(2);
    let decision = match gate(Some(&task), now) {
        Gate::Untagged => return 0,
        Gate::Closed { task, slot, reason } => {
            let d = Decision::closed(task, slot, Action::Exec, reason);
            report(&d, bprm, None, now);
            d
        }
        Gate::Live { task, info } => decide(task, &info, bprm, now, true),
    };
    if !decision.allows() {
        kill();
    }
    0
}

#[inline(always)]
fn kill() {
    bump(Stat::Killed);
    // SAFETY: signals the current task only.
    unsafe { bpf_send_signal(SIGKILL) };
}

/// `int security_bprm_check(struct linux_binprm *bprm)` (lsm backend, >= 5.7). Runs
/// once per file of the exec chain (script, then interpreter), so both are checked by
/// inode and a denial is a clean EPERM.
#[lsm(hook = "bprm_check_security")]
pub(crate) fn exec_bprm_check(ctx: LsmContext) -> i32 {
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    // SAFETY: PROCS values are plain u64 copies.
    let tag = unsafe { PROCS.get(current_tid()) };
    let now = now_ns();
    let bprm: *const u8 = ctx.arg(0);
    let decision = match gate(tag, now) {
        Gate::Untagged => return 0,
        Gate::Closed { task, slot, reason } => {
            let d = Decision::closed(task, slot, Action::Exec, reason);
            report(&d, bprm, None, now);
            d
        }
        Gate::Live { task, info } => decide(task, &info, bprm, now, false),
    };
    if decision.allows() { 0 } else { -EPERM }
}
