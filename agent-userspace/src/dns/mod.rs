//! The DNS responder: each task resolves only the names it was granted, and the
//! addresses it is answered become its host grants before it sees them (docs/dns.md).
//!
//! The kernel rewrites a tagged process's DNS (UDP or TCP to port 53) to a loopback
//! address that encodes its task's DNS slot, at this responder's ports in the task's
//! network namespace; the responder reads the slot back from the destination
//! (`IP_PKTINFO` for UDP, the accepted socket's local address for TCP), so a query is
//! attributed by the kernel, never by what it says. The daemon gives each network
//! namespace one responder, on a thread of its own that has joined the namespace, so
//! the sockets it opens (listening and upstream) are all in there.
//!
//! `message` parses and builds DNS messages (hickory-proto), `names` matches names
//! against grants, `upstream` finds and asks the task's resolver, `serve` runs the
//! sockets. The daemon answers through [`TaskLookup`]; this module never imports it.

mod message;
mod names;
mod serve;
mod upstream;

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4},
    os::fd::OwnedFd,
    sync::{Arc, Mutex},
    time::Duration,
};

pub use names::NameGrant;
pub use upstream::{nameservers, nameservers_in};

/// Bounds the responder holds every task to.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Shortest life of a learned address, whatever the record's TTL.
    pub min_ttl: Duration,
    /// Longest life of a learned address.
    pub max_ttl: Duration,
    /// Queries per second one task may make; more are dropped and counted.
    pub rate: u32,
    /// Queries one task may make at once above `rate`.
    pub burst: u32,
    /// How long one upstream may take before the next is tried (and, after the last,
    /// the client gets SERVFAIL).
    pub upstream_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(5),
            max_ttl: Duration::from_mins(5),
            rate: 200,
            burst: 400,
            upstream_timeout: Duration::from_secs(2),
        }
    }
}

/// What the responder needs to know of the task behind a slot.
#[derive(Clone, Debug)]
pub struct TaskDns {
    /// The task's id: the key of its resolvers in each responder ([`Responder::serve`]).
    pub id: u64,
    pub grants: Vec<NameGrant>,
    /// The resolvers of the `resolv.conf` of the task's last attached process, for a
    /// responder that was not told the task's resolvers in its own namespace.
    pub upstreams: Vec<SocketAddr>,
    /// Audit mode: answer everything, report what would have been refused.
    pub audit: bool,
}

/// An address learned from an answer: a host grant of the task until `expires_ns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub addr: IpAddr,
    /// `CLOCK_BOOTTIME` ns.
    pub expires_ns: u64,
    pub port_lo: u16,
    pub port_hi: u16,
    pub protos: u8,
    /// The name asked for.
    pub name: String,
}

/// One decided query, for the audit log, events and counters.
#[derive(Clone, Debug)]
pub struct Report {
    /// The name asked for (lowercase ASCII), empty for a malformed query.
    pub name: String,
    /// The query type (`A`, `TXT`, ...).
    pub qtype: String,
    pub verdict: leash_common::Verdict,
    /// `granted`, `not_granted`, `query_type`, `malformed`, `rate_limited`,
    /// `upstream_failed`, `install_failed`.
    pub reason: &'static str,
    /// Addresses installed as host grants.
    pub addresses: Vec<IpAddr>,
    pub tcp: bool,
}

/// The daemon's side: the task behind a slot, installing what it learns, reporting.
pub trait TaskLookup: Send + Sync + 'static {
    /// The task whose DNS slot is `slot`, if it is live.
    fn task(&self, slot: u32) -> Option<TaskDns>;
    /// Installs `learned` as host grants of the task; the answer is relayed only after.
    fn learn(&self, slot: u32, learned: &[Learned]) -> Result<(), String>;
    fn report(&self, slot: u32, report: Report);
    /// An upstream answered a forwarded query after `took`.
    fn upstream_answered(&self, took: Duration);
    /// A granted answer was checked, its addresses installed, and relayed `took`
    /// after the upstream's answer arrived.
    fn relayed(&self, took: Duration);
}

