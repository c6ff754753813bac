//! leash's privileged integration tests, as one binary with a module per area (as aya's
//! integration-test crate is laid out). Every test loads the real programs or drives a
//! real daemon; `cargo xtask test` runs them as root, one at a time
//! (`--test-threads=1`), and `cargo xtask vm` runs the same binary on another kernel.
//!
//! Test names carry their module path, so a filter selects an area or a bypass class:
//! `cargo xtask test -- bypass::c15`, `cargo xtask test -- network::`,
//! `cargo xtask vm -- c15`.

mod api_abuse;
mod audit_log;
mod break_glass;
mod bypass;
mod control_plane;
mod daemon;
mod delegation;
mod dns;
mod exec;
mod files;
mod finding;
mod hygiene;
mod learn;
mod lifecycle;
mod metrics;
mod network;
mod policy;
mod profiles;
mod report;
mod scope;
mod task_tokens;
mod upgrade;
mod workload_api;
