//! A network namespace the test owns, made with syscalls rather than `ip netns` (the VM's
//! busybox guest has no iproute2): a thread unshares its network namespace, brings `lo`
//! up and gives it addresses, and the test keeps the namespace open by a file descriptor.
//! Nothing is named or mounted on the host: the namespace ends with the last process in
//! it and the descriptor's close, whatever happens to the test.

use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::Command,
};

use crate::mount_ns::{self, Bind};

/// A network namespace with `lo` up, holding 127.0.0.1/8 and the addresses it was made
/// with (each a /32).
pub struct NetNs {
    fd: OwnedFd,
}

impl NetNs {
    /// A new namespace whose `lo` also holds `addrs`.
    ///
    /// # Errors
    /// When the namespace cannot be made or `lo` configured (not root, say).
    pub fn new(addrs: &[Ipv4Addr]) -> io::Result<Self> {
        let addrs = addrs.to_vec();
        // A thread of its own: network namespaces are per thread, and this one ends here.
        std::thread::spawn(move || -> io::Result<Self> {
            // SAFETY: unshare changes only this thread's network namespace.
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
            // SAFETY: open of a NUL-terminated path; the fd is checked, then owned.
            let fd = check(unsafe {
                libc::open(
                    c"/proc/thread-self/ns/net".as_ptr(),
                    libc::O_RDONLY | libc::O_CLOEXEC,
                )
            })?;
            // SAFETY: a descriptor just opened, owned by nothing else.
            let ns = Self {
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
            };
            configure_lo(&addrs)?;
            Ok(ns)
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))?
    }

    /// Makes `cmd` start in this namespace, as `ip netns exec` does: in a private mount
    /// namespace where `resolv_conf` is bind-mounted over `/etc/resolv.conf` (which must
    /// exist), so that the process and whatever reads its root see its own resolver.
    pub fn enter_on_exec(&self, cmd: &mut Command, resolv_conf: &str) {
        let ns = self.fd.as_raw_fd();
        // SAFETY: the closure makes one raw setns syscall on a descriptor that stays open
        // until the fork (the command borrows self for no longer, and the child holds its
        // own copy of the descriptor table).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns, libc::CLONE_NEWNET) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        mount_ns::binds_on_exec(
            cmd,
            &[Bind {
                source: resolv_conf,
                target: "/etc/resolv.conf",
            }],
        );
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

// The request's type differs between glibc (unsigned long) and musl (int); `allow`, not
// `expect`: the casts truncate only on musl.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "the requests fit in 16 bits"
)]
const fn request(r: libc::c_ulong) -> libc::Ioctl {
    r as libc::Ioctl
}
const SIOCGIFFLAGS: libc::Ioctl = request(libc::SIOCGIFFLAGS);
const SIOCSIFFLAGS: libc::Ioctl = request(libc::SIOCSIFFLAGS);
const SIOCSIFADDR: libc::Ioctl = request(libc::SIOCSIFADDR);
const SIOCSIFNETMASK: libc::Ioctl = request(libc::SIOCSIFNETMASK);

/// Brings `lo` up and adds each of `addrs` as a /32 alias (`lo:N`), with the ioctls
/// `ifconfig` uses: they need no netlink message built by hand.
fn configure_lo(addrs: &[Ipv4Addr]) -> io::Result<()> {
    // SAFETY: a plain socket call; the fd is checked, then owned.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: a descriptor just opened, owned by nothing else.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let mut req = ifreq("lo")?;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the flags of the ifreq passed.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), SIOCGIFFLAGS, &raw mut req))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), SIOCSIFFLAGS, &raw const req))?;
    }
    for (i, addr) in addrs.iter().enumerate() {
        let mut req = ifreq(&format!("lo:{}", i + 1))?;
        req.ifr_ifru.ifru_addr = sockaddr(*addr);
        // SAFETY: SIOCSIFADDR and SIOCSIFNETMASK read the ifreq passed.
        unsafe {
            check(libc::ioctl(sock.as_raw_fd(), SIOCSIFADDR, &raw const req))?;
            req.ifr_ifru.ifru_netmask = sockaddr(Ipv4Addr::BROADCAST);
            check(libc::ioctl(
                sock.as_raw_fd(),
                SIOCSIFNETMASK,
                &raw const req,
            ))?;
        }
    }
    Ok(())
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let name = CString::new(name).map_err(io::Error::other)?;
    let bytes = name.as_bytes_with_nul();
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() > req.ifr_name.len() {
        return Err(io::Error::other("interface name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as the
    // family says.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}