/// A responder running in one network namespace; stops when dropped.
pub struct Responder {
    /// Where it listens: the ports every slot address of the namespace reaches.
    pub udp_port: u16,
    pub tcp_port: u16,
    /// Each task's resolvers as its processes in this namespace see them.
    upstreams: Upstreams,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Task id → the resolvers its queries in one namespace are forwarded to.
type Upstreams = Arc<Mutex<HashMap<u64, Vec<SocketAddr>>>>;

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot enter the task's network namespace: {0}")]
    Setns(#[source] nix::Error),
    #[error("cannot open the DNS responder's sockets in the task's network namespace: {0}")]
    Socket(#[source] io::Error),
    #[error("the DNS responder's thread ended before it started")]
    Thread,
}

impl Responder {
    /// Starts a responder inside the network namespace `netns` (an open
    /// `/proc/PID/ns/net`), on a thread of its own, at `ports` (UDP, TCP) when they are
    /// free in there (so one DNS target per task reaches a responder in every
    /// namespace), else at ports the kernel picks.
    pub fn start(
        netns: OwnedFd,
        tasks: Arc<dyn TaskLookup>,
        limits: Limits,
        ports: Option<(u16, u16)>,
    ) -> Result<Self, StartError> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let upstreams = Upstreams::default();
        let table = Arc::clone(&upstreams);
        std::thread::Builder::new()
            .name("leash-dns".into())
            .spawn(move || {
                let sockets = nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(StartError::Setns)
                    .and_then(|()| bind(ports).map_err(StartError::Socket));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(StartError::Socket);
                let (udp, tcp, rt) = match (sockets, runtime) {
                    (Ok((udp, tcp)), Ok(rt)) => (udp, tcp, rt),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let ports = (
                    udp.local_addr().map_or(0, |a| a.port()),
                    tcp.local_addr().map_or(0, |a| a.port()),
                );
                let _ = ready_tx.send(Ok(ports));
                rt.block_on(serve::run(udp, tcp, tasks, limits, table, stop_rx));
            })
            .map_err(StartError::Socket)?;
        let (udp_port, tcp_port) = ready_rx.recv().map_err(|_| StartError::Thread)??;
        Ok(Self {
            udp_port,
            tcp_port,
            upstreams,
            stop: Some(stop_tx),
        })
    }

    /// Task `id`'s queries arriving here go to `upstreams` (the resolvers of a process
    /// of the task in this namespace).
    pub fn serve(&self, id: u64, upstreams: Vec<SocketAddr>) {
        self.upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(id, upstreams);
    }

    /// Forgets the resolvers of tasks for which `live` is false (ended); returns
    /// whether it still serves a task.
    pub fn retain(&self, live: impl Fn(u64) -> bool) -> bool {
        let mut table = self
            .upstreams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table.retain(|&id, _| live(id));
        !table.is_empty()
    }
}

/// Decides one query from `slot` as a responder does (parse, match the task's name
/// grants, forward to the task's upstreams, check the answer, install what it teaches)
/// and returns the reply, if any: the responder without its sockets or rate limit, for
/// the fuzz targets (`fuzz/`).
pub async fn answer_query(
    tasks: Arc<dyn TaskLookup>,
    limits: Limits,
    slot: u32,
    query: &[u8],
    tcp: bool,
) -> Option<Vec<u8>> {
    serve::answer_once(tasks, limits, slot, query, tcp).await
}

/// The listening sockets, on every address of the namespace (the slot addresses are
/// all of `127.0.0.0/8`, which no single bind covers); what does not arrive on a slot
/// address is dropped. TCP takes the UDP port when it is free.
fn bind(ports: Option<(u16, u16)>) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    if let Some((u, t)) = ports {
        match bind_at(u, t) {
            Ok(sockets) => return Ok(sockets),
            Err(e) => tracing::warn!(
                "the DNS responder's ports {u}/udp, {t}/tcp are taken in this network namespace \
                 ({e}): using others; a task with processes here and elsewhere is served here only"
            ),
        }
    }
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
    let udp = std::net::UdpSocket::bind(any)?;
    nix::sys::socket::setsockopt(&udp, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
        .map_err(io::Error::from)?;
    let port = udp.local_addr()?.port();
    let tcp = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .or_else(|_| std::net::TcpListener::bind(any))?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok((udp, tcp))
}

fn bind_at(udp: u16, tcp: u16) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let u = std::net::UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, udp))?;
    nix::sys::socket::setsockopt(&u, nix::sys::socket::sockopt::Ipv4PacketInfo, &true)
        .map_err(io::Error::from)?;
    let t = std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, tcp))?;
    u.set_nonblocking(true)?;
    t.set_nonblocking(true)?;
    Ok((u, t))
}
