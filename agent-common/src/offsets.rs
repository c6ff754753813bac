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
    /// Seconds of `inode`'s change time: `i_ctime_sec` (>= 6.11), else `__i_ctime`
    /// (6.6) or `i_ctime` (a `timespec64`, whose `tv_sec` comes first).
    pub inode_ctime_sec: u32,
    /// Nanoseconds of the change time: `i_ctime_nsec`, else `tv_nsec` of the
    /// `timespec64` (8 bytes after its seconds; read as its low 32 bits).
    pub inode_ctime_nsec: u32,
    /// `inode.i_generation`
    pub inode_generation: u32,
    /// `task_struct.thread_info.status` (x86: `TS_COMPAT` while an i386 system call
    /// runs); the `thread_info` is embedded in the `task_struct`.
    pub task_ti_status: u32,
    /// `dentry.d_inode`
    pub dentry_inode: u32,
    /// `vfsmount.mnt_sb`
    pub vfsmount_sb: u32,
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
    /// `task_struct.exit_code`, set by `do_exit` before `sched_process_exit` fires.
    pub task_exit_code: u32,
    /// `btrfs_inode.vfs_inode`: where the VFS inode sits in btrfs's own. 0 when the
    /// kernel's BTF has no btrfs (not built, or a module not loaded at start): exec of
    /// a btrfs file is then denied, since its identity cannot be read.
    pub btrfs_vfs_inode: u32,
    /// `btrfs_inode.root`
    pub btrfs_inode_root: u32,
    /// `btrfs_root.anon_dev`: the device number `stat` reports for files of one
    /// subvolume; the superblock's `s_dev` is shared by all of them, and inode numbers
    /// repeat across subvolumes.
    pub btrfs_root_anon_dev: u32,
    /// `ovl_inode.vfs_inode`: where the VFS inode sits in overlayfs's own. 0 when the
    /// kernel's BTF has no overlayfs: exec of an overlay file is then denied, since the
    /// state of the file that supplies its content cannot be read.
    pub ovl_vfs_inode: u32,
    /// `ovl_inode.__upperdentry`
    pub ovl_upper: u32,
    /// `ovl_inode.flags`
    pub ovl_flags: u32,
    /// `ovl_inode.oe` (Linux >= 6.5); 0 on kernels with `ovl_inode.lowerpath`.
    pub ovl_oe: u32,
    /// Where the lower layer's dentry is: `ovl_entry.__lowerstack[0].dentry` from `oe`
    /// (>= 6.5), else `ovl_inode.lowerpath.dentry`.
    pub ovl_lower_dentry: u32,
    /// `task_struct.nsproxy`
    pub task_nsproxy: u32,
    /// `nsproxy.mnt_ns`
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns` plus `ns_common.inum`: the mount namespace's inode number.
    pub mnt_ns_inum: u32,
    /// `task_struct.fs`
    pub task_fs: u32,
    /// `fs_struct.root` plus `path.dentry`: the process's root directory.
    pub fs_root_dentry: u32,
    /// `socket.sk`
    pub socket_sk: u32,
    /// `unix_sock.path` plus `path.dentry`: the file a unix socket is bound at (NULL
    /// for abstract and unnamed sockets); `unix_sock` starts with its `struct sock`.
    pub unix_sock_dentry: u32,
    /// `unix_sock.addr`: the name it is bound to.
    pub unix_sock_addr: u32,
    /// `unix_address.name`: a `sockaddr_un`.
    pub unix_address_name: u32,
    /// `io_kiocb.cmd`: an `io_uring` request's per-operation data (`struct io_rename`,
    /// `io_unlink`, `io_socket`, ...), filled in before the submit tracepoint fires.
    /// The `uring_*` offsets are 0 on a kernel without `io_uring`.
    pub uring_cmd: u32,
    /// `io_rename.oldpath` (a `struct filename *`)
    pub uring_rename_old: u32,
    /// `io_rename.newpath`
    pub uring_rename_new: u32,
    /// `io_unlink.filename`
    pub uring_unlink_name: u32,
    /// `io_socket.domain`
    pub uring_socket_domain: u32,
    /// `io_socket.type`
    pub uring_socket_type: u32,
    /// `io_socket.protocol`
    pub uring_socket_protocol: u32,
    /// `filename.name`: the kernel's copy of a path
    pub filename_name: u32,
    /// `cgroup.kn`: the cgroup's kernfs node, whose `id` is the cgroup id.
    pub cgroup_kn: u32,
    /// `kernfs_node.id` (a `u64` since 5.5).
    pub kernfs_node_id: u32,
    /// `cgroup.root`: the hierarchy the cgroup belongs to.
    pub cgroup_root: u32,
    /// `cgroup_root.hierarchy_id`: 0 for the default (cgroup2) hierarchy.
    pub cgroup_root_hierarchy_id: u32,
    /// Not an offset: 1 when the loader found the kfunc `bpf_send_signal_task` (Linux
    /// 6.13 or later) and rewrote the [`SEND_SIGNAL_TASK_CALL`] placeholders into calls of
    /// it; the programs use it only then (the verifier drops the other branch).
    pub send_signal_task: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<KernelOffsets>() == 240);

/// The helper number the kernel programs call in place of the kfunc
/// `bpf_send_signal_task` (no helper has it): the loader rewrites each such call into a
/// kfunc call (`src_reg` `BPF_PSEUDO_KFUNC_CALL`, `imm` the kfunc's BTF id) where the
/// kernel has it. aya 0.14 does not resolve kfunc calls itself.
pub const SEND_SIGNAL_TASK_CALL: i32 = 0x4c45_0001;

/// Name of the load-time global that holds the [`KernelOffsets`].
pub const GLOBAL_NAME: &str = "LEASH_OFFSETS";

/// Values of kernel enums the LSM hooks compare with (stable since Linux 5.7; a
/// userspace test checks them against the running kernel's BTF).
pub mod enums {
    /// `READING_MODULE` / `LOADING_MODULE`: `enum kernel_read_file_id` and `enum
    /// kernel_load_data_id` are built from one list (`__kernel_read_file_id`).
    pub const READING_MODULE: u32 = 2;
    /// `READING_KEXEC_IMAGE` / `LOADING_KEXEC_IMAGE`.
    pub const READING_KEXEC_IMAGE: u32 = 3;
    /// `READING_KEXEC_INITRAMFS` / `LOADING_KEXEC_INITRAMFS`.
    pub const READING_KEXEC_INITRAMFS: u32 = 4;
    /// `LOCKDOWN_IOPORT` of `enum lockdown_reason`: `iopl` and `ioperm` turning access on.
    pub const LOCKDOWN_IOPORT: u32 = 7;
    /// `OVL_UPPERDATA` of `enum ovl_inode_flag` (stable since 4.19): the upper file
    /// holds the data, not only the metadata (`metacopy`).
    pub const OVL_UPPERDATA: u32 = 3;
}
