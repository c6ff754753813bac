//! Connect grants: `ADDR[/PREFIX]:PORTS[/PROTO]` parsed into a [`ConnectSpec`].

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use leash_common::grant::{PROTO_TCP, PROTO_UDP};

use super::{
    GrantError,
    net::{mapped, mapped_prefix, mask, unmapped},
};

fn bad_connect(spec: &str, reason: impl Into<String>) -> GrantError {
    GrantError::BadConnect {
        spec: spec.to_owned(),
        reason: reason.into(),
    }
}

/// Destination hosts of a connect grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// An address and prefix length in its own family (IPv4 0–32, IPv6 0–128).
    Net(IpAddr, u8),
    /// A DNS name in lowercase ASCII (IDNA names in their `xn--` form): its addresses
    /// are learned from the task's own queries (docs/dns.md), never looked up here.
    Name(String),
    /// `*.APEX`: any name one or more labels below `APEX` (stored without `*.`); the
    /// apex itself needs a grant of its own.
    Wildcard(String),
}

/// A parsed connect grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectSpec {
    pub host: Host,
    pub port_lo: u16,
    pub port_hi: u16,
    /// [`PROTO_TCP`] | [`PROTO_UDP`].
    pub protos: u8,
}

impl fmt::Display for ConnectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Net(IpAddr::V4(a), p) => write!(f, "{a}/{p}")?,
            Host::Net(IpAddr::V6(a), p) => write!(f, "[{a}]/{p}")?,
            Host::Name(n) => f.write_str(n)?,
            Host::Wildcard(apex) => write!(f, "*.{apex}")?,
        }
        match (self.port_lo, self.port_hi) {
            (0, u16::MAX) => f.write_str(":*")?,
            (lo, hi) if lo == hi => write!(f, ":{lo}")?,
            (lo, hi) => write!(f, ":{lo}-{hi}")?,
        }
        match self.protos {
            PROTO_TCP => f.write_str("/tcp"),
            PROTO_UDP => f.write_str("/udp"),
            _ => Ok(()),
        }
    }
}

impl FromStr for ConnectSpec {
    type Err = GrantError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let s = spec.trim();
        if s.is_empty() {
            return Err(bad_connect(spec, "empty"));
        }
        // Protocol suffix: the part after the last '/' when it is not a number (a prefix).
        let (rest, protos) = match s.rsplit_once('/') {
            Some((rest, proto)) if proto.chars().all(|c| c.is_ascii_alphabetic()) => {
                let protos = match proto {
                    "tcp" => PROTO_TCP,
                    "udp" => PROTO_UDP,
                    other => {
                        return Err(bad_connect(
                            spec,
                            format!(
                                "unknown protocol {other:?} (use tcp or udp, or omit it for both)"
                            ),
                        ));
                    }
                };
                (rest, protos)
            }
            _ => (s, PROTO_TCP | PROTO_UDP),
        };
        let (host_part, ports) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad_connect(spec, "missing :PORTS"))?;
        let (port_lo, port_hi) = parse_ports(spec, ports)?;
        let host = parse_host(spec, host_part)?;
        Ok(Self {
            host,
            port_lo,
            port_hi,
            protos,
        })
    }
}

fn parse_ports(spec: &str, ports: &str) -> Result<(u16, u16), GrantError> {
    let port = |p: &str| -> Result<u16, GrantError> {
        match p.parse::<u16>() {
            Ok(0) => Err(bad_connect(
                spec,
                "port 0 cannot be connected to (use * for any port)",
            )),
            Ok(n) => Ok(n),
            Err(_) => Err(bad_connect(
                spec,
                format!("bad port {p:?} (1-65535, a-b or *)"),
            )),
        }
    };
    if ports == "*" {
        return Ok((0, u16::MAX));
    }
    if let Some((a, b)) = ports.split_once('-') {
        let (lo, hi) = (port(a)?, port(b)?);
        if lo > hi {
            return Err(bad_connect(
                spec,
                format!("port range {ports} runs backwards"),
            ));
        }
        return Ok((lo, hi));
    }
    let p = port(ports)?;
    Ok((p, p))
}

fn parse_host(spec: &str, host: &str) -> Result<Host, GrantError> {
    let (addr, prefix) = match host.split_once('/') {
        Some((a, p)) => {
            let p = p
                .parse::<u8>()
                .map_err(|_| bad_connect(spec, format!("bad prefix length {p:?}")))?;
            (a, Some(p))
        }
        None => (host, None),
    };
    if let Some(inner) = addr.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| bad_connect(spec, "unclosed [ in IPv6 address"))?;
        let ip: Ipv6Addr = inner
            .parse()
            .map_err(|_| bad_connect(spec, format!("bad IPv6 address {inner:?}")))?;
        return net(spec, IpAddr::V6(ip), prefix.unwrap_or(128), 128);
    }
    if let Ok(ip) = addr.parse::<Ipv4Addr>() {
        return net(spec, IpAddr::V4(ip), prefix.unwrap_or(32), 32);
    }
    if addr.parse::<Ipv6Addr>().is_ok() {
        return Err(bad_connect(
            spec,
            "write IPv6 addresses in brackets, e.g. [::1]:5432",
        ));
    }
    if prefix.is_some() {
        return Err(bad_connect(spec, "a DNS name takes no prefix length"));
    }
    match addr.strip_prefix("*.") {
        Some(apex) => Ok(Host::Wildcard(dns_name(spec, apex)?)),
        None => Ok(Host::Name(dns_name(spec, addr)?)),
    }
}

