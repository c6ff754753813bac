//! Decision events and counters.

/// What a tagged process tried.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Exec = 0,
    Connect = 1,
    Send = 2,
    /// Not a decision: the last thread of a tagged process exited. Lets the daemon end
    /// a task whose last process is gone without polling. Never counted.
    Exit = 3,
    /// Creating a socket of a family or protocol grants must name (raw, packet,
    /// netlink, vsock, ...). `family` holds the `AF_*` number.
    Socket = 4,
    /// An attempt on leash itself (`bpf()`, ptrace or signals to the daemon or an
    /// untagged process, the pin directory, cgroup migration). `path` names the call.
    Tamper = 5,
    /// A fork refused because the process map is full (fail closed).
    Fork = 6,
    /// A DNS query, decided by the daemon's responder (never by a kernel program).
    Dns = 7,
}

/// Counter rows per slot: every action but [`Action::Exit`] is counted; its row stays 0.
pub const ACTIONS: u32 = 8;

#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed = 0,
    Denied = 1,
    /// Would have been denied; allowed because the task is in audit mode.
    Audited = 2,
}

pub const VERDICTS: u32 = 3;

/// Why a decision came out as it did.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Granted = 0,
    NotGranted = 1,
    /// The tag names a task the kernel does not know (ended and removed).
    UnknownTask = 2,
    TaskEnded = 3,
    TaskExpired = 4,
    /// A shebang script whose script file (not only its interpreter) is not granted.
    ScriptNotGranted = 5,
    /// A socket protocol grants cannot name (neither TCP nor UDP).
    Protocol = 6,
    /// The kernel could not read what it needed to decide; denied (fail closed).
    ReadFailed = 7,
    /// A socket family or protocol the task has no `socket:` grant for.
    FamilyNotGranted = 8,
    /// `bpf()` from a tagged process: it could detach programs or edit maps.
    GuardBpf = 9,
    /// ptrace, signal or fd theft aimed at the daemon or outside the task.
    GuardProcess = 10,
    /// Unlink, rename or unmount reaching the BPF file system (the pins).
    GuardPins = 11,
    /// Moving a tagged process to another cgroup.
    GuardCgroup = 12,
    /// The process map has no room for a child.
    MapFull = 13,
    /// A compat (i386 or x32) system call, which the native syscall tracepoints never
    /// see: the process is stopped at its first one.
    CompatSyscall = 14,
    /// Mounting, unmounting or pivoting a root: a task must not re-point names or
    /// recycle file system identities.
    GuardMount = 15,
    /// A door into the kernel: module load/unload, kexec, `iopl`/`ioperm`, raw memory
    /// devices.
    GuardKernel = 16,
    /// A write to host state the kernel or untagged processes act on (`/proc/sys`,
    /// `/sys`, `binfmt_misc`).
    GuardHostState = 17,
    /// `io_uring` without a `socket:io_uring` grant: its operations bypass syscall-level
    /// checks.
    IoUringNotGranted = 18,
    /// A granted file whose content (or inode) changed after it was granted.
    ChangedSinceGrant = 19,
    /// A unix path name granted in another mount namespace or under another root
    /// (`chroot`) than the caller's: there the name may name another socket.
    UnixOtherView = 20,
    /// A unix connect or send whose peer is not the socket the granted name named
    /// when the grant was made (lsm backend).
    UnixOtherSocket = 21,
    /// DNS to port 53 that cannot be redirected to the task's responder (an unconnected
    /// IPv6 send, or a task without a responder): denied rather than let through.
    DnsUnredirectable = 22,
    /// An argument a syscall-entry guard must look at (a path, a `msghdr`, `clone_args`)
    /// is in user memory the guard cannot read (a page not faulted in yet, a
    /// userfaultfd range), though the kernel's own copy later would: the call is
    /// stopped (fail closed).
    ArgumentUnreadable = 23,
    /// Attach scope `task`: a tagged process moved (by an untagged process) to a cgroup
    /// outside its task's leash cgroups, where the network hooks do not run. It is
    /// killed: at the move where the kernel has `bpf_send_signal_task`, else by the
    /// daemon when it reads the event (the event's `proto` says which).
    ScopeEscape = 24,
}

/// Counter rows per slot.
pub const COUNTERS_PER_SLOT: u32 = ACTIONS * VERDICTS;
/// Slots (agents) the decision counters have room for.
pub const COUNTER_SLOTS: u32 = 1024;
pub const DECISIONS_LEN: u32 = COUNTER_SLOTS * COUNTERS_PER_SLOT;

/// Index into the `DECISIONS` per-CPU array.
#[must_use]
pub const fn counter_index(slot: u32, action: Action, verdict: Verdict) -> u32 {
    (slot % COUNTER_SLOTS) * COUNTERS_PER_SLOT + action as u32 * VERDICTS + verdict as u32
}

