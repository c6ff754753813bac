//! `audit:` who may read the audit log, and when it rotates.

use serde::{Deserialize, Serialize};

use super::{ConfigError, SocketGroup, error::invalid};

/// `audit:` the audit log's group and size-based rotation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Group given read access to the log (mode 0640); `None`: the daemon's own group.
    pub group: Option<SocketGroup>,
    /// Rotate before the log would grow past this many bytes; 0: never.
    pub max_bytes: u64,
    /// Rotated files kept (`audit.jsonl.1` newest ... `audit.jsonl.N` oldest).
    pub keep: u32,
}

/// Default: no group, rotation at 100 MiB, five rotated files kept.
impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            group: None,
            max_bytes: 100 * 1024 * 1024,
            keep: 5,
        }
    }
}

/// Smallest rotation size: one large event must fit.
pub(crate) const MIN_BYTES: u64 = 64 * 1024;

impl AuditConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_bytes != 0 && self.max_bytes < MIN_BYTES {
            return Err(invalid(
                "audit.max_bytes",
                format!(
                    "{} bytes is too small to hold a batch of events: use at least {MIN_BYTES}, \
                     or 0 to never rotate",
                    self.max_bytes
                ),
            ));
        }
        if self.max_bytes != 0 && self.keep == 0 {
            return Err(invalid(
                "audit.keep",
                "0 rotated files would throw the audit trail away at every rotation: keep at \
                 least 1, or set audit.max_bytes to 0 to never rotate",
            ));
        }
        if let Some(SocketGroup::Name(name)) = &self.group
            && !SocketGroup::is_valid_name(name)
        {
            return Err(invalid(
                "audit.group",
                format!("{name:?} is not a valid group name: give a group name or a numeric gid"),
            ));
        }
        Ok(())
    }

    /// The group's gid, looked up now.
    pub fn gid(&self) -> Result<Option<u32>, ConfigError> {
        self.group
            .as_ref()
            .map(|g| g.resolve_for("audit.group"))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    #[test]
    fn audit_settings_parse_and_bad_ones_are_refused() {
        let c = Config::from_yaml("audit: {group: 4, max_bytes: 1048576, keep: 2}").unwrap();
        c.validate().unwrap();
        assert_eq!(c.audit.gid().unwrap(), Some(4));
        assert_eq!((c.audit.max_bytes, c.audit.keep), (1_048_576, 2));
        for (yaml, field) in [
            ("audit: {max_bytes: 100}", "audit.max_bytes"),
            ("audit: {keep: 0}", "audit.keep"),
            ("audit: {group: \"a b\"}", "audit.group"),
        ] {
            let e = Config::from_yaml(yaml)
                .and_then(|c| c.validate())
                .unwrap_err();
            assert!(e.to_string().contains(field), "{yaml}: {e}");
        }
        let never = Config::from_yaml("audit: {max_bytes: 0, keep: 0}").unwrap();
        never.validate().unwrap();
    }
}