/// A DNS name as the responder compares it: IDNA to ASCII, lowercase, no trailing dot.
/// A dotted-number text that is no IPv4 address (`300.1.1.1`) is refused here, before
/// anything could look it up.
fn dns_name(spec: &str, name: &str) -> Result<String, GrantError> {
    let bad = |why: String| bad_connect(spec, why);
    if name.contains('*') {
        return Err(bad(format!(
            "{name:?}: a wildcard is only allowed as the whole first label, as in *.example.com"
        )));
    }
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| bad(format!("{name:?} is neither an IP address nor a DNS name")))?;
    let labels: Vec<&str> = ascii.split('.').collect();
    let valid = !ascii.is_empty()
        && ascii.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid {
        return Err(bad(format!(
            "{name:?} is neither an IP address nor a DNS name"
        )));
    }
    // A name's last label is never all digits (RFC 3696 2): such text is a mistyped
    // address.
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(bad(format!("{name:?} is not a valid IPv4 address")));
    }
    Ok(ascii)
}

fn net(spec: &str, ip: IpAddr, prefix: u8, max: u8) -> Result<Host, GrantError> {
    if prefix > max {
        return Err(bad_connect(
            spec,
            format!("prefix /{prefix} is longer than /{max}"),
        ));
    }
    let masked = mask(mapped(ip), mapped_prefix(ip, prefix));
    if masked != mapped(ip) {
        return Err(bad_connect(
            spec,
            format!(
                "{ip}/{prefix} has host bits set; did you mean {}/{prefix}?",
                unmapped(masked, ip)
            ),
        ));
    }
    Ok(Host::Net(ip, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ConnectSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_every_design_example() {
        let c = parse("127.0.0.1:8080");
        assert_eq!(c.host, Host::Net("127.0.0.1".parse().unwrap(), 32));
        assert_eq!(
            (c.port_lo, c.port_hi, c.protos),
            (8080, 8080, PROTO_TCP | PROTO_UDP)
        );
        let c = parse("10.0.0.0/8:443/tcp");
        assert_eq!(c.host, Host::Net("10.0.0.0".parse().unwrap(), 8));
        assert_eq!(c.protos, PROTO_TCP);
        let c = parse("[::1]:5432");
        assert_eq!(c.host, Host::Net("::1".parse().unwrap(), 128));
        let c = parse("[2001:db8::]/32:*");
        assert_eq!(c.host, Host::Net("2001:db8::".parse().unwrap(), 32));
        assert_eq!((c.port_lo, c.port_hi), (0, 65535));
        let c = parse("192.168.1.10:8000-8100/udp");
        assert_eq!((c.port_lo, c.port_hi, c.protos), (8000, 8100, PROTO_UDP));
        let c = parse("api.github.com:443");
        assert_eq!(c.host, Host::Name("api.github.com".into()));
    }

    #[test]
    fn names_are_lowercase_ascii_and_wildcards_keep_their_apex() {
        assert_eq!(
            parse("API.GitHub.com.:443").host,
            Host::Name("api.github.com".into())
        );
        assert_eq!(
            parse("bücher.example:443").host,
            Host::Name("xn--bcher-kva.example".into())
        );
        let c = parse("*.Example.com:443/tcp");
        assert_eq!(c.host, Host::Wildcard("example.com".into()));
        assert_eq!(c.to_string(), "*.example.com:443/tcp");
        // A single label is a name (a pod-local service), never looked up here.
        assert_eq!(parse("localhots:80").host, Host::Name("localhots".into()));
    }

    #[test]
    fn rejects_bad_specs_naming_the_part() {
        for (spec, needle) in [
            ("", "empty"),
            ("127.0.0.1", "missing :PORTS"),
            ("127.0.0.1:0", "port 0"),
            ("127.0.0.1:70000", "bad port"),
            ("127.0.0.1:9-3", "backwards"),
            ("127.0.0.1:80/icmp", "unknown protocol"),
            ("10.0.0.1/8:80", "host bits set; did you mean 10.0.0.0/8"),
            ("10.0.0.0/33:80", "longer than /32"),
            ("::1:80", "brackets"),
            ("[::1:80", "unclosed"),
            ("bad_host!:80", "neither an IP address nor a DNS name"),
            ("example.com/8:80", "no prefix length"),
            ("300.1.1.1:80", "not a valid IPv4 address"),
            ("1.2.3:80", "not a valid IPv4 address"),
            ("a.*.example.com:80", "whole first label"),
            ("*:80", "whole first label"),
            ("-bad.example.com:80", "nor a DNS name"),
            ("a..b:80", "nor a DNS name"),
        ] {
            let err = spec.parse::<ConnectSpec>().unwrap_err().to_string();
            assert!(
                err.contains(needle),
                "{spec:?} gave {err:?}, expected {needle:?}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "10.0.0.0/8:443/tcp",
            "[::1]/128:5432",
            "1.2.3.4/32:*/udp",
            "1.2.3.4/32:10-20",
        ] {
            assert_eq!(parse(s).to_string(), s);
        }
    }
}
