//! DNS redirection: where a task's queries go, and what its sockets were aimed at.
//!
//! The network hooks rewrite a tagged process's UDP or TCP destination port 53 (any
//! address) to the task's [`DnsTarget`]: a loopback address that encodes the task's DNS
//! slot, at the ports of the leash responder in the task's network namespace. The
//! responder reads the slot back from the destination of what it receives, so a query
//! is attributed by the kernel, never by its content. The reply's source is turned back
//! into the resolver the process aimed at ([`DnsOrigin`], per socket).

/// Value of the `DNS_TARGETS` map (task id →): where that task's DNS goes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    /// IPv4 loopback address in network byte order, as `bpf_sock_addr.user_ip4` holds it.
    pub addr: u32,
    /// The responder's UDP port, network byte order.
    pub udp_port: u16,
    /// The responder's TCP port, network byte order.
    pub tcp_port: u16,
}

const _: () = assert!(size_of::<DnsTarget>() == 8);

/// Value of the `DNS_ORIGINS` map (socket cookie →): the resolver a socket was last
/// aimed at, and the target it was sent to instead.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsOrigin {
    /// The original destination as `user_ip6` words (IPv4: in `addr[0]`), network order.
    pub addr: [u32; 4],
    /// The original port, network byte order, as `user_port` holds it.
    pub port: u32,
    /// The rewritten destination (a [`DnsTarget`] address), network order.
    pub target_addr: u32,
    /// The rewritten port, network byte order.
    pub target_port: u32,
    /// 4 or 6: the family of the socket's original destination.
    pub family: u32,
}

const _: () = assert!(size_of::<DnsOrigin>() == 32);

/// The DNS port the hooks redirect.
pub const DNS_PORT: u16 = 53;

/// First slot address: `127.1.0.0`. Slots stay clear of `127.0.0.0/16`, where
/// `127.0.0.1`, systemd-resolved's `127.0.0.53` and the like live.
pub const SLOT_BASE: u32 = 0x7f01_0000;
/// Slots that fit in `127.1.0.0`-`127.255.255.254`.
pub const SLOTS: u32 = 0x00fe_ffff;

/// The loopback address (host order) of DNS slot `slot`.
#[must_use]
pub const fn slot_addr(slot: u32) -> u32 {
    SLOT_BASE + slot % SLOTS
}

/// The DNS slot of a loopback address (host order), if it is one.
#[must_use]
pub const fn addr_slot(addr: u32) -> Option<u32> {
    if addr >= SLOT_BASE && addr < SLOT_BASE + SLOTS {
        Some(addr - SLOT_BASE)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_stay_off_127_0() {
        assert_eq!(slot_addr(0), 0x7f01_0000);
        assert_eq!(addr_slot(slot_addr(77)), Some(77));
        assert_eq!(addr_slot(0x7f00_0035), None, "127.0.0.53 is no slot");
        assert_eq!(addr_slot(0x7fff_ffff), None);
    }
}
