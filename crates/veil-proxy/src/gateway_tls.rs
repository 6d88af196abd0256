//! TLS ports of a gateway: the ClientHello is read without consuming it, its
//! SNI picks one [`GatewayTlsServer`] (exact name, then the longest wildcard
//! suffix, then a server without names, as Envoy picks Istio's filter
//! chains), and that server either
//! - PASSTHROUGH: forwards the client's TLS bytes untouched to the
//!   destination of the first `tls` route whose `sniHosts` match, or
//! - terminates TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL with its own
//!   certificate; ISTIO_MUTUAL with the gateway's mesh certificate) and
//!   serves HTTP (ALPN `h2` or `http/1.1`) through the gateway's HTTP
//!   routing, or forwards the plaintext to its TCP destination.
//!
//! A refused or failed handshake (no server for the SNI, a server whose
//! certificate is missing, no or a wrong client certificate, not TLS at
//! all) closes the connection and is logged with the peer address and the
//! reason.

use crate::gateway::{self, host_matches, listener_config, Routes};
use crate::gateway_certs::ServerConfigs;
use crate::proxy::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tls_parser::{parse_tls_extensions, parse_tls_plaintext, SNIType, TlsExtension, TlsMessage, TlsMessageHandshake};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use veil_model::{GatewayTlsMode, GatewayTlsServer};

/// Largest ClientHello prefix inspected, in bytes (one maximal TLS record).
const MAX_PEEK: usize = 16 * 1024 + 5;
/// Upper bound on peeks while a ClientHello arrives in pieces.
const MAX_PEEKS: u32 = 400;
/// Pause between peeks that returned an incomplete record, in milliseconds.
const PEEK_PAUSE_MS: u64 = 5;

/// Accepts connections on a TLS gateway port until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, port: u16) {
    let configs = Arc::new(ServerConfigs::default());
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(shared.clone(), configs.clone(), port, stream, peer));
    }
}

/// The SNI of a complete TLS record holding a ClientHello: `Ok(None)` when
/// it names none.
///
/// Errors: a description of what the record is instead.
fn client_hello_sni(record: &[u8]) -> Result<Option<String>, String> {
    let (_, plaintext) = parse_tls_plaintext(record).map_err(|_| "unparsable TLS record".to_string())?;
    let hello = plaintext
        .msg
        .iter()
        .find_map(|m| match m {
            TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) => Some(hello),
            _ => None,
        })
        .ok_or("first TLS record is not a ClientHello")?;
    let Some(ext) = hello.ext else { return Ok(None) };
    let (_, extensions) = parse_tls_extensions(ext).map_err(|_| "unparsable ClientHello extensions".to_string())?;
    Ok(extensions.iter().find_map(|e| match e {
        TlsExtension::SNI(names) => names
            .iter()
            .find(|(kind, _)| *kind == SNIType::HostName)
            .map(|(_, name)| String::from_utf8_lossy(name).to_ascii_lowercase()),
        _ => None,
    }))
}

/// Why no SNI could be read.
enum NoHello {
    /// The client closed without sending a byte (a TCP health check).
    Closed,
    /// Plaintext, a malformed or slow ClientHello.
    Refused(String),
}

impl From<String> for NoHello {
    fn from(reason: String) -> Self {
        NoHello::Refused(reason)
    }
}

/// Peeks until the first TLS record is complete, for at most `timeout`.
///
/// Errors: the client closed, sent plaintext, or sent no complete
/// ClientHello in time.
async fn peek_sni(stream: &TcpStream, timeout: Duration) -> Result<Option<String>, NoHello> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_PEEK];
    for _ in 0..MAX_PEEKS {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err(format!("no complete ClientHello within {} ms", timeout.as_millis()).into()),
            Ok(Err(e)) => return Err(format!("reading the ClientHello failed: {e}").into()),
            Ok(Ok(0)) => return Err(NoHello::Closed),
            Ok(Ok(n)) => n,
        };
        let prefix = buf.get(..n).unwrap_or_default();
        if prefix.first().is_some_and(|b| *b != 0x16) {
            return Err(NoHello::Refused("client sent plaintext, not a TLS ClientHello, to a TLS port".into()));
        }
        if let Some(&[hi, lo]) = prefix.get(3..5) {
            let len = 5 + usize::from(u16::from_be_bytes([hi, lo]));
            if let Some(record) = prefix.get(..len) {
                return Ok(client_hello_sni(record)?);
            }
        }
        if n >= MAX_PEEK {
            return Err(NoHello::Refused("ClientHello larger than one TLS record".into()));
        }
        tokio::time::sleep(Duration::from_millis(PEEK_PAUSE_MS)).await;
    }
    Err(NoHello::Refused("ClientHello did not complete".into()))
}

/// How specifically `server` matches `sni` (higher wins); `None`: no match.
fn specificity(server: &GatewayTlsServer, sni: Option<&str>) -> Option<usize> {
    if server.sni_hosts.is_empty() {
        return Some(0);
    }
    let sni = sni?;
    server
        .sni_hosts
        .iter()
        .filter(|h| host_matches(h, sni))
        .map(|h| if h.starts_with('*') { h.len() } else { usize::MAX })
        .max()
}

/// The server for `sni`: the most specific match, the first on ties.
pub(crate) fn select<'a>(servers: &'a [GatewayTlsServer], sni: Option<&str>) -> Option<&'a GatewayTlsServer> {
    let mut best: Option<(usize, &GatewayTlsServer)> = None;
    for server in servers {
        if let Some(score) = specificity(server, sni) {
            if best.is_none_or(|(b, _)| score > b) {
                best = Some((score, server));
            }
        }
    }
    best.map(|(_, s)| s)
}

