//! Struct offsets of the running kernel, from its BTF (`/sys/kernel/btf/vmlinux`).

use std::path::{Path, PathBuf};

use btf_rs::{Btf, Type};
use leash_common::KernelOffsets;

pub(crate) const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum OffsetError {
    #[error(
        "cannot read kernel BTF at {}: {source}; leash needs a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: BtfError,
    },
    #[error("kernel BTF has no struct {0}")]
    NoStruct(&'static str),
    #[error("kernel BTF has no field {field} in struct {structure}")]
    NoField {
        structure: &'static str,
        field: &'static str,
    },
    #[error("field {structure}.{field} is a bitfield or not byte aligned")]
    Unaligned {
        structure: &'static str,
        field: &'static str,
    },
    #[error("BTF lookup of {structure}.{field} failed: {source}")]
    Lookup {
        structure: &'static str,
        field: &'static str,
        #[source]
        source: BtfError,
    },
}

/// An error of the BTF reader (which reports `anyhow` errors), with its chain.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct BtfError(anyhow::Error);

/// Reads every offset the programs need.
pub(crate) fn from_vmlinux() -> Result<KernelOffsets, OffsetError> {
    from_file(Path::new(VMLINUX_BTF))
}

pub(crate) fn from_file(path: &Path) -> Result<KernelOffsets, OffsetError> {
    let btf = Btf::from_file(path).map_err(|e| OffsetError::Read {
        path: path.to_owned(),
        source: BtfError(e),
    })?;
    let ctime = ctime_offsets(&btf)?;
    let btrfs = module_offsets(&btf, path, "btrfs", btrfs_offsets);
    let ovl = module_offsets(&btf, path, "overlay", ovl_offsets);
    // io_uring's request data: absent (0) where the kernel has no io_uring, whose
    // submit tracepoint is then absent too.
    let uring = |structure, name| match field(&btf, structure, name) {
        Err(OffsetError::NoStruct(_) | OffsetError::NoField { .. }) => Ok(0),
        other => other,
    };
    Ok(KernelOffsets {
        bprm_file: field(&btf, "linux_binprm", "file")?,
        bprm_filename: field(&btf, "linux_binprm", "filename")?,
        bprm_interp: field(&btf, "linux_binprm", "interp")?,
        file_inode: field(&btf, "file", "f_inode")?,
        inode_ino: field(&btf, "inode", "i_ino")?,
        inode_sb: field(&btf, "inode", "i_sb")?,
        sb_dev: field(&btf, "super_block", "s_dev")?,
        sb_magic: field(&btf, "super_block", "s_magic")?,
        task_pid: field(&btf, "task_struct", "pid")?,
        task_tgid: field(&btf, "task_struct", "tgid")?,
        sock_addr_uaddr: field(&btf, SOCK_ADDR_KERN, "uaddr")?,
        // Added with the unix hooks (6.7); without it they are not used.
        sock_addr_uaddrlen: match field(&btf, SOCK_ADDR_KERN, "uaddrlen") {
            Ok(off) => off,
            Err(OffsetError::NoField { .. }) => 0,
            Err(e) => return Err(e),
        },
        inode_ctime_sec: ctime.0,
        inode_ctime_nsec: ctime.1,
        inode_generation: field(&btf, "inode", "i_generation")?,
        task_ti_status: field(&btf, "task_struct", "thread_info")?
            + field(&btf, "thread_info", "status")?,
        dentry_inode: field(&btf, "dentry", "d_inode")?,
        vfsmount_sb: field(&btf, "vfsmount", "mnt_sb")?,
        task_files: field(&btf, "task_struct", "files")?,
        files_fdt: field(&btf, "files_struct", "fdt")?,
        fdtable_fd: field(&btf, "fdtable", "fd")?,
        file_mode: field(&btf, "file", "f_mode")?,
        file_dentry: field(&btf, "file", "f_path")? + field(&btf, "path", "dentry")?,
        dentry_parent: field(&btf, "dentry", "d_parent")?,
        dentry_name: field(&btf, "dentry", "d_name")?,
        qstr_name: field(&btf, "qstr", "name")?,
        inode_mode: field(&btf, "inode", "i_mode")?,
        inode_rdev: field(&btf, "inode", "i_rdev")?,
        task_exit_code: field(&btf, "task_struct", "exit_code")?,
        btrfs_vfs_inode: btrfs.map_or(0, |b| b[0]),
        btrfs_inode_root: btrfs.map_or(0, |b| b[1]),
        btrfs_root_anon_dev: btrfs.map_or(0, |b| b[2]),
        ovl_vfs_inode: ovl.map_or(0, |o| o[0]),
        ovl_upper: ovl.map_or(0, |o| o[1]),
        ovl_flags: ovl.map_or(0, |o| o[2]),
        ovl_oe: ovl.map_or(0, |o| o[3]),
        ovl_lower_dentry: ovl.map_or(0, |o| o[4]),
        task_nsproxy: field(&btf, "task_struct", "nsproxy")?,
        nsproxy_mnt_ns: field(&btf, "nsproxy", "mnt_ns")?,
        mnt_ns_inum: field(&btf, "mnt_namespace", "ns")? + field(&btf, "ns_common", "inum")?,
        task_fs: field(&btf, "task_struct", "fs")?,
        fs_root_dentry: field(&btf, "fs_struct", "root")? + field(&btf, "path", "dentry")?,
        socket_sk: field(&btf, "socket", "sk")?,
        unix_sock_dentry: field(&btf, "unix_sock", "path")? + field(&btf, "path", "dentry")?,
        unix_sock_addr: field(&btf, "unix_sock", "addr")?,
        unix_address_name: field(&btf, "unix_address", "name")?,
        uring_cmd: uring("io_kiocb", "cmd")?,
        uring_rename_old: uring("io_rename", "oldpath")?,
        uring_rename_new: uring("io_rename", "newpath")?,
        uring_unlink_name: uring("io_unlink", "filename")?,
        uring_socket_domain: uring("io_socket", "domain")?,
        uring_socket_type: uring("io_socket", "type")?,
        uring_socket_protocol: uring("io_socket", "protocol")?,
        filename_name: field(&btf, "filename", "name")?,
        cgroup_kn: field(&btf, "cgroup", "kn")?,
        kernfs_node_id: field(&btf, "kernfs_node", "id")?,
        cgroup_root: field(&btf, "cgroup", "root")?,
        cgroup_root_hierarchy_id: field(&btf, "cgroup_root", "hierarchy_id")?,
        // Set by the loader once it has rewritten the kfunc calls (kernel::kfunc).
        send_signal_task: 0,
        _pad: 0,
    })
}

