//! Userspace-only impls: the types are plain old data for aya's maps.

use crate::{
    DnsOrigin, DnsTarget, ExecFileGrant, ExecGrant, ExecKey, KernelOffsets, NetKey, NetRules,
    ScriptKey, TaskInfo, UnixGrant, UnixKey,
};

// SAFETY: each type is `repr(C)`, `Copy`, made only of integers, with explicit padding
// (size asserts next to the definitions), so every bit pattern is valid.
unsafe impl aya::Pod for TaskInfo {}
// SAFETY: as above.
unsafe impl aya::Pod for ExecKey {}
// SAFETY: as above.
unsafe impl aya::Pod for ExecGrant {}
// SAFETY: as above.
unsafe impl aya::Pod for ExecFileGrant {}
// SAFETY: as above.
unsafe impl aya::Pod for NetKey {}
// SAFETY: as above.
unsafe impl aya::Pod for NetRules {}
// SAFETY: as above.
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: as above.
unsafe impl aya::Pod for ScriptKey {}
// SAFETY: as above.
unsafe impl aya::Pod for UnixKey {}
// SAFETY: as above.
unsafe impl aya::Pod for DnsTarget {}
// SAFETY: as above.
unsafe impl aya::Pod for DnsOrigin {}
// SAFETY: as above.
unsafe impl aya::Pod for UnixGrant {}
