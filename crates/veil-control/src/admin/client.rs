//! A small HTTP/1.1 client for the admin API (and a proxy's admin port):
//! one `GET` per connection, bounded in time, JSON decoded.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;

use super::AdminError;

/// `GET http://<addr><path_and_query>`; the body of a 200 answer. The
/// whole exchange is bounded by `timeout`.
///
/// # Errors
/// [`AdminError::Connect`] when the address does not answer in time,
/// [`AdminError::Status`] with the server's `error` message otherwise.
pub async fn get(addr: SocketAddr, path_and_query: &str, timeout: Duration) -> Result<Bytes, AdminError> {
    let connect = |reason: String| AdminError::Connect { addr, reason };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| connect(e.to_string()))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| connect(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path_and_query)
            .header(http::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| connect(format!("bad request path {path_and_query:?}: {e}")))?;
        let response = sender.send_request(req).await.map_err(|e| connect(e.to_string()))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| connect(e.to_string()))?.to_bytes();
        Ok::<_, AdminError>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| connect(format!("no answer in {} ms", timeout.as_millis())))??;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
        return Err(AdminError::Status { addr, path: path_and_query.to_string(), status: status.as_u16(), message });
    }
    Ok(body)
}

/// [`get`], decoded as JSON into `T`.
///
/// # Errors
/// Those of [`get`], and [`AdminError::Decode`] when the body is not a `T`.
pub async fn get_json<T: DeserializeOwned>(addr: SocketAddr, path_and_query: &str, timeout: Duration) -> Result<T, AdminError> {
    let body = get(addr, path_and_query, timeout).await?;
    serde_json::from_slice(&body).map_err(|e| AdminError::Decode {
        addr,
        path: path_and_query.to_string(),
        reason: e.to_string(),
    })
}