/// Offsets of a file system's own structs, from the kernel's BTF or, for one built
/// as a module, the module's (`/sys/kernel/btf/<module>`, there only while it is
/// loaded: at start); `None` when neither describes them.
fn module_offsets<const N: usize>(
    vmlinux: &Btf,
    vmlinux_path: &Path,
    module: &str,
    of: fn(&Btf) -> Option<[u32; N]>,
) -> Option<[u32; N]> {
    of(vmlinux).or_else(|| {
        let split = Btf::from_split_file(vmlinux_path.with_file_name(module), vmlinux).ok()?;
        of(&split)
    })
}

/// `btrfs_inode.vfs_inode`, `btrfs_inode.root`, `btrfs_root.anon_dev`.
fn btrfs_offsets(btf: &Btf) -> Option<[u32; 3]> {
    Some([
        field(btf, "btrfs_inode", "vfs_inode").ok()?,
        field(btf, "btrfs_inode", "root").ok()?,
        field(btf, "btrfs_root", "anon_dev").ok()?,
    ])
}

/// `ovl_inode.{vfs_inode, __upperdentry, flags}`, then where the lower dentry is:
/// `ovl_inode.oe` and `ovl_entry.__lowerstack[0].dentry` (>= 6.5), or 0 and
/// `ovl_inode.lowerpath.dentry`.
fn ovl_offsets(btf: &Btf) -> Option<[u32; 5]> {
    let path_dentry = field(btf, "ovl_path", "dentry").ok()?;
    let (oe, lower) = match field(btf, "ovl_inode", "oe") {
        Ok(oe) => (
            oe,
            field(btf, "ovl_entry", "__lowerstack").ok()? + path_dentry,
        ),
        Err(_) => (0, field(btf, "ovl_inode", "lowerpath").ok()? + path_dentry),
    };
    Some([
        field(btf, "ovl_inode", "vfs_inode").ok()?,
        field(btf, "ovl_inode", "__upperdentry").ok()?,
        field(btf, "ovl_inode", "flags").ok()?,
        oe,
        lower,
    ])
}

