//! Client of the daemon's API: HTTP/1.1 + JSON on its Unix socket (the README's API section).
//!
//! One connection per request. Every method needs a tokio runtime with I/O enabled;
//! the connection is driven by a task spawned on it.

use std::{
    ffi::OsString,
    io,
    path::{Path, PathBuf},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use crate::protocol::{
    AddGrant, Attached, AuditEvent, CreateTask, ErrorBody, GrantAdded, Status, Task,
};

/// Where clients look for the socket when neither `--socket` nor `LEASH_SOCKET` says.
pub const DEFAULT_SOCKET: &str = "/run/leash/leash.sock";
/// Environment variable naming the socket.
pub const SOCKET_ENV: &str = "LEASH_SOCKET";

/// Longest NDJSON line accepted from `GET /v1/events`.
const MAX_EVENT_LINE: usize = 1 << 20;

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
    #[error("unexpected answer from the leash daemon: {0}")]
    Protocol(String),
    #[error("cannot talk to the leash daemon: {0}")]
    Io(#[from] io::Error),
}

/// A client of one daemon socket.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
    /// Bearer token sent with every request (`auth.tokens` in the daemon config).
    token: Option<String>,
}

/// Environment variable holding a bearer token (a JWT-SVID or OIDC ID token).
pub const TOKEN_ENV: &str = "LEASH_TOKEN";

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

    /// `POST /v1/tasks/{id}/grants/{grant_id}/approve` (`approve`) or `.../deny`.
    pub async fn decide_grant(
        &self,
        id: &str,
        grant_id: &str,
        approve: bool,
    ) -> Result<(), ClientError> {
        let path = format!(
            "{}/grants/{}/{}",
            task_path(id),
            encode_component(grant_id),
            if approve { "approve" } else { "deny" }
        );
        let (status, body) = self.exchange(Method::POST, &path, None).await?;
        check(status, &body)
    }

    #[must_use]
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `POST /v1/tasks`.
    pub async fn create_task(&self, req: &CreateTask) -> Result<Task, ClientError> {
        self.call(Method::POST, "/v1/tasks", Some(to_json(req)?))
            .await
    }

    /// `GET /v1/tasks`.
    pub async fn list_tasks(&self) -> Result<Vec<Task>, ClientError> {
        self.call(Method::GET, "/v1/tasks", None).await
    }

    /// `GET /v1/tasks/{id}`.
    pub async fn get_task(&self, id: &str) -> Result<Task, ClientError> {
        self.call(Method::GET, &task_path(id), None).await
    }

    /// `DELETE /v1/tasks/{id}`: ends the task.
    pub async fn end_task(&self, id: &str) -> Result<Task, ClientError> {
        self.call(Method::DELETE, &task_path(id), None).await
    }

    /// `POST /v1/tasks/{id}/grants`.
    pub async fn add_grant(&self, id: &str, req: &AddGrant) -> Result<GrantAdded, ClientError> {
        let path = format!("{}/grants", task_path(id));
        self.call(Method::POST, &path, Some(to_json(req)?)).await
    }

    /// `DELETE /v1/tasks/{id}/grants/{grant_id}`.
    pub async fn revoke_grant(&self, id: &str, grant_id: &str) -> Result<(), ClientError> {
        let path = format!("{}/grants/{}", task_path(id), encode_component(grant_id));
        let (status, body) = self.exchange(Method::DELETE, &path, None).await?;
        check(status, &body)
    }

    /// `POST /v1/tasks/{id}/attach`: the daemon tags the process that opened the
    /// connection (`SO_PEERCRED`), i.e. this one.
    pub async fn attach(&self, id: &str) -> Result<Attached, ClientError> {
        let path = format!("{}/attach", task_path(id));
        self.call(Method::POST, &path, None).await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        self.call(Method::GET, "/v1/status", None).await
    }

    /// `GET /v1/events[?follow=true][&task=ID]`: the events, read line by line as they
    /// arrive. With `follow`, the stream stays open for new events.
    pub async fn events(
        &self,
        follow: bool,
        task: Option<&str>,
    ) -> Result<EventStream, ClientError> {
        let path = events_path(follow, task);
        let response = self.request(Method::GET, &path, None).await?;
        let status = response.status();
        if !status.is_success() {
            let body = collect(response).await?;
            return Err(error_answer(status, &body));
        }
        Ok(EventStream {
            body: response.into_body(),
            lines: LineDecoder::default(),
            done: false,
        })
    }

    /// Sends one request and parses a JSON answer, or maps an error answer.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(method.clone(), path, body).await?;
        check(status, &bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ClientError::Protocol(format!("cannot parse the answer to {method} {path}: {e}"))
        })
    }

    async fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.request(method, path, body).await?;
        let status = response.status();
        Ok((status, collect(response).await?))
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_error(&e))?;
        // Drives the connection until the response body is read (or dropped).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "leash")
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Protocol(format!("cannot build the request: {e}")))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| http_error(&e))
    }

    fn connect_error(&self, e: io::Error) -> ClientError {
        let socket = self.socket.clone();
        match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                ClientError::NotRunning { socket }
            }
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { socket },
            _ if e.raw_os_error() == Some(libc::ENOTDIR) => ClientError::NotRunning { socket },
            _ => ClientError::Io(e),
        }
    }
}

