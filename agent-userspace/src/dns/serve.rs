//! The responder's sockets: UDP with the destination read from `IP_PKTINFO` (and the
//! reply sent from it), TCP with the destination of the accepted connection; each query
//! decided by [`answer`], per-task rate limits.

use std::{
    collections::HashMap,
    io::{self, IoSlice, IoSliceMut},
    net::{Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, BorrowedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::op::ResponseCode;
use leash_common::{Verdict, dns::addr_slot};
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, recvmsg, sendmsg,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::oneshot,
};

use super::{Learned, Limits, Report, TaskLookup, Upstreams, message, names, upstream};
use crate::clock;

/// A TCP client that sends nothing for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

struct Ctx {
    tasks: Arc<dyn TaskLookup>,
    limits: Limits,
    upstreams: Upstreams,
    buckets: Mutex<HashMap<u32, Bucket>>,
}

/// A token bucket per slot.
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Drops since the last report, reported at most once a second.
    dropped: u64,
    reported: Option<Instant>,
}

pub(super) async fn run(
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    tasks: Arc<dyn TaskLookup>,
    limits: Limits,
    upstreams: Upstreams,
    stop: oneshot::Receiver<()>,
) {
    let ctx = Arc::new(Ctx {
        tasks,
        limits,
        upstreams,
        buckets: Mutex::new(HashMap::new()),
    });
    let (udp, tcp) = match (UdpSocket::from_std(udp), TcpListener::from_std(tcp)) {
        (Ok(u), Ok(t)) => (Arc::new(u), t),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("the DNS responder cannot use its sockets: {e}");
            return;
        }
    };
    tokio::select! {
        () = serve_udp(Arc::clone(&ctx), udp) => {}
        () = serve_tcp(Arc::clone(&ctx), tcp) => {}
        _ = stop => {}
    }
}

async fn serve_udp(ctx: Arc<Ctx>, udp: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        if let Err(e) = udp.readable().await {
            tracing::error!("DNS responder (udp): {e}");
            return;
        }
        let got = udp.try_io(tokio::io::Interest::READABLE, || {
            recv_with_dest(&udp, &mut buf)
        });
        let (n, from, dest) = match got {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!("DNS responder (udp) receive: {e}");
                continue;
            }
        };
        let Some(slot) = addr_slot(u32::from(dest)) else {
            continue;
        };
        if !ctx.admit(slot, false) {
            continue;
        }
        let query = buf[..n].to_vec();
        let (ctx, udp) = (Arc::clone(&ctx), Arc::clone(&udp));
        tokio::spawn(async move {
            if let Some(reply) = answer(&ctx, slot, &query, false).await {
                send_from(&udp, &reply, from, dest).await;
            }
        });
    }
}

/// One datagram, its sender and the address it was sent to.
fn recv_with_dest(udp: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, Ipv4Addr)> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrIn>(
        udp.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let from = msg
        .address
        .map(|a| SocketAddr::from((a.ip(), a.port())))
        .ok_or_else(|| io::Error::other("no source address"))?;
    let dest = msg
        .cmsgs()
        .map_err(io::Error::from)?
        .find_map(|c| match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)))
            }
            _ => None,
        })
        .ok_or_else(|| io::Error::other("no IP_PKTINFO"))?;
    Ok((msg.bytes, from, dest))
}

/// Replies from the slot address the query was sent to, so the client's socket (and
/// the kernel's reverse hook) see the peer they expect.
async fn send_from(udp: &UdpSocket, reply: &[u8], to: SocketAddr, from: Ipv4Addr) {
    let SocketAddr::V4(to) = to else {
        return;
    };
    let dest = SockaddrIn::from(to);
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(from).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let sent = udp
        .async_io(tokio::io::Interest::WRITABLE, || {
            // SAFETY: the fd is the socket's, borrowed for this call.
            let fd = unsafe { BorrowedFd::borrow_raw(udp.as_raw_fd()) };
            sendmsg(
                fd.as_raw_fd(),
                &[IoSlice::new(reply)],
                &[ControlMessage::Ipv4PacketInfo(&info)],
                MsgFlags::empty(),
                Some(&dest),
            )
            .map_err(io::Error::from)
        })
        .await;
    if let Err(e) = sent {
        tracing::debug!("DNS responder (udp) send: {e}");
    }
}

