//! Requests through the real API router (`api::server::router`) of a real daemon,
//! in-process with `tower::ServiceExt::oneshot`: any method, path, query, headers
//! (bearer tokens among them) and body, written as HTTP/1 text (see [`request`]). Every error is the documented JSON shape
//! (`{"error":{"code","message"}}`) with a 4xx status (507 when a map is full), never a
//! 500 or a panic.
#![no_main]

use std::sync::{Mutex, OnceLock};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, StatusCode},
};
use http_body_util::BodyExt as _;
use leash_fuzz::daemon::Fixture;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tower::ServiceExt as _;

struct State {
    rt: tokio::runtime::Runtime,
    fixture: Fixture,
    router: Router,
    /// The standing task, its pending grant's id, and the task as made (an input
    /// that changed it has it made again).
    task: String,
    grant: String,
    snapshot: Value,
}

fn state() -> &'static Mutex<State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fixture = rt.block_on(async { Fixture::start() });
        let router = leash::api::server::router(fixture.daemon.clone());
        let mut s = State {
            rt,
            fixture,
            router,
            task: String::new(),
            grant: String::new(),
            snapshot: Value::Null,
        };
        s.standing_task();
        Mutex::new(s)
    })
}

impl State {
    /// The caller's peer; a new caller is accepted as a tokio stream, so in the runtime.
    fn peer(&mut self) -> leash::api::peer::Peer {
        let _rt = self.rt.enter();
        self.fixture.peer()
    }

    fn call(&mut self, req: Request<Body>) -> (StatusCode, Option<Vec<u8>>) {
        let mut req = req;
        req.extensions_mut().insert(ConnectInfo(self.peer()));
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = router.oneshot(req).await.expect("the router is infallible");
            let status = resp.status();
            // A success may be a stream that never ends (`events?follow`): only errors
            // are read.
            if status.is_success() {
                return (status, None);
            }
            let body = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                resp.into_body().collect(),
            )
            .await
            .expect("an error body ends")
            .expect("an error body reads")
            .to_bytes();
            (status, Some(body.to_vec()))
        })
    }

    /// A request of the harness's own; made again from a new caller when an input had
    /// the caller killed (`caller_gone`).
    fn json(&mut self, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
        let (status, v) = self.json_once(method, uri, body);
        if status == StatusCode::FORBIDDEN && v["error"]["code"] == "caller_gone" {
            let _rt = self.rt.enter();
            self.fixture.renew();
            drop(_rt);
            return self.json_once(method, uri, body);
        }
        (status, v)
    }

    fn json_once(&mut self, method: &str, uri: &str, body: &Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {}", self.fixture.token))
            .body(Body::from(body.to_string()))
            .unwrap();
        let mut req = req;
        req.extensions_mut().insert(ConnectInfo(self.peer()));
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = router.oneshot(req).await.unwrap();
            let status = resp.status();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    /// Ends every task but the standing one, and makes a new standing task when it
    /// ended or an input changed it: each input starts from the same state.
    fn standing_task(&mut self) {
        // Only the live ones: the ended pile up over a long run, and listing them all
        // after every input made the run slower and slower.
        let (_, list) = self.json("GET", "/v1/tasks?active=true", &Value::Null);
        let mut standing = false;
        for t in list.as_array().into_iter().flatten() {
            let Some(id) = t["id"].as_str() else {
                continue;
            };
            if id == self.task && *t == self.snapshot {
                standing = true;
            } else {
                let id = id.to_owned();
                self.json("DELETE", &format!("/v1/tasks/{id}"), &Value::Null);
            }
        }
        if standing {
            return;
        }
        let (status, task) = self.json(
            "POST",
            "/v1/tasks",
            &json!({"agent": "fuzz-a", "ttl_seconds": 3600,
                    "grants": {"exec": ["/usr/bin/env"], "connect": ["127.0.0.1:80/tcp"]}}),
        );
        assert_eq!(status, StatusCode::CREATED, "the standing task: {task}");
        self.task = task["id"].as_str().expect("a task id").to_owned();
        let (status, added) = self.json(
            "POST",
            &format!("/v1/tasks/{}/grants", self.task),
            &json!({"connect": "10.1.2.3:443/tcp"}),
        );
        assert_eq!(status, StatusCode::ACCEPTED, "a pending grant: {added}");
        self.grant = added["grant_id"].as_str().expect("a grant id").to_owned();
        let (_, task) = self.json("GET", &format!("/v1/tasks/{}", self.task), &Value::Null);
        self.snapshot = task;
    }
}

/// A request in HTTP/1 text: `METHOD TARGET`, header lines, an empty line, the body.
/// `{task}` and `{grant}` in the target and the body name the standing task and its
/// pending grant; `{token}` is a valid bearer token of agent `fuzz-a`.
fn request(data: &[u8], task: &str, grant: &str, token: &str) -> Option<(String, Request<Body>)> {
    let sub = |b: &[u8]| -> Vec<u8> {
        let text = String::from_utf8_lossy(b);
        if text.contains('{') {
            text.replace("{task}", task)
                .replace("{grant}", grant)
                .replace("{token}", token)
                .into_bytes()
        } else {
            b.to_vec()
        }
    };
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head.split(|&b| b == b'\n');
    let first = lines.next()?;
    let sp = first.iter().position(|&b| b == b' ')?;
    let method = String::from_utf8_lossy(&first[..sp]).into_owned();
    let target = sub(&first[sp + 1..]);
    let mut builder = Request::builder()
        .method(method.as_bytes())
        .uri(target.as_slice());
    for line in lines.take(16) {
        let colon = line.iter().position(|&b| b == b':')?;
        let value = line[colon + 1..]
            .strip_prefix(b" ")
            .unwrap_or(&line[colon + 1..]);
        builder = builder.header(&line[..colon], sub(value));
    }
    // What hyper would have refused before the router is not a request.
    let req = builder.body(Body::from(sub(body))).ok()?;
    Some((method, req))
}

fuzz_target!(|data: &[u8]| {
    let mut st = state()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (task, grant, token) = (st.task.clone(), st.grant.clone(), st.fixture.token.clone());
    let Some((method, req)) = request(data, &task, &grant, &token) else {
        return;
    };
    let shown = String::from_utf8_lossy(data).into_owned();
    let (status, body) = st.call(req);
    assert_ne!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{shown:?}: {body:?}"
    );
    if let Some(body) = body
        && method != "HEAD"
    {
        let ok_status = status.is_client_error() || status == StatusCode::INSUFFICIENT_STORAGE;
        assert!(ok_status, "{shown:?} got {status}");
        let v: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{shown:?} got {status} with a body that is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        let err = &v["error"];
        assert!(
            v.as_object().is_some_and(|o| o.len() == 1)
                && err.as_object().is_some_and(|o| o.len() == 2)
                && err["code"].as_str().is_some_and(|c| !c.is_empty())
                && err["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{shown:?} got {status} with {v}"
        );
    }
    // A read changes no task.
    if method != "GET" && method != "HEAD" {
        st.standing_task();
    }
});
