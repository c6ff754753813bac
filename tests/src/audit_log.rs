//! The kernel audit log, as a test reads it: the read-only multicast group
//! (`AUDIT_NLGRP_READLOG`, which never takes the place of an `auditd`), and audit
//! switched on only for a test's duration when it was off ([`AuditOn`] puts it back).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

const NETLINK_AUDIT: libc::c_int = 9;
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_NLGRP_READLOG: u32 = 1;
const AUDIT_STATUS_ENABLED: u32 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const HEADER: usize = 16;

/// Landlock's record of one denied access (`domain=... blockers=... path=...`).
pub const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
/// Landlock's record of a domain (`status=allocated ... pid=... exe=...`).
pub const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;

fn netlink(groups: u32) -> io::Result<OwnedFd> {
    // SAFETY: plain socket creation; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: zeroed sockaddr_nl is valid; family and groups set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = groups;
    // SAFETY: `addr` is a valid sockaddr_nl of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Room for bursts (every BPF program load is a record while audit is on).
    let rcvbuf: libc::c_int = 8 << 20;
    // SAFETY: SO_RCVBUFFORCE takes an int of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&raw const rcvbuf).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let timeout = libc::timeval {
        tv_sec: 1,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval of the size passed.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    Ok(fd)
}

/// One datagram's messages: (type, payload).
fn recv(fd: &OwnedFd) -> io::Result<Vec<(u16, Vec<u8>)>> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut rest = &buf[..n.cast_unsigned()];
    while rest.len() >= HEADER {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
        let ty = u16::from_ne_bytes(rest[4..6].try_into().unwrap());
        let len = len.clamp(HEADER, rest.len());
        out.push((ty, rest[HEADER..len].to_vec()));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(out)
}

/// Sends one request and returns the first reply of type `want` (or the error of a
/// `NLMSG_ERROR` with a nonzero code).
fn request(ty: u16, payload: &[u8], want: Option<u16>) -> io::Result<Vec<u8>> {
    let fd = netlink(0)?;
    let mut msg = Vec::with_capacity(HEADER + payload.len());
    msg.extend_from_slice(&((HEADER + payload.len()) as u32).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | if want.is_none() { 4 } else { 0 }).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    // SAFETY: `msg` is readable for its length.
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for _ in 0..4 {
        for (t, body) in recv(&fd)? {
            if t == NLMSG_ERROR && body.len() >= 4 {
                let code = i32::from_ne_bytes(body[0..4].try_into().unwrap());
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                if want.is_none() {
                    return Ok(Vec::new());
                }
            } else if Some(t) == want {
                return Ok(body);
            }
        }
    }
    Err(io::Error::other("no audit reply"))
}

/// `enabled` of the kernel's audit status: 0 off, 1 on, 2 locked on.
pub fn audit_enabled() -> io::Result<u32> {
    let body = request(AUDIT_GET, &[], Some(AUDIT_GET))?;
    body.get(4..8)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
        .ok_or_else(|| io::Error::other("short audit status"))
}

fn set_enabled(enabled: u32) -> io::Result<()> {
    let mut status = [0u32; 10];
    status[0] = AUDIT_STATUS_ENABLED;
    status[1] = enabled;
    let payload: Vec<u8> = status.iter().flat_map(|v| v.to_ne_bytes()).collect();
    request(AUDIT_SET, &payload, None).map(drop)
}

/// Audit switched on for as long as this lives, when it was off; put back on drop.
pub struct AuditOn {
    previous: u32,
}

impl AuditOn {
    /// `Err` when the audit status cannot be read or set (no `CAP_AUDIT_CONTROL`, not
    /// the initial namespaces).
    pub fn new() -> io::Result<Self> {
        let previous = audit_enabled()?;
        if previous == 0 {
            set_enabled(1)?;
        }
        Ok(Self { previous })
    }
}

impl Drop for AuditOn {
    fn drop(&mut self) {
        if self.previous == 0 {
            let _ = set_enabled(0);
        }
    }
}

/// A reader of the audit log's multicast group.
pub struct AuditLog(OwnedFd);

impl AuditLog {
    pub fn open() -> io::Result<Self> {
        netlink(1 << (AUDIT_NLGRP_READLOG - 1)).map(Self)
    }

    /// Reads records until `found` accepts the records read so far or `within` passes;
    /// returns them all (type, text).
    pub fn wait_for(
        &self,
        within: Duration,
        mut found: impl FnMut(&[(u16, String)]) -> bool,
    ) -> Vec<(u16, String)> {
        let start = Instant::now();
        let mut records = Vec::new();
        while start.elapsed() < within && !found(&records) {
            match recv(&self.0) {
                Ok(batch) => records.extend(
                    batch
                        .into_iter()
                        .map(|(t, b)| (t, String::from_utf8_lossy(&b).into_owned())),
                ),
                // A timeout, or records dropped in a burst (ENOBUFS): read on.
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => panic!("reading the audit log: {e}"),
            }
        }
        records
    }
}

/// `key=value` of an audit record (a quoted value without its quotes).
#[must_use]
pub fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record.split(' ').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.trim_matches('"'))
    })
}