/// Offsets of the seconds and nanoseconds of `inode`'s change time, whose field was
/// renamed twice: `i_ctime_sec`/`i_ctime_nsec` (6.11), `__i_ctime` (6.6), `i_ctime`.
fn ctime_offsets(btf: &Btf) -> Result<(u32, u32), OffsetError> {
    match field(btf, "inode", "i_ctime_sec") {
        Ok(sec) => return Ok((sec, field(btf, "inode", "i_ctime_nsec")?)),
        Err(OffsetError::NoField { .. }) => {}
        Err(e) => return Err(e),
    }
    let sec = match field(btf, "inode", "__i_ctime") {
        Ok(off) => off,
        Err(OffsetError::NoField { .. }) => field(btf, "inode", "i_ctime")?,
        Err(e) => return Err(e),
    };
    // `struct timespec64 { time64_t tv_sec; long tv_nsec; }`
    Ok((sec, sec + 8))
}

/// The context behind a cgroup `sock_addr` program.
const SOCK_ADDR_KERN: &str = "bpf_sock_addr_kern";

/// Byte offset of `structure.field`, looking through anonymous structs and unions.
fn field(btf: &Btf, structure: &'static str, name: &'static str) -> Result<u32, OffsetError> {
    let lookup = |e: anyhow::Error| OffsetError::Lookup {
        structure,
        field: name,
        source: BtfError(e),
    };
    let types = btf
        .resolve_types_by_name(structure)
        .map_err(|_| OffsetError::NoStruct(structure))?;
    // Forward declarations share the name; the definition is the struct with members.
    let st = types
        .iter()
        .find_map(|t| match t {
            Type::Struct(s) if !s.members.is_empty() => Some(s),
            _ => None,
        })
        .ok_or(OffsetError::NoStruct(structure))?;
    let bits = find_member(btf, st, name)
        .map_err(lookup)?
        .ok_or(OffsetError::NoField {
            structure,
            field: name,
        })?;
    if bits % 8 != 0 {
        return Err(OffsetError::Unaligned {
            structure,
            field: name,
        });
    }
    Ok(bits / 8)
}

fn find_member(btf: &Btf, st: &btf_rs::Struct, name: &str) -> anyhow::Result<Option<u32>> {
    for m in &st.members {
        let member_name = btf.resolve_name(m)?;
        if member_name == name {
            return Ok(Some(m.bit_offset()));
        }
        // Anonymous struct or union: its members live at this member's offset.
        if member_name.is_empty()
            && let Type::Struct(inner) | Type::Union(inner) =
                skip_modifiers(btf, btf.resolve_chained_type(m)?)?
            && let Some(off) = find_member(btf, &inner, name)?
        {
            return Ok(Some(m.bit_offset() + off));
        }
    }
    Ok(None)
}

