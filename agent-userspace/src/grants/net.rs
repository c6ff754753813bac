//! Connect grants compiled into the kernel's prefix-trie entries: addresses in the
//! mapped 128-bit form, one [`NetGrant`] per network, rules merged per prefix.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use leash_common::{
    NetKey, NetRules, PortRule,
    grant::{MAX_PORT_RULES, NET_KEY_TASK_BITS},
};

use super::{ConnectSpec, GrantError, Host};

/// The 16 bytes the kernel matches: IPv4 as `::ffff:a.b.c.d`.
#[must_use]
pub fn mapped(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Prefix length within the 128-bit mapped form.
#[must_use]
pub const fn mapped_prefix(ip: IpAddr, prefix: u8) -> u8 {
    match ip {
        IpAddr::V4(_) => 96 + prefix,
        IpAddr::V6(_) => prefix,
    }
}

pub(super) fn unmapped(bytes: [u8; 16], like: IpAddr) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match like {
        IpAddr::V4(_) => IpAddr::V4(v6.to_ipv4_mapped().unwrap_or(Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => IpAddr::V6(v6),
    }
}

pub(super) fn mask(addr: [u8; 16], bits: u8) -> [u8; 16] {
    let value = u128::from_be_bytes(addr);
    let m = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    };
    (value & m).to_be_bytes()
}

/// A connect grant ready for the kernel: one network, one port rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetGrant {
    /// Mapped address and prefix (0–128).
    pub addr: [u8; 16],
    pub prefix: u8,
    pub rule: PortRule,
}

impl ConnectSpec {
    /// One [`NetGrant`] per network, expiring at `expires_ns` (0 = with the task); a
    /// name grant has none until the task resolves it.
    #[must_use]
    pub fn to_net_grants(&self, expires_ns: u64) -> Vec<NetGrant> {
        let rule = PortRule {
            expires_ns,
            port_lo: self.port_lo,
            port_hi: self.port_hi,
            protos: self.protos,
            _pad: [0; 3],
        };
        let nets: Vec<(IpAddr, u8)> = match &self.host {
            Host::Net(ip, p) => vec![(*ip, *p)],
            // Learned from the task's own DNS queries, as it makes them (docs/dns.md).
            Host::Name(_) | Host::Wildcard(_) => Vec::new(),
        };
        nets.into_iter()
            .map(|(ip, p)| NetGrant {
                addr: mapped(ip),
                prefix: mapped_prefix(ip, p),
                rule,
            })
            .collect()
    }
}

/// Compiles all network grants of one task into LPM entries.
///
/// The trie returns only the longest matching prefix, so each stored prefix carries
/// the rules of every granted prefix that contains it (itself included).
pub fn compile_net(
    task: u64,
    grants: &[NetGrant],
) -> Result<Vec<(u32, NetKey, NetRules)>, GrantError> {
    let mut prefixes: BTreeMap<([u8; 16], u8), Vec<PortRule>> = BTreeMap::new();
    for g in grants {
        prefixes.entry((g.addr, g.prefix)).or_default();
    }
    for (&(addr, prefix), rules) in &mut prefixes {
        for g in grants {
            if g.prefix <= prefix && mask(addr, g.prefix) == g.addr && !rules.contains(&g.rule) {
                rules.push(g.rule);
            }
        }
    }
    prefixes
        .into_iter()
        .map(|((addr, prefix), rules)| {
            if rules.len() > MAX_PORT_RULES {
                return Err(GrantError::TooManyRules {
                    addr: Ipv6Addr::from(addr),
                    prefix,
                    count: rules.len(),
                });
            }
            let mut value = NetRules::EMPTY;
            value.len = rules.len() as u32;
            value.rules[..rules.len()].copy_from_slice(&rules);
            Ok((
                NET_KEY_TASK_BITS + u32::from(prefix),
                NetKey { task, addr },
                value,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ConnectSpec {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn ipv4_grants_are_stored_mapped() {
        let g = parse("127.0.0.0/8:80").to_net_grants(0);
        assert_eq!(g[0].prefix, 104);
        assert_eq!(&g[0].addr[10..], &[0xff, 0xff, 127, 0, 0, 0]);
    }

    #[test]
    fn nested_prefixes_inherit_outer_rules() {
        let mut grants = parse("10.0.0.0/8:443").to_net_grants(0);
        grants.extend(parse("10.1.0.0/16:80").to_net_grants(0));
        let entries = compile_net(7, &grants).unwrap();
        assert_eq!(entries.len(), 2);
        let inner = entries.iter().find(|(p, ..)| *p == 64 + 96 + 16).unwrap();
        assert_eq!(inner.2.len, 2, "the /16 must also allow the /8's port 443");
        let outer = entries.iter().find(|(p, ..)| *p == 64 + 96 + 8).unwrap();
        assert_eq!(outer.2.len, 1);
        assert_eq!(outer.1.task, 7);
    }

    #[test]
    fn too_many_rules_is_an_error() {
        let grants: Vec<_> = (1..=17u16)
            .flat_map(|p| parse(&format!("10.0.0.1:{p}")).to_net_grants(0))
            .collect();
        assert!(matches!(
            compile_net(1, &grants),
            Err(GrantError::TooManyRules { count: 17, .. })
        ));
    }
}
