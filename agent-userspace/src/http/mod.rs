//! Serving HTTP/1.1 (and HTTP/2 by prior knowledge, for gRPC) under limits, for the API socket and the metrics listener: a
//! bounded number of connections in total and per peer (`admission`), a deadline for a
//! request's headers (which also closes idle kept-alive connections) and one for the
//! whole request, its body included. Garbage, oversized headers and slow clients cost
//! one connection's place for a bounded time, and never the other callers' service.

mod admission;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

pub use admission::{Admission, Limits, Overload, Permit};
use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, Response, StatusCode, header::CONTENT_TYPE},
    serve::Listener,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::sync::watch;
use tower::ServiceExt as _;

/// Largest request head: a request line and headers past it get 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Concurrent requests on one HTTP/2 connection.
const H2_STREAMS: u32 = 16;

/// How long a connection is served before it is asked to finish.
const MAX_CONNECTION_AGE: Duration = Duration::from_mins(2);

/// Serves `router` on `listener` until `shutdown` resolves, admitting connections by
/// `key` of their peer. Each request carries `ConnectInfo` of its peer. Returns once
/// every connection has finished (the caller bounds how long it waits).
pub async fn serve<L, K>(
    mut listener: L,
    router: Router,
    admission: Arc<Admission<K>>,
    key: impl Fn(&L::Addr) -> K + Send,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()>
where
    L: Listener,
    L::Addr: Clone + Send + Sync + 'static,
    K: Eq + std::hash::Hash + Clone + Send + Sync + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let permit = match admission.admit(key(&addr)) {
            Ok(p) => p,
            Err(why) => {
                admission.overload.warn(name, why);
                drop(io);
                continue;
            }
        };
        let conn = Connection {
            router: router.clone(),
            limits: *admission.limits(),
            overload: Arc::clone(&admission.overload),
            stop: stop_rx.clone(),
        };
        tokio::spawn(conn.run(io, addr, permit));
    }
    let _ = stop_tx.send(true);
    while admission.overload.open.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

struct Connection {
    router: Router,
    limits: Limits,
    overload: Arc<Overload>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run<Io, A, K>(mut self, io: Io, addr: A, permit: Permit<K>)
    where
        Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        A: Clone + Send + Sync + 'static,
        K: Eq + std::hash::Hash + Clone,
    {
        let (router, limits, overload) = (self.router, self.limits, self.overload);
        let started = Arc::new(AtomicBool::new(false));
        let first = Arc::clone(&started);
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            first.store(true, Ordering::Relaxed);
            req.extensions_mut().insert(ConnectInfo(addr.clone()));
            let (router, overload) = (router.clone(), Arc::clone(&overload));
            async move {
                let call = router.oneshot(req.map(Body::new));
                Ok::<_, Infallible>(
                    match tokio::time::timeout(limits.request_timeout, call).await {
                        Ok(Ok(response)) => response,
                        Ok(Err(never)) => match never {},
                        Err(_) => {
                            overload.timed_out.fetch_add(1, Ordering::Relaxed);
                            timed_out(limits.request_timeout)
                        }
                    },
                )
            }
        });
        // HTTP/1.1, or HTTP/2 by prior knowledge (gRPC: the Workload API).
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .max_buf_size(MAX_HEADER_BYTES)
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(H2_STREAMS)
            .max_header_list_size(MAX_HEADER_BYTES as u32);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        // An HTTP/2 connection has no header deadline to close it when idle: each
        // connection is asked to finish after a while (in-flight requests complete; a
        // gRPC client reconnects), so an idle one cannot hold its place for ever.
        let aged = tokio::time::sleep(MAX_CONNECTION_AGE);
        let mut aged = std::pin::pin!(aged);
        // Telling HTTP/1.1 from HTTP/2 reads before either protocol's own deadlines
        // run: a connection with no request by the header deadline is closed.
        let silent = tokio::time::sleep(limits.header_timeout);
        let mut silent = std::pin::pin!(silent);
        let mut heard = false;
        let mut closing = false;
        loop {
            tokio::select! {
                _ = conn.as_mut() => break,
                () = silent.as_mut(), if !heard => {
                    heard = true;
                    if !started.load(Ordering::Relaxed) {
                        break;
                    }
                }
                () = aged.as_mut(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                changed = self.stop.changed(), if !closing => {
                    if changed.is_err() || *self.stop.borrow() {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(permit);
    }
}

/// 408 with the API's error body.
fn timed_out(after: Duration) -> Response<Body> {
    let body = serde_json::json!({"error": {
        "code": "request_timeout",
        "message": format!(
            "the request did not complete within {after:?}: send the whole request at once"
        ),
    }});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = StatusCode::REQUEST_TIMEOUT;
    r.headers_mut().insert(
        CONTENT_TYPE,
        "application/json".parse().expect("a valid header value"),
    );
    r
}

/// Raises the soft limit of open descriptors to the hard one, so that the connection
/// limits, not the descriptor table, decide. Returns the soft limit now in force.
#[must_use]
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}
