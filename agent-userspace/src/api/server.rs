//! The API server: axum on a Unix socket. The caller is the process that connected,
//! held from accept on (see `peer.rs`), never anything the request says; a caller
//! inside a task may read its own task and change nothing but the child tasks it
//! delegates (`daemon/delegation.rs`).

use std::{convert::Infallible, sync::Arc};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Request, State},
    http::{StatusCode, header::AUTHORIZATION},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use futures_util::StreamExt as _;
use serde::de::DeserializeOwned;
use tokio::net::UnixListener;

use crate::{
    api::{
        extract::{ApiPath, ApiQuery},
        peer::{Peer, PeerListener},
    },
    auth::{AuthError, Caller, Standing},
    daemon::{Daemon, RegistryError, scoped::ReadScope},
    protocol::{self, EndReason, ErrorBody, ErrorDetail, TaskId},
};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 64 * 1024;

/// An API error: status, stable code, and a message that says how to fix it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// `400 bad_request` with `message`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::BadRequest(_) => Self::new(StatusCode::BAD_REQUEST, "bad_request", msg),
            RegistryError::Grant(_) => Self::new(StatusCode::BAD_REQUEST, "bad_grant", msg),
            RegistryError::NoTask(_) | RegistryError::NoGrant { .. } => {
                Self::new(StatusCode::NOT_FOUND, "not_found", msg)
            }
            RegistryError::Ended(_) | RegistryError::Conflict(_) => {
                Self::new(StatusCode::CONFLICT, "conflict", msg)
            }
            RegistryError::Forbidden(_) => Self::new(StatusCode::FORBIDDEN, "forbidden", msg),
            RegistryError::Refused { code, .. } => Self::new(StatusCode::FORBIDDEN, code, msg),
            RegistryError::MapFull(_) => {
                Self::new(StatusCode::INSUFFICIENT_STORAGE, "map_full", msg)
            }
            RegistryError::Kernel(_) | RegistryError::Scope(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}

/// JSON body whose every failure is an [`ApiError`] naming the problem.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("request body larger than {BODY_LIMIT} bytes"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("cannot read the body: {e}"),
                )
            }
        })?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("invalid JSON body: {e}; docs/api.md lists the fields"),
            )
        })
    }
}

type Shared = Arc<Daemon>;

/// Authenticates every request (the connecting process as it stands now, its
/// credentials, then any bearer token) and hands the [`Caller`] to the handlers.
async fn authenticate(
    State(d): State<Shared>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let header = req
        .headers()
        .get(AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let (pid, standing) = peer.standing(&d);
    let mut caller = d
        .gate
        .auth
        .authenticate(pid, peer.uid, peer.gid, header.as_deref())
        .map_err(|e| match e {
            AuthError::NotAllowed { .. } | AuthError::NoCredentials => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            AuthError::Token(_) | AuthError::BadHeader => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
            }
        })?;
    caller.standing = standing;
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

/// Refuses mutating calls from a process inside a task (a task can never widen its own
/// grants) and from a connection whose connecting process has exited or been replaced
/// (it could be a task's child speaking on its parent's connection).
fn mutating(peer: &Caller) -> Result<(), ApiError> {
    match peer.standing {
        Standing::Host => Ok(()),
        Standing::InTask(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "caller_in_task",
            "the caller runs inside a leash task (or did when it connected); processes of a \
             task cannot change tasks or grants: call from outside the task, or create a child \
             task within the task's grants (leash run --delegate, \"delegate\": true)",
        )),
        Standing::Gone => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "caller_gone",
            "the process that opened this connection has exited or its pid now names another \
             process, so the caller cannot be known to be outside every task: open a new \
             connection from the process that sends the request",
        )),
    }
}

/// A create: from outside every task, or from inside one as a delegation (a child of
/// the caller's own task, within its grants).
fn creating(peer: &Caller, delegate: bool) -> Result<(), ApiError> {
    match (peer.standing, delegate) {
        (Standing::Host, false) | (Standing::InTask(_), true) => Ok(()),
        (Standing::Host, true) => Err(ApiError::bad_request(
            "\"delegate\": true makes a child of the caller's own task, and the caller runs \
             outside every task: omit delegate",
        )),
        _ => mutating(peer),
    }
}

