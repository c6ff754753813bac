//! System call arguments in user memory a syscall-entry guard cannot read, though the
//! kernel's own copy can: the guards' `bpf_probe_read_user` never faults a page in.
//!
//! `unpaged MODE CALL ARGS...` puts the call's first argument in such a page and makes
//! the call in a forked child:
//! - `file`: a shared mapping of a memfd holding the argument, never touched, so no
//!   page table entry exists until the kernel's copy faults it in;
//! - `uffd`: an anonymous range registered with userfaultfd; a thread of the child
//!   fills the page when the kernel's copy faults on it.
//!
//! Calls: `unlink PATH`, `rmdir PATH`, `rename OLD NEW` (OLD in the page), `clone3`
//! (its `clone_args`, a plain fork), `sendmsg-unix PATH` (the `msghdr` of a datagram to
//! the unix socket at PATH).

use std::{ffi::CString, os::fd::AsRawFd as _};

use super::{
    attacks::{in_child, unix_addr},
    errno, outcome,
};

const PAGE: usize = 4096;

/// Runs one `unpaged` command; `None` if `w[0]` is not one.
pub(crate) fn run(w: &[String]) -> Option<String> {
    if w.first().map(String::as_str) != Some("unpaged") {
        return None;
    }
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let mode = arg(1).to_owned();
    let call = arg(2).to_owned();
    let (a, b) = (arg(3).to_owned(), arg(4).to_owned());
    Some(in_child(move || match mode.as_str() {
        "file" => call_with(&call, &a, &b, file_page),
        "uffd" => call_with(&call, &a, &b, uffd_page),
        other => format!("error bad mode {other:?}"),
    }))
}

/// Builds the argument of `call`, puts it in a page made by `page` and makes the call.
fn call_with(
    call: &str,
    a: &str,
    b: &str,
    page: fn(&[u8; PAGE]) -> Result<*mut u8, String>,
) -> String {
    let mut content = [0u8; PAGE];
    let (bytes, target) = match call {
        "unlink" | "rmdir" | "rename" => (a.as_bytes().to_vec(), None),
        "clone3" => (clone_args(), None),
        // The msghdr goes in the page; the address it names stays in ordinary memory.
        "sendmsg-unix" => (vec![0; size_of::<libc::msghdr>()], Some(unix_addr(a))),
        other => return format!("error bad call {other:?}"),
    };
    if bytes.len() >= PAGE || (bytes.contains(&0) && !matches!(call, "clone3" | "sendmsg-unix")) {
        return "error bad argument".into();
    }
    content[..bytes.len()].copy_from_slice(&bytes);
    let mut payload = *b"leash";
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    if let Some((sun, len)) = &target {
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&raw const *sun).cast_mut().cast();
        msg.msg_namelen = *len;
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: the msghdr is plain data copied into the page's content.
        let raw = unsafe {
            std::slice::from_raw_parts((&raw const msg).cast::<u8>(), size_of::<libc::msghdr>())
        };
        content[..raw.len()].copy_from_slice(raw);
    }
    let p = match page(&content) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let other = CString::new(b).unwrap_or_default();
    // SAFETY: each call gets a pointer into a mapping of PAGE bytes that holds a
    // NUL-terminated path, a `clone_args` or a `msghdr` once faulted in.
    unsafe {
        match call {
            "unlink" => outcome(libc::unlink(p.cast())),
            "rmdir" => outcome(libc::rmdir(p.cast())),
            "rename" => outcome(libc::rename(p.cast(), other.as_ptr())),
            "clone3" => {
                let pid = libc::syscall(libc::SYS_clone3, p, 88usize);
                if pid == 0 {
                    libc::_exit(0);
                }
                if pid < 0 {
                    return format!("errno {}", errno());
                }
                super::wait_outcome(pid as libc::pid_t);
                "ok".into()
            }
            _ => {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if fd < 0 {
                    return format!("error socket errno {}", errno());
                }
                // The raw call: musl's sendmsg() copies the msghdr to its stack first.
                let rc = libc::syscall(libc::SYS_sendmsg, fd, p, 0);
                if rc < 0 {
                    return format!("errno {}", errno());
                }
                "ok".into()
            }
        }
    }
}

