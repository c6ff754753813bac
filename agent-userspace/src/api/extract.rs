//! Path and query extractors whose every failure is an [`ApiError`] in the documented
//! JSON shape: axum's own rejections are plain text (found by the `api_router` fuzz
//! target: `GET /v1/events?follow=trua` answered `400` with a text body).

use axum::{
    extract::{FromRequestParts, Path, Query},
    http::request::Parts,
};
use serde::de::DeserializeOwned;

use super::server::ApiError;

/// `Path<T>`, rejected as `400 bad_request`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "bad path: {}; docs/api.md lists the routes",
                    e.body_text()
                ))
            })
    }
}

/// `Query<T>`, rejected as `400 bad_request`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e| {
                ApiError::bad_request(format!(
                    "bad query: {}; docs/api.md lists the parameters",
                    e.body_text()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, http::Request, routing::get};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    use super::*;

    #[derive(serde::Deserialize)]
    struct Q {
        #[allow(dead_code, reason = "only parsed")]
        follow: bool,
    }

    async fn status_and_body(uri: &str) -> (u16, serde_json::Value) {
        let app = Router::new()
            .route("/q", get(|ApiQuery(_q): ApiQuery<Q>| async { "ok" }))
            .route(
                "/p/{n}",
                get(|ApiPath(n): ApiPath<u8>| async move { n.to_string() }),
            );
        let resp = app
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    #[tokio::test]
    async fn bad_queries_and_paths_get_the_json_error_shape() {
        for uri in ["/q?follow=trua", "/q?follow", "/p/300", "/p/%FF"] {
            let (status, body) = status_and_body(uri).await;
            assert_eq!(status, 400, "{uri}");
            assert_eq!(body["error"]["code"], "bad_request", "{uri}: {body}");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        assert_eq!(status_and_body("/q?follow=true").await.0, 200);
    }
}
