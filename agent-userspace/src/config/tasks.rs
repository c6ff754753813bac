//! `tasks:` task lifetimes, and durations as the config writes them (`90s`, `10m`, `1h`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, error::invalid};

/// Longest `tasks.max_ttl` accepted.
pub const TTL_LIMIT: Duration = Duration::from_hours(365 * 24);

/// Deepest `tasks.max_delegation_depth` accepted.
pub(crate) const MAX_DEPTH: u32 = 16;

/// `tasks:` task lifetimes. Durations are humantime strings (`90s`, `10m`, `1h`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TasksConfig {
    /// TTL of a task created without one.
    #[serde(with = "duration_serde")]
    pub default_ttl: Duration,
    /// Longest TTL a task or grant may have.
    #[serde(with = "duration_serde")]
    pub max_ttl: Duration,
    /// Kill a task's remaining processes when it ends (else they are denied everything).
    pub kill_on_end: bool,
    /// How many levels of child tasks a task may delegate (docs/identity.md); 0 turns
    /// delegation off.
    pub max_delegation_depth: u32,
    /// Longest TTL of a break-glass task.
    #[serde(with = "duration_serde")]
    pub break_glass_max_ttl: Duration,
}

/// Default: 1h default TTL, 24h maximum, processes not killed when their task ends.
impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_hours(1),
            max_ttl: Duration::from_hours(24),
            kill_on_end: false,
            max_delegation_depth: 4,
            break_glass_max_ttl: Duration::from_hours(1),
        }
    }
}

impl TasksConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (field, ttl) in [
            ("tasks.default_ttl", self.default_ttl),
            ("tasks.max_ttl", self.max_ttl),
            ("tasks.break_glass_max_ttl", self.break_glass_max_ttl),
        ] {
            if ttl.is_zero() {
                return Err(invalid(
                    field,
                    "is 0: give a positive duration, like 10m or 1h",
                ));
            }
        }
        if self.max_ttl > TTL_LIMIT {
            return Err(invalid(
                "tasks.max_ttl",
                format!(
                    "{} is too long: leash grants are short-lived; use at most {}",
                    format_duration(self.max_ttl),
                    format_duration(TTL_LIMIT)
                ),
            ));
        }
        if self.max_delegation_depth > MAX_DEPTH {
            return Err(invalid(
                "tasks.max_delegation_depth",
                format!(
                    "{} is too deep: use at most {MAX_DEPTH} (0 turns delegation off)",
                    self.max_delegation_depth
                ),
            ));
        }
        if self.default_ttl > self.max_ttl {
            return Err(invalid(
                "tasks.default_ttl",
                format!(
                    "{} is longer than tasks.max_ttl ({}): shorten default_ttl or raise max_ttl",
                    format_duration(self.default_ttl),
                    format_duration(self.max_ttl)
                ),
            ));
        }
        Ok(())
    }
}

/// A duration as the config writes it: `90s`, `10m`, `24h`; humantime's form otherwise.
fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() != 0 {
        return humantime::format_duration(d).to_string();
    }
    match d.as_secs() {
        0 => "0s".to_owned(),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `Duration` as a humantime string.
pub(crate) mod duration_serde {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, Serializer, de};

    pub(in crate::config) fn serialize<S: Serializer>(
        d: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*d))
    }

    pub(in crate::config) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 90s, 10m or 1h")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v.trim()).map_err(|e| {
                    E::custom(format!(
                        "invalid duration {v:?} ({e}): write it like 90s, 10m or 1h"
                    ))
                })
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit: write it like {v}s"
                )))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit: write a positive duration like 90s, 10m or 1h"
                )))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "duration {v} has no unit: write it like 90s, 10m or 1h"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Config,
        tests::{invalid_field, parse_err},
    };

    #[test]
    fn bad_duration_is_rejected() {
        let msg = parse_err("tasks:\n  default_ttl: 10 parsecs\n");
        assert!(msg.contains("tasks.default_ttl"), "{msg}");
        assert!(msg.contains("10 parsecs"), "{msg}");
        assert!(msg.contains("90s"), "{msg}");
        let msg = parse_err("tasks: {max_ttl: 3600}");
        assert!(msg.contains("tasks.max_ttl"), "{msg}");
        assert!(msg.contains("3600s"), "{msg}");
    }

    #[test]
    fn default_ttl_longer_than_max_ttl() {
        let (field, message) = invalid_field("tasks: {default_ttl: 48h}");
        assert_eq!(field, "tasks.default_ttl");
        assert!(message.contains("max_ttl (24h)"), "{message}");
        let err = Config::from_yaml("tasks: {default_ttl: 2h, max_ttl: 90m}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config field tasks.default_ttl: 2h is longer"),
            "{err}"
        );
        assert_eq!(invalid_field("tasks: {max_ttl: 0s}").0, "tasks.max_ttl");
        assert_eq!(
            invalid_field("tasks: {default_ttl: 0s}").0,
            "tasks.default_ttl"
        );
        assert_eq!(
            invalid_field("tasks: {max_ttl: 400days}").0,
            "tasks.max_ttl"
        );
    }
}
