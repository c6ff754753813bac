//! `socket:` the API socket, and [`SocketGroup`], a group given by name or gid.

use std::{fmt, path::PathBuf};

use nix::unistd::Group;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use super::{ConfigError, checks::check_file_path, error::invalid};

/// Mode of the API socket (owner root, group [`SocketConfig::group`]).
pub const SOCKET_MODE: u32 = 0o660;
/// Longest Unix socket path: `sun_path` holds its NUL too.
const SOCKET_PATH_MAX: usize = crate::sockets::SUN_PATH - 1;

/// `socket:` the Unix socket of the HTTP/JSON API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketConfig {
    /// Absolute socket path (owner root, mode [`SOCKET_MODE`]).
    pub path: PathBuf,
    /// Group given read-write access; `None`: root only.
    pub group: Option<SocketGroup>,
}

/// Default: `/run/leash/leash.sock`, no group.
impl Default for SocketConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("/run/leash/leash.sock"),
            group: None,
        }
    }
}

impl SocketConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_file_path("socket.path", &self.path, "/run/leash/leash.sock")?;
        let len = self.path.as_os_str().len();
        if len > SOCKET_PATH_MAX {
            return Err(invalid(
                "socket.path",
                format!(
                    "{} is {len} bytes long but a Unix socket path can have at most \
                     {SOCKET_PATH_MAX}: choose a shorter path",
                    self.path.display()
                ),
            ));
        }
        match &self.group {
            Some(SocketGroup::Name(name)) if !SocketGroup::is_valid_name(name) => Err(invalid(
                "socket.group",
                format!(
                    "{name:?} is not a valid group name: give a group name (like leash) \
                     or a numeric gid, or null for root-only access"
                ),
            )),
            Some(SocketGroup::Gid(u32::MAX)) => Err(invalid(
                "socket.group",
                "gid 4294967295 is reserved (it means \"no group\"): give a real gid",
            )),
            _ => Ok(()),
        }
    }
}

/// A group given by name or by numeric gid (`group: docker`, `group: 1000`, `group: "1000"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketGroup {
    Name(String),
    Gid(u32),
}

impl SocketGroup {
    /// The numeric gid, looking a name up in the host's group database.
    pub fn resolve(&self) -> Result<u32, ConfigError> {
        self.resolve_for("socket.group")
    }

    /// [`Self::resolve`], naming `field` in errors.
    pub(super) fn resolve_for(&self, field: &'static str) -> Result<u32, ConfigError> {
        match self {
            Self::Gid(gid) => Ok(*gid),
            Self::Name(name) => match Group::from_name(name) {
                Ok(Some(group)) => Ok(group.gid.as_raw()),
                Ok(None) => Err(invalid(
                    field,
                    format!(
                        "no group named {name:?} on this host: create it (groupadd {name}) \
                         or give a numeric gid"
                    ),
                )),
                Err(source) => Err(ConfigError::GroupLookup {
                    field,
                    name: name.clone(),
                    source,
                }),
            },
        }
    }

    /// Whether `name` could be a group name: not empty, no `:`, `/`, blank or control.
    pub(super) fn is_valid_name(name: &str) -> bool {
        !name.is_empty()
            && !name
                .chars()
                .any(|c| c == ':' || c == '/' || c.is_whitespace() || c.is_control())
    }
}

impl fmt::Display for SocketGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Gid(gid) => write!(f, "{gid}"),
        }
    }
}

impl Serialize for SocketGroup {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Name(name) => serializer.serialize_str(name),
            Self::Gid(gid) => serializer.serialize_u32(*gid),
        }
    }
}

impl<'de> Deserialize<'de> for SocketGroup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = SocketGroup;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a group name or a numeric gid")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SocketGroup, E> {
                u32::try_from(v)
                    .map(SocketGroup::Gid)
                    .map_err(|_| E::custom(format!("gid {v} is out of range: gids are 32-bit")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SocketGroup, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("gid {v} is negative: give a gid >= 0")))
                    .and_then(|v| self.visit_u64(v))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SocketGroup, E> {
                if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    v.parse()
                        .map(SocketGroup::Gid)
                        .map_err(|_| E::custom(format!("gid {v} is out of range: gids are 32-bit")))
                } else {
                    Ok(SocketGroup::Name(v.to_owned()))
                }
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::{super::tests::invalid_field, super::tests::parse_err, *};
    use crate::config::Config;

    #[test]
    fn socket_group_by_name_or_gid() {
        let group = |yaml: &str| Config::from_yaml(yaml).unwrap().socket.group;
        assert_eq!(group("socket: {group: 1000}"), Some(SocketGroup::Gid(1000)));
        assert_eq!(group("socket: {group: \"42\"}"), Some(SocketGroup::Gid(42)));
        assert_eq!(
            group("socket: {group: docker}"),
            Some(SocketGroup::Name("docker".into()))
        );
        assert_eq!(group("socket: {group: ~}"), None);
        assert!(parse_err("socket: {group: -1}").contains("negative"));
        assert_eq!(invalid_field("socket: {group: \"a b\"}").0, "socket.group");
        assert_eq!(SocketGroup::Gid(7).resolve().unwrap(), 7);
        let err = SocketGroup::Name("no-such-group-leash-test".into())
            .resolve()
            .unwrap_err();
        assert!(err.to_string().contains("no group named"), "{err}");
    }

    #[test]
    fn socket_group_names_resolve() {
        assert_eq!(SocketGroup::Name("root".into()).resolve().unwrap(), 0);
        let err = SocketGroup::Name("no-such-group".into())
            .resolve_for("audit.group")
            .unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    field: "audit.group",
                    ..
                }
            ),
            "{err}"
        );
    }
}
