//! The raw `bpf()` system call, for the commands aya 0.14 does not wrap (the prefix-trie
//! pool's batch updates, the cgroup unix hooks).

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;

/// The `BPF_OBJ_PIN`/`BPF_OBJ_GET` member of `union bpf_attr`.
#[repr(C)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

fn obj(cmd: libc::c_long, fd: u32, path: &Path) -> io::Result<libc::c_long> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd,
        file_flags: 0,
    };
    bpf(cmd, &mut attr)
}

/// Pins the map, program or link behind `fd` at `path` on bpffs.
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    obj(BPF_OBJ_PIN, fd.as_raw_fd() as u32, path).map(drop)
}

/// A new descriptor of the object pinned at `path`.
pub fn get_pinned(path: &Path) -> io::Result<OwnedFd> {
    obj(BPF_OBJ_GET, 0, path).map(owned_fd)
}

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
