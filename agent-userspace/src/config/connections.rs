//! `connections:` how many connections the API socket and the metrics listener hold,
//! and how long a client may take, so that no caller can starve the others
//! (docs/api.md).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid, tasks::duration_serde};

/// `connections:` limits of the two HTTP listeners. Durations are humantime strings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Connections the API socket holds at once.
    pub api_max: u32,
    /// Of those, from one uid.
    pub api_per_uid: u32,
    /// Connections the metrics listener holds at once (its own budget: `/healthz`
    /// answers whatever the API socket suffers).
    pub metrics_max: u32,
    /// Of those, from one address.
    pub metrics_per_ip: u32,
    /// How long a client may take to send a request's headers; also how long an idle
    /// connection stays open.
    #[serde(with = "duration_serde")]
    pub header_timeout: Duration,
    /// How long a request may take, its body included, until its response starts.
    #[serde(with = "duration_serde")]
    pub request_timeout: Duration,
}

/// Default: 512 API connections (64 per uid), 128 metrics connections (32 per
/// address), 5 s for the headers, 30 s for a request.
impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self {
            api_max: 512,
            api_per_uid: 64,
            metrics_max: 128,
            metrics_per_ip: 32,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl ConnectionsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, max, per) in [
            ("connections.api_per_uid", self.api_max, self.api_per_uid),
            (
                "connections.metrics_per_ip",
                self.metrics_max,
                self.metrics_per_ip,
            ),
        ] {
            if max == 0 || per == 0 {
                return Err(invalid(
                    field,
                    "0 connections would refuse every caller: use at least 1",
                ));
            }
            if per > max {
                return Err(invalid(
                    field,
                    format!(
                        "{per} is more than the listener's maximum of {max}: one peer could take every place"
                    ),
                ));
            }
        }
        if self.api_max > 65_536 || self.metrics_max > 65_536 {
            return Err(invalid(
                "connections.api_max",
                "over 65536 connections per listener: each costs descriptors; use fewer",
            ));
        }
        for (field, d) in [
            ("connections.header_timeout", self.header_timeout),
            ("connections.request_timeout", self.request_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_mins(10) {
                return Err(invalid(field, "must be between 100ms and 10m"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn connection_limits_parse_and_bad_ones_are_refused() {
        let c = Config::from_yaml(
            "connections: {api_max: 10, api_per_uid: 2, header_timeout: 1s, request_timeout: 2s}",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!((c.connections.api_max, c.connections.api_per_uid), (10, 2));
        for (yaml, field) in [
            ("connections: {api_per_uid: 0}", "connections.api_per_uid"),
            (
                "connections: {api_max: 4, api_per_uid: 8}",
                "connections.api_per_uid",
            ),
            (
                "connections: {metrics_max: 0}",
                "connections.metrics_per_ip",
            ),
            (
                "connections: {header_timeout: 1ms}",
                "connections.header_timeout",
            ),
            (
                "connections: {request_timeout: 1h}",
                "connections.request_timeout",
            ),
        ] {
            let e = Config::from_yaml(yaml)
                .and_then(|c| c.validate())
                .unwrap_err();
            assert!(e.to_string().contains(field), "{yaml}: {e}");
        }
    }
}
