//! Where the mount and kernel-door programs attach (`hooks/mounts.rs`, `hooks/doors.rs`
//! in the kernel crate): a syscall tracepoint or an LSM hook each.

use std::path::Path;

use agent_common::maps::programs as p;

/// Program → `syscalls:` tracepoint.
const TRACEPOINTS: [(&str, &str); 16] = [
    (p::GUARD_MOUNT, "sys_enter_mount"),
    (p::GUARD_MOVE_MOUNT, "sys_enter_move_mount"),
    (p::GUARD_FSOPEN, "sys_enter_fsopen"),
    (p::GUARD_FSMOUNT, "sys_enter_fsmount"),
    (p::GUARD_FSPICK, "sys_enter_fspick"),
    (p::GUARD_OPEN_TREE, "sys_enter_open_tree"),
    (p::GUARD_MOUNT_SETATTR, "sys_enter_mount_setattr"),
    (p::GUARD_PIVOT_ROOT, "sys_enter_pivot_root"),
    (p::GUARD_CHROOT, "sys_enter_chroot"),
    (p::DOOR_INIT_MODULE, "sys_enter_init_module"),
    (p::DOOR_FINIT_MODULE, "sys_enter_finit_module"),
    (p::DOOR_DELETE_MODULE, "sys_enter_delete_module"),
    (p::DOOR_KEXEC_LOAD, "sys_enter_kexec_load"),
    (p::DOOR_KEXEC_FILE_LOAD, "sys_enter_kexec_file_load"),
    (p::DOOR_IOPL, "sys_enter_iopl"),
    (p::DOOR_IOPERM, "sys_enter_ioperm"),
];

/// Program → LSM hook.
const LSM_HOOKS: [(&str, &str); 8] = [
    (p::GUARD_LSM_MOUNT, "sb_mount"),
    (p::GUARD_LSM_MOVE_MOUNT, "move_mount"),
    (p::GUARD_LSM_UMOUNT, "sb_umount"),
    (p::GUARD_LSM_PIVOT_ROOT, "sb_pivotroot"),
    (p::GUARD_LSM_CHROOT, "path_chroot"),
    (p::DOOR_LSM_LOAD_DATA, "kernel_load_data"),
    (p::DOOR_LSM_READ_FILE, "kernel_read_file"),
    (p::DOOR_LSM_LOCKED_DOWN, "locked_down"),
];

fn find(table: &[(&str, &'static str)], program: &str) -> &'static str {
    table
        .iter()
        .find(|(name, _)| *name == program)
        .map_or("", |(_, point)| point)
}

/// The syscall tracepoint of `program`, or `""` when it is not one of these.
#[must_use]
pub fn tracepoint(program: &str) -> &'static str {
    find(&TRACEPOINTS, program)
}

/// The LSM hook of `program`, or `""` when it is not one of these.
#[must_use]
pub fn lsm_hook(program: &str) -> &'static str {
    find(&LSM_HOOKS, program)
}

/// Calls a kernel may be built without (modules, kexec, I/O ports): their syscall
/// tracepoints exist only where the calls do. Elsewhere the call fails with ENOSYS for
/// everyone, so there is nothing to guard, and the program is not attached.
const OPTIONAL: [&str; 7] = [
    p::DOOR_INIT_MODULE,
    p::DOOR_FINIT_MODULE,
    p::DOOR_DELETE_MODULE,
    p::DOOR_KEXEC_LOAD,
    p::DOOR_KEXEC_FILE_LOAD,
    p::DOOR_IOPL,
    p::DOOR_IOPERM,
];

/// Whether `program` attaches on this kernel; `tracefs` is where tracefs is mounted.
#[must_use]
pub fn available(program: &str, tracefs: &Path) -> bool {
    !OPTIONAL.contains(&program)
        || tracefs
            .join("events/syscalls")
            .join(tracepoint(program))
            .exists()
}

/// The portable backend's tracepoints where the lsm backend has an LSM hook instead.
pub const PORTABLE_MOUNT_DOORS: [&str; 11] = [
    p::GUARD_MOUNT,
    p::GUARD_MOVE_MOUNT,
    p::GUARD_UMOUNT,
    p::GUARD_PIVOT_ROOT,
    p::GUARD_CHROOT,
    p::DOOR_INIT_MODULE,
    p::DOOR_FINIT_MODULE,
    p::DOOR_KEXEC_LOAD,
    p::DOOR_KEXEC_FILE_LOAD,
    p::DOOR_IOPL,
    p::DOOR_IOPERM,
];

/// The lsm backend's hooks for those.
pub const LSM_MOUNT_DOORS: [&str; 8] = [
    p::GUARD_LSM_MOUNT,
    p::GUARD_LSM_MOVE_MOUNT,
    p::GUARD_LSM_UMOUNT,
    p::GUARD_LSM_PIVOT_ROOT,
    p::GUARD_LSM_CHROOT,
    p::DOOR_LSM_LOAD_DATA,
    p::DOOR_LSM_READ_FILE,
    p::DOOR_LSM_LOCKED_DOWN,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_here_is_attached_by_some_backend_and_has_its_point() {
        let all = crate::kernel::backend::all_programs();
        for (program, _) in TRACEPOINTS.iter().chain(&LSM_HOOKS) {
            assert!(all.contains(program), "{program} is loaded by no backend");
        }
        for program in PORTABLE_MOUNT_DOORS {
            // GUARD_UMOUNT's tracepoint is in the enforcer's own table.
            assert!(
                program == p::GUARD_UMOUNT || !tracepoint(program).is_empty(),
                "{program}"
            );
        }
        for program in LSM_MOUNT_DOORS {
            assert!(!lsm_hook(program).is_empty(), "{program}");
        }
    }
}
