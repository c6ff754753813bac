//! Connection floods for the abuse tests and figures: an unprivileged process holding
//! thousands of connections to the API socket, and TCP connections from a chosen
//! loopback address to the metrics port.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

pub const NOBODY: libc::uid_t = 65_534;

/// A child of uid 65534 that opens `n` connections to the Unix socket `path` and holds
/// them until it is killed. Returns its pid once it has opened them.
#[must_use]
pub fn hold_as_nobody(path: &Path, n: usize) -> Holder {
    // Everything the child needs is made before the fork: after it, only plain
    // syscalls (this process has other threads).
    // SAFETY: an all-zero sockaddr_un is valid; the path is copied into it below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(path.as_os_str().as_bytes()) {
        *d = *s as libc::c_char;
    }
    let mut fds = [0; 2];
    // SAFETY: pipe() fills the two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let [r, w] = fds;
    // SAFETY: the child makes only async-signal-safe syscalls and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: plain syscalls on this child's own state and fds.
        unsafe {
            let lim = libc::rlimit {
                rlim_cur: 65_536,
                rlim_max: 65_536,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim);
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                libc::_exit(2);
            }
            for _ in 0..n {
                let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                libc::connect(
                    fd,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_un>() as libc::socklen_t,
                );
            }
            libc::write(w, [1u8].as_ptr().cast(), 1);
            loop {
                libc::pause();
            }
        }
    }
    // SAFETY: closing our copy of the write end, reading one byte into a local.
    unsafe {
        libc::close(w);
        let mut b = 0u8;
        assert_eq!(libc::read(r, (&raw mut b).cast(), 1), 1, "the holder died");
        libc::close(r);
    }
    Holder(pid)
}

/// The holding process; killed (and its connections closed) on drop.
pub struct Holder(libc::pid_t);

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A TCP connection to `to` from the local address `from`.
#[must_use]
pub fn tcp_from(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    // SAFETY: socket/bind/connect on a descriptor this function owns; it is handed to
    // TcpStream, which closes it.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        a.sin_family = libc::AF_INET as libc::sa_family_t;
        a.sin_addr.s_addr = u32::from_ne_bytes(from);
        let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd, (&raw const a).cast(), len) != 0 {
            libc::close(fd);
            return None;
        }
        let SocketAddr::V4(v4) = to else { return None };
        a.sin_addr.s_addr = u32::from_ne_bytes(v4.ip().octets());
        a.sin_port = v4.port().to_be();
        if libc::connect(fd, (&raw const a).cast(), len) != 0 {
            libc::close(fd);
            return None;
        }
        Some(<TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd))
    }
}
