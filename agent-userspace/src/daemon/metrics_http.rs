//! The metrics listener: `/metrics`, `/healthz` and `/readyz`. Health comes up before
//! the programs load, so an orchestrator sees "alive, not ready" meanwhile.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use tokio::net::TcpListener;

use super::Daemon;
use crate::{http::Admission, metrics::to_prometheus_text};

/// What `/readyz` checks; the daemon sets these as it comes up.
#[derive(Default)]
pub(super) struct Readiness {
    pub(super) attached: AtomicBool,
    pub(super) events_running: AtomicBool,
}

/// State shared by the metrics routes.
#[derive(Clone)]
pub(super) struct MetricsState {
    pub(super) ready: Arc<Readiness>,
    pub(super) daemon: Arc<tokio::sync::OnceCell<Arc<Daemon>>>,
}

async fn metrics(
    State(s): State<MetricsState>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let Some(d) = s.daemon.get().cloned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "enforcement is starting\n".to_owned(),
        )
            .into_response();
    };
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    match tokio::task::spawn_blocking(move || d.metrics_text()).await {
        Ok(text) if openmetrics => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
            to_prometheus_text(&text),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("scrape failed: {e}\n"),
        )
            .into_response(),
    }
}

/// `/.well-known/jwks.json`: the keys of task identity tokens, for verifiers.
async fn jwks(State(s): State<MetricsState>) -> axum::response::Response {
    let Some(d) = s.daemon.get().cloned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    match d.tokens.jwks() {
        Ok(set) => axum::Json(set).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

/// `/.well-known/openid-configuration`: enough OIDC discovery for stock verifiers.
async fn openid(
    State(s): State<MetricsState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let Some(d) = s.daemon.get().cloned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let issuer = d.tokens.issuer.clone();
    let base = if issuer.starts_with("http://") || issuer.starts_with("https://") {
        issuer.trim_end_matches('/').to_owned()
    } else {
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}")
    };
    axum::Json(serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "id_token_signing_alg_values_supported": ["ES256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
    }))
    .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<MetricsState>) -> impl IntoResponse {
    let mut missing = Vec::new();
    if !s.ready.attached.load(Ordering::Acquire) {
        missing.push("programs not attached");
    }
    if !s.ready.events_running.load(Ordering::Acquire) {
        missing.push("event reader not running");
    }
    if let Some(d) = s.daemon.get() {
        if !d.maps_reachable() {
            missing.push("maps unreachable");
        }
    } else {
        missing.push("daemon starting");
    }
    if missing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", missing.join(", ")),
        )
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` resolves, with its own
/// connection budget (by client address), so that health answers whatever the API
/// socket suffers.
pub(super) async fn serve(
    listener: TcpListener,
    state: MetricsState,
    admission: Arc<Admission<IpAddr>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(openid))
        .with_state(state);
    crate::http::serve(
        listener,
        app,
        admission,
        |a: &SocketAddr| a.ip(),
        "metrics",
        shutdown,
    )
    .await
}
