//! Decision events from the kernel's ring buffer, decoded for logs and tests.

use std::net::{IpAddr, Ipv6Addr};

use aya::maps::{MapData, RingBuf};
use leash_common::{Action, Event, Reason, Verdict};
use serde::Serialize;

/// What an event was about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Target {
    Exec {
        path: String,
        dev: u32,
        ino: u64,
    },
    Net {
        addr: IpAddr,
        port: u16,
        protocol: String,
    },
    /// A unix socket by path (`@name`: abstract).
    Unix {
        path: String,
    },
    /// A socket the task created: `AF_*` family, type and protocol numbers.
    Socket {
        family: u8,
        socket_type: u16,
        protocol: u32,
    },
    /// An attempt on leash: the syscall and the pid it aimed at (0: none).
    Guard {
        call: String,
        target_pid: u32,
    },
    /// A compat system call: the table (`compat`: i386, `x32`) and its number.
    Compat {
        call: String,
        syscall: u32,
    },
    /// Attach scope `task`: a tagged thread moved out of its task's leash cgroups (the
    /// event's pid and comm are the mover's), the cgroup it was moved to, and whether
    /// the kernel killed it at the move (else the daemon does).
    Escape {
        moved_pid: u32,
        cgroup_id: u64,
        killed_at_move: bool,
    },
    /// Lifecycle records that name no target.
    Process {},
}

/// One decision, decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// `CLOCK_BOOTTIME` ns.
    pub ts_ns: u64,
    pub task: u64,
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub kind: Decoded<Action>,
    pub verdict: Decoded<Verdict>,
    pub reason: Decoded<Reason>,
    pub target: Target,
}

/// A byte of an event decoded into its enum, or kept as it was when it names no value
/// (an event from another version's kernel object): reported as `unknown`, never
/// dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decoded<T> {
    Known(T),
    Unknown(u8),
}

impl<T: TryFrom<u8, Error = u8>> Decoded<T> {
    fn from_byte(byte: u8) -> Self {
        T::try_from(byte).map_or(Self::Unknown(byte), Self::Known)
    }
}

impl<T: Copy + Into<&'static str>> Decoded<T> {
    /// The name the audit log, the metrics and the CLI use; `unknown` for a byte that
    /// names no value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Known(v) => v.into(),
            Self::Unknown(_) => "unknown",
        }
    }
}

impl<T: PartialEq> PartialEq<T> for Decoded<T> {
    fn eq(&self, other: &T) -> bool {
        matches!(self, Self::Known(v) if v == other)
    }
}

impl<T: Copy + Into<&'static str>> Serialize for Decoded<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<T: Copy + Into<&'static str>> std::fmt::Display for Decoded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `AF_UNIX`, as a network event's family says it.
const AF_UNIX_FAMILY: u8 = 1;

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Decodes one ring buffer record; `None` if it is not an [`Event`] (wrong size).
#[must_use]
pub fn decode(bytes: &[u8]) -> Option<Decision> {
    if bytes.len() < size_of::<Event>() {
        return None;
    }
    // SAFETY: length checked; Event is plain integers, read unaligned.
    let e: Event = unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() };
    let target = if e.action == Action::Exit as u8 || e.action == Action::Fork as u8 {
        Target::Process {}
    } else if e.action == Action::Socket as u8 {
        Target::Socket {
            family: e.family,
            socket_type: e.port,
            protocol: e.proto,
        }
    } else if e.action == Action::Tamper as u8 && e.reason == Reason::CompatSyscall as u8 {
        Target::Compat {
            call: cstr(&e.path),
            syscall: e.dev,
        }
    } else if e.action == Action::Tamper as u8 && e.reason == Reason::ScopeEscape as u8 {
        Target::Escape {
            moved_pid: e.dev,
            cgroup_id: e.ino,
            killed_at_move: e.proto != 0,
        }
    } else if e.action == Action::Tamper as u8 {
        Target::Guard {
            call: cstr(&e.path),
            target_pid: e.dev,
        }
    } else if e.family == AF_UNIX_FAMILY {
        Target::Unix {
            path: cstr(&e.path),
        }
    } else if e.action == Action::Exec as u8 {
        Target::Exec {
            path: cstr(&e.path),
            dev: e.dev,
            ino: e.ino,
        }
    } else {
        let v6 = Ipv6Addr::from(e.addr);
        let addr = v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4);
        Target::Net {
            addr,
            port: e.port,
            protocol: match e.proto {
                6 => "tcp".into(),
                17 => "udp".into(),
                p => p.to_string(),
            },
        }
    };
    Some(Decision {
        ts_ns: e.ts_ns,
        task: e.task,
        pid: e.pid,
        tid: e.tid,
        comm: cstr(&e.comm),
        kind: Decoded::from_byte(e.action),
        verdict: Decoded::from_byte(e.verdict),
        reason: Decoded::from_byte(e.reason),
        target,
    })
}

/// Reader of the `EVENTS` ring buffer.
pub struct EventReader {
    ring: RingBuf<MapData>,
}

impl EventReader {
    #[must_use]
    pub const fn new(ring: RingBuf<MapData>) -> Self {
        Self { ring }
    }

    /// Everything queued now, without blocking.
    pub fn drain(&mut self) -> Vec<Decision> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            if let Some(d) = decode(&item) {
                out.push(d);
            }
        }
        out
    }

    /// The ring buffer, for `AsyncFd` readiness.
    #[must_use]
    pub const fn ring(&self) -> &RingBuf<MapData> {
        &self.ring
    }
}

impl std::os::fd::AsRawFd for EventReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.ring)
    }
}
