//! The local API: HTTP/1.1 + JSON on a Unix socket.

pub mod extract;
pub mod peer;
pub mod server;
pub mod workload;