/// `clone_args` of a plain fork (`exit_signal` SIGCHLD), 88 bytes.
fn clone_args() -> Vec<u8> {
    let mut v = vec![0u8; 88];
    v[32..40].copy_from_slice(&(libc::SIGCHLD as u64).to_ne_bytes());
    v
}

/// A read-only shared mapping of a memfd holding `content`, not faulted in.
fn file_page(content: &[u8; PAGE]) -> Result<*mut u8, String> {
    // SAFETY: memfd_create with a literal name; the fd stays open for the mapping's
    // life (the child exits right after the call).
    let fd = unsafe { libc::memfd_create(c"leash-unpaged".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(format!("error memfd errno {}", errno()));
    }
    // SAFETY: writing our buffer to our fd.
    if unsafe { libc::write(fd, content.as_ptr().cast(), PAGE) } != PAGE as isize {
        return Err(format!("error write errno {}", errno()));
    }
    // SAFETY: a new mapping of our fd; nothing touches it before the call.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("error mmap errno {}", errno()));
    }
    Ok(p.cast())
}

// userfaultfd's ioctls (`_IOWR(0xAA, nr, struct)`) and structures (linux/userfaultfd.h).
const UFFD_API: u64 = 0xaa;
// `Ioctl` is `c_ulong` on glibc and `c_int` on musl (the VM build): the bits are kept.
#[cfg_attr(
    target_env = "musl",
    expect(clippy::cast_possible_wrap, reason = "ioctl numbers are bit patterns")
)]
const UFFDIO_API: libc::Ioctl = 0xc018_aa3f_u32 as libc::Ioctl;
#[cfg_attr(
    target_env = "musl",
    expect(clippy::cast_possible_wrap, reason = "ioctl numbers are bit patterns")
)]
const UFFDIO_REGISTER: libc::Ioctl = 0xc020_aa00_u32 as libc::Ioctl;
#[cfg_attr(
    target_env = "musl",
    expect(clippy::cast_possible_wrap, reason = "ioctl numbers are bit patterns")
)]
const UFFDIO_COPY: libc::Ioctl = 0xc028_aa03_u32 as libc::Ioctl;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;

/// An anonymous page registered with userfaultfd: the first fault on it (the kernel's
/// copy of the argument) waits until a thread of ours copies `content` in.
fn uffd_page(content: &[u8; PAGE]) -> Result<*mut u8, String> {
    // SAFETY: userfaultfd(O_CLOEXEC); faults from the kernel too (no
    // UFFD_USER_MODE_ONLY), which root may ask for.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC) } as i32;
    if fd < 0 {
        return Err(format!("error userfaultfd errno {}", errno()));
    }
    // SAFETY: the fd is ours from here on.
    let uffd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut api = [UFFD_API, 0, 0];
    // SAFETY: UFFDIO_API with a `struct uffdio_api` (three u64).
    if unsafe { libc::ioctl(fd, UFFDIO_API, api.as_mut_ptr()) } < 0 {
        return Err(format!("error UFFDIO_API errno {}", errno()));
    }
    // SAFETY: a new private anonymous mapping, never touched by us.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!("error mmap errno {}", errno()));
    }
    let mut reg = [p as u64, PAGE as u64, UFFDIO_REGISTER_MODE_MISSING, 0];
    // SAFETY: UFFDIO_REGISTER with a `struct uffdio_register` (range, mode, ioctls).
    if unsafe { libc::ioctl(fd, UFFDIO_REGISTER, reg.as_mut_ptr()) } < 0 {
        return Err(format!("error UFFDIO_REGISTER errno {}", errno()));
    }
    let src = Box::new(*content);
    let dst = p as u64;
    std::thread::spawn(move || {
        let fd = uffd.as_raw_fd();
        let mut msg = [0u8; 32];
        // SAFETY: reading one `struct uffd_msg` (32 bytes) from our fd.
        let n = unsafe { libc::read(fd, msg.as_mut_ptr().cast(), msg.len()) };
        if n != 32 || msg[0] != UFFD_EVENT_PAGEFAULT {
            return;
        }
        let mut copy = [dst, src.as_ptr() as u64, PAGE as u64, 0, 0];
        // SAFETY: UFFDIO_COPY with a `struct uffdio_copy` (dst, src, len, mode, copy)
        // from our boxed page into the registered one.
        unsafe { libc::ioctl(fd, UFFDIO_COPY, copy.as_mut_ptr()) };
    });
    Ok(p.cast())
}
