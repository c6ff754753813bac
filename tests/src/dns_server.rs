//! An authoritative DNS server for the tests, on hickory-server: it serves a [`Zone`] over
//! UDP and TCP on port 53 of an address inside a network namespace the test owns. It runs
//! in the test process (a thread that joins the namespace, binds, then serves), so it
//! needs nothing installed and runs in the VM's busybox guest as on the host.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::fd::{AsRawFd as _, BorrowedFd},
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
    time::Duration,
};

use hickory_server::{
    Server,
    net::runtime::Time,
    proto::{
        op::{Edns, Header, HeaderCounts, Metadata, ResponseCode},
        rr::{
            LowerName, Name, RData, Record, RecordType,
            rdata::{A, AAAA, CNAME, TXT},
        },
    },
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::sync::oneshot;

/// What a name holds.
#[derive(Clone, Debug)]
enum Entry {
    Addrs(Vec<IpAddr>),
    /// One address of the list per answer, the next one each time.
    Rotating(Vec<IpAddr>, std::sync::Arc<AtomicUsize>),
    Alias(Name),
    Txt(String),
}

/// The names a [`DnsServer`] answers, every record with the zone's TTL. A name that is
/// not in the zone gets NXDOMAIN; a type it does not hold, an empty answer.
#[derive(Clone, Debug)]
pub struct Zone {
    names: HashMap<LowerName, Vec<Entry>>,
    ttl: u32,
}

impl Zone {
    /// An empty zone whose records carry `ttl` seconds.
    #[must_use]
    pub fn new(ttl: u32) -> Self {
        Self {
            names: HashMap::new(),
            ttl,
        }
    }

    fn add(mut self, name: &str, entry: Entry) -> Self {
        let name = Name::from_ascii(name).expect("a valid test name");
        self.names
            .entry(LowerName::new(&name))
            .or_default()
            .push(entry);
        self
    }

    /// A and AAAA records.
    #[must_use]
    pub fn addrs(self, name: &str, addrs: &[IpAddr]) -> Self {
        self.add(name, Entry::Addrs(addrs.to_vec()))
    }

    /// One address per answer, in turn: a CDN that rotates its addresses.
    #[must_use]
    pub fn rotating(self, name: &str, addrs: &[IpAddr]) -> Self {
        self.add(
            name,
            Entry::Rotating(addrs.to_vec(), std::sync::Arc::default()),
        )
    }

    /// `name` is a CNAME of `target`.
    #[must_use]
    pub fn cname(self, name: &str, target: &str) -> Self {
        let target = Name::from_ascii(target).expect("a valid test name");
        self.add(name, Entry::Alias(target))
    }

    /// A TXT record.
    #[must_use]
    pub fn txt(self, name: &str, text: &str) -> Self {
        self.add(name, Entry::Txt(text.to_owned()))
    }

    /// The answer records for `name`/`qtype`, following CNAMEs, or `None` for NXDOMAIN.
    fn answer(&self, name: &Name, qtype: RecordType) -> Option<Vec<Record>> {
        let mut owner = name.clone();
        let mut records = Vec::new();
        // A bounded walk: a CNAME loop in a test zone must not hang the server.
        for _ in 0..8 {
            let entries = self.names.get(&LowerName::new(&owner))?;
            let mut next = None;
            for entry in entries {
                let rdata: Vec<RData> = match entry {
                    Entry::Alias(target) => {
                        next = Some(target.clone());
                        vec![RData::CNAME(CNAME(target.clone()))]
                    }
                    Entry::Addrs(addrs) => addrs.iter().filter_map(|a| addr(*a, qtype)).collect(),
                    Entry::Rotating(addrs, turn) => {
                        let i = turn.fetch_add(1, Ordering::Relaxed) % addrs.len().max(1);
                        addrs
                            .get(i)
                            .and_then(|a| addr(*a, qtype))
                            .into_iter()
                            .collect()
                    }
                    Entry::Txt(text) if qtype == RecordType::TXT => {
                        vec![RData::TXT(TXT::new(vec![text.clone()]))]
                    }
                    Entry::Txt(_) => Vec::new(),
                };
                records.extend(
                    rdata
                        .into_iter()
                        .map(|r| Record::from_rdata(owner.clone(), self.ttl, r)),
                );
            }
            match next {
                Some(target) if qtype != RecordType::CNAME => owner = target,
                _ => return Some(records),
            }
        }
        Some(records)
    }
}

fn addr(ip: IpAddr, qtype: RecordType) -> Option<RData> {
    match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
        (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
        _ => None,
    }
}

#[async_trait::async_trait]
impl RequestHandler for Zone {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        // Answer with EDNS when asked with it, so that its payload size is honoured.
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512));
            ours
        });
        let mut builder = MessageResponseBuilder::from_message_request(request);
        if let Some(edns) = &edns {
            builder.edns(edns);
        }
        let records = if let Ok(info) = request.request_info() {
            let q = info.query.original();
            self.answer(q.name(), q.query_type())
        } else {
            metadata.response_code = ResponseCode::FormErr;
            Some(Vec::new())
        };
        let records = records.unwrap_or_else(|| {
            metadata.response_code = ResponseCode::NXDomain;
            Vec::new()
        });
        let response = builder.build(metadata, records.iter(), [], [], []);
        if let Ok(info) = response_handle.send_response(response).await {
            info
        } else {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            Header {
                metadata,
                counts: HeaderCounts::default(),
            }
            .into()
        }
    }
}

/// A running server; stopped, its sockets closed, on drop.
pub struct DnsServer {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    /// Serves `zone` on `addr`:53 (UDP and TCP) inside the network namespace `netns`.
    ///
    /// # Panics
    /// When the thread cannot join the namespace or bind there: the test cannot go on.
    #[must_use]
    pub fn start(netns: BorrowedFd<'_>, addr: Ipv4Addr, zone: Zone) -> Self {
        let ns = netns.try_clone_to_owned().expect("dup the namespace fd");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let bound = (|| -> std::io::Result<_> {
                // Namespaces are per thread: this one joins the pod's, and the sockets it
                // creates stay there whatever thread serves them.
                // SAFETY: setns on a namespace fd this thread owns; it changes only this
                // thread's network namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let at = SocketAddr::from((addr, 53));
                let udp = std::net::UdpSocket::bind(at)?;
                udp.set_nonblocking(true)?;
                let tcp = std::net::TcpListener::bind(at)?;
                tcp.set_nonblocking(true)?;
                Ok((udp, tcp))
            })();
            let (udp, tcp) = match bound {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let mut server = Server::new(zone);
                server.register_socket(
                    tokio::net::UdpSocket::from_std(udp).expect("register the UDP socket"),
                );
                server.register_listener(
                    tokio::net::TcpListener::from_std(tcp).expect("register the TCP listener"),
                    Duration::from_secs(10),
                    64,
                );
                let _ = ready_tx.send(Ok(()));
                let _ = stop_rx.await;
                server.shutdown_token().cancel();
            });
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Self {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
            Ok(Err(e)) => panic!("the test DNS server could not start on {addr}:53: {e}"),
            Err(std::sync::mpsc::RecvError) => {
                panic!("the test DNS server's thread ended before it started")
            }
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
