//! The control plane's admin API: JSON over HTTP/1.1 on loopback (Istio's
//! monitoring port 15014), computed from the live state of a
//! [`ConfigStore`] — the current `MeshInput`, every proxy's `ProxyConfig`
//! and the open config streams. `veil x describe pod`, `veil authn
//! tls-check` and `veil x auth check` read it.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /debug/pods` | [`ProxyStatus`] of every pod |
//! | `GET /debug/describe?pod=ns/name` | [`describe::PodDescription`] |
//! | `GET /debug/tls-check[?pod=ns/name]` | [`tls_check::TlsCheck`] |
//! | `GET /debug/auth-check?pod=ns/name` | [`auth_check::AuthCheck`] |
//! | `GET /debug/config_dump?pod=ns/name` | the pod's `ProxyConfig` |
//!
//! Errors answer `{"error": "..."}` with 400 (bad query), 404 (unknown pod
//! or path) or 503 (no config published yet).

pub mod auth_check;
pub mod client;
pub mod describe;
pub mod tls_check;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::net::TcpListener;
use veil_model::{MeshInput, Pod};

use crate::store::{ConfigStore, ConfigStream};

/// Istio's control-plane monitoring port, where the admin API listens first.
pub const ADMIN_PORT: u16 = 15014;

/// How many ports after the preferred one [`bind`] tries.
const PORT_TRIES: u16 = 100;

/// Errors of the admin API and its client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No loopback port could be bound.
    #[error("cannot listen on 127.0.0.1 (ports {first}..{last} and any free port): {source}; free a port or check the loopback interface")]
    Bind {
        first: u16,
        last: u16,
        #[source]
        source: std::io::Error,
    },
    /// The admin API could not be reached or did not answer in time.
    #[error("admin API {addr}: {reason}; is `veil up` still running? (`veil status`)")]
    Connect { addr: SocketAddr, reason: String },
    /// The admin API answered with an error.
    #[error("admin API {addr}{path}: HTTP {status}: {message}")]
    Status { addr: SocketAddr, path: String, status: u16, message: String },
    /// The answer is not the JSON expected.
    #[error("admin API {addr}{path}: unexpected answer: {reason}; are `veil up` and this `veil` the same version?")]
    Decode { addr: SocketAddr, path: String, reason: String },
}

/// A pod and its proxy as the control plane sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub namespace: String,
    pub pod: String,
    pub ip: IpAddr,
    /// `sidecar`, `gateway` or `none` (no proxy).
    pub kind: String,
    /// The identity its proxy runs as; `None` without a proxy.
    pub spiffe_id: Option<String>,
    /// Version of the current config for it; `None` without a proxy.
    pub config_version: Option<u64>,
    /// Its open config stream, if any.
    pub stream: Option<ConfigStream>,
    /// True when its open stream has sent the current config.
    pub synced: bool,
}

/// Binds `127.0.0.1:<port>`, else the next free port of the following
/// [`PORT_TRIES`], else any free port.
///
/// # Errors
/// [`AdminError::Bind`] when no loopback port can be bound.
pub async fn bind(port: u16) -> Result<TcpListener, AdminError> {
    let last = port.saturating_add(PORT_TRIES);
    for p in port..last {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)).await {
            return Ok(l);
        }
    }
    TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0))
        .await
        .map_err(|source| AdminError::Bind { first: port, last, source })
}

/// Serves the admin API on `listener` from `store` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, store: Arc<ConfigStore>, shutdown: impl std::future::Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(respond(&store, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"cannot encode: {e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: impl Into<String>) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": message.into() }))
}

/// The value of `key` in a query string, percent-decoded.
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

fn respond<B>(store: &ConfigStore, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, "GET only");
    }
    let Some(input) = store.input() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no configuration published yet; wait for `veil up` to start");
    };
    let query = req.uri().query();
    let path = req.uri().path();
    if path == "/debug/pods" {
        return json(StatusCode::OK, &pods(store, &input));
    }
    if path == "/debug/tls-check" && query_param(query, "pod").is_none() {
        return json(StatusCode::OK, &tls_check::tls_check(&input, None));
    }
    if !matches!(path, "/debug/describe" | "/debug/tls-check" | "/debug/auth-check" | "/debug/config_dump") {
        return error(StatusCode::NOT_FOUND, format!("no endpoint {path}; see /debug/pods, /debug/describe, /debug/tls-check, /debug/auth-check, /debug/config_dump"));
    }
    let pod = match find_pod(&input, query_param(query, "pod")) {
        Ok(p) => p,
        Err((status, message)) => return error(status, message),
    };
    match path {
        "/debug/describe" => {
            let mut d = describe::describe(&input, pod);
            d.proxy = Some(status_of(store, &input, pod));
            json(StatusCode::OK, &d)
        }
        "/debug/tls-check" => json(StatusCode::OK, &tls_check::tls_check(&input, Some(pod))),
        _ => match store.get(&pod.namespace, &pod.name) {
            None => error(StatusCode::NOT_FOUND, format!("pod {}/{} has no proxy (no sidecar), so it has no config", pod.namespace, pod.name)),
            Some(cfg) if path == "/debug/config_dump" => json(StatusCode::OK, &*cfg),
            Some(cfg) => json(StatusCode::OK, &auth_check::auth_check(&cfg, Some(&input))),
        },
    }
}

fn find_pod(input: &MeshInput, arg: Option<String>) -> Result<&Pod, (StatusCode, String)> {
    let arg = arg.ok_or((StatusCode::BAD_REQUEST, "give the pod as ?pod=<namespace>/<name>".to_string()))?;
    let (ns, name) =
        arg.split_once('/').ok_or_else(|| (StatusCode::BAD_REQUEST, format!("pod {arg:?}: give it as <namespace>/<name>")))?;
    input.registry.pods.iter().find(|p| p.namespace == ns && p.name == name).ok_or_else(|| {
        let known: Vec<String> = input.registry.pods.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
        (StatusCode::NOT_FOUND, format!("no pod {ns}/{name} in the mesh; pods: {}", known.join(", ")))
    })
}

fn status_of(store: &ConfigStore, input: &MeshInput, pod: &Pod) -> ProxyStatus {
    let has_proxy = pod.sidecar || pod.gateway;
    let config_version = store.get(&pod.namespace, &pod.name).map(|c| c.version);
    let stream = store.stream(&pod.namespace, &pod.name);
    ProxyStatus {
        namespace: pod.namespace.clone(),
        pod: pod.name.clone(),
        ip: pod.ip,
        kind: if pod.gateway { "gateway" } else if pod.sidecar { "sidecar" } else { "none" }.into(),
        spiffe_id: has_proxy.then(|| input.spiffe_id(pod)),
        synced: stream.as_ref().is_some_and(|s| Some(s.sent_version) == config_version),
        config_version,
        stream,
    }
}

fn pods(store: &ConfigStore, input: &MeshInput) -> Vec<ProxyStatus> {
    let mut out: Vec<ProxyStatus> = input.registry.pods.iter().map(|p| status_of(store, input, p)).collect();
    out.sort_by(|a, b| (&a.namespace, &a.pod).cmp(&(&b.namespace, &b.pod)));
    out
}
