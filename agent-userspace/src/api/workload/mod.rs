//! The SPIFFE Workload API's JWT calls, served as gRPC on the API socket itself (HTTP/2
//! beside the REST API's HTTP/1.1): a task's process fetches a JWT-SVID for its own task
//! and the bundle to check it with, and any caller can ask the daemon to validate a
//! token. The socket is already open to every tagged process and guarded from them, so
//! this adds no path that needs guarding. Who the caller is comes from the kernel's tag
//! of the connecting process (the same `Caller` the REST routes get), never from the
//! request.

pub mod messages;

use std::{collections::HashMap, sync::Arc};

use axum::{
    Router,
    body::Body,
    extract::{Request, State},
    response::Response,
    routing::post,
};
use messages::{
    JwtBundlesRequest, JwtBundlesResponse, JwtSvid, JwtSvidRequest, JwtSvidResponse,
    ValidateJwtSvidRequest, ValidateJwtSvidResponse,
};
use tonic::{Status, server::Grpc};
use tonic_prost::ProstCodec;

use crate::{
    auth::Caller,
    daemon::{Daemon, RegistryError},
};

/// The header every Workload API request carries (the spec's guard against a browser
/// or a server-side request forgery reaching the socket).
const SECURITY_HEADER: &str = "workload.spiffe.io";

/// Largest request message: an audience list or a token.
const MAX_MESSAGE: usize = 64 * 1024;

type Shared = Arc<Daemon>;

/// The Workload API's routes, added to the API's router (under its authentication).
pub fn routes(router: Router<Shared>) -> Router<Shared> {
    router
        .route("/SpiffeWorkloadAPI/FetchJWTSVID", post(fetch_jwt_svid))
        .route(
            "/SpiffeWorkloadAPI/FetchJWTBundles",
            post(fetch_jwt_bundles),
        )
        .route(
            "/SpiffeWorkloadAPI/ValidateJWTSVID",
            post(validate_jwt_svid),
        )
}

fn grpc<E, D>() -> Grpc<ProstCodec<E, D>>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    Grpc::new(ProstCodec::default()).max_decoding_message_size(MAX_MESSAGE)
}

/// `InvalidArgument` unless the request carries the security header.
fn require_header<T>(r: &tonic::Request<T>) -> Result<(), Status> {
    match r.metadata().get(SECURITY_HEADER).map(|v| v.to_str()) {
        Some(Ok("true")) => Ok(()),
        _ => Err(Status::invalid_argument(format!(
            "security header missing from request: {SECURITY_HEADER}: true"
        ))),
    }
}

/// A registry refusal as a gRPC status.
fn status(e: &RegistryError) -> Status {
    let message = e.to_string();
    match e {
        RegistryError::BadRequest(_) => Status::invalid_argument(message),
        RegistryError::Refused { .. }
        | RegistryError::Forbidden(_)
        | RegistryError::NoTask(_)
        | RegistryError::Ended(_) => Status::permission_denied(message),
        _ => Status::unavailable(message),
    }
}

/// Runs daemon work that takes its lock or signs off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("the call failed: {e}")))?
}

async fn fetch_jwt_svid(State(d): State<Shared>, req: Request) -> Response {
    let caller = req.extensions().get::<Caller>().cloned();
    let call = tower::service_fn(move |r: tonic::Request<JwtSvidRequest>| {
        let (d, caller) = (Arc::clone(&d), caller.clone());
        async move {
            require_header(&r)?;
            let caller = caller.ok_or_else(|| Status::unauthenticated("no caller"))?;
            let want = r.into_inner();
            blocking(move || {
                let audiences: Vec<&str> = want.audience.iter().map(String::as_str).collect();
                let token = d
                    .issue_token_for(&caller, &audiences)
                    .map_err(|e| status(&e))?;
                if !want.spiffe_id.is_empty() && want.spiffe_id != token.spiffe_id {
                    return Err(Status::permission_denied(format!(
                        "this caller's identity is {}, not {}",
                        token.spiffe_id, want.spiffe_id
                    )));
                }
                Ok(tonic::Response::new(JwtSvidResponse {
                    svids: vec![JwtSvid {
                        spiffe_id: token.spiffe_id,
                        svid: token.token,
                        hint: String::new(),
                    }],
                }))
            })
            .await
        }
    });
    grpc().unary(call, req).await.map(Body::new)
}