async fn handle(shared: Arc<Shared>, configs: Arc<ServerConfigs>, port: u16, stream: TcpStream, peer: SocketAddr) {
    let timeout = shared.settings.handshake_timeout;
    let sni = match peek_sni(&stream, timeout).await {
        Ok(sni) => sni,
        Err(NoHello::Closed) => {
            tracing::debug!(%peer, port, "gateway TLS port {port}: {peer} closed before sending a ClientHello");
            return;
        }
        Err(NoHello::Refused(reason)) => {
            tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} failed: {reason}");
            return;
        }
    };
    let shown = sni.as_deref().unwrap_or("(none)");
    let Some(listener) = listener_config(&shared, port) else { return };
    let Some(server) = select(&listener.tls_servers, sni.as_deref()).cloned() else {
        tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} refused: no server for SNI {shown}");
        return;
    };
    if let Some(error) = &server.error {
        tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} refused (SNI {shown}): {error}");
        return;
    }
    if server.mode == GatewayTlsMode::Passthrough {
        return passthrough(&shared, port, stream, peer, &server, sni.as_deref()).await;
    }
    let config = match (server.mode, &server.credential) {
        (GatewayTlsMode::IstioMutual, _) => shared.tls.server().map_err(|e| e.to_string()),
        (mode, Some(credential)) => configs.get(mode, server.http, credential),
        (mode, None) => Err(format!("tls.mode {mode} server of Gateway {} has no certificate", server.gateway)),
    };
    let config = match config {
        Ok(config) => config,
        Err(reason) => {
            tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} refused (SNI {shown}): {reason}");
            return;
        }
    };
    let tls = match tokio::time::timeout(timeout, TlsAcceptor::from(config).accept(stream)).await {
        Err(_) => {
            tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} failed (SNI {shown}): timed out after {} ms", timeout.as_millis());
            return;
        }
        Ok(Err(e)) => {
            let hint = match server.mode {
                GatewayTlsMode::Mutual => "; MUTUAL requires a client certificate issued by the server's CA",
                GatewayTlsMode::OptionalMutual => "; OPTIONAL_MUTUAL checks a client certificate, when sent, against the server's CA",
                GatewayTlsMode::IstioMutual => "; ISTIO_MUTUAL requires a mesh certificate",
                _ => "",
            };
            tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} failed (SNI {shown}, tls.mode {}, Gateway {}): {e}{hint}", server.mode, server.gateway);
            return;
        }
        Ok(Ok(tls)) => tls,
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tracing::debug!(%peer, port, sni = shown, alpn = ?alpn.as_deref().map(String::from_utf8_lossy), "gateway TLS terminated");
    if server.http {
        let h2 = matches!(alpn.as_deref(), Some(b"h2" | b"istio-h2"));
        let routes = Routes::Tls(port, Arc::new(server));
        gateway::serve_http_connection(tls, shared.clone(), peer, routes, h2).await;
    } else {
        let destination = server.tcp_route.clone();
        gateway::forward_tcp(&shared, port, tls, peer, destination).await;
    }
}

/// Forwards the client's TLS bytes, ClientHello included, to the
/// destination of the first `tls` route matching `sni`.
async fn passthrough(shared: &Shared, port: u16, stream: TcpStream, peer: SocketAddr, server: &GatewayTlsServer, sni: Option<&str>) {
    let route = server.tls_routes.iter().find(|r| {
        r.sni_hosts.iter().any(|h| match sni {
            Some(sni) => host_matches(h, sni),
            None => h == "*",
        })
    });
    let Some(route) = route else {
        let shown = sni.unwrap_or("(none)");
        tracing::warn!(%peer, port, "gateway PASSTHROUGH on port {port} from {peer} refused: no tls route matches SNI {shown}");
        return;
    };
    tracing::debug!(%peer, port, route = %route.source, "gateway PASSTHROUGH to {}:{}", route.destination.host, route.destination.port);
    gateway::forward_tcp(shared, port, stream, peer, Some(route.destination.clone())).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(names: &[&str]) -> GatewayTlsServer {
        GatewayTlsServer {
            gateway: names.join(","),
            sni_hosts: names.iter().map(|n| n.to_string()).collect(),
            mode: GatewayTlsMode::Simple,
            http: true,
            credential: None,
            http_routes: Vec::new(),
            http_rules: Vec::new(),
            tcp_route: None,
            tls_routes: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn most_specific_server_wins() {
        let servers = [server(&[]), server(&["*.example.com"]), server(&["*.shop.example.com"]), server(&["a.shop.example.com"])];
        let pick = |sni: Option<&str>| select(&servers, sni).map(|s| s.gateway.clone());
        assert_eq!(pick(Some("a.shop.example.com")).as_deref(), Some("a.shop.example.com"));
        assert_eq!(pick(Some("b.shop.example.com")).as_deref(), Some("*.shop.example.com"));
        assert_eq!(pick(Some("b.example.com")).as_deref(), Some("*.example.com"));
        assert_eq!(pick(Some("other.org")).as_deref(), Some(""));
        assert_eq!(pick(None).as_deref(), Some(""));
        let named = [server(&["a.example.com"])];
        assert!(select(&named, Some("b.example.com")).is_none());
        assert!(select(&named, None).is_none());
    }
}
