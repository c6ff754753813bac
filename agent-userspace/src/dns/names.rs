//! Which name grant, if any, lets a task resolve a name.

use crate::grants::{ConnectSpec, Host};

/// A connect grant that names a host, as the responder matches it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameGrant {
    /// The parsed grant (its host is a [`Host::Name`] or [`Host::Wildcard`]).
    pub spec: ConnectSpec,
    /// `CLOCK_BOOTTIME` ns at which the grant ends (0: with the task); a learned
    /// address never outlives it.
    pub expires_ns: u64,
}

impl NameGrant {
    /// The grant of `spec` if it names a host.
    #[must_use]
    pub fn parse(spec: &str, expires_ns: u64) -> Option<Self> {
        let spec: ConnectSpec = spec.parse().ok()?;
        matches!(spec.host, Host::Name(_) | Host::Wildcard(_)).then_some(Self { spec, expires_ns })
    }

    /// Does the grant cover `name` (lowercase ASCII, no trailing dot)? A wildcard
    /// covers one or more labels below its apex, never the apex itself.
    #[must_use]
    pub fn covers(&self, name: &str) -> bool {
        match &self.spec.host {
            Host::Name(n) => n == name,
            Host::Wildcard(apex) => name
                .strip_suffix(apex.as_str())
                .and_then(|head| head.strip_suffix('.'))
                .is_some_and(|head| !head.is_empty()),
            Host::Net(..) => false,
        }
    }
}

/// The grants among `grants` that cover `name`.
pub(crate) fn covering<'a>(grants: &'a [NameGrant], name: &str) -> Vec<&'a NameGrant> {
    grants.iter().filter(|g| g.covers(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(spec: &str) -> NameGrant {
        NameGrant::parse(spec, 0).unwrap()
    }

    #[test]
    fn names_wildcards_and_apexes() {
        assert!(g("example.com:443").covers("example.com"));
        assert!(!g("example.com:443").covers("www.example.com"));
        let w = g("*.example.com:443");
        assert!(w.covers("www.example.com"));
        assert!(w.covers("a.b.example.com"));
        assert!(!w.covers("example.com"), "the apex needs its own grant");
        assert!(!w.covers("badexample.com"));
        assert!(!w.covers(".example.com"));
        assert!(g("Bücher.example:443").covers("xn--bcher-kva.example"));
        assert!(NameGrant::parse("10.0.0.1:53", 0).is_none());
    }
}
