//! Landlock's audit records (ABI 7, Linux 6.15), read from the kernel audit log's
//! read-only multicast group (`AUDIT_NLGRP_READLOG`): joining it never takes the place
//! of an `auditd`, and changes nothing. Records flow only while the kernel's audit is on
//! (`auditctl -e 1`, `audit=1`, or a running `auditd`); leash never turns it on.
//!
//! A denial is an access record (`type=1423`: `domain=ID blockers=fs.read_file
//! path="..."`); the first denial of a domain also brings its domain record
//! (`type=1424`: `domain=ID status=allocated ... pid=PID`), whose pid is the process
//! that created the domain: for a `leash run` task, the pid its command kept.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, setsockopt,
    socket, sockopt,
};

/// `AUDIT_LANDLOCK_ACCESS`.
const LANDLOCK_ACCESS: u16 = 1423;
/// `AUDIT_LANDLOCK_DOMAIN`.
const LANDLOCK_DOMAIN: u16 = 1424;
/// `AUDIT_NLGRP_READLOG`, as a netlink group bit.
const READLOG_GROUP: u32 = 1;
const NLMSG_HEADER: usize = 16;

/// One Landlock record that matters to leash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A denied access: which rights (`fs.read_file`, `fs.write_file,fs.truncate`,
    /// `scope.signal`, ...) and, for files, the path.
    Access {
        domain: u64,
        blockers: String,
        path: Option<String>,
    },
    /// A domain's first denial: the pid that created it.
    Allocated { domain: u64, pid: u32 },
    /// A domain gone (its last process exited).
    Freed { domain: u64 },
}

impl Record {
    /// Whether a denial is a file access (rather than a signal, ptrace or socket scope).
    #[must_use]
    pub fn is_file_access(&self) -> bool {
        matches!(self, Self::Access { blockers, .. } if blockers.starts_with("fs."))
    }
}

/// `key=value` of a record's text, as the kernel wrote it.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split(' ').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// An untrusted string as audit logs it: `"text"`, or hex when the text has spaces,
/// quotes or control characters.
fn untrusted(value: &str) -> Option<String> {
    if let Some(quoted) = value.strip_prefix('"') {
        return quoted.strip_suffix('"').map(str::to_owned);
    }
    if !value.len().is_multiple_of(2) || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..value.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&value[i..i + 2], 16).ok())
        .collect();
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Parses one audit message (its type and text); `None` for any other record.
#[must_use]
pub fn parse(kind: u16, text: &str) -> Option<Record> {
    let domain = u64::from_str_radix(field(text, "domain")?, 16).ok()?;
    match kind {
        LANDLOCK_ACCESS => Some(Record::Access {
            domain,
            blockers: field(text, "blockers")?.to_owned(),
            path: field(text, "path").and_then(untrusted),
        }),
        LANDLOCK_DOMAIN => match field(text, "status")? {
            "allocated" => Some(Record::Allocated {
                domain,
                pid: field(text, "pid")?.parse().ok()?,
            }),
            "deallocated" => Some(Record::Freed { domain }),
            _ => None,
        },
        _ => None,
    }
}

/// The Landlock records of one datagram of netlink messages.
#[must_use]
pub fn parse_datagram(mut bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while bytes.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let len = len.clamp(NLMSG_HEADER, bytes.len());
        if matches!(kind, LANDLOCK_ACCESS | LANDLOCK_DOMAIN)
            && let Some(r) = parse(kind, &String::from_utf8_lossy(&bytes[NLMSG_HEADER..len]))
        {
            out.push(r);
        }
        bytes = &bytes[len.next_multiple_of(4).min(bytes.len())..];
    }
    out
}

/// A non-blocking socket in the audit log's read-only group.
pub struct AuditLog(OwnedFd);

impl AuditLog {
    /// Joins the group: needs `CAP_AUDIT_READ` and the initial network namespace.
    pub fn open() -> nix::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkAudit,
        )?;
        // Room for bursts: while audit is on, every record of the host comes here.
        let _ = setsockopt(&fd, sockopt::RcvBufForce, &(4 << 20));
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, READLOG_GROUP))?;
        Ok(Self(fd))
    }

    /// The Landlock records of the next datagram; `EAGAIN` when there is none, `ENOBUFS`
    /// when records were dropped (the socket's buffer overflowed).
    pub fn read(&self, buf: &mut [u8]) -> nix::Result<Vec<Record>> {
        let n = recv(self.0.as_raw_fd(), buf, MsgFlags::empty())?;
        Ok(parse_datagram(&buf[..n]))
    }
}

impl AsFd for AuditLog {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for AuditLog {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_landlock_records() {
        assert_eq!(
            parse(
                1423,
                "audit(1796229513.227:10): domain=1988c1d30 blockers=fs.read_file path=\"/etc/hostname\" dev=\"vda\" ino=611"
            ),
            Some(Record::Access {
                domain: 0x1_988c_1d30,
                blockers: "fs.read_file".into(),
                path: Some("/etc/hostname".into()),
            })
        );
        // A path with a space is logged in hex.
        let r = parse(
            1423,
            "audit(1.1:2): domain=a blockers=fs.write_file,fs.truncate path=2F746D702F6120622E747874 dev=\"vda\"",
        )
        .unwrap();
        assert!(r.is_file_access());
        assert!(
            matches!(&r, Record::Access { path: Some(p), .. } if p == "/tmp/a b.txt"),
            "{r:?}"
        );
        let signal = parse(
            1423,
            "audit(1.1:2): domain=a blockers=scope.signal opid=1 ocomm=\"init\"",
        )
        .unwrap();
        assert!(!signal.is_file_access());
        assert_eq!(
            parse(
                1424,
                "audit(1.1:10): domain=1988c1d30 status=allocated mode=enforcing pid=16083 uid=0 exe=\"/x\" comm=\"t\""
            ),
            Some(Record::Allocated {
                domain: 0x1_988c_1d30,
                pid: 16083
            })
        );
        assert_eq!(
            parse(
                1424,
                "audit(1.1:11): domain=ff status=deallocated denials=1"
            ),
            Some(Record::Freed { domain: 0xff })
        );
        // Other records, and broken ones, are not Landlock's.
        assert_eq!(
            parse(1300, "audit(1.1:1): arch=c000003e syscall=257 pid=5"),
            None
        );
        assert_eq!(
            parse(1423, "audit(1.1:1): domain=zz blockers=fs.read_file"),
            None
        );
        assert_eq!(
            parse(1424, "audit(1.1:1): domain=1 status=allocated pid=x"),
            None
        );
    }

    #[test]
    fn parses_datagrams_of_several_messages() {
        let mut dgram = Vec::new();
        for (kind, text) in [
            (1300u16, "audit(1.1:1): syscall=257"),
            (
                1423,
                "audit(1.1:1): domain=2a blockers=fs.read_file path=\"/k\"",
            ),
            (1424, "audit(1.1:1): domain=2a status=allocated pid=7"),
        ] {
            let len = NLMSG_HEADER + text.len();
            dgram.extend_from_slice(&u32::try_from(len).unwrap().to_ne_bytes());
            dgram.extend_from_slice(&kind.to_ne_bytes());
            dgram.extend_from_slice(&[0; 10]);
            dgram.extend_from_slice(text.as_bytes());
            dgram.resize(dgram.len().next_multiple_of(4), 0);
        }
        let records = parse_datagram(&dgram);
        assert_eq!(records.len(), 2, "{records:?}");
        assert_eq!(records[1], Record::Allocated { domain: 42, pid: 7 });
        assert!(parse_datagram(&dgram[..7]).is_empty());
    }
}
