//! `io_uring`'s registered files and direct descriptors: files a ring holds in its own
//! table, used with `IOSQE_FIXED_FILE`, which never appear in the process's fd table.
//! Each command runs in a forked child:
//!
//! - `uring-direct-socket FAMILY TYPE PROTO`: `IORING_OP_SOCKET` into a free slot of a
//!   sparse table (`IORING_FILE_INDEX_ALLOC`);
//! - `uring-direct-connect ADDR PORT`: a TCP socket made that way, then
//!   `IORING_OP_CONNECT` on its slot;
//! - `uring-direct-unix-connect PATH`: the same for a unix stream socket;
//! - `uring-registered-connect ADDR PORT`: a TCP socket made by `socket()`, registered
//!   (`IORING_REGISTER_FILES`) and closed, then connected through its slot;
//! - `uring-direct-openat PATH`: `IORING_OP_OPENAT` for write into a slot; nothing is
//!   written;
//! - `uring-unlinkat PATH [rmdir]`, `uring-renameat OLD NEW`: `IORING_OP_UNLINKAT`
//!   (with `AT_REMOVEDIR`) and `IORING_OP_RENAMEAT`, relative to the working directory.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use io_uring::{IoUring, opcode, squeue, types};

use super::{
    attacks::{in_child, unix_addr},
    errno, parse_addr, raw_sockaddr,
};

/// Runs one command; `None` if `w[0]` is not one of these.
pub(crate) fn run(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let num = |i: usize| arg(i).parse::<i32>().unwrap_or(-1);
    let out = match arg(0) {
        "uring-direct-socket" => {
            in_child(|| with_ring(|ring| direct_socket(ring, num(1), num(2), num(3)).map(|_| ())))
        }
        "uring-direct-connect" => in_child(|| inet_connect(arg(1), arg(2), false)),
        "uring-registered-connect" => in_child(|| inet_connect(arg(1), arg(2), true)),
        "uring-direct-unix-connect" => in_child(|| {
            let (sun, len) = unix_addr(arg(1));
            with_ring(|ring| {
                let slot = direct_socket(ring, libc::AF_UNIX, libc::SOCK_STREAM, 0)?;
                let sp = (&raw const sun).cast::<libc::sockaddr>();
                let sqe = opcode::Connect::new(types::Fixed(slot), sp, len).build();
                complete(ring, &sqe).map(|_| ())
            })
        }),
        "uring-direct-openat" => in_child(|| {
            with_paths(arg(1), "", |ring, path, _| {
                opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path)
                    // O_CLOEXEC is refused for a slot (EINVAL): it has no process fd.
                    .flags(libc::O_WRONLY)
                    .file_index(Some(types::DestinationSlot::auto_target()))
                    .build()
                    .pipe(ring)
            })
        }),
        "uring-unlinkat" => in_child(|| {
            let flags = if arg(2) == "rmdir" {
                libc::AT_REMOVEDIR
            } else {
                0
            };
            with_paths(arg(1), "", |ring, path, _| {
                opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path)
                    .flags(flags)
                    .build()
                    .pipe(ring)
            })
        }),
        "uring-renameat" => in_child(|| {
            with_paths(arg(1), arg(2), |ring, old, new| {
                let cwd = types::Fd(libc::AT_FDCWD);
                opcode::RenameAt::new(cwd, old, cwd, new).build().pipe(ring)
            })
        }),
        _ => return None,
    };
    Some(out)
}

/// Submits an entry and waits for it.
trait Pipe {
    fn pipe(self, ring: &mut IoUring) -> Result<(), String>;
}

impl Pipe for squeue::Entry {
    fn pipe(self, ring: &mut IoUring) -> Result<(), String> {
        complete(ring, &self).map(|_| ())
    }
}

/// A ring for `f`, with two paths as C strings (the second may be empty).
fn with_paths(
    a: &str,
    b: &str,
    f: impl FnOnce(&mut IoUring, *const libc::c_char, *const libc::c_char) -> Result<(), String>,
) -> String {
    let (Ok(a), Ok(b)) = (CString::new(a), CString::new(b)) else {
        return "error bad path".into();
    };
    with_ring(|ring| f(ring, a.as_ptr(), b.as_ptr()))
}

/// A TCP connect to `addr:port` from a socket only the ring holds: made into a slot by
/// `IORING_OP_SOCKET`, or (`registered`) by `socket()`, registered and closed.
fn inet_connect(addr: &str, port: &str, registered: bool) -> String {
    let (ss, len) = match parse_addr(addr, port) {
        Ok(sa) => raw_sockaddr(&sa),
        Err(e) => return e,
    };
    let family = i32::from(ss.ss_family);
    with_ring(|ring| {
        let slot = if registered {
            // SAFETY: a plain socket call; the fd is owned right away.
            let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(format!("error socket errno {}", errno()));
            }
            // SAFETY: a fresh fd we own.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            ring.submitter()
                .register_files_update(0, &[sock.as_raw_fd()])
                .map_err(|e| format!("error register {e}"))?;
            // Only the ring holds the socket from here on.
            drop(sock);
            0
        } else {
            direct_socket(ring, family, libc::SOCK_STREAM, 0)?
        };
        let sp = (&raw const ss).cast::<libc::sockaddr>();
        opcode::Connect::new(types::Fixed(slot), sp, len)
            .build()
            .pipe(ring)
    })
}

/// A ring with a sparse table of 8 slots, for `f`; its outcome as the probe reports it.
fn with_ring(f: impl FnOnce(&mut IoUring) -> Result<(), String>) -> String {
    let mut ring = match IoUring::new(4) {
        Ok(r) => r,
        Err(e) => return format!("error io_uring_setup {e}"),
    };
    if let Err(e) = ring.submitter().register_files_sparse(8) {
        return format!("error register_files_sparse {e}");
    }
    match f(&mut ring) {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}

/// `IORING_OP_SOCKET` into a free slot; the slot.
fn direct_socket(ring: &mut IoUring, family: i32, ty: i32, proto: i32) -> Result<u32, String> {
    let sqe = opcode::Socket::new(family, ty, proto)
        .file_index(Some(types::DestinationSlot::auto_target()))
        .build();
    complete(ring, &sqe).map(|slot| slot as u32)
}

/// Submits `sqe` and waits for it: its result, or `errno N`.
fn complete(ring: &mut IoUring, sqe: &squeue::Entry) -> Result<i32, String> {
    // SAFETY: every buffer the entry points to outlives the wait below.
    if unsafe { ring.submission().push(sqe) }.is_err() {
        return Err("error sq full".into());
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return Err(format!("error io_uring_enter {e}"));
    }
    match ring.completion().next() {
        Some(cqe) if cqe.result() < 0 => Err(format!("errno {}", -cqe.result())),
        Some(cqe) => Ok(cqe.result()),
        None => Err("error no completion".into()),
    }
}
