//! leash's userspace library: loads the kernel programs, compiles grants into map
//! entries, tags processes and reads back decisions.

pub mod api;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod file_trust;
pub mod grants;
pub mod kernel;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod sockets;

pub use kernel::{Backend, BackendChoice};
pub use kernel::{Enforcer, LoadError, LoadOptions};

/// The eBPF object built by `build.rs` (aya-build).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));
