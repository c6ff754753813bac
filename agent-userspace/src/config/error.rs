//! [`ConfigError`]: why a configuration could not be loaded.

use std::{fmt, io, path::PathBuf};

/// Why a configuration could not be loaded. Every message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bad YAML, an unknown field, or a value of the wrong form. `serde_yaml_ng`'s
    /// message names the field (`tasks.max_ttl: ...`, ``unknown field `sockt` ``) and
    /// gives the line and column, except for an unknown top-level field, whose line
    /// [`Config::from_yaml`](super::Config::from_yaml) finds itself.
    #[error("cannot parse config {origin}: {source}{}", AtLine(*unknown_field_line))]
    Parse {
        origin: ConfigOrigin,
        #[source]
        source: serde_yaml_ng::Error,
        unknown_field_line: Option<usize>,
    },
    /// A well-formed value that is not acceptable; `field` is its YAML path, e.g.
    /// `maps.events_bytes`.
    #[error("config field {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The host's group database could not be read.
    #[error(
        "config field {field}: cannot look up group {name:?}: {source}; give a numeric gid instead"
    )]
    GroupLookup {
        field: &'static str,
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Where the text of a configuration came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigOrigin {
    File(PathBuf),
    /// [`Config::from_yaml`](super::Config::from_yaml).
    Inline,
}

impl fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => path.display().fmt(f),
            Self::Inline => f.write_str("<inline YAML>"),
        }
    }
}

/// ` at line N column 1`, or nothing.
struct AtLine(Option<usize>);

impl fmt::Display for AtLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, " at line {line} column 1"),
            None => Ok(()),
        }
    }
}

pub(super) fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}
