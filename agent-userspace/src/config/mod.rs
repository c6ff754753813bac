//! Daemon configuration: YAML with an embedded default, so `leash daemon` needs no file.
//!
//! Every field is optional (a missing one keeps its default) and unknown fields are
//! rejected, so a typo fails loudly instead of silently keeping a default. The commented
//! default is [`Config::default_yaml`] (`leash daemon --print-default-config`); a unit
//! test keeps it identical to [`Config::default`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::BackendChoice;
use checks::{check_file_path, check_log_level, check_path, check_pin_dir, check_trust_domain};

mod audit;
mod backend;
mod checks;
mod connections;
mod dns;
mod error;
mod files;
mod identity;
mod maps;
mod metrics;
mod socket;
mod task_tokens;
mod tasks;
#[cfg(test)]
mod tests;

pub use audit::AuditConfig;
pub use connections::ConnectionsConfig;
pub use dns::DnsConfig;
pub use error::{ConfigError, ConfigOrigin};
pub use files::FilesConfig;
pub use identity::{ApproverTokens, AuthConfig, ClaimMatch, PolicyConfig, TokensConfig};
pub use maps::{MAX_MAP_ENTRIES, MIN_EVENTS_BYTES, MapsConfig};
pub use metrics::MetricsConfig;
pub use socket::{SOCKET_MODE, SocketConfig, SocketGroup};
pub use task_tokens::TaskTokensConfig;
pub use tasks::{TTL_LIMIT, TasksConfig};

/// The commented default configuration; parsing it gives [`Config::default`].
const DEFAULT_YAML: &str = include_str!("default.yaml");

/// Root of the bpffs mount that `pin_dir` must be under.
pub const BPFFS_ROOT: &str = leash_common::maps::BPFFS;

/// The daemon configuration. See `default.yaml` (beside this file) for each field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The API socket.
    pub socket: SocketConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Absolute directory for the daemon's own state.
    pub state_dir: PathBuf,
    /// bpffs directory where programs, links and maps are pinned.
    pub pin_dir: PathBuf,
    /// Absolute path of the JSON-lines audit log.
    pub audit_log: PathBuf,
    /// The audit log's group and rotation.
    pub audit: AuditConfig,
    /// SPIFFE trust domain of task identities (`spiffe://<trust_domain>/agent/...`).
    pub trust_domain: String,
    /// Exec enforcement backend: `auto`, `lsm` or `portable`.
    #[serde(with = "backend")]
    pub backend: BackendChoice,
    /// Where the network hooks are attached: `root` or `task` (see `default.yaml`).
    pub attach_scope: crate::protocol::AttachScope,
    /// BPF map capacities.
    pub maps: MapsConfig,
    /// Task lifetimes.
    pub tasks: TasksConfig,
    /// The DNS responder's bounds (docs/dns.md).
    pub dns: DnsConfig,
    /// Which allowed decisions go to the audit log.
    pub log_allowed: LogAllowed,
    /// Daemon log level or filter (`info`, `leash=debug,info`).
    pub log_level: String,
    /// Node policy bounding what tasks may be granted.
    pub policy: PolicyConfig,
    /// Who may call the API.
    pub auth: AuthConfig,
    /// Base sets of the Landlock domain `leash run` applies.
    pub files: FilesConfig,
    /// Limits of the API socket's and the metrics listener's connections.
    pub connections: ConnectionsConfig,
    /// The identity tokens issued to tasks.
    pub task_tokens: TaskTokensConfig,
}

/// Defaults; identical to the embedded `default.yaml` (a unit test checks it):
/// socket `/run/leash/leash.sock` for root only, metrics on `127.0.0.1:9469`, state in
/// `/var/lib/leash`, pins in `/sys/fs/bpf/leash`, audit log
/// `/var/log/leash/audit.jsonl`, trust domain `leash.local`, backend `auto`, the map
/// capacities of [`leash_common::maps`], tasks living 1h by default and 24h at most,
/// allowed execs logged but not allowed network decisions, log level `info`.
impl Default for Config {
    fn default() -> Self {
        Self {
            socket: SocketConfig::default(),
            metrics: MetricsConfig::default(),
            state_dir: PathBuf::from("/var/lib/leash"),
            pin_dir: PathBuf::from("/sys/fs/bpf/leash"),
            audit_log: PathBuf::from("/var/log/leash/audit.jsonl"),
            audit: AuditConfig::default(),
            trust_domain: "leash.local".to_owned(),
            backend: BackendChoice::Auto,
            attach_scope: crate::protocol::AttachScope::Auto,
            maps: MapsConfig::default(),
            tasks: TasksConfig::default(),
            dns: DnsConfig::default(),
            log_allowed: LogAllowed::default(),
            log_level: "info".to_owned(),
            policy: PolicyConfig::default(),
            auth: AuthConfig::default(),
            files: FilesConfig::default(),
            connections: ConnectionsConfig::default(),
            task_tokens: TaskTokensConfig::default(),
        }
    }
}

/// `log_allowed:` which allowed decisions are written to the audit log (denied and
/// audited ones always are).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogAllowed {
    /// Allowed execs.
    pub exec: bool,
    /// Allowed connects and sends.
    pub network: bool,
}

/// Default: allowed execs are logged, allowed network decisions are not.
impl Default for LogAllowed {
    fn default() -> Self {
        Self {
            exec: true,
            network: false,
        }
    }
}

impl Config {
    /// The configuration in `path`, or the defaults when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            let config = Self::default();
            config.validate()?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, ConfigOrigin::File(path.to_owned()))
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, ConfigOrigin::Inline)
    }

    fn parse(text: &str, origin: ConfigOrigin) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml_ng::from_str(text).map_err(|source| {
            // serde_yaml_ng gives no position for an unknown top-level field.
            let unknown_field_line = if source.location().is_none() {
                unknown_top_level_field_line(&source.to_string(), text)
            } else {
                None
            };
            ConfigError::Parse {
                origin,
                source,
                unknown_field_line,
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The commented default configuration (`leash daemon --print-default-config`).
    #[must_use]
    pub fn default_yaml() -> &'static str {
        DEFAULT_YAML
    }

    /// Map names of [`leash_common::maps`] with their configured capacities
    /// (`EVENTS`: bytes), for resizing the maps before load.
    #[must_use]
    pub fn expose_capacities(&self) -> [(&'static str, u32); 6] {
        self.maps.capacities()
    }

    /// Checks the values that parsing alone cannot; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.socket.validate()?;
        self.metrics.validate()?;
        check_path("state_dir", &self.state_dir, "/var/lib/leash")?;
        check_pin_dir(&self.pin_dir)?;
        check_file_path("audit_log", &self.audit_log, "/var/log/leash/audit.jsonl")?;
        self.audit.validate()?;
        check_trust_domain(&self.trust_domain)?;
        self.maps.validate()?;
        self.tasks.validate()?;
        self.dns.validate()?;
        self.policy.validate()?;
        self.auth.validate()?;
        self.files.validate()?;
        self.connections.validate()?;
        self.task_tokens.validate()?;
        check_log_level(&self.log_level)
    }
}

/// The 1-based line where the unknown field named in `message` is a top-level key.
fn unknown_top_level_field_line(message: &str, text: &str) -> Option<usize> {
    let field = message.split_once("unknown field `")?.1.split_once('`')?.0;
    text.lines()
        .position(|line| {
            line.strip_prefix(field)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|index| index + 1)
}
