//! Attempts on host state and kernel doors: opening files for write on `/proc/sys` and
//! `/sys`, raw memory devices, `io_uring`. Each runs in a forked child (a denial may kill
//! the caller); the outcome is its report, or `signal N`.

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use super::{attacks::in_child, errno};

/// Runs one host command; `None` if `w[0]` is not one.
pub(crate) fn run(w: &[String]) -> Option<String> {
    let arg = |i: usize| w.get(i).map_or("", String::as_str);
    let out = match arg(0) {
        // `open-write PATH [VALUE]`: opens for write and, given a value, writes it.
        "open-write" => in_child(|| open_write(None, arg(1), arg(2))),
        // `open-write-in DIR NAME [VALUE]`: the same by a name relative to DIR, after
        // chdir(DIR).
        "open-write-in" => in_child(|| open_write(Some(arg(1)), arg(2), arg(3))),
        // `open-read PATH`: opens read-only and reads.
        "open-read" => in_child(|| open_read(arg(1))),
        // `open-only PATH`: opens read-only and reads nothing (device nodes, where a read
        // could have effects).
        "open-only" => in_child(|| match std::fs::File::open(arg(1)) {
            Ok(_) => "ok".into(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        }),
        "uring-setup" => in_child(|| match io_uring::IoUring::new(4) {
            Ok(_) => "ok".into(),
            Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
        }),
        // `uring-openat PATH`: IORING_OP_OPENAT for write; nothing is written.
        "uring-openat" => in_child(|| uring_openat(arg(1))),
        _ => return None,
    };
    Some(out)
}

fn open_write(dir: Option<&str>, path: &str, value: &str) -> String {
    if let Some(dir) = dir
        && let Err(e) = std::env::set_current_dir(dir)
    {
        return format!("error chdir {e}");
    }
    let Ok(c) = CString::new(path) else {
        return "error bad path".into();
    };
    // SAFETY: open with a NUL-terminated path; the fd is owned right away.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return format!("errno {}", errno());
    }
    // SAFETY: a fresh fd we own.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    if value.is_empty() {
        return "ok".into();
    }
    // SAFETY: writing a live buffer to our fd.
    let n = unsafe { libc::write(file.as_raw_fd(), value.as_ptr().cast(), value.len()) };
    if n < 0 {
        return format!("errno {}", errno());
    }
    "ok".into()
}

fn open_read(path: &str) -> String {
    match std::fs::File::open(path) {
        Ok(mut f) => {
            let mut buf = [0u8; 64];
            match std::io::Read::read(&mut f, &mut buf) {
                Ok(_) => "ok".into(),
                Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
            }
        }
        Err(e) => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

fn uring_openat(path: &str) -> String {
    use io_uring::{IoUring, opcode, types};
    let Ok(c) = CString::new(path) else {
        return "error bad path".into();
    };
    let mut ring = match IoUring::new(4) {
        Ok(r) => r,
        Err(e) => return format!("error io_uring_setup {e}"),
    };
    let sqe = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), c.as_ptr())
        .flags(libc::O_WRONLY | libc::O_CLOEXEC)
        .build();
    // SAFETY: the path outlives the submission (we wait for completion below).
    if unsafe { ring.submission().push(&sqe) }.is_err() {
        return "error sq full".into();
    }
    if let Err(e) = ring.submit_and_wait(1) {
        return format!("error io_uring_enter {e}");
    }
    match ring.completion().next() {
        Some(cqe) if cqe.result() < 0 => format!("errno {}", -cqe.result()),
        Some(cqe) => {
            // SAFETY: the completion is a fresh fd we own.
            drop(unsafe { OwnedFd::from_raw_fd(cqe.result()) });
            "ok".into()
        }
        None => "error no completion".into(),
    }
}
