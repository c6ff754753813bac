//! DNS as a task's processes make it: a raw query over UDP (connected or not) or TCP,
//! and a lookup through the C library (`getaddrinfo`).
//!
//! Outcomes: `answer A,B` (the A/AAAA addresses, sorted; `answer` alone for none),
//! `rcode NAME` for an error reply, `truncated` for a reply with TC set, `errno N`,
//! `timeout`, `peer ADDR` (with `peer`).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, ToSocketAddrs as _, UdpSocket},
    str::FromStr as _,
    time::Duration,
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};

const WAIT: Duration = Duration::from_secs(5);

/// `dns udp|udpto|tcp SERVER NAME TYPE`: one query to SERVER:53.
pub(crate) fn query(proto: &str, server: &str, name: &str, qtype: &str) -> String {
    let Ok(qtype) = RecordType::from_str(qtype) else {
        return format!("error bad type {qtype}");
    };
    let Ok(name) = Name::from_str(name) else {
        return format!("error bad name {name}");
    };
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, qtype));
    let Ok(bytes) = m.to_vec() else {
        return "error encode".into();
    };
    match exchange(proto, server, &bytes) {
        Ok((reply, _)) => describe(&reply),
        Err(e) => e,
    }
}

/// `dns-raw udp|tcp SERVER HEX`: sends the bytes as they are.
pub(crate) fn raw(proto: &str, server: &str, hex: &str) -> String {
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect();
    let Some(bytes) = bytes else {
        return "error bad hex".into();
    };
    match exchange(proto, server, &bytes) {
        Ok((reply, _)) => describe(&reply),
        Err(e) => e,
    }
}

/// `dns-peer SERVER NAME`: a connected UDP query, then the peer the socket reports
/// (`getpeername`) and the source the answer came from (`recvfrom`).
pub(crate) fn peer(server: &str, name: &str) -> String {
    let Ok(name) = Name::from_str(name) else {
        return format!("error bad name {name}");
    };
    let mut m = Message::query();
    m.add_query(Query::query(name, RecordType::A));
    let bytes = m.to_vec().unwrap_or_default();
    let run = || -> std::io::Result<String> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(WAIT))?;
        s.connect((server, 53))?;
        let peer = s.peer_addr()?;
        s.send(&bytes)?;
        let mut buf = [0u8; 4096];
        let (_, from) = s.recv_from(&mut buf)?;
        Ok(format!("peer {peer} from {from}"))
    };
    run().unwrap_or_else(|e| io_outcome(&e))
}

/// `dns-flood SERVER N`: N queries, one every 200 µs (faster would only overflow the
/// receiver's socket buffer), no answer read.
pub(crate) fn flood(server: &str, n: &str) -> String {
    let n: u32 = n.parse().unwrap_or(0);
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("flood.test.").unwrap_or_default(),
        RecordType::A,
    ));
    let bytes = m.to_vec().unwrap_or_default();
    let run = || -> std::io::Result<()> {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect((server, 53))?;
        for _ in 0..n {
            s.send(&bytes)?;
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(())
    };
    run().map_or_else(|e| io_outcome(&e), |()| "ok".into())
}

/// `resolve NAME`: the C library's lookup (`getaddrinfo`, through `resolv.conf`).
pub(crate) fn resolve(name: &str) -> String {
    match (name, 443).to_socket_addrs() {
        Ok(addrs) => {
            let mut ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
            ips.sort();
            ips.dedup();
            format!("answer {}", ips.join(","))
        }
        Err(e) => format!("error {e}"),
    }
}

fn io_outcome(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".into(),
        _ => format!("errno {}", e.raw_os_error().unwrap_or(-1)),
    }
}

fn exchange(proto: &str, server: &str, bytes: &[u8]) -> Result<(Vec<u8>, SocketAddr), String> {
    let server: SocketAddr = match server.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, 53),
        Err(_) => return Err(format!("error bad server {server}")),
    };
    let io = |e: std::io::Error| io_outcome(&e);
    let mut buf = vec![0u8; 65_535];
    match proto {
        "udp" | "udpto" => {
            let local = if server.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(local).map_err(io)?;
            s.set_read_timeout(Some(WAIT)).map_err(io)?;
            if proto == "udp" {
                s.connect(server).map_err(io)?;
                s.send(bytes).map_err(io)?;
            } else {
                s.send_to(bytes, server).map_err(io)?;
            }
            let (n, from) = s.recv_from(&mut buf).map_err(io)?;
            buf.truncate(n);
            Ok((buf, from))
        }
        "tcp" => {
            let mut s = TcpStream::connect_timeout(&server, WAIT).map_err(io)?;
            s.set_read_timeout(Some(WAIT)).map_err(io)?;
            let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes();
            s.write_all(&[&len[..], bytes].concat()).map_err(io)?;
            let mut len = [0u8; 2];
            s.read_exact(&mut len).map_err(io)?;
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut reply).map_err(io)?;
            Ok((reply, server))
        }
        other => Err(format!("error bad proto {other}")),
    }
}

fn describe(reply: &[u8]) -> String {
    let Ok(m) = Message::from_vec(reply) else {
        return "error unparseable reply".into();
    };
    if m.metadata.truncation {
        return "truncated".into();
    }
    if m.metadata.response_code != ResponseCode::NoError {
        return format!("rcode {:?}", m.metadata.response_code);
    }
    let mut ips: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    ips.sort();
    format!("answer {}", ips.join(","))
}