/// A change of task `id`: from outside every task, or from inside a task to one of
/// the tasks it delegated (never the caller's own task).
fn changing(d: &Daemon, peer: &Caller, id: u64) -> Result<(), ApiError> {
    match peer.standing {
        Standing::InTask(t) => d.check_descendant(t, id).map_err(ApiError::from),
        _ => mutating(peer),
    }
}

fn task_id(s: &str) -> Result<u64, ApiError> {
    s.parse::<TaskId>()
        .map(|id| id.0)
        .map_err(|e| ApiError::from(RegistryError::from(e)))
}

/// Runs a blocking registry operation off the async threads (it makes syscalls and
/// may resolve DNS names).
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    // On the daemon's multi-thread runtime the work (a few µs of map and file calls)
    // runs in place, its other tasks moved to the second worker: no hand-off to the
    // blocking pool and back, two thread wake-ups on every request.
    if tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread
    {
        return tokio::task::block_in_place(f).map_err(ApiError::from);
    }
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("worker failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

async fn create_task(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(req): JsonBody<protocol::CreateTask>,
) -> Result<impl IntoResponse, ApiError> {
    creating(&caller, req.delegate)?;
    let task = blocking(move || d.create_task_as(&caller, req)).await?;
    Ok((StatusCode::CREATED, axum::Json(task)))
}

async fn list_tasks(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiQuery(filter): ApiQuery<protocol::TaskFilter>,
) -> Result<impl IntoResponse, ApiError> {
    let tasks = filter.apply(
        d.list_for(&caller, &filter),
        time::OffsetDateTime::now_utc(),
    )?;
    Ok(axum::Json(tasks))
}

impl From<protocol::FilterError> for ApiError {
    fn from(e: protocol::FilterError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    }
}

async fn get_task(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    Ok(axum::Json(d.task_for(&caller, task_id(&id)?)?))
}

/// The task's distinct refusals and the grants that allow them (its own task only,
/// from inside one).
async fn suggestion(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<protocol::SuggestionQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let task = d.task_for(&caller, task_id(&id)?)?;
    let synced = q.sync && d.events_sync.wait(SYNC_WAIT).await;
    let mut refusals = d.audit.refusals.of(&task.id);
    refusals.synced = synced;
    Ok(axum::Json(refusals))
}

/// How long `?sync=true` waits for the event pump.
const SYNC_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET /v1/self/token?audience=X`: a JWT-SVID for the caller's own task.
async fn self_token(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<protocol::TokenQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let token = blocking(move || d.issue_token(&caller, &q.audience)).await?;
    Ok(axum::Json(token))
}

/// `GET /v1/jwks`: the keys that sign task identity tokens.
async fn jwks(State(d): State<Shared>) -> Result<impl IntoResponse, ApiError> {
    d.tokens.jwks().map(axum::Json).map_err(|e| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("no task identity tokens on this node: {e}"),
        )
    })
}

async fn end_task(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = task_id(&id)?;
    changing(&d, &caller, id)?;
    Ok(axum::Json(
        blocking(move || {
            d.check_narrowing(&caller, id)?;
            d.end_task(id, EndReason::Ended)
        })
        .await?,
    ))
}

async fn add_grant(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
    JsonBody(req): JsonBody<protocol::AddGrant>,
) -> Result<impl IntoResponse, ApiError> {
    let id = task_id(&id)?;
    changing(&d, &caller, id)?;
    let (grant_id, pending) = blocking(move || d.add_grant_as(&caller, id, &req)).await?;
    Ok((
        if pending {
            StatusCode::ACCEPTED
        } else {
            StatusCode::CREATED
        },
        axum::Json(protocol::GrantAdded { grant_id, pending }),
    ))
}

/// `POST .../grants/{gid}/approve` and `.../deny`.
async fn decide(
    d: Shared,
    caller: Caller,
    id: &str,
    gid: String,
    approve: bool,
) -> Result<StatusCode, ApiError> {
    mutating(&caller)?;
    let id = task_id(id)?;
    blocking(move || {
        if approve {
            d.approve(&caller, id, &gid)
        } else {
            d.reject(&caller, id, &gid)
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn approve_grant(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, gid)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    decide(d, caller, &id, gid, true).await
}

async fn deny_grant(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, gid)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    decide(d, caller, &id, gid, false).await
}

async fn revoke_grant(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath((id, gid)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let id = task_id(&id)?;
    changing(&d, &caller, id)?;
    blocking(move || {
        d.check_narrowing(&caller, id)?;
        d.revoke_grant(id, &gid, "requested")
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn attach(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = task_id(&id)?;
    changing(&d, &caller, id)?;
    // `changing` refused callers without a pid.
    let pid = caller.pid.unwrap_or_default();
    let task = TaskId(id).to_string();
    blocking(move || d.attach_as(&caller, id, pid)).await?;
    Ok(axum::Json(protocol::Attached { task, pid }))
}

async fn events(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<protocol::EventFilter>,
) -> Result<Response, ApiError> {
    if let Some(t) = &q.task {
        task_id(t)?;
    }
    let wanted = q.compile(time::OffsetDateTime::now_utc())?;
    // From inside a task, only its own events (another task's id gives none).
    let scope = ReadScope::of(&caller);
    let to_line = |e: &protocol::AuditEvent| {
        let mut v = serde_json::to_vec(e).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    };
    // Subscribe before reading the backlog, so nothing falls between the two.
    let rx = q.follow.then(|| d.audit.subscribe());
    let recent: Vec<Bytes> = if q.wants_backlog() {
        let mut kept: Vec<_> = d
            .audit
            .recent(q.task.as_deref())
            .into_iter()
            .filter(|e| scope.sees_event(&e.task) && wanted.matches(e))
            .collect();
        // Only what is sent is encoded: `--tail 20` of 10 000 events encodes 20.
        if let Some(tail) = q.tail {
            kept.drain(..kept.len().saturating_sub(tail));
        }
        kept.iter().map(|e| to_line(e)).collect()
    } else {
        Vec::new()
    };
    let backlog = futures_util::stream::iter(recent.into_iter().map(Ok::<_, Infallible>));
    let Some(rx) = rx else {
        return Ok(Body::from_stream(backlog).into_response());
    };
    let following = futures_util::stream::unfold(rx, move |mut rx| {
        let wanted = wanted.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok(e) if wanted.matches(&e) && scope.sees_event(&e.task) => {
                        let mut v = serde_json::to_vec(&*e).unwrap_or_default();
                        v.push(b'\n');
                        return Some((Ok::<_, Infallible>(Bytes::from(v)), rx));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let note = serde_json::json!({ "lagged": n, "note": "this follower fell behind; the audit log has every event" });
                        let mut v = serde_json::to_vec(&note).unwrap_or_default();
                        v.push(b'\n');
                        return Some((Ok(Bytes::from(v)), rx));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Ok(Body::from_stream(backlog.chain(following)).into_response())
}

async fn status(
    State(d): State<Shared>,
    Extension(caller): Extension<Caller>,
) -> impl IntoResponse {
    axum::Json(
        tokio::task::spawn_blocking(move || d.status_for(&caller))
            .await
            .ok(),
    )
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; docs/api.md lists the routes",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; docs/api.md lists the methods",
    )
}

/// The API's routes.
pub fn router(daemon: Arc<Daemon>) -> Router {
    super::workload::routes(Router::new())
        .route("/v1/tasks", post(create_task).get(list_tasks))
        .route("/v1/tasks/{id}", get(get_task).delete(end_task))
        .route("/v1/tasks/{id}/grants", post(add_grant))
        .route("/v1/tasks/{id}/grants/{grant_id}", delete(revoke_grant))
        .route(
            "/v1/tasks/{id}/grants/{grant_id}/approve",
            post(approve_grant),
        )
        .route("/v1/tasks/{id}/grants/{grant_id}/deny", post(deny_grant))
        .route("/v1/tasks/{id}/attach", post(attach))
        .route("/v1/tasks/{id}/suggestion", get(suggestion))
        .route("/v1/self/token", get(self_token))
        .route("/v1/jwks", get(jwks))
        .route("/v1/events", get(events))
        .route("/v1/status", get(status))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&daemon),
            authenticate,
        ))
        .with_state(daemon)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    daemon: Arc<Daemon>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = PeerListener {
        inner: listener,
        daemon: Arc::clone(&daemon),
    };
    // By uid: one caller (a member of the socket's group) holding connections open
    // leaves the others, root included, their own places.
    let admission = Arc::clone(&daemon.listeners.api);
    crate::http::serve(
        listener,
        router(daemon),
        admission,
        |p: &Peer| p.uid,
        "api",
        shutdown,
    )
    .await
}
