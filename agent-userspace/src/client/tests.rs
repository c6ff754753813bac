//! The client against a fake daemon that answers one connection with canned bytes.

use std::sync::atomic::{AtomicU32, Ordering};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixListener,
};

use super::*;
use crate::protocol::{CreateTask, EventFilter, TaskFilter};

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
    let err = Client::new(&socket)
        .list_tasks(&TaskFilter::default())
        .await
        .unwrap_err();
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
        matches!(&err, ClientError::NoErrorBody { status, body } if status.as_u16() == 502 && body == "oops"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 502 Bad Gateway without an error body: oops"),
        "{msg}"
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
            files: vec![],
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
        .events(&EventFilter {
            follow: true,
            task: Some("00000000000000ab".into()),
            ..EventFilter::default()
        })
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
    assert_eq!(pids, [Some(1), Some(2), Some(3)]);
    assert_eq!(lagged, [7]);
    let request = server.await.unwrap();
    assert!(
        request.starts_with("GET /v1/events?follow=true&task=00000000000000ab HTTP/1.1\r\n"),
        "{request}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn paths_are_encoded() {
    assert_eq!(task_path("00ab"), "/v1/tasks/00ab");
    assert_eq!(task_path("../x y"), "/v1/tasks/..%2Fx%20y");
    assert_eq!(query_string(&EventFilter::default()), "");
    let filter = EventFilter {
        follow: true,
        task: Some("a&b".into()),
        tail: Some(5),
        since: Some("2026-12-02T10:00:00+01:00".into()),
        ..EventFilter::default()
    };
    assert_eq!(
        query_string(&filter),
        "?follow=true&task=a%26b&since=2026-12-02T10%3A00%3A00%2B01%3A00&tail=5"
    );
    let tasks = TaskFilter {
        active: true,
        limit: Some(3),
        ..TaskFilter::default()
    };
    assert_eq!(query_string(&tasks), "?active=true&limit=3");
}
