//! Network enforcement: outbound connects and unconnected sends of tagged processes.
//!
//! The cgroup `sock_addr` hooks run inside the kernel's connect and sendmsg paths, so
//! they also see `io_uring` `IORING_OP_CONNECT`/`SENDMSG`, `MSG_FASTOPEN` and `sendmmsg`,
//! which never pass through the `connect` syscall. Both backends use them.
//!
//! A live task's UDP or TCP to port 53 is not decided on grants: it is rewritten to the
//! task's DNS responder (`dns.rs`).

use aya_ebpf::{
    bindings::{BPF_F_NO_PREALLOC, bpf_sock_addr},
    btf_maps::{ArrayOfMaps, LpmTrie, lpm_trie::Key},
    macros::{btf_map, cgroup_sock_addr, map},
    maps::HashMap,
    programs::SockAddrContext,
};
use leash_common::{
    Action, NetKey, NetRules, Reason, TaskInfo,
    grant::{FULL_ADDRESS_PREFIX, PROTO_TCP, PROTO_UDP},
    maps::{NET_GRANTS_CAPACITY, TASKS_CAPACITY},
};

use super::{Decision, Gate, PROCS, current_tid, dns, gate, now_ns};

const ALLOW: i32 = 1;
/// The caller's syscall fails with EPERM.
const DENY: i32 = 0;

const IPPROTO_TCP: u32 = 6;
const IPPROTO_UDP: u32 = 17;

/// Prefixes shorter than a full address: one LPM trie per task that has any, in a
/// slot of this array, so a lookup walks only that task's prefixes whatever the number
/// of tasks (one trie shared by all got deeper with each). Userspace creates the tries
/// and fills slots ahead of need, in batches: each update of a map-in-map waits for an
/// RCU grace period, once per syscall. A slot is reused after its task ends, emptied
/// first; keys still carry the task id, so a trie never answers for another task.
#[btf_map]
pub(crate) static NET_PREFIXES: ArrayOfMaps<
    LpmTrie<NetKey, NetRules, { NET_GRANTS_CAPACITY as usize }>,
    { TASKS_CAPACITY as usize },
> = ArrayOfMaps::new();

/// Task id → its slot in `NET_PREFIXES`; no entry: the task has no prefix grant.
#[map]
pub(crate) static NET_SLOTS: HashMap<u64, u32> =
    HashMap::with_max_entries(TASKS_CAPACITY, BPF_F_NO_PREALLOC);

/// Full addresses (`/32`, `/128`: hosts and resolved names, the common grant): one
/// hash lookup whatever the number of tasks. An entry carries the rules of every
/// granted prefix that contains it, as the longest trie match would.
#[map]
pub(crate) static NET_HOSTS: HashMap<NetKey, NetRules> =
    HashMap::with_max_entries(NET_GRANTS_CAPACITY, BPF_F_NO_PREALLOC);

/// A destination as the grants see it.
#[derive(Clone, Copy)]
struct Dest {
    /// IPv6, or IPv4 mapped into IPv6.
    addr: [u8; 16],
    port: u16,
    proto: u32,
    family: u8,
}

#[inline(always)]
fn dest4(sa: &bpf_sock_addr) -> Dest {
    let mut addr = [0u8; 16];
    addr[10] = 0xff;
    addr[11] = 0xff;
    // user_ip4 is in network order already, so its in-memory bytes are a.b.c.d.
    let ip = sa.user_ip4.to_ne_bytes();
    addr[12] = ip[0];
    addr[13] = ip[1];
    addr[14] = ip[2];
    addr[15] = ip[3];
    Dest {
        addr,
        port: u16::from_be(sa.user_port as u16),
        proto: sa.protocol,
        family: 4,
    }
}

#[inline(always)]
fn dest6(sa: &bpf_sock_addr) -> Dest {
    let mut addr = [0u8; 16];
    // The context only allows 4-byte loads of user_ip6.
    let words = [
        sa.user_ip6[0].to_ne_bytes(),
        sa.user_ip6[1].to_ne_bytes(),
        sa.user_ip6[2].to_ne_bytes(),
        sa.user_ip6[3].to_ne_bytes(),
    ];
    let mut i = 0;
    while i < 16 {
        addr[i] = words[i / 4][i % 4];
        i += 1;
    }
    Dest {
        addr,
        port: u16::from_be(sa.user_port as u16),
        proto: sa.protocol,
        family: 6,
    }
}

