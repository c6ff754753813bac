//! Daemon configuration: YAML with an embedded default, so `leash daemon` needs no file.
//!
//! Every field is optional (a missing one keeps its default) and unknown fields are
//! rejected, so a typo fails loudly instead of silently keeping a default. The commented
//! default is [`Config::default_yaml`] (`leash daemon --print-default-config`); a unit
//! test keeps it identical to [`Config::default`].

use std::{
    ffi::CString,
    fmt, io,
    net::SocketAddr,
    os::unix::ffi::OsStrExt,
    path::{Component, Path, PathBuf},
    time::Duration,
};

use agent_common::maps;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

use crate::protocol::BackendChoice;

mod audit;
mod identity;
pub use audit::AuditConfig;
pub use identity::{ApproverTokens, AuthConfig, ClaimMatch, PolicyConfig, TokensConfig};

/// The commented default configuration; parsing it gives [`Config::default`].
const DEFAULT_YAML: &str = include_str!("default.yaml");

/// Mode of the API socket (owner root, group [`SocketConfig::group`]).
pub const SOCKET_MODE: u32 = 0o660;
/// Largest capacity accepted for any map (and largest `maps.events_bytes`).
pub const MAX_MAP_ENTRIES: u32 = 16_777_216;
/// Smallest event ring buffer accepted (it must also be at least one page).
pub const MIN_EVENTS_BYTES: u32 = 4096;
/// Longest `tasks.max_ttl` accepted.
pub const TTL_LIMIT: Duration = Duration::from_hours(365 * 24);
/// Root of the bpffs mount that `pin_dir` must be under.
pub const BPFFS_ROOT: &str = maps::BPFFS;
/// Longest Unix socket path: `sun_path` holds 108 bytes including the NUL.
const SOCKET_PATH_MAX: usize = agent_common::grant::SUN_PATH_LEN - 1;
/// Longest trust domain (a DNS name's limit).
const TRUST_DOMAIN_MAX: usize = 255;
/// Where [`Config::from_yaml`] says its text came from in parse errors.
const INLINE_ORIGIN: &str = "<inline YAML>";

/// Why a configuration could not be loaded. Every message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Bad YAML, an unknown field, or a value of the wrong form. `message` is
    /// `serde_yaml_ng`'s, which names the field (`tasks.max_ttl: ...`, ``unknown field
    /// `sockt` ``) and gives the line and column.
    #[error("cannot parse config {path}: {message}")]
    Parse { path: String, message: String },
    /// A well-formed value that is not acceptable; `field` is its YAML path, e.g.
    /// `maps.events_bytes`.
    #[error("config field {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

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
    #[serde(with = "backend_serde")]
    pub backend: BackendChoice,
    /// Where the network hooks are attached: `root` or `task` (see `default.yaml`).
    pub attach_scope: crate::protocol::AttachScope,
    /// BPF map capacities.
    pub maps: MapsConfig,
    /// Task lifetimes.
    pub tasks: TasksConfig,
    /// Which allowed decisions go to the audit log.
    pub log_allowed: LogAllowed,
    /// Daemon log level or filter (`info`, `leash=debug,info`).
    pub log_level: String,
    /// Node policy bounding what tasks may be granted.
    pub policy: PolicyConfig,
    /// Who may call the API.
    pub auth: AuthConfig,
}

/// Defaults; identical to the embedded `default.yaml` (a unit test checks it):
/// socket `/run/leash/leash.sock` for root only, metrics on `127.0.0.1:9469`, state in
/// `/var/lib/leash`, pins in `/sys/fs/bpf/leash`, audit log
/// `/var/log/leash/audit.jsonl`, trust domain `leash.local`, backend `auto`, the map
/// capacities of [`agent_common::maps`], tasks living 1h by default and 24h at most,
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
            attach_scope: crate::protocol::AttachScope::Root,
            maps: MapsConfig::default(),
            tasks: TasksConfig::default(),
            log_allowed: LogAllowed::default(),
            log_level: "info".to_owned(),
            policy: PolicyConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

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

/// A group given by name or by numeric gid (`group: docker`, `group: 1000`, `group: "1000"`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SocketGroup {
    Name(String),
    Gid(u32),
}

