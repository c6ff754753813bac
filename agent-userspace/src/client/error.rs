//! [`ClientError`]: why a call to the daemon failed.

use std::{io, path::PathBuf, string::FromUtf8Error};

use hyper::{Method, StatusCode};

use super::events::MAX_EVENT_LINE;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the leash daemon at {}: is it running? Start it with `sudo leash daemon` \
         (or `cargo xtask run`), or point --socket / LEASH_SOCKET at its socket",
        socket.display()
    )]
    NotRunning { socket: PathBuf },
    #[error(
        "cannot reach the leash daemon at {}: permission denied; run as root or as a member \
         of the socket's group",
        socket.display()
    )]
    PermissionDenied { socket: PathBuf },
    /// The daemon answered 4xx/5xx with an error body.
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The daemon answered 4xx/5xx without an error body; `body` is the start of what it sent.
    #[error(
        "unexpected answer from the leash daemon: HTTP {status} without an error body{}{body}",
        if body.is_empty() { "" } else { ": " }
    )]
    NoErrorBody { status: StatusCode, body: String },
    /// A 2xx answer that is not the JSON expected.
    #[error(
        "unexpected answer from the leash daemon: cannot parse the answer to {method} {path}: {source}"
    )]
    Decode {
        method: Method,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A line of `GET /v1/events` that is not JSON, or an event missing fields.
    #[error("unexpected answer from the leash daemon: bad event line {line:?}: {source}")]
    BadEventLine {
        line: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "unexpected answer from the leash daemon: event line longer than {MAX_EVENT_LINE} bytes"
    )]
    EventLineTooLong,
    #[error("unexpected answer from the leash daemon: event line is not UTF-8")]
    EventLineNotUtf8(#[source] FromUtf8Error),
    #[error("unexpected answer from the leash daemon: cannot encode the request: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("unexpected answer from the leash daemon: cannot build the request: {0}")]
    BuildRequest(#[source] hyper::http::Error),
    /// An HTTP failure other than I/O (which is [`ClientError::Io`]).
    #[error("unexpected answer from the leash daemon: {0}")]
    Http(#[source] hyper::Error),
    #[error("cannot talk to the leash daemon: {0}")]
    Io(#[from] io::Error),
}
