//! `dns-load SERVER NAME N WINDOW`: N A queries for NAME over one UDP socket connected
//! to SERVER:53, at most WINDOW in flight (1: one after another, for latency; more:
//! for throughput). Prints `ok answers=A errors=E lost=L elapsed_ns=T p50_ns=P
//! p99_ns=Q` (latency of each answered query, send to receive).

use std::{
    net::UdpSocket,
    str::FromStr as _,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RecordType},
};

/// A query still unanswered this long after the last answer counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(500);

pub(crate) fn load(server: &str, name: &str, n: &str, window: &str) -> String {
    let (Ok(n), Ok(window)) = (n.parse::<u32>(), window.parse::<u32>()) else {
        return "error bad N or WINDOW".into();
    };
    let Ok(name) = Name::from_str(name) else {
        return format!("error bad name {name}");
    };
    let window = window.clamp(1, 4096);
    match run(server, &name, n, window) {
        Ok(line) => line,
        Err(e) => format!("error {e}"),
    }
}

fn run(server: &str, name: &Name, n: u32, window: u32) -> std::io::Result<String> {
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect((server, 53))?;
    sock.set_read_timeout(Some(LOST_AFTER))?;
    // One query encoded by hickory-proto; each send puts its own ID in the first two
    // bytes (IDs wrap; a window of at most 4096 never has two in flight with one ID),
    // so the generator spends its time sending, not encoding.
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name.clone(), RecordType::A));
    let mut query = msg.to_vec().map_err(std::io::Error::other)?;
    let mut sent_at: Vec<Option<Instant>> = vec![None; 65_536];
    let mut latencies = Vec::with_capacity(n as usize);
    let (mut sent, mut in_flight, mut errors, mut lost) = (0u32, 0u32, 0u32, 0u32);
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    while sent < n || in_flight > 0 {
        while sent < n && in_flight < window {
            let id = (sent % 65_536) as u16;
            query[..2].copy_from_slice(&id.to_be_bytes());
            sent_at[usize::from(id)] = Some(Instant::now());
            sock.send(&query)?;
            sent += 1;
            in_flight += 1;
        }
        let got = match sock.recv(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Nothing for a while: what is in flight is lost.
                lost += in_flight;
                in_flight = 0;
                sent_at.fill(None);
                continue;
            }
            Err(e) => return Err(e),
        };
        if got < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let Some(at) = sent_at[usize::from(id)].take() else {
            continue;
        };
        in_flight -= 1;
        // The header's RCODE (low 4 bits of byte 3) and ANCOUNT (bytes 6-7), read
        // without a full parse, which would cost the generator more than the server.
        let rcode = ResponseCode::from_low(buf[3] & 0x0f);
        let answers = u16::from_be_bytes([buf[6], buf[7]]);
        if rcode == ResponseCode::NoError && answers > 0 {
            latencies.push(at.elapsed());
        } else {
            errors += 1;
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0, Duration::as_nanos)
    };
    Ok(format!(
        "ok answers={} errors={errors} lost={lost} elapsed_ns={} p50_ns={} p99_ns={}",
        latencies.len(),
        elapsed.as_nanos(),
        pct(0.5),
        pct(0.99),
    ))
}
