//! One HTTP/1.1 exchange per connection on the daemon's socket, and the mapping of its
//! failures and error answers to [`ClientError`].

use std::io;

use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{AUTHORIZATION, CONTENT_TYPE, HOST},
};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::{Client, ClientError};
use crate::protocol::ErrorBody;

impl Client {
    /// Sends one request and parses a JSON answer, or maps an error answer.
    pub(super) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.exchange(method.clone(), path, body).await?;
        check(status, &bytes)?;
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            method,
            path: path.to_owned(),
            source,
        })
    }

    /// Sends one request and checks that the answer is a success, ignoring its body.
    pub(super) async fn call_empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let (status, body) = self.exchange(method, path, None).await?;
        check(status, &body)
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

    pub(super) async fn request(
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
            .map_err(http_error)?;
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
            .map_err(ClientError::BuildRequest)?;
        sender.send_request(request).await.map_err(http_error)
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

pub(super) async fn collect(response: Response<Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(http_error)?
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

pub(super) fn error_answer(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(ErrorBody { error }) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: error.code,
            message: error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    ClientError::NoErrorBody {
        status,
        body: text.trim().chars().take(200).collect(),
    }
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(ClientError::Encode)
}

/// An I/O failure under hyper stays [`ClientError::Io`]; anything else is [`ClientError::Http`].
pub(super) fn http_error(e: hyper::Error) -> ClientError {
    match std::error::Error::source(&e).and_then(|s| s.downcast_ref::<io::Error>()) {
        Some(io) => ClientError::Io(io::Error::new(io.kind(), io.to_string())),
        None => ClientError::Http(e),
    }
}