async fn serve_tcp(ctx: Arc<Ctx>, tcp: TcpListener) {
    loop {
        let (stream, _) = match tcp.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!("DNS responder (tcp) accept: {e}");
                continue;
            }
        };
        let slot = match stream.local_addr() {
            Ok(SocketAddr::V4(a)) => addr_slot(u32::from(*a.ip())),
            _ => None,
        };
        let Some(slot) = slot else {
            continue;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            if let Err(e) = serve_conn(&ctx, slot, stream).await {
                tracing::debug!("DNS responder (tcp): {e}");
            }
        });
    }
}

async fn serve_conn(ctx: &Ctx, slot: u32, mut stream: TcpStream) -> io::Result<()> {
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let mut query = vec![0u8; usize::from(len?)];
        stream.read_exact(&mut query).await?;
        if !ctx.admit(slot, true) {
            continue;
        }
        let Some(reply) = answer(ctx, slot, &query, true).await else {
            continue;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            continue;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        stream.write_all(&framed).await?;
    }
}

impl Ctx {
    /// Takes a token of the slot's bucket; a drop is counted and reported (at most
    /// once a second per slot).
    fn admit(&self, slot: u32, tcp: bool) -> bool {
        let now = Instant::now();
        let report = {
            let mut buckets = self
                .buckets
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let burst = f64::from(self.limits.burst.max(1));
            let b = buckets.entry(slot).or_insert(Bucket {
                tokens: burst,
                at: now,
                dropped: 0,
                reported: None,
            });
            let refill = now.duration_since(b.at).as_secs_f64() * f64::from(self.limits.rate);
            b.tokens = (b.tokens + refill).min(burst);
            b.at = now;
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                return true;
            }
            b.dropped += 1;
            if b.reported
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
            {
                return false;
            }
            b.reported = Some(now);
            std::mem::take(&mut b.dropped)
        };
        self.tasks.report(
            slot,
            Report {
                name: String::new(),
                qtype: format!("{report} dropped"),
                verdict: Verdict::Denied,
                reason: "rate_limited",
                addresses: Vec::new(),
                tcp,
            },
        );
        false
    }
}

/// [`answer`] without the sockets or the rate limit: the task's own upstreams.
pub(super) async fn answer_once(
    tasks: Arc<dyn TaskLookup>,
    limits: Limits,
    slot: u32,
    bytes: &[u8],
    tcp: bool,
) -> Option<Vec<u8>> {
    let ctx = Ctx {
        tasks,
        limits,
        upstreams: Upstreams::default(),
        buckets: Mutex::new(HashMap::new()),
    };
    answer(&ctx, slot, bytes, tcp).await
}

