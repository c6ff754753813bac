//! The upstream resolver a task would have used, and forwarding a query to it.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::timeout,
};

/// Nameservers of a `resolv.conf`, at most three as the C library reads them.
#[must_use]
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|addr| {
            // A scope (`fe80::1%eth0`) is dropped: the responder reaches it unscoped.
            let addr = addr.split('%').next()?;
            addr.parse::<IpAddr>().ok()
        })
        .take(3)
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// The nameservers of the `resolv.conf` under `root` (a process's `/proc/PID/root`),
/// else the node's; the C library's default (the local host) when neither names one.
#[must_use]
pub fn nameservers_in(root: &Path) -> Vec<SocketAddr> {
    for path in [root.join("etc/resolv.conf"), "/etc/resolv.conf".into()] {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let found = nameservers(&text);
            if !found.is_empty() {
                return found;
            }
        }
    }
    vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53)]
}

/// Sends `query` to each upstream in turn until one answers, over UDP (`tcp`: false)
/// or TCP; `per_try` bounds each attempt. A UDP answer with the TC bit is retried
/// over TCP by the caller's client, which sees it: relayed as is.
pub(crate) async fn forward(
    upstreams: &[SocketAddr],
    query: &[u8],
    tcp: bool,
    per_try: Duration,
) -> io::Result<Vec<u8>> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no upstream resolver");
    for &up in upstreams {
        let attempt = if tcp {
            timeout(per_try, over_tcp(up, query)).await
        } else {
            timeout(per_try, over_udp(up, query)).await
        };
        match attempt {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, format!("{up} timed out")),
        }
    }
    Err(last)
}

async fn over_udp(up: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let local: SocketAddr = if up.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(local).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    loop {
        sock.readable().await?;
        // Read into the thread's buffer with no await while it is borrowed: a fresh
        // zeroed 64 KiB buffer per query was a fifth of the responder's time.
        let got = RECEIVE.with_borrow_mut(|buf| match sock.try_recv(buf) {
            // Another ID is a stray or a spoof: keep waiting for ours (the caller
            // checks the whole answer against the question).
            Ok(n) if n >= 2 && buf[..2] == query[..2] => Ok(Some(buf[..n].to_vec())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        })?;
        if let Some(answer) = got {
            return Ok(answer);
        }
    }
}

thread_local! {
    /// Room for the largest UDP answer, once per responder thread.
    static RECEIVE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 65_535]);
}

async fn over_tcp(up: SocketAddr, query: &[u8]) -> io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(up).await?;
    let len = u16::try_from(query.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "query too long"))?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    s.write_all(&framed).await?;
    let n = usize::from(s.read_u16().await?);
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# x\nsearch example\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n\
                    nameserver bogus\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n";
        let got = nameservers(text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "10.0.0.2:53".parse().unwrap());
        assert_eq!(got[1], "[fe80::1]:53".parse().unwrap());
        assert_eq!(got[2], "1.1.1.1:53".parse().unwrap());
    }
}
