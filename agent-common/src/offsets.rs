//! Kernel struct offsets, read from the running kernel's BTF at load time.
//!
//! Rust eBPF has no CO-RE field relocations, so the loader resolves these from
//! `/sys/kernel/btf/vmlinux` and writes them into a load-time global.

/// Byte offsets of the fields the programs read. Name: `struct.field`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `linux_binprm.file`
    pub bprm_file: u32,
    /// `linux_binprm.filename`
    pub bprm_filename: u32,
    /// `linux_binprm.interp`
    pub bprm_interp: u32,
    /// `file.f_inode`
    pub file_inode: u32,
    /// `inode.i_ino`
    pub inode_ino: u32,
    /// `inode.i_sb`
    pub inode_sb: u32,
    /// `super_block.s_dev`
    pub sb_dev: u32,
    /// `super_block.s_magic`
    pub sb_magic: u32,
    /// `task_struct.pid`
    pub task_pid: u32,
    /// `task_struct.tgid`
    pub task_tgid: u32,
    /// `bpf_sock_addr_kern.uaddr`: the kernel's copy of a connect or send address,
    /// behind the context of a cgroup `sock_addr` program.
    pub sock_addr_uaddr: u32,
    /// `bpf_sock_addr_kern.uaddrlen` (Linux >= 6.7, with the unix hooks); 0 when absent.
    pub sock_addr_uaddrlen: u32,
    /// `task_struct.files`
    pub task_files: u32,
    /// `files_struct.fdt`
    pub files_fdt: u32,
    /// `fdtable.fd`
    pub fdtable_fd: u32,
    /// `file.f_mode`
    pub file_mode: u32,
    /// `file.f_path` plus `path.dentry`: the dentry a file was opened at.
    pub file_dentry: u32,
    /// `dentry.d_parent`
    pub dentry_parent: u32,
    /// `dentry.d_name`
    pub dentry_name: u32,
    /// `qstr.name`
    pub qstr_name: u32,
    /// `inode.i_mode`
    pub inode_mode: u32,
    /// `inode.i_rdev`
    pub inode_rdev: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 88);

/// Name of the load-time global that holds the [`KernelOffsets`].
pub const GLOBAL_NAME: &str = "LEASH_OFFSETS";
