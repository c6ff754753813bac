//! Client of the daemon's API: HTTP/1.1 + JSON on its Unix socket (docs/api.md).
//!
//! One connection per request. Every method needs a tokio runtime with I/O enabled;
//! the connection is driven by a task spawned on it. The methods are grouped by
//! resource (`tasks`, `grants`, `events`); `transport` sends the requests.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

mod error;
mod events;
mod grants;
mod tasks;
#[cfg(test)]
mod tests;
mod transport;

pub use error::ClientError;
pub use events::{EventItem, EventStream};

/// Where clients look for the socket when neither `--socket` nor `LEASH_SOCKET` says.
pub const DEFAULT_SOCKET: &str = "/run/leash/leash.sock";
/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "LEASH_SOCKET";
/// Environment variable holding a bearer token (a JWT-SVID or OIDC ID token).
pub const TOKEN_ENV: &str = "LEASH_TOKEN";

/// A client of one daemon socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    /// Bearer token sent with every request (`auth.tokens` in the daemon config).
    token: Option<String>,
}

impl Client {
    #[must_use]
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            token: None,
        }
    }

    /// The socket from `--socket` (`flag`), then `LEASH_SOCKET`, then [`DEFAULT_SOCKET`];
    /// the token from `LEASH_TOKEN`.
    #[must_use]
    pub fn from_env(flag: Option<PathBuf>) -> Self {
        Self::new(resolve_socket(flag, std::env::var_os(SOCKET_ENV)))
            .with_token(std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty()))
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    #[must_use]
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// `--socket`, then the value of `LEASH_SOCKET` (ignored when empty), then the default.
fn resolve_socket(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

fn task_path(id: &str) -> String {
    format!("/v1/tasks/{}", encode_component(id))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that an id given
/// by a user stays one path segment or query value.
/// `?k=v&...` of a filter's set fields (serialised as JSON, so its names and
/// defaults are the API's own); empty when none is set.
fn query_string<T: serde::Serialize>(filter: &T) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(filter) else {
        return String::new();
    };
    let pairs: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => return None,
                other => other.to_string(),
            };
            Some(format!("{k}={}", encode_component(&v)))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

fn encode_component(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
