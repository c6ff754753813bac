//! v4-in-v6 ceilings. The kernel keys IPv4 destinations as `::ffff:a.b.c.d`, so an
//! IPv6 connect grant covering any part of `::ffff:0:0/96` reaches IPv4 addresses. Cedar
//! never places an IPv6 address inside an IPv4 range, so such a grant is also evaluated
//! as the IPv4 range it covers: the IPv4 `forbid`s apply to it, and an IPv4 ceiling
//! (or approval entry) counts for the part it covers.

use std::net::{IpAddr, Ipv4Addr};

use super::ceiling::{GrantSpec, Kind};
use crate::grants::{ConnectSpec, Host};

/// `::ffff:0:0/96`, where the kernel puts IPv4 addresses.
const MAPPED: u128 = 0xffff << 32;

/// The IPv4 part of an IPv6 connect grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ipv4Part {
    /// The IPv4 range covered, with the grant's ports and protocols.
    pub grant: GrantSpec,
    /// The grant lies wholly inside `::ffff:0:0/96`: it is exactly this IPv4 grant.
    pub whole: bool,
}

/// The IPv4 range an IPv6 connect grant covers inside `::ffff:0:0/96`, if any.
#[must_use]
pub(crate) fn ipv4_part(g: &GrantSpec) -> Option<Ipv4Part> {
    if g.kind != Kind::Connect {
        return None;
    }
    let c: ConnectSpec = g.spec.parse().ok()?;
    let Host::Net(IpAddr::V6(addr), prefix) = c.host else {
        return None;
    };
    let bits = u128::from(addr);
    let (v4, v4_prefix) = if prefix <= 96 {
        // A range at least as wide as the mapped block: covers all of it, or none.
        let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
        if MAPPED & mask != bits & mask {
            return None;
        }
        (Ipv4Addr::UNSPECIFIED, 0)
    } else {
        if bits >> 32 != MAPPED >> 32 {
            return None;
        }
        (Ipv4Addr::from(bits as u32), prefix - 96)
    };
    let spec = ConnectSpec {
        host: Host::Net(IpAddr::V4(v4), v4_prefix),
        ..c
    };
    Some(Ipv4Part {
        grant: GrantSpec {
            kind: Kind::Connect,
            spec: spec.to_string(),
        },
        whole: prefix >= 96,
    })
}

/// What one Cedar evaluation of a grant said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Allow,
    /// Permitted by an entry that needs approval.
    Pending,
    /// Refused by these policies (explicit `forbid`s), by id.
    Forbidden(Vec<String>),
    /// No ceiling entry covers it.
    Outside,
}

/// Joins the verdicts on an IPv6 grant (`v6`) and on the IPv4 range it covers (`v4`).
/// A `forbid` in either refuses it. The ceiling must cover the whole grant: the IPv6
/// evaluation covers all of it; an IPv4 one only the mapped block, which is all of it
/// when the grant lies wholly inside. Approval wins where a permitting side needs it.
#[must_use]
pub(crate) fn combine(v6: Outcome, v4: Outcome, whole: bool) -> (Outcome, bool) {
    match (&v6, &v4) {
        (Outcome::Forbidden(_), _) => return (v6, false),
        (_, Outcome::Forbidden(_)) => return (v4, true),
        _ => {}
    }
    let permits = |o: &Outcome| matches!(o, Outcome::Allow | Outcome::Pending);
    let covered = permits(&v6) || (whole && permits(&v4));
    if !covered {
        return (Outcome::Outside, false);
    }
    if v6 == Outcome::Pending || v4 == Outcome::Pending {
        (Outcome::Pending, false)
    } else {
        (Outcome::Allow, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(spec: &str) -> Option<(String, bool)> {
        ipv4_part(&GrantSpec {
            kind: Kind::Connect,
            spec: spec.into(),
        })
        .map(|p| (p.grant.spec, p.whole))
    }

    #[test]
    fn the_ipv4_range_an_ipv6_grant_covers() {
        let some = |s: &str, w: bool| Some((s.to_owned(), w));
        assert_eq!(part("[::]/0:*"), some("0.0.0.0/0:*", false));
        assert_eq!(part("[::]/80:443/tcp"), some("0.0.0.0/0:443/tcp", false));
        assert_eq!(
            part("[::ffff:0:0]/96:53/udp"),
            some("0.0.0.0/0:53/udp", true)
        );
        assert_eq!(part("[::ffff:127.0.0.1]:80"), some("127.0.0.1/32:80", true));
        assert_eq!(
            part("[::ffff:169.254.0.0]/112:1-1024"),
            some("169.254.0.0/16:1-1024", true)
        );
        for none in [
            "[::1]:80",
            "[2001:db8::]/32:*",
            "[::]/97:*",
            "[::fffe:0:0]/96:*",
            "[::ffff:0:0]/95:*",
            "127.0.0.1:80",
            "example.com:443",
        ] {
            assert_eq!(part(none), None, "{none}");
        }
        // /95 at ::fffe:0:0 holds ::ffff:0:0/96.
        assert_eq!(part("[::fffe:0:0]/95:*"), some("0.0.0.0/0:*", false));
        assert_eq!(
            ipv4_part(&GrantSpec {
                kind: Kind::Exec,
                spec: "/usr/bin/git".into()
            }),
            None
        );
    }

    #[test]
    fn a_forbid_on_either_side_refuses_and_the_ceiling_must_cover_all() {
        use Outcome::{Allow, Forbidden, Outside, Pending};
        let f = || Forbidden(vec!["cedar:x".into()]);
        assert_eq!(combine(Allow, f(), false), (f(), true));
        assert_eq!(combine(f(), Allow, true), (f(), false));
        assert_eq!(combine(Allow, Outside, false), (Allow, false));
        assert_eq!(combine(Outside, Allow, false), (Outside, false));
        assert_eq!(combine(Outside, Allow, true), (Allow, false));
        assert_eq!(combine(Outside, Pending, true), (Pending, false));
        assert_eq!(combine(Allow, Pending, false), (Pending, false));
        assert_eq!(combine(Pending, Outside, false), (Pending, false));
        assert_eq!(combine(Outside, Outside, true), (Outside, false));
    }
}
