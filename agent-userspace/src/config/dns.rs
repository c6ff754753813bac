//! `dns:` how the DNS responder treats every task (docs/dns.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid, tasks::duration_serde};

/// `dns:` bounds of the DNS responder. Durations are humantime strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Shortest life of an address learned from an answer, whatever its TTL.
    #[serde(with = "duration_serde")]
    pub min_ttl: Duration,
    /// Longest life of a learned address.
    #[serde(with = "duration_serde")]
    pub max_ttl: Duration,
    /// Queries per second one task may make; more are dropped and reported.
    pub rate: u32,
    /// Queries one task may make at once above `rate`.
    pub burst: u32,
    /// How long one upstream resolver may take before the next is tried.
    #[serde(with = "duration_serde")]
    pub upstream_timeout: Duration,
}

/// Default: the responder's own limits (learned addresses live 5 s to 5 min, 200
/// queries a second, 400 at once, 2 s per upstream).
impl Default for DnsConfig {
    fn default() -> Self {
        let limits = crate::dns::Limits::default();
        Self {
            min_ttl: limits.min_ttl,
            max_ttl: limits.max_ttl,
            rate: limits.rate,
            burst: limits.burst,
            upstream_timeout: limits.upstream_timeout,
        }
    }
}

impl DnsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_ttl < Duration::from_secs(1) {
            return Err(invalid("dns.min_ttl", "is under 1s: use 1s or more"));
        }
        if self.max_ttl < self.min_ttl || self.max_ttl > Duration::from_hours(24) {
            return Err(invalid(
                "dns.max_ttl",
                "must be at least dns.min_ttl and at most 24h",
            ));
        }
        if self.rate == 0 || self.burst == 0 {
            return Err(invalid(
                "dns.rate",
                "dns.rate and dns.burst must be at least 1",
            ));
        }
        if self.upstream_timeout < Duration::from_millis(100)
            || self.upstream_timeout > Duration::from_secs(30)
        {
            return Err(invalid(
                "dns.upstream_timeout",
                "must be between 100ms and 30s",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_bounds_are_checked() {
        let c: DnsConfig = serde_yaml_ng::from_str("min_ttl: 2s\nmax_ttl: 1m\nrate: 5\n").unwrap();
        assert_eq!(c.min_ttl, Duration::from_secs(2));
        assert_eq!(c.burst, 400);
        assert!(c.validate().is_ok());
        let bad: DnsConfig = serde_yaml_ng::from_str("min_ttl: 10m\nmax_ttl: 1m\n").unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("dns.max_ttl")
        );
        assert!(serde_yaml_ng::from_str::<DnsConfig>("ttl: 1s\n").is_err());
    }
}
