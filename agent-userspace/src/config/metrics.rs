//! `metrics:` the Prometheus endpoint.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid};

/// `metrics:` the Prometheus endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to listen on.
    #[serde(with = "addr_serde")]
    pub addr: SocketAddr,
}

/// Default: `127.0.0.1:9469` (loopback only).
impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 9469)),
        }
    }
}

impl MetricsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.addr.port() == 0 {
            return Err(invalid(
                "metrics.addr",
                format!(
                    "port 0 picks a random port that Prometheus cannot find: use a fixed one, \
                     like {}:9469",
                    fmt_ip(self.addr)
                ),
            ));
        }
        Ok(())
    }
}

fn fmt_ip(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// `SocketAddr` as `IP:PORT`, with a hint when it is not one.
mod addr_serde {
    use std::{fmt, net::SocketAddr};

    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(
        addr: &SocketAddr,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<SocketAddr, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SocketAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an address like 127.0.0.1:9469")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketAddr, E> {
                v.trim().parse().map_err(|_| {
                    E::custom(format!(
                        "invalid address {v:?}: write IP:PORT, like 127.0.0.1:9469 or \
                         [::1]:9469 (host names are not accepted)"
                    ))
                })
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Config,
        tests::{invalid_field, parse_err},
    };

    #[test]
    fn bad_metrics_addr_is_rejected() {
        let msg = parse_err("metrics:\n  addr: localhost:9469\n");
        assert!(msg.contains("metrics.addr"), "{msg}");
        assert!(msg.contains("IP:PORT"), "{msg}");
        let msg = parse_err("metrics: {addr: 127.0.0.1}");
        assert!(msg.contains("metrics.addr"), "{msg}");
        assert_eq!(
            invalid_field("metrics: {addr: \"[::1]:0\"}").0,
            "metrics.addr"
        );
        let c = Config::from_yaml("metrics: {addr: \"[::]:9000\"}").unwrap();
        assert_eq!(c.metrics.addr.port(), 9000);
    }
}