/// `--socket`, then the value of `LEASH_SOCKET` (ignored when empty), then the default.
fn resolve_socket(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The events of `GET /v1/events`, one NDJSON line at a time.
#[derive(Debug)]
pub struct EventStream {
    body: Incoming,
    lines: LineDecoder,
    done: bool,
}

impl EventStream {
    /// The next line as the daemon sent it (without the newline); `None` at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(line) = self.lines.next_line()? {
                return Ok(Some(line));
            }
            if self.done {
                return self.lines.finish();
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.lines.push(&data)?;
                    }
                }
                Some(Err(e)) => return Err(http_error(&e)),
                None => self.done = true,
            }
        }
    }

    /// The next item; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<EventItem>, ClientError> {
        let Some(line) = self.next_line().await? else {
            return Ok(None);
        };
        parse_event_line(&line).map(Some)
    }
}

/// One line of `GET /v1/events`.
#[derive(Clone, Debug, PartialEq)]
pub enum EventItem {
    Event(Box<AuditEvent>),
    /// `{"lagged": N, ...}`: this follower fell behind and missed N events (the audit
    /// log still has them).
    Lagged(u64),
    /// A JSON object of a kind this client does not know (from a newer daemon).
    Other(String),
}

fn parse_event_line(line: &str) -> Result<EventItem, ClientError> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| ClientError::Protocol(format!("bad event line {line:?}: {e}")))?;
    if let Some(missed) = value.get("lagged").and_then(serde_json::Value::as_u64) {
        return Ok(EventItem::Lagged(missed));
    }
    if value.get("ts").is_none() || value.get("verdict").is_none() {
        return Ok(EventItem::Other(line.to_owned()));
    }
    serde_json::from_value(value)
        .map(|e| EventItem::Event(Box::new(e)))
        .map_err(|e| ClientError::Protocol(format!("bad event line {line:?}: {e}")))
}

/// Splits a byte stream into lines, whatever the chunk boundaries. Blank lines are skipped.
#[derive(Debug, Default)]
struct LineDecoder {
    buf: Vec<u8>,
}

impl LineDecoder {
    fn push(&mut self, chunk: &[u8]) -> Result<(), ClientError> {
        self.buf.extend_from_slice(chunk);
        let pending = self
            .buf
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(self.buf.len(), |nl| self.buf.len() - nl - 1);
        if pending > MAX_EVENT_LINE {
            return Err(ClientError::Protocol(format!(
                "event line longer than {MAX_EVENT_LINE} bytes"
            )));
        }
        Ok(())
    }

    fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        while let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            if let Some(line) = to_line(&line[..nl])? {
                return Ok(Some(line));
            }
        }
        Ok(None)
    }

    /// What is left after the last newline, once the stream has ended.
    fn finish(&mut self) -> Result<Option<String>, ClientError> {
        let rest = std::mem::take(&mut self.buf);
        to_line(&rest)
    }
}

fn to_line(bytes: &[u8]) -> Result<Option<String>, ClientError> {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    String::from_utf8(bytes.to_vec())
        .map(Some)
        .map_err(|_| ClientError::Protocol("event line is not UTF-8".into()))
}

async fn collect(response: Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| http_error(&e))?
        .to_bytes())
}

/// Ok for 2xx; otherwise the daemon's `{"error":{"code","message"}}` as [`ClientError::Api`].
fn check(status: StatusCode, body: &[u8]) -> Result<(), ClientError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(error_answer(status, body))
    }
}

fn error_answer(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let shown: String = text.trim().chars().take(200).collect();
    ClientError::Protocol(format!(
        "HTTP {status} without an error body{}{shown}",
        if shown.is_empty() { "" } else { ": " }
    ))
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value)
        .map_err(|e| ClientError::Protocol(format!("cannot encode the request: {e}")))
}