#[inline(always)]
fn dest_granted(task: u64, dest: &Dest, now: u64) -> Result<(), Reason> {
    let proto = match dest.proto {
        IPPROTO_TCP => PROTO_TCP,
        IPPROTO_UDP => PROTO_UDP,
        _ => return Err(Reason::Protocol),
    };
    let data = NetKey {
        task,
        addr: dest.addr,
    };
    // SAFETY: not preallocated, so an entry is freed after RCU and never recycled
    // under a reader; the rules are only read.
    let rules = match unsafe { NET_HOSTS.get(data) } {
        Some(rules) => rules,
        None => prefix_rules(task, data).ok_or(Reason::NotGranted)?,
    };
    let len = rules.len as usize;
    let mut i = 0;
    while i < leash_common::grant::MAX_PORT_RULES {
        if i >= len {
            break;
        }
        if rules.rules[i].matches(dest.port, proto, now) {
            return Ok(());
        }
        i += 1;
    }
    Err(Reason::NotGranted)
}

/// The longest granted prefix of `data.addr` in the task's own trie.
#[inline(always)]
fn prefix_rules(task: u64, data: NetKey) -> Option<&'static NetRules> {
    // SAFETY: a plain u32 copy.
    let slot = *unsafe { NET_SLOTS.get(task) }?;
    let key = Key::new(FULL_ADDRESS_PREFIX, data);
    let rules = NET_PREFIXES.get_value_ptr_mut(slot, &key)?;
    // SAFETY: the trie allocates per entry and frees after RCU, so the entry stays
    // valid for this program run; the rules are only read.
    Some(unsafe { &*rules })
}

#[inline(always)]
fn report(decision: &Decision, dest: &Dest, now: u64) {
    decision.count();
    if matches!(decision.verdict, leash_common::Verdict::Allowed) {
        // Allowed network decisions are counted, not streamed: they are the hot path.
        return;
    }
    let Some(mut entry) = decision.event(now) else {
        return;
    };
    // SAFETY: `event` initialised every field.
    let ev = unsafe { entry.assume_init_mut() };
    ev.addr = dest.addr;
    ev.port = dest.port;
    ev.proto = dest.proto;
    ev.family = dest.family;
    entry.submit(0);
}

#[inline(always)]
fn decide(ctx: &SockAddrContext, action: Action, v6: bool) -> i32 {
    // SAFETY: PROCS values are plain u64 copies.
    let tag = unsafe { PROCS.get(current_tid()) };
    if tag.is_none() {
        // Untagged: one lookup and out.
        return ALLOW;
    }
    let now = now_ns();
    // SAFETY: the kernel hands a valid context to the program.
    let sa = unsafe { &*ctx.sock_addr };
    let dest = if v6 { dest6(sa) } else { dest4(sa) };
    let decision = match gate(tag, now) {
        Gate::Untagged => return ALLOW,
        Gate::Closed { task, slot, reason } => Decision::closed(task, slot, action, reason),
        // DNS goes to the task's responder, which decides on the name: no address grant
        // is needed for the resolver, and no resolver is reached directly.
        Gate::Live { task, info } if is_dns(&dest) => {
            match dns::redirect(ctx, task, v6, matches!(action, Action::Send)) {
                Ok(()) => Decision::of(task, &info, action, Ok(())),
                Err(reason) => Decision::closed(task, info.counter_slot, action, reason),
            }
        }
        Gate::Live { task, info } if dns::is_own_target(task, &dest.addr, dest.port) => {
            Decision::of(task, &info, action, Ok(()))
        }
        Gate::Live { task, info } => live(task, &info, action, &dest, now),
    };
    report(&decision, &dest, now);
    if decision.allows() { ALLOW } else { DENY }
}

/// UDP or TCP to port 53, whatever the address.
#[inline(always)]
fn is_dns(dest: &Dest) -> bool {
    dest.port == leash_common::dns::DNS_PORT
        && (dest.proto == IPPROTO_TCP || dest.proto == IPPROTO_UDP)
}

#[inline(always)]
fn live(task: u64, info: &TaskInfo, action: Action, dest: &Dest, now: u64) -> Decision {
    Decision::of(task, info, action, dest_granted(task, dest, now))
}

/// `BPF_CGROUP_INET4_CONNECT` (>= 4.17): `connect()` on `AF_INET` sockets, TCP Fast Open
/// and `io_uring` connects included.
#[cgroup_sock_addr(connect4)]
pub(crate) fn net_connect4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Action::Connect, false)
}

/// `BPF_CGROUP_INET6_CONNECT` (>= 4.17), IPv4-mapped destinations included.
#[cgroup_sock_addr(connect6)]
pub(crate) fn net_connect6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Action::Connect, true)
}

/// `BPF_CGROUP_UDP4_SENDMSG` (>= 4.18): UDP sends that name a destination.
#[cgroup_sock_addr(sendmsg4)]
pub(crate) fn net_sendmsg4(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Action::Send, false)
}

/// `BPF_CGROUP_UDP6_SENDMSG` (>= 4.18).
#[cgroup_sock_addr(sendmsg6)]
pub(crate) fn net_sendmsg6(ctx: SockAddrContext) -> i32 {
    decide(&ctx, Action::Send, true)
}