impl SocketGroup {
    /// The numeric gid, looking a name up in the host's group database.
    pub fn resolve(&self) -> Result<u32, ConfigError> {
        match self {
            Self::Gid(gid) => Ok(*gid),
            Self::Name(name) => match lookup_group(name) {
                Ok(Some(gid)) => Ok(gid),
                Ok(None) => Err(invalid(
                    "socket.group",
                    format!(
                        "no group named {name:?} on this host: create it (groupadd {name}) \
                         or give a numeric gid"
                    ),
                )),
                Err(e) => Err(invalid(
                    "socket.group",
                    format!("cannot look up group {name:?}: {e}; give a numeric gid instead"),
                )),
            },
        }
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

/// `getgrnam_r`: `Ok(None)` when no such group exists.
fn lookup_group(name: &str) -> io::Result<Option<u32>> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: `group` is a plain C struct for which all-zero bytes are valid.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf.len()` is its size;
        // `group` only points into `buf`, which outlives every use of it.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &raw mut group,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &raw mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!result.is_null()).then_some(group.gr_gid));
    }
}

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

/// `maps:` BPF map capacities, applied before the maps are created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MapsConfig {
    /// Entries of [`maps::PROCS`] (tagged threads).
    pub procs: u32,
    /// Entries of [`maps::TASKS`].
    pub tasks: u32,
    /// Entries of [`maps::EXEC_GRANTS`].
    pub exec_grants: u32,
    /// Entries of [`maps::SCRIPT_GRANTS`].
    pub script_grants: u32,
    /// Entries of [`maps::NET_HOSTS`], and of each task's prefix trie ([`maps::NET_GRANTS`]).
    pub net_grants: u32,
    /// Size in bytes of the [`maps::EVENTS`] ring buffer.
    pub events_bytes: u32,
}

/// Default: the capacities the kernel object declares ([`maps::PROCS_CAPACITY`] etc.).
impl Default for MapsConfig {
    fn default() -> Self {
        Self {
            procs: maps::PROCS_CAPACITY,
            tasks: maps::TASKS_CAPACITY,
            exec_grants: maps::EXEC_GRANTS_CAPACITY,
            script_grants: maps::SCRIPT_GRANTS_CAPACITY,
            net_grants: maps::NET_GRANTS_CAPACITY,
            events_bytes: maps::EVENTS_BYTES,
        }
    }
}

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
}

/// Default: 1h default TTL, 24h maximum, processes not killed when their task ends.
impl Default for TasksConfig {
    fn default() -> Self {
        Self {
            default_ttl: Duration::from_hours(1),
            max_ttl: Duration::from_hours(24),
            kill_on_end: false,
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
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, INLINE_ORIGIN)
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml_ng::from_str(text).map_err(|e| {
            let mut message = e.to_string();
            // serde_yaml_ng gives no position for an unknown top-level field.
            if e.location().is_none()
                && let Some(line) = unknown_top_level_field_line(&message, text)
            {
                message = format!("{message} at line {line} column 1");
            }
            ConfigError::Parse {
                path: origin.to_owned(),
                message,
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

    /// Map names of [`agent_common::maps`] with their configured capacities
    /// (`EVENTS`: bytes), for resizing the maps before load.
    #[must_use]
    pub fn expose_capacities(&self) -> [(&'static str, u32); 6] {
        let m = &self.maps;
        [
            (maps::PROCS, m.procs),
            (maps::TASKS, m.tasks),
            (maps::EXEC_GRANTS, m.exec_grants),
            (maps::SCRIPT_GRANTS, m.script_grants),
            (maps::NET_GRANTS, m.net_grants),
            (maps::EVENTS, m.events_bytes),
        ]
    }

    /// Checks the values that parsing alone cannot; the first problem is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.socket.validate()?;
        if self.metrics.addr.port() == 0 {
            return Err(invalid(
                "metrics.addr",
                format!(
                    "port 0 picks a random port that Prometheus cannot find: use a fixed one, \
                     like {}:9469",
                    fmt_ip(self.metrics.addr)
                ),
            ));
        }
        check_path("state_dir", &self.state_dir, "/var/lib/leash")?;
        check_pin_dir(&self.pin_dir)?;
        check_file_path("audit_log", &self.audit_log, "/var/log/leash/audit.jsonl")?;
        self.audit.validate()?;
        check_trust_domain(&self.trust_domain)?;
        self.maps.validate()?;
        self.tasks.validate()?;
        self.policy.validate()?;
        self.auth.validate()?;
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

fn fmt_ip(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

impl SocketConfig {
    fn validate(&self) -> Result<(), ConfigError> {
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
            Some(SocketGroup::Name(name))
                if name.is_empty()
                    || name
                        .chars()
                        .any(|c| c == ':' || c == '/' || c.is_whitespace() || c.is_control()) =>
            {
                Err(invalid(
                    "socket.group",
                    format!(
                        "{name:?} is not a valid group name: give a group name (like leash) \
                         or a numeric gid, or null for root-only access"
                    ),
                ))
            }
            Some(SocketGroup::Gid(u32::MAX)) => Err(invalid(
                "socket.group",
                "gid 4294967295 is reserved (it means \"no group\"): give a real gid",
            )),
            _ => Ok(()),
        }
    }
}

/// An absolute path with no `..`.
fn check_path(field: &'static str, path: &Path, example: &str) -> Result<(), ConfigError> {
    if !path.is_absolute() {
        return Err(invalid(
            field,
            format!(
                "{:?} is not an absolute path: give one starting with /, like {example}",
                path.display()
            ),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(
            field,
            format!(
                "{} contains `..`: write the path without it, like {example}",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// [`check_path`], naming a file rather than a directory.
fn check_file_path(field: &'static str, path: &Path, example: &str) -> Result<(), ConfigError> {
    check_path(field, path, example)?;
    if path.as_os_str().as_bytes().ends_with(b"/") || path.file_name().is_none() {
        return Err(invalid(
            field,
            format!(
                "{} names a directory: give a file path, like {example}",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn check_pin_dir(path: &Path) -> Result<(), ConfigError> {
    const EXAMPLE: &str = "/sys/fs/bpf/leash";
    check_path("pin_dir", path, EXAMPLE)?;
    // RootDir, sys, fs, bpf and at least one more.
    if !path.starts_with(BPFFS_ROOT) || path.components().count() < 5 {
        return Err(invalid(
            "pin_dir",
            format!(
                "{} is not a directory under {BPFFS_ROOT}/: pins only survive on bpffs, so \
                 use a subdirectory of it, like {EXAMPLE}",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn check_trust_domain(domain: &str) -> Result<(), ConfigError> {
    const FIELD: &str = "trust_domain";
    let fail = |message: String| Err(invalid(FIELD, message));
    if domain.is_empty() {
        return fail("is empty: give a DNS-like name, like leash.local or example.org".into());
    }
    if let Some((scheme, rest)) = domain.split_once("://") {
        return fail(format!(
            "{domain:?} has a scheme ({scheme}://): give the bare domain, like {:?}",
            rest.split('/').next().unwrap_or_default()
        ));
    }
    if domain.chars().any(|c| c.is_ascii_uppercase()) {
        return fail(format!(
            "{domain:?} has uppercase letters: write it in lowercase, {:?}",
            domain.to_ascii_lowercase()
        ));
    }
    if let Some(c) = domain
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'))
    {
        return fail(format!(
            "{domain:?} contains {c:?}: use only lowercase letters, digits, dots and dashes, \
             like leash.local"
        ));
    }
    if domain.starts_with('.') || domain.ends_with('.') || domain.contains("..") {
        return fail(format!(
            "{domain:?} has an empty label: separate non-empty labels by single dots, like \
             leash.local"
        ));
    }
    if domain.len() > TRUST_DOMAIN_MAX {
        return fail(format!(
            "is {} characters long: use at most {TRUST_DOMAIN_MAX}",
            domain.len()
        ));
    }
    Ok(())
}

fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = level.trim();
    if level.is_empty() {
        return Err(invalid(
            "log_level",
            "is empty: use error, warn, info, debug or trace",
        ));
    }
    // Filters with targets (`leash=debug,info`) are left to the log filter parser.
    let is_filter = level.contains(['=', ',', '[']);
    if !is_filter && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
        return Err(invalid(
            "log_level",
            format!(
                "unknown level {level:?}: use error, warn, info, debug or trace (or a filter \
                 like leash=debug,info)"
            ),
        ));
    }
    Ok(())
}

/// The system page size.
fn page_size() -> u32 {
    // SAFETY: sysconf only reads a system constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u32::try_from(size).unwrap_or(4096)
}

impl MapsConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("maps.procs", self.procs),
            ("maps.tasks", self.tasks),
            ("maps.exec_grants", self.exec_grants),
            ("maps.script_grants", self.script_grants),
            ("maps.net_grants", self.net_grants),
        ] {
            if value == 0 || value > MAX_MAP_ENTRIES {
                return Err(invalid(
                    field,
                    format!("{value} is out of range: use 1 to {MAX_MAP_ENTRIES} entries"),
                ));
            }
        }
        Self::check_events_bytes(self.events_bytes, page_size())
    }

    fn check_events_bytes(value: u32, page: u32) -> Result<(), ConfigError> {
        const FIELD: &str = "maps.events_bytes";
        let min = MIN_EVENTS_BYTES.max(page);
        if value < min || value > MAX_MAP_ENTRIES {
            return Err(invalid(
                FIELD,
                format!(
                    "{value} is out of range: use a power of two from {min} to \
                     {MAX_MAP_ENTRIES} bytes, like {}",
                    maps::EVENTS_BYTES
                ),
            ));
        }
        if !value.is_power_of_two() {
            return Err(invalid(
                FIELD,
                format!(
                    "{value} is not a power of two (a BPF ring buffer must be): use {} or {}",
                    value.next_power_of_two() / 2,
                    value.next_power_of_two()
                ),
            ));
        }
        if !value.is_multiple_of(page) {
            return Err(invalid(
                FIELD,
                format!(
                    "{value} is not a multiple of the page size ({page} bytes): use a power \
                     of two of at least {page}"
                ),
            ));
        }
        Ok(())
    }
}

impl TasksConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (field, ttl) in [
            ("tasks.default_ttl", self.default_ttl),
            ("tasks.max_ttl", self.max_ttl),
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
mod duration_serde {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
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

/// `SocketAddr` as `IP:PORT`, with a hint when it is not one.
mod addr_serde {
    use std::{fmt, net::SocketAddr};

    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(addr: &SocketAddr, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(addr)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
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

/// [`BackendChoice`] as `auto`, `lsm` or `portable`.
mod backend_serde {
    use std::fmt;

    use serde::{Deserializer, Serializer, de};

    use crate::protocol::BackendChoice;

    #[expect(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's `with` passes a reference"
    )]
    pub fn serialize<S: Serializer>(
        choice: &BackendChoice,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(match choice {
            BackendChoice::Auto => "auto",
            BackendChoice::Lsm => "lsm",
            BackendChoice::Portable => "portable",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BackendChoice, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = BackendChoice;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("auto, lsm or portable")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<BackendChoice, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(yaml: &str) -> String {
        match Config::from_yaml(yaml) {
            Err(e @ ConfigError::Parse { .. }) => e.to_string(),
            other => panic!("expected a parse error for {yaml:?}, got {other:?}"),
        }
    }

    fn invalid_field(yaml: &str) -> (&'static str, String) {
        match Config::from_yaml(yaml) {
            Err(ConfigError::Invalid { field, message }) => (field, message),
            other => panic!("expected a validation error for {yaml:?}, got {other:?}"),
        }
    }

    #[test]
    fn embedded_default_is_the_default() {
        let parsed: Config = serde_yaml_ng::from_str(Config::default_yaml()).unwrap();
        assert_eq!(parsed, Config::default());
        assert_eq!(
            Config::from_yaml(Config::default_yaml()).unwrap(),
            Config::default()
        );
        assert_eq!(Config::load(None).unwrap(), Config::default());
    }

    #[test]
    fn default_yaml_comments_every_field() {
        let mut previous = "";
        for line in Config::default_yaml().lines() {
            let trimmed = line.trim_start();
            if !trimmed.is_empty() && !trimmed.starts_with('#') {
                assert!(
                    previous.trim_start().starts_with('#'),
                    "no comment line above {line:?}"
                );
            }
            previous = line;
        }
    }

    #[test]
    fn default_values() {
        let c = Config::default();
        assert_eq!(c.socket.path, Path::new("/run/leash/leash.sock"));
        assert_eq!(c.socket.group, None);
        assert_eq!(c.metrics.addr.to_string(), "127.0.0.1:9469");
        assert_eq!(c.state_dir, Path::new("/var/lib/leash"));
        assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/leash"));
        assert_eq!(c.audit_log, Path::new("/var/log/leash/audit.jsonl"));
        assert_eq!(c.trust_domain, "leash.local");
        assert_eq!(c.backend, BackendChoice::Auto);
        assert_eq!(c.maps.procs, 65_536);
        assert_eq!(c.maps.tasks, 16_384);
        assert_eq!(c.maps.exec_grants, 65_536);
        assert_eq!(c.maps.script_grants, 4096);
        assert_eq!(c.maps.net_grants, 65_536);
        assert_eq!(c.maps.events_bytes, 4_194_304);
        assert_eq!(c.tasks.default_ttl, Duration::from_hours(1));
        assert_eq!(c.tasks.max_ttl, Duration::from_hours(24));
        assert!(!c.tasks.kill_on_end);
        assert!(c.log_allowed.exec);
        assert!(!c.log_allowed.network);
        assert_eq!(c.log_level, "info");
        c.validate().unwrap();
    }

    #[test]
    fn empty_and_comment_only_files_give_defaults() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        assert_eq!(Config::from_yaml("# nothing\n").unwrap(), Config::default());
        assert_eq!(Config::from_yaml("{}").unwrap(), Config::default());
    }

    #[test]
    fn serialization_round_trips_with_humantime_durations() {
        let mut c = Config::default();
        c.tasks.default_ttl = Duration::from_secs(90);
        c.tasks.max_ttl = Duration::from_millis(36_000_500);
        c.socket.group = Some(SocketGroup::Gid(1000));
        let text = serde_yaml_ng::to_string(&c).unwrap();
        assert!(text.contains("default_ttl: 90s"), "{text}");
        assert!(text.contains("backend: auto"), "{text}");
        assert!(text.contains("addr: 127.0.0.1:9469"), "{text}");
        assert_eq!(Config::from_yaml(&text).unwrap(), c);

        let text = serde_yaml_ng::to_string(&Config::default()).unwrap();
        assert!(text.contains("default_ttl: 1h"), "{text}");
        assert!(text.contains("max_ttl: 24h"), "{text}");
        assert!(text.contains("group: null"), "{text}");
        assert_eq!(Config::from_yaml(&text).unwrap(), Config::default());
    }

    #[test]
    fn partial_override_keeps_other_defaults() {
        let c = Config::from_yaml(
            "socket:\n  group: leash\n\
             tasks:\n  default_ttl: 10m\n\
             maps:\n  procs: 1024\n\
             backend: portable\n\
             log_allowed:\n  network: true\n",
        )
        .unwrap();
        let mut want = Config::default();
        want.socket.group = Some(SocketGroup::Name("leash".into()));
        want.tasks.default_ttl = Duration::from_mins(10);
        want.maps.procs = 1024;
        want.backend = BackendChoice::Portable;
        want.log_allowed.network = true;
        assert_eq!(c, want);
    }

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
    fn unknown_top_level_field_is_named() {
        let msg = parse_err("# leash\nsockt:\n  path: /run/x.sock\n");
        assert!(msg.contains("unknown field `sockt`"), "{msg}");
        assert!(msg.contains("expected one of `socket`"), "{msg}");
        assert!(msg.ends_with("at line 2 column 1"), "{msg}");
        let msg = parse_err("{log_level: info, sockt: 1}");
        assert!(msg.contains("unknown field `sockt`"), "{msg}");
    }

    #[test]
    fn unknown_nested_field_is_named() {
        let msg = parse_err("tasks:\n  default_ttl: 1h\n  defualt_ttl: 2h\n");
        assert!(msg.contains("unknown field `defualt_ttl`"), "{msg}");
        assert!(msg.contains("tasks"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        let msg = parse_err("maps: {procs: 1, prcos: 2}");
        assert!(msg.contains("unknown field `prcos`"), "{msg}");
        let msg = parse_err("log_allowed: {connect: true}");
        assert!(msg.contains("unknown field `connect`"), "{msg}");
    }

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

    #[test]
    fn relative_or_misplaced_paths_are_rejected() {
        let (field, message) = invalid_field("state_dir: var/lib/leash");
        assert_eq!(field, "state_dir");
        assert!(message.contains("absolute"), "{message}");
        assert_eq!(invalid_field("state_dir: \"\"").0, "state_dir");
        assert_eq!(invalid_field("audit_log: audit.jsonl").0, "audit_log");
        assert_eq!(invalid_field("audit_log: /var/log/leash/").0, "audit_log");
        assert_eq!(invalid_field("socket: {path: leash.sock}").0, "socket.path");
        let long = format!("socket: {{path: /{}}}", "s".repeat(120));
        assert_eq!(invalid_field(&long).0, "socket.path");

        let (field, message) = invalid_field("pin_dir: /tmp/leash");
        assert_eq!(field, "pin_dir");
        assert!(message.contains("/sys/fs/bpf/"), "{message}");
        assert_eq!(invalid_field("pin_dir: /sys/fs/bpf").0, "pin_dir");
        assert_eq!(invalid_field("pin_dir: /sys/fs/bpfx/leash").0, "pin_dir");
        assert_eq!(invalid_field("pin_dir: /sys/fs/bpf/../../tmp").0, "pin_dir");
        assert_eq!(invalid_field("pin_dir: sys/fs/bpf/leash").0, "pin_dir");
        Config::from_yaml("pin_dir: /sys/fs/bpf/other/leash").unwrap();
    }

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

    #[test]
    fn bad_trust_domain_is_rejected() {
        for bad in [
            "\"\"",
            "spiffe://example.org",
            "Example.org",
            "exa_mple.org",
            "example.org/x",
            ".example.org",
            "example..org",
        ] {
            let (field, message) = invalid_field(&format!("trust_domain: {bad}"));
            assert_eq!(field, "trust_domain", "{bad}: {message}");
        }
        let err = Config::from_yaml("trust_domain: spiffe://example.org").unwrap_err();
        assert!(err.to_string().contains("\"example.org\""), "{err}");
        Config::from_yaml("trust_domain: prod-1.example.org").unwrap();
    }

    #[test]
    fn map_capacities_are_checked() {
        let (field, message) = invalid_field("maps: {events_bytes: 5000000}");
        assert_eq!(field, "maps.events_bytes");
        assert!(message.contains("power of two"), "{message}");
        assert!(message.contains("4194304"), "{message}");
        assert_eq!(
            invalid_field("maps: {events_bytes: 2048}").0,
            "maps.events_bytes"
        );
        assert_eq!(
            invalid_field("maps: {events_bytes: 33554432}").0,
            "maps.events_bytes"
        );
        assert_eq!(invalid_field("maps: {procs: 0}").0, "maps.procs");
        assert_eq!(
            invalid_field("maps: {net_grants: 16777217}").0,
            "maps.net_grants"
        );
        assert!(parse_err("maps: {tasks: -1}").contains("maps.tasks"));
        Config::from_yaml("maps: {procs: 16777216, events_bytes: 16777216}").unwrap();
        // On a 64 KiB-page machine 32 KiB is a power of two but not a whole page.
        assert!(MapsConfig::check_events_bytes(32_768, 65_536).is_err());
        MapsConfig::check_events_bytes(65_536, 65_536).unwrap();
    }

    #[test]
    fn backend_is_parsed() {
        let backend = |yaml: &str| Config::from_yaml(yaml).unwrap().backend;
        assert_eq!(backend("backend: lsm"), BackendChoice::Lsm);
        assert_eq!(backend("backend: portable"), BackendChoice::Portable);
        assert_eq!(backend("backend: auto"), BackendChoice::Auto);
        let msg = parse_err("backend: bogus");
        assert!(msg.contains("backend"), "{msg}");
        assert!(msg.contains("\"bogus\""), "{msg}");
        assert!(msg.contains("auto, lsm, portable"), "{msg}");
    }

    #[test]
    fn log_level_is_checked() {
        assert_eq!(invalid_field("log_level: loud").0, "log_level");
        assert_eq!(invalid_field("log_level: \"\"").0, "log_level");
        Config::from_yaml("log_level: debug").unwrap();
        Config::from_yaml("log_level: \"leash=debug,info\"").unwrap();
    }

    #[test]
    fn capacities_pair_map_names() {
        let mut c = Config::default();
        c.maps.script_grants = 8;
        let caps = c.expose_capacities();
        assert_eq!(caps[0], (maps::PROCS, maps::PROCS_CAPACITY));
        assert_eq!(caps[3], (maps::SCRIPT_GRANTS, 8));
        assert_eq!(caps[5], (maps::EVENTS, maps::EVENTS_BYTES));
        let names: Vec<_> = caps.iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                maps::PROCS,
                maps::TASKS,
                maps::EXEC_GRANTS,
                maps::SCRIPT_GRANTS,
                maps::NET_GRANTS,
                maps::EVENTS
            ]
        );
    }

    #[test]
    fn load_reads_files_and_reports_them() {
        let dir = std::env::temp_dir().join(format!("leash-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("leash.yaml");
        std::fs::write(&file, "log_level: debug\n").unwrap();
        assert_eq!(Config::load(Some(&file)).unwrap().log_level, "debug");

        std::fs::write(&file, "bogus: 1\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("unknown field `bogus`"), "{err}");

        let missing = dir.join("missing.yaml");
        let err = Config::load(Some(&missing)).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.yaml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
