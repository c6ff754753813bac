//! Everything that touches the kernel: the eBPF object and its programs, the maps,
//! the pins, attach points and scope, kernel facts read from BTF and procfs.
//!
//! The program table ([`programs`]) declares every program once; the [`Enforcer`]
//! loads and attaches from it; raw `bpf()` calls live in `sys.rs` only.
//!
//! # The pin tree
//!
//! With a pin dir (the config's `pin_dir`, by default `/sys/fs/bpf/leash`, always
//! under the bpffs mount [`leash_common::maps::BPFFS`]), the daemon pins everything
//! that must outlive it, and a daemon started next adopts it:
//!
//! ```text
//! <pin_dir>/
//!   maps/<MAP>                      every map of leash_common::maps::ALL, by its name:
//!                                   tasks, grants and tags survive a restart
//!   links/<program>                 the root link of each attached program, by the
//!                                   program's name in the table
//!   links/<program>-new             a link being handed over (attached and pinned
//!                                   before the old one goes; renamed over it)
//!   links-scope/<cgroup id>/<program>
//!                                   attach scope `task`: the network and unix hooks
//!                                   of one leash cgroup
//! ```
//!
//! Names and layout are kept across versions: a daemon adopts its predecessor's pins.

mod backend;
mod enforcer;
pub mod events;
pub mod ia32;
mod kernel_offsets;
mod kfunc;
pub mod maps;
pub mod mounts;
mod programs;
mod scope;
mod sys;
mod unix_hooks;

pub use backend::Backend;
pub use enforcer::{Enforcer, HandoverError, LoadError, LoadOptions, LsmUnavailable, cleanup};
pub use kernel_offsets::{BtfError, OffsetError};
pub use kfunc::NoKfunc;
pub use programs::attached_by;
pub(crate) use programs::{all_programs, applies as program_applies};
pub use scope::ScopeError;
pub use sys::pin;
pub use unix_hooks::UnixHookError;

pub use crate::protocol::{AttachScope, BackendChoice};
