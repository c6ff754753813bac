//! leash's userspace library: loads the kernel programs, compiles grants into map
//! entries, tags processes and reads back decisions.

pub mod api;
pub mod audit_chain;
pub mod auth;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod file_trust;
pub mod files;
pub mod grants;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod sockets;

pub use kernel::{Backend, BackendChoice};

/// Runs the leash daemon with its API until `shutdown` resolves: the one place that
/// puts the layers together (the API above the daemon, the daemon above the kernel).
pub async fn run(
    config: config::Config,
    shutdown: impl Future<Output = std::io::Result<()>>,
) -> anyhow::Result<()> {
    daemon::run(config, api::server::serve, shutdown).await
}

pub use kernel::{Enforcer, LoadError, LoadOptions};

/// The eBPF object built by `build.rs` (aya-build).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/leash-ebpf"));
