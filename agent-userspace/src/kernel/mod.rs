//! Everything that touches the kernel: the eBPF object and its programs, the maps,
//! the pins, attach points and scope, kernel facts read from BTF and procfs.

pub mod attach_points;
pub mod backend;
pub mod bpf_syscall;
pub mod enforcer;
pub mod events;
/// Moved to `grants` (what an exec grant records); kept here for its users.
pub use crate::grants::file_state;
pub mod ia32;
pub mod kernel_offsets;
pub mod maps;
pub mod mounts;
pub mod scope;
pub mod unix_hooks;
