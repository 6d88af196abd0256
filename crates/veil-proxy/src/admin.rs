//! Admin (127.0.0.1:15000: `/config_dump`, `/healthz/ready`) and readiness
//! (0.0.0.0:15021: `/healthz/ready`) over HTTP/1.1, as Istio's proxy serves them.

use crate::proxy::Shared;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Admin,
    Readiness,
}

/// Serves HTTP on `listener` until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, scope: Scope) {
    loop {
        let (stream, _) = crate::proxy::accept(&listener).await;
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(respond(&shared, scope, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn respond(shared: &Shared, scope: Scope, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match (scope, req.uri().path()) {
        (_, "/healthz/ready") => ready(shared),
        (Scope::Admin, "/config_dump") => config_dump(shared),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// 200 once a config and a certificate that has not expired are present.
fn ready(shared: &Shared) -> Response<Full<Bytes>> {
    let cert = certificate_info(shared);
    let unexpired = cert.not_after_unix.is_some_and(|t| t > i64::try_from(crate::records::now_ms() / 1000).unwrap_or(i64::MAX));
    if cert.spiffe_id.is_some() && unexpired {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "no valid workload certificate\n")
    }
}

fn config_dump(shared: &Shared) -> Response<Full<Bytes>> {
    let cert = certificate_info(shared);
    let dump = serde_json::json!({
        "config": shared.config().without_private_keys(),
        "certificate": {
            "spiffe_id": cert.spiffe_id,
            "not_after_unix": cert.not_after_unix,
        },
        "records_dropped": shared.records.dropped(),
    });
    match serde_json::to_vec_pretty(&dump) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            response
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot serialise the config\n"),
    }
}

struct CertificateInfo {
    spiffe_id: Option<String>,
    /// Expiry of the leaf, Unix seconds.
    not_after_unix: Option<i64>,
}

fn certificate_info(shared: &Shared) -> CertificateInfo {
    let cert = shared.tls.certificate();
    let not_after_unix = cert
        .not_after
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    CertificateInfo { spiffe_id: Some(cert.spiffe_id.to_string()), not_after_unix }
}