/// The reply to one query from `slot`, or nothing (not a query at all).
async fn answer(ctx: &Ctx, slot: u32, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let report = |name: &str, qtype: String, verdict, reason, addresses| {
        ctx.tasks.report(
            slot,
            Report {
                name: name.to_owned(),
                qtype,
                verdict,
                reason,
                addresses,
                tcp,
            },
        );
    };
    let q = match message::parse_query(bytes) {
        Ok(q) => q,
        Err(message::Rejected::Drop) => return None,
        Err(message::Rejected::Reply(r)) => {
            report("", String::new(), Verdict::Denied, "malformed", Vec::new());
            return Some(r);
        }
    };
    let qtype = q.qtype.to_string();
    let Some(task) = ctx.tasks.task(slot) else {
        // No live task behind the slot: a forged or late query gains nothing.
        return Some(message::error_reply(&q.message, ResponseCode::Refused));
    };
    let grants = names::covering(&task.grants, &q.name);
    let refusal = if grants.is_empty() {
        Some("not_granted")
    } else if !message::ALLOWED_TYPES.contains(&q.qtype) {
        Some("query_type")
    } else {
        None
    };
    if let Some(reason) = refusal
        && !task.audit
    {
        report(&q.name, qtype, Verdict::Denied, reason, Vec::new());
        return Some(message::error_reply(&q.message, ResponseCode::Refused));
    }
    // Only what was parsed is forwarded, re-encoded (ID, case and EDNS as sent).
    let Ok(wire) = q.message.to_vec() else {
        report(&q.name, qtype, Verdict::Denied, "malformed", Vec::new());
        return Some(message::error_reply(&q.message, ResponseCode::FormErr));
    };
    let servfail = |reason| {
        report(
            &q.name,
            q.qtype.to_string(),
            Verdict::Denied,
            reason,
            Vec::new(),
        );
        Some(message::error_reply(&q.message, ResponseCode::ServFail))
    };
    // The resolvers of the task's processes in this namespace; those of its last
    // attached process if this responder was not told.
    let upstreams = ctx
        .upstreams
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&task.id)
        .cloned()
        .unwrap_or(task.upstreams);
    let asked = Instant::now();
    let Ok(raw) = upstream::forward(&upstreams, &wire, tcp, ctx.limits.upstream_timeout).await
    else {
        return servfail("upstream_failed");
    };
    let answered = Instant::now();
    ctx.tasks.upstream_answered(answered.duration_since(asked));
    let Ok(checked) = message::check_answer(&q.message, &raw) else {
        return servfail("upstream_failed");
    };
    if let Some(reason) = refusal {
        // Audit mode: answered, reported as what enforcement would have refused.
        report(&q.name, qtype, Verdict::Audited, reason, Vec::new());
        return Some(raw);
    }
    let learned = learn(&ctx.limits, &grants, &q.name, &checked.addresses);
    if !learned.is_empty()
        && let Err(e) = ctx.tasks.learn(slot, &learned)
    {
        tracing::warn!(name = q.name, "cannot install the answer's addresses: {e}");
        return servfail("install_failed");
    }
    let mut addresses: Vec<_> = learned.iter().map(|l| l.addr).collect();
    addresses.dedup();
    report(&q.name, qtype, Verdict::Allowed, "granted", addresses);
    ctx.tasks.relayed(answered.elapsed());
    Some(raw)
}

/// Every address of the answer under every grant that covers the name, each until its
/// clamped TTL ends (never after its grant).
fn learn(
    limits: &Limits,
    grants: &[&names::NameGrant],
    name: &str,
    addresses: &[(std::net::IpAddr, u32)],
) -> Vec<Learned> {
    let now = clock::boottime_ns();
    let mut out = Vec::new();
    for &(addr, ttl) in addresses {
        let life = Duration::from_secs(u64::from(ttl)).clamp(limits.min_ttl, limits.max_ttl);
        let until = now.saturating_add(u64::try_from(life.as_nanos()).unwrap_or(u64::MAX));
        for g in grants {
            let expires_ns = match g.expires_ns {
                0 => until,
                e => e.min(until),
            };
            out.push(Learned {
                addr,
                expires_ns,
                port_lo: g.spec.port_lo,
                port_hi: g.spec.port_hi,
                protos: g.spec.protos,
                name: name.to_owned(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_ttls_are_clamped_and_never_outlive_the_grant() {
        let limits = Limits::default();
        let g = names::NameGrant::parse("example.com:443/tcp", 0).unwrap();
        let now = clock::boottime_ns();
        let got = learn(
            &limits,
            &[&g],
            "example.com",
            &[("192.0.2.1".parse().unwrap(), 1)],
        );
        let life = got[0].expires_ns - now;
        assert!((5_000_000_000..6_000_000_000).contains(&life), "{life}");
        let got = learn(
            &limits,
            &[&g],
            "example.com",
            &[("192.0.2.1".parse().unwrap(), 86_400)],
        );
        assert!(got[0].expires_ns - now <= 301_000_000_000);
        assert_eq!((got[0].port_lo, got[0].port_hi), (443, 443));
        let short = names::NameGrant::parse("example.com:443", now + 1_000).unwrap();
        let got = learn(
            &limits,
            &[&short],
            "example.com",
            &[("192.0.2.1".parse().unwrap(), 60)],
        );
        assert_eq!(got[0].expires_ns, now + 1_000);
    }
}
