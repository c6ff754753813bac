//! Types shared by leash's kernel programs and its userspace agent.
//!
//! Every struct here crosses the user/kernel boundary through a BPF map, so each is
//! `#[repr(C)]` with explicit padding and a size assert: the kernel copies bytes, and
//! implicit padding would make keys compare unequal.
#![no_std]

pub mod dns;
pub mod event;
pub mod grant;
pub mod maps;
pub mod offsets;
pub mod task;

pub use dns::{DnsOrigin, DnsTarget};
pub use event::{Action, Event, Reason, Verdict};
pub use grant::{
    ExecFileGrant, ExecGrant, ExecKey, NetKey, NetRules, PortRule, ScriptKey, UnixGrant, UnixKey,
    UnixScope,
};
pub use offsets::KernelOffsets;
pub use task::{TaskInfo, TaskMode, TaskState};

#[cfg(feature = "user")]
mod user;