/// One message with the node's bundle; the stream then ends (a watcher asks again:
/// keys are published `task_tokens.publish_ahead` before they sign).
/// `FetchJWTBundles` is a stream: the bundle now, then again whenever the JWKS changes
/// (a key made or retired), until the client goes away.
async fn fetch_jwt_bundles(State(d): State<Shared>, req: Request) -> Response {
    let call = tower::service_fn(move |r: tonic::Request<JwtBundlesRequest>| {
        let d = Arc::clone(&d);
        async move {
            require_header(&r)?;
            let first = bundle_json(&d)?;
            let message = bundles_message(&d, first.clone());
            let changes = futures_util::stream::unfold((d, first), |(d, last)| async move {
                loop {
                    tokio::time::sleep(d.tokens.bundle_poll).await;
                    match bundle_json(&d) {
                        Ok(json) if json == last => {}
                        Ok(json) => {
                            let message = bundles_message(&d, json.clone());
                            return Some((Ok(message), (d, json)));
                        }
                        // Said once; the client reconnects.
                        Err(status) => return Some((Err(status), (d, last))),
                    }
                }
            });
            let stream = futures_util::StreamExt::chain(
                tokio_stream::once(Ok::<_, Status>(message)),
                changes,
            );
            Ok::<_, Status>(tonic::Response::new(Box::pin(stream)))
        }
    });
    grpc().server_streaming(call, req).await.map(Body::new)
}

/// The JWKS as the bundle's bytes.
fn bundle_json(d: &Daemon) -> Result<Vec<u8>, Status> {
    let jwks = d
        .tokens
        .jwks()
        .map_err(|e| Status::unavailable(format!("no task identity tokens: {e}")))?;
    serde_json::to_vec(&jwks)
        .map_err(|e| Status::internal(format!("cannot encode the bundle: {e}")))
}

fn bundles_message(d: &Daemon, json: Vec<u8>) -> JwtBundlesResponse {
    let trust_domain = format!("spiffe://{}", d.limits.trust_domain);
    JwtBundlesResponse {
        bundles: HashMap::from([(trust_domain, json)]),
    }
}

async fn validate_jwt_svid(State(d): State<Shared>, req: Request) -> Response {
    let call = tower::service_fn(move |r: tonic::Request<ValidateJwtSvidRequest>| {
        let d = Arc::clone(&d);
        async move {
            require_header(&r)?;
            let want = r.into_inner();
            blocking(move || {
                let v = d
                    .validate_token(&want.audience, &want.svid)
                    .map_err(Status::invalid_argument)?;
                Ok(tonic::Response::new(ValidateJwtSvidResponse {
                    spiffe_id: v.spiffe_id,
                    claims: Some(messages::to_struct(&v.claims)),
                }))
            })
            .await
        }
    });
    grpc().unary(call, req).await.map(Body::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_without_the_security_header_is_refused() {
        let bare = tonic::Request::new(());
        let refused = require_header(&bare).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        assert!(refused.message().contains(SECURITY_HEADER));
        let mut wrong = tonic::Request::new(());
        wrong
            .metadata_mut()
            .insert(SECURITY_HEADER, "yes".parse().unwrap());
        assert!(require_header(&wrong).is_err());
        let mut good = tonic::Request::new(());
        good.metadata_mut()
            .insert(SECURITY_HEADER, "true".parse().unwrap());
        assert!(require_header(&good).is_ok());
    }
}
