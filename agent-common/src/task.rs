//! The kernel's view of a task: is it live, until when, and does it enforce.

/// Lifecycle state as the kernel sees it. Only `Active` tasks have any grant honoured.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Active = 1,
    /// Ended by the daemon; kept until cleanup so the reason shows in events.
    Ended = 2,
}

/// Whether a decision is enforced or only reported.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskMode {
    Enforce = 0,
    /// Evaluate and report as `audited`, but allow.
    Audit = 1,
}

/// Value of the `TASKS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    /// `CLOCK_BOOTTIME` nanoseconds after which every decision is denied; 0 = no expiry.
    pub expires_ns: u64,
    /// A [`TaskState`] as `u32`.
    pub state: u32,
    /// A [`TaskMode`] as `u32`.
    pub mode: u32,
    /// Row of the decision counters this task counts into (one per agent).
    pub counter_slot: u32,
    /// Granted socket families beyond unix and TCP/UDP: `FAMILY_*` bits.
    pub families: u32,
}

/// `socket:raw`: raw IP sockets and IP protocols other than TCP and UDP.
pub const FAMILY_RAW: u32 = 1;
/// `socket:packet`: `AF_PACKET`.
pub const FAMILY_PACKET: u32 = 2;
/// `socket:netlink`: `AF_NETLINK`.
pub const FAMILY_NETLINK: u32 = 4;
/// `socket:vsock`: `AF_VSOCK`.
pub const FAMILY_VSOCK: u32 = 8;
/// `socket:io_uring`: `io_uring_setup` at all (its operations bypass syscall-level checks).
pub const FAMILY_IO_URING: u32 = 16;
/// Implied by a name grant, never written: `AF_NETLINK` with `NETLINK_ROUTE` only. The C
/// library's resolver reads the interfaces' addresses through it to sort an answer of
/// several addresses (RFC 6724).
pub const FAMILY_NETLINK_ROUTE: u32 = 32;

const _: () = assert!(size_of::<TaskInfo>() == 24);

impl TaskInfo {
    #[must_use]
    pub const fn is_active(&self) -> bool {
        self.state == TaskState::Active as u32
    }

    #[must_use]
    pub const fn is_audit(&self) -> bool {
        self.mode == TaskMode::Audit as u32
    }

    /// Expired at `now_ns` (`CLOCK_BOOTTIME`)?
    #[must_use]
    pub const fn expired_at(&self, now_ns: u64) -> bool {
        self.expires_ns != 0 && now_ns >= self.expires_ns
    }
}
