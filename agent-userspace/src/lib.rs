//! leash's userspace library: loads the kernel programs, compiles grants into map
//! entries, tags processes and reads back decisions.

pub mod api;
pub mod attach_points;
pub mod auth;
pub mod backend;
pub mod bpf_syscall;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod enforcer;
pub mod events;
pub mod file_state;
pub mod file_trust;
pub mod grants;
pub mod ia32;
pub mod kernel_offsets;
pub mod maps;
pub mod metrics;
pub mod mounts;
pub mod policy;
pub mod scope;
pub mod sockets;
pub mod tasks;
pub mod unix_hooks;

pub use backend::{Backend, BackendChoice};
pub use enforcer::{Enforcer, LoadError, LoadOptions};

/// The eBPF object built by `build.rs` (aya-build).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
