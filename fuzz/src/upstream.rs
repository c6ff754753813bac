//! A DNS upstream on loopback for the responder target (UDP and TCP on one port). It
//! records every query that reaches it and answers each with an A record in
//! 192.0.2.0/24, or with the bytes it was told to send (a resolver that lies).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::Message,
    rr::{RData, Record, rdata},
};

/// The address every answer gives.
pub const ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// What [`Upstream::settle`] sends: shorter than a DNS header, so never a query the
/// responder forwards.
const MARKER: &[u8] = b"\xffmark";

#[derive(Default)]
struct Shared {
    /// Queries received since the last [`Upstream::take`].
    seen: Vec<Vec<u8>>,
    /// Sent instead of a made answer, when set.
    canned: Option<Vec<u8>>,
    /// Markers received, UDP and TCP.
    marks: u64,
}

/// The running upstream.
pub struct Upstream {
    pub addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
}

impl Upstream {
    /// Binds 127.0.0.1 (a free port, UDP and TCP) and serves on two threads.
    #[must_use]
    pub fn start() -> Self {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP port");
            if let Ok(tcp) = TcpListener::bind(udp.local_addr().unwrap()) {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = udp.recv_from(&mut buf) {
                if let Some(reply) = reply(&s, &buf[..n]) {
                    let _ = udp.send_to(&reply, from);
                }
            }
        });
        let s = Arc::clone(&shared);
        std::thread::spawn(move || {
            for mut conn in tcp.incoming().flatten() {
                let mut len = [0u8; 2];
                if conn.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if conn.read_exact(&mut query).is_err() {
                    continue;
                }
                let Some(reply) = reply(&s, &query) else {
                    continue;
                };
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                let _ = conn.write_all(&framed);
            }
        });
        Self { addr, shared }
    }

    /// Answers the next queries with `bytes` (`None`: made answers).
    pub fn canned(&self, bytes: Option<Vec<u8>>) {
        self.shared.lock().unwrap().canned = bytes;
    }

    /// The queries received since the last call.
    #[must_use]
    pub fn take(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.shared.lock().unwrap().seen)
    }

    /// Returns once the upstream has read everything sent to it before the call, so
    /// that [`take`](Self::take) holds all of one input's queries and none of the next.
    /// A query the responder sent before giving up on it may still sit in a socket's
    /// queue when the responder returns; a marker sent after it, on each transport, is
    /// read after it (UDP datagrams and accepted connections are served in order).
    pub fn settle(&self) {
        let before = self.shared.lock().unwrap().marks;
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("a UDP port");
        udp.send_to(MARKER, self.addr).expect("the UDP marker");
        let mut tcp = TcpStream::connect(self.addr).expect("the TCP marker's connection");
        let mut framed = (MARKER.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(MARKER);
        tcp.write_all(&framed).expect("the TCP marker");
        drop(tcp);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.shared.lock().unwrap().marks < before + 2 {
            assert!(
                Instant::now() < deadline,
                "the upstream did not settle in 10 s"
            );
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// The answer to `query`, or `None` for a marker (which is counted, not answered).
fn reply(shared: &Mutex<Shared>, query: &[u8]) -> Option<Vec<u8>> {
    let mut s = shared.lock().unwrap();
    if query == MARKER {
        s.marks += 1;
        return None;
    }
    s.seen.push(query.to_vec());
    if let Some(c) = &s.canned {
        return Some(c.clone());
    }
    let Ok(m) = Message::from_vec(query) else {
        return Some(Vec::new());
    };
    let name = m.queries.first().map(|q| q.name().clone());
    let mut r = m.into_response();
    if let Some(name) = name {
        r.add_answer(Record::from_rdata(name, 60, RData::A(rdata::A(ANSWER))));
    }
    Some(r.to_vec().unwrap_or_default())
}