fn skip_modifiers(btf: &Btf, mut t: Type) -> anyhow::Result<Type> {
    loop {
        t = match &t {
            Type::Const(c) => btf.resolve_chained_type(c)?,
            Type::Volatile(v) => btf.resolve_chained_type(v)?,
            Type::Typedef(d) => btf.resolve_chained_type(d)?,
            _ => return Ok(t),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_offsets_of_running_kernel() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} absent (kernel without BTF)");
            return;
        }
        let o = from_vmlinux().unwrap();
        // Pointers in these structs are 8-byte aligned and never at offset 0 except
        // where the kernel says so; the values must at least be distinct and aligned.
        assert_eq!(o.bprm_file % 8, 0);
        assert_ne!(o.bprm_filename, o.bprm_interp);
        assert_eq!(o.inode_sb % 8, 0);
        assert!(o.task_pid > 0);
        assert_eq!(o.task_tgid, o.task_pid + 4, "pid_t pid; pid_t tgid;");
        assert_eq!(o.sock_addr_uaddr % 8, 0);
        assert_eq!(o.inode_ctime_sec % 8, 0, "time64_t");
        assert!(o.inode_ctime_nsec > o.inode_ctime_sec);
        assert!(o.inode_generation > 0);
        // x86_64: flags, syscall_work, then status, in the task's first bytes.
        assert_eq!(o.task_ti_status, 16, "thread_info first in task_struct");
        assert_eq!(o.file_dentry % 8, 0);
        assert_eq!(o.qstr_name, 8, "the hash and length come first");
        assert_ne!(o.inode_mode, o.inode_rdev);
        assert_eq!(o.unix_sock_dentry % 8, 0);
        assert!(
            o.unix_sock_dentry > o.unix_sock_addr,
            "the address comes first"
        );
        assert_eq!(o.fs_root_dentry % 8, 0);
        assert_ne!(o.mnt_ns_inum, 0, "ns_common starts with other fields");
        assert_eq!(
            o.vfsmount_sb, 8,
            "struct dentry *mnt_root; struct super_block *mnt_sb;"
        );
        // Built in here (and loaded modules elsewhere): the identity reads need them.
        if o.btrfs_vfs_inode != 0 {
            assert_eq!(o.btrfs_inode_root, 0, "struct btrfs_root *root comes first");
        }
        if o.ovl_vfs_inode != 0 {
            assert!(
                o.ovl_upper > o.ovl_vfs_inode,
                "__upperdentry after vfs_inode"
            );
            let btf = Btf::from_file(VMLINUX_BTF).unwrap();
            assert_eq!(
                enum_value(&btf, "ovl_inode_flag", "OVL_UPPERDATA"),
                leash_common::offsets::enums::OVL_UPPERDATA
            );
        }
        if o.uring_rename_old != 0 {
            // struct io_rename { struct file *file; int old_dfd, new_dfd; struct
            // filename *oldpath, *newpath; ... } and its kin, in Linux 6.1 to 6.18.
            assert_eq!((o.uring_rename_old, o.uring_rename_new), (16, 24));
            assert_eq!(o.uring_unlink_name, 16);
            assert_eq!(
                (
                    o.uring_socket_domain,
                    o.uring_socket_type,
                    o.uring_socket_protocol
                ),
                (8, 12, 16)
            );
        }
        assert_eq!(o.filename_name, 0, "const char *name comes first");
    }

    /// The value of `name` in the kernel enum `ty`.
    fn enum_value(btf: &Btf, ty: &str, name: &str) -> u32 {
        let types = btf.resolve_types_by_name(ty).unwrap();
        let Some(Type::Enum(e)) = types.iter().find(|t| matches!(t, Type::Enum(_))) else {
            panic!("no enum {ty}");
        };
        e.members
            .iter()
            .find(|m| btf.resolve_name(*m).unwrap() == name)
            .unwrap_or_else(|| panic!("no {name} in enum {ty}"))
            .val()
    }

    #[test]
    fn the_lsm_hooks_enum_values_are_the_running_kernels() {
        use leash_common::offsets::enums as e;
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("skipped: {VMLINUX_BTF} absent (kernel without BTF)");
            return;
        }
        let btf = Btf::from_file(VMLINUX_BTF).unwrap();
        for (ty, prefix) in [
            ("kernel_read_file_id", "READING_"),
            ("kernel_load_data_id", "LOADING_"),
        ] {
            let v = |name: &str| enum_value(&btf, ty, &format!("{prefix}{name}"));
            assert_eq!(v("MODULE"), e::READING_MODULE, "{ty}");
            assert_eq!(v("KEXEC_IMAGE"), e::READING_KEXEC_IMAGE, "{ty}");
            assert_eq!(v("KEXEC_INITRAMFS"), e::READING_KEXEC_INITRAMFS, "{ty}");
        }
        assert_eq!(
            enum_value(&btf, "lockdown_reason", "LOCKDOWN_IOPORT"),
            e::LOCKDOWN_IOPORT
        );
    }
}