/// An I/O failure under hyper stays [`ClientError::Io`]; anything else is a protocol error.
fn http_error(e: &hyper::Error) -> ClientError {
    match std::error::Error::source(e).and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => ClientError::Io(io::Error::new(io.kind(), io.to_string())),
        None => ClientError::Protocol(e.to_string()),
    }
}

fn task_path(id: &str) -> String {
    format!("/v1/tasks/{}", encode_component(id))
}

fn events_path(follow: bool, task: Option<&str>) -> String {
    let mut query = Vec::new();
    if follow {
        query.push("follow=true".to_owned());
    }
    if let Some(task) = task {
        query.push(format!("task={}", encode_component(task)));
    }
    if query.is_empty() {
        "/v1/events".to_owned()
    } else {
        format!("/v1/events?{}", query.join("&"))
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that an id given
/// by a user stays one path segment or query value.
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::UnixListener,
    };

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "leash-client-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Serves one connection: reads the request head (and a body of Content-Length),
    /// writes `chunks` with a pause between them, closes. Returns the request text.
    fn serve_once(dir: &Path, chunks: Vec<Vec<u8>>) -> (PathBuf, tokio::task::JoinHandle<String>) {
        let socket = dir.join("leash.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handle = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "client closed before sending its request");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= end + 4 + length {
                        break;
                    }
                }
            }
            for chunk in chunks {
                stream.write_all(&chunk).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            stream.shutdown().await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (socket, handle)
    }

    fn response(status: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[test]
    fn socket_precedence() {
        assert_eq!(
            resolve_socket(Some("/a.sock".into()), Some("/b.sock".into())),
            PathBuf::from("/a.sock")
        );
        assert_eq!(
            resolve_socket(None, Some("/b.sock".into())),
            PathBuf::from("/b.sock")
        );
        assert_eq!(
            resolve_socket(None, Some(OsString::new())),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(resolve_socket(None, None), PathBuf::from(DEFAULT_SOCKET));
    }

    #[tokio::test]
    async fn missing_socket_is_not_running() {
        let dir = temp_dir("missing");
        let socket = dir.join("nothing-here.sock");
        let err = Client::new(&socket).status().await.unwrap_err();
        assert!(
            matches!(&err, ClientError::NotRunning { socket: s } if *s == socket),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(&socket.display().to_string()), "{msg}");
        assert!(msg.contains("is it running?"), "{msg}");
        assert!(msg.contains("sudo leash daemon"), "{msg}");
        assert!(msg.contains("LEASH_SOCKET"), "{msg}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn socket_without_listener_is_not_running() {
        let dir = temp_dir("refused");
        let socket = dir.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = Client::new(&socket).list_tasks().await.unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn error_body_maps_to_api_error() {
        let dir = temp_dir("404");
        let body = r#"{"error":{"code":"not_found","message":"no task nope/1: list tasks with `leash task list`"}}"#;
        let (socket, server) = serve_once(&dir, vec![response("404 Not Found", body)]);
        let err = Client::new(&socket).get_task("nope/1").await.unwrap_err();
        match &err {
            ClientError::Api {
                status,
                code,
                message,
            } => {
                assert_eq!(*status, 404);
                assert_eq!(code, "not_found");
                assert!(message.starts_with("no task nope/1"), "{message}");
            }
            other => panic!("expected an API error, got {other:?}"),
        }
        assert!(err.to_string().ends_with("(not_found)"), "{err}");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /v1/tasks/nope%2F1 HTTP/1.1\r\n"),
            "{request}"
        );
        let lower = request.to_ascii_lowercase();
        assert!(lower.contains("\r\nhost: leash\r\n"), "{request}");
        assert!(
            lower.contains("\r\ncontent-type: application/json\r\n"),
            "{request}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn error_without_body_is_protocol_error() {
        let dir = temp_dir("502");
        let (socket, server) = serve_once(&dir, vec![response("502 Bad Gateway", "oops")]);
        let err = Client::new(&socket).status().await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Protocol(m) if m.contains("502") && m.contains("oops")),
            "{err:?}"
        );
        server.await.unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn create_task_sends_json_and_parses_task() {
        let dir = temp_dir("create");
        let task = r#"{"id":"00000000000000ab","agent":"cli","spiffe_id":"spiffe://leash.local/agent/cli/task/00000000000000ab","mode":"enforce","state":"created","created_at":"2025-01-01T00:00:00Z","expires_at":"2025-01-01T00:10:00Z","grants":[{"id":"g1","kind":"exec","spec":"/usr/bin/git","resolved":["/usr/bin/git 8:1:42"]}],"attached_pids":[]}"#;
        let (socket, server) = serve_once(&dir, vec![response("201 Created", task)]);
        let req = CreateTask {
            agent: "cli".into(),
            grants: crate::protocol::Grants {
                exec: vec!["/usr/bin/git".into()],
                connect: vec![],
            },
            ttl_seconds: Some(600),
            ..CreateTask::default()
        };
        let got = Client::new(&socket).create_task(&req).await.unwrap();
        assert_eq!(got.id, "00000000000000ab");
        assert_eq!(got.grants[0].id, "g1");
        let request = server.await.unwrap();
        assert!(
            request.starts_with("POST /v1/tasks HTTP/1.1\r\n"),
            "{request}"
        );
        let body = &request[request.find("\r\n\r\n").unwrap() + 4..];
        let sent: CreateTask = serde_json::from_str(body).unwrap();
        assert_eq!(sent, req);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn events_stream_across_chunks() {
        let dir = temp_dir("events");
        let event = |n: u32| {
            format!(
                r#"{{"ts":"2025-01-01T00:00:0{n}.000000000Z","task":"00000000000000ab","agent":"cli","spiffe_id":"spiffe://x/agent/cli/task/00000000000000ab","pid":{n},"comm":"curl","kind":"connect","verdict":"denied","target":{{"addr":"10.0.0.1","port":443}},"reason":"no grant"}}"#
            )
        };
        let lagged = r#"{"lagged":7,"note":"this follower fell behind"}"#;
        let body = format!("{}\n{}\n\n{lagged}\n{}", event(1), event(2), event(3));
        // Split the body at awkward places: inside a line, right after a newline.
        let (a, rest) = body.split_at(40);
        let (b, c) = rest.split_at(rest.find('\n').unwrap() + 1);
        let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len()).into_bytes();
        let chunks = vec![
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
            chunk(a),
            chunk(b),
            chunk(c),
            b"0\r\n\r\n".to_vec(),
        ];
        let (socket, server) = serve_once(&dir, chunks);
        let mut stream = Client::new(&socket)
            .events(true, Some("00000000000000ab"))
            .await
            .unwrap();
        let mut pids = Vec::new();
        let mut lagged = Vec::new();
        while let Some(item) = stream.next().await.unwrap() {
            match item {
                EventItem::Event(ev) => pids.push(ev.pid),
                EventItem::Lagged(n) => lagged.push(n),
                EventItem::Other(line) => panic!("unexpected {line}"),
            }
        }
        assert_eq!(pids, [1, 2, 3]);
        assert_eq!(lagged, [7]);
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /v1/events?follow=true&task=00000000000000ab HTTP/1.1\r\n"),
            "{request}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn line_decoder_handles_any_split() {
        let text = "{\"a\":1}\r\n\n{\"b\":\"é\"}\n{\"c\":3}";
        let bytes = text.as_bytes();
        for size in 1..=bytes.len() {
            let mut dec = LineDecoder::default();
            let mut lines = Vec::new();
            for chunk in bytes.chunks(size) {
                dec.push(chunk).unwrap();
                while let Some(line) = dec.next_line().unwrap() {
                    lines.push(line);
                }
            }
            lines.extend(dec.finish().unwrap());
            assert_eq!(
                lines,
                ["{\"a\":1}", "{\"b\":\"é\"}", "{\"c\":3}"],
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn event_lines_are_classified() {
        assert_eq!(
            parse_event_line(r#"{"lagged":3,"note":"x"}"#).unwrap(),
            EventItem::Lagged(3)
        );
        assert!(matches!(
            parse_event_line(r#"{"hello":1}"#).unwrap(),
            EventItem::Other(_)
        ));
        assert!(matches!(
            parse_event_line("not json"),
            Err(ClientError::Protocol(_))
        ));
        // Looks like an event but misses fields.
        assert!(matches!(
            parse_event_line(r#"{"ts":"x","verdict":"denied"}"#),
            Err(ClientError::Protocol(_))
        ));
    }

    #[test]
    fn line_decoder_limits_line_length() {
        let mut dec = LineDecoder::default();
        dec.push(&vec![b'x'; MAX_EVENT_LINE]).unwrap();
        assert!(dec.push(b"xx").is_err());
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(task_path("00ab"), "/v1/tasks/00ab");
        assert_eq!(task_path("../x y"), "/v1/tasks/..%2Fx%20y");
        assert_eq!(events_path(false, None), "/v1/events");
        assert_eq!(events_path(true, None), "/v1/events?follow=true");
        assert_eq!(events_path(false, Some("a&b")), "/v1/events?task=a%26b");
    }
}
