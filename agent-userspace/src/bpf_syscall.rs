//! The raw `bpf()` system call, for the commands aya 0.14 does not wrap (the prefix-trie
//! pool's batch updates, the cgroup unix hooks).

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd},
};

/// `bpf(cmd, attr, sizeof attr)`.
pub fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is `union bpf_attr` or a prefix of it laid out for `cmd`; the kernel
    // reads and writes only within `size_of::<T>()` bytes, and any pointers in it
    // outlive the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, std::ptr::from_mut(attr), size_of::<T>()) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// The descriptor a successful `bpf()` returned.
#[must_use]
pub fn owned_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}