pub const COMM_LEN: usize = 16;
pub const PATH_LEN: usize = 128;

/// One decision, as written to the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Event {
    /// `CLOCK_BOOTTIME` ns.
    pub ts_ns: u64,
    pub task: u64,
    /// Exec: inode of the file.
    pub ino: u64,
    /// Thread id and process id.
    pub tid: u32,
    pub pid: u32,
    /// Exec: device in `s_dev` encoding.
    pub dev: u32,
    /// An [`Action`].
    pub action: u8,
    /// A [`Verdict`].
    pub verdict: u8,
    /// A [`Reason`].
    pub reason: u8,
    /// Network: 4 or 6, the socket family the call came from; 1 (`AF_UNIX`) for a
    /// unix socket path (in `path`). Socket: the `AF_*` number, type in `port`.
    pub family: u8,
    /// Network: destination port, host order.
    pub port: u16,
    pub _pad: [u8; 2],
    /// Network: the socket's IP protocol number, whole (6 TCP, 17 UDP, 262 MPTCP: a
    /// byte would report MPTCP as TCP). Socket: the `protocol` argument.
    pub proto: u32,
    /// Network: destination, IPv4 as mapped IPv6.
    pub addr: [u8; 16],
    pub comm: [u8; COMM_LEN],
    /// Exec: the path as passed to exec (NUL-terminated, possibly cut). Unix: the
    /// socket path (`@` first for an abstract name). Tamper: the syscall's name.
    pub path: [u8; PATH_LEN],
}

const _: () = assert!(size_of::<Event>() == 48 + 16 + 16 + PATH_LEN);
const _: () = assert!(core::mem::offset_of!(Event, proto) == 44);
const _: () = assert!(core::mem::offset_of!(Event, addr) == 48);

/// The enums the kernel writes as bytes: decoding a byte back and naming a value for
/// logs, events and metrics.
macro_rules! byte_enum {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// The name events and metrics use.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl core::fmt::Display for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl From<$ty> for &'static str {
            fn from(value: $ty) -> Self {
                value.as_str()
            }
        }

        impl TryFrom<u8> for $ty {
            /// The byte, which names no value.
            type Error = u8;

            fn try_from(byte: u8) -> Result<Self, u8> {
                $(if byte == Self::$variant as u8 {
                    return Ok(Self::$variant);
                })+
                Err(byte)
            }
        }
    };
}

byte_enum!(Action {
    Exec => "exec",
    Connect => "connect",
    Send => "send",
    Exit => "exit",
    Socket => "socket",
    Tamper => "tamper",
    Fork => "fork",
    Dns => "dns",
});

byte_enum!(Verdict {
    Allowed => "allowed",
    Denied => "denied",
    Audited => "audited",
});

byte_enum!(Reason {
    Granted => "granted",
    NotGranted => "not_granted",
    UnknownTask => "task_unknown",
    TaskEnded => "task_ended",
    TaskExpired => "task_expired",
    ScriptNotGranted => "script_not_granted",
    Protocol => "protocol_not_grantable",
    ReadFailed => "kernel_read_failed",
    FamilyNotGranted => "family_not_granted",
    GuardBpf => "leash_bpf",
    GuardProcess => "leash_process",
    GuardPins => "leash_pins",
    GuardCgroup => "leash_cgroup",
    MapFull => "map_full",
    CompatSyscall => "compat_syscall",
    GuardMount => "leash_mount",
    GuardKernel => "kernel_door",
    GuardHostState => "host_state",
    IoUringNotGranted => "io_uring_not_granted",
    ChangedSinceGrant => "changed_since_grant",
    UnixOtherView => "unix_other_view",
    UnixOtherSocket => "unix_other_socket",
    DnsUnredirectable => "dns_unredirectable",
    ArgumentUnreadable => "argument_unreadable",
    ScopeEscape => "scope_escape",
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_decode_to_their_values() {
        for byte in 0..=u8::MAX {
            if let Ok(a) = Action::try_from(byte) {
                assert_eq!(a as u8, byte, "{}", a.as_str());
            }
            if let Ok(r) = Reason::try_from(byte) {
                assert_eq!(r as u8, byte, "{}", r.as_str());
            }
        }
        assert_eq!(Action::try_from(8), Err(8));
        assert_eq!(Verdict::try_from(2).map(Verdict::as_str), Ok("audited"));
        assert_eq!(Reason::try_from(19), Ok(Reason::ChangedSinceGrant));
        assert_eq!(Reason::try_from(21), Ok(Reason::UnixOtherSocket));
        assert_eq!(Reason::try_from(22), Ok(Reason::DnsUnredirectable));
        assert_eq!(Reason::try_from(23), Ok(Reason::ArgumentUnreadable));
        assert_eq!(Reason::try_from(24), Ok(Reason::ScopeEscape));
        assert_eq!(Reason::try_from(25), Err(25));
    }
}
