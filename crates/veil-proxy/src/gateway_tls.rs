//! TLS ports of a gateway: the ClientHello is read without consuming it, its
//! SNI picks one [`GatewayTlsServer`] (exact name, then the longest wildcard
//! suffix, then a server without names, as Envoy picks Istio's filter
//! chains), and that server either
//! - PASSTHROUGH: forwards the client's TLS bytes untouched to the
//!   destination of the first `tls` route whose `sniHosts` match, or
//! - AUTO_PASSTHROUGH: forwards them untouched to an endpoint of the
//!   Service port and subset the SNI names as Istio's cluster name
//!   `outbound_.<port>_.<subset>_.<hostname>` (`veil_model::auto_passthrough`:
//!   only Istio mTLS clients, only endpoints with a sidecar), or
//! - terminates TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL with its own
//!   certificate; ISTIO_MUTUAL with the gateway's mesh certificate) and
//!   serves HTTP (ALPN `h2` or `http/1.1`) through the gateway's HTTP
//!   routing, or forwards the plaintext to its TCP destination.
//!
//! A refused or failed handshake (no server for the SNI, a server whose
//! certificate is missing, no or a wrong client certificate, not TLS at
//! all) closes the connection and is logged with the peer address and the
//! reason.

use crate::client_hello::{self, ClientHello, NoHello};
use crate::gateway::{self, host_matches, listener_config, Routes};
use crate::gateway_certs::ServerConfigs;
use crate::proxy::Shared;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use veil_model::auto_passthrough::served_cluster;
use veil_model::{GatewayTlsMode, GatewayTlsServer};

/// Accepts connections on a TLS gateway port until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, port: u16) {
    let configs = Arc::new(ServerConfigs::default());
    loop {
        let (stream, peer) = crate::proxy::accept(&listener).await;
        let _ = stream.set_nodelay(true);
        tokio::spawn(handle(shared.clone(), configs.clone(), port, stream, peer));
    }
}

/// How specifically `server` matches `sni` (higher wins); `None`: no match.
/// An AUTO_PASSTHROUGH server matches a cluster-name SNI whose hostname it
/// serves as an exact name would (Istio: one filter chain per cluster name).
fn specificity(server: &GatewayTlsServer, sni: Option<&str>) -> Option<usize> {
    if server.mode == GatewayTlsMode::AutoPassthrough {
        return served_cluster(&server.sni_hosts, sni).ok().map(|_| usize::MAX);
    }
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
    let hello = match client_hello::peek(&stream, timeout).await {
        Ok(hello) => hello,
        Err(NoHello::Closed) => {
            tracing::debug!(%peer, port, "gateway TLS port {port}: {peer} closed before sending a ClientHello");
            return;
        }
        Err(NoHello::Refused(reason)) => {
            tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} failed: {reason}");
            return;
        }
    };
    let (sni, shown) = (hello.sni.as_deref(), hello.shown());
    let Some(listener) = listener_config(&shared, port) else { return };
    let Some(server) = select(&listener.tls_servers, sni).cloned() else {
        let auto = listener.tls_servers.iter().find(|s| s.mode == GatewayTlsMode::AutoPassthrough);
        let why = auto.and_then(|s| served_cluster(&s.sni_hosts, sni).err()).map(|e| format!(" (AUTO_PASSTHROUGH: {e})"));
        let why = why.unwrap_or_default();
        tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} refused: no server for SNI {shown}{why}");
        return;
    };
    if let Some(error) = &server.error {
        tracing::warn!(%peer, port, "gateway TLS handshake on port {port} from {peer} refused (SNI {shown}): {error}");
        return;
    }
    match server.mode {
        GatewayTlsMode::Passthrough => return passthrough(&shared, port, stream, peer, &server, sni).await,
        GatewayTlsMode::AutoPassthrough => return auto_passthrough(&shared, port, stream, peer, &server, &hello).await,
        _ => {}
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

/// Forwards the client's TLS bytes, ClientHello included, to an endpoint
/// of the Service port and subset its cluster-name SNI names, as they are:
/// the client's mesh mTLS ends at the destination's sidecar, which checks
/// the client's certificate. The connection record says `tls-passthrough`.
async fn auto_passthrough(shared: &Shared, port: u16, mut stream: TcpStream, peer: SocketAddr, server: &GatewayTlsServer, hello: &ClientHello) {
    let shown = hello.shown();
    let config = shared.config();
    let target = match config.outbound.auto_passthrough(&server.sni_hosts, hello.sni.as_deref(), &hello.alpn) {
        Ok(target) => target,
        Err(e) => {
            tracing::warn!(%peer, port, "gateway AUTO_PASSTHROUGH on port {port} from {peer} refused (SNI {shown}, Gateway {}): {e}", server.gateway);
            return;
        }
    };
    let cluster = &target.cluster;
    let destination = veil_model::WeightedDestination {
        host: cluster.hostname.clone(),
        port: cluster.port,
        subset: cluster.subset.clone(),
        weight: 1,
    };
    let Some(endpoint) = shared.http.pick(&destination, &target.endpoints) else { return };
    let addr = SocketAddr::new(endpoint.ip, endpoint.port);
    let start_ms = crate::records::now_ms();
    let mut upstream = match crate::upstream::connect_tcp(shared, addr).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(%peer, port, "gateway AUTO_PASSTHROUGH on port {port} from {peer} (SNI {shown}) to {} failed: {e}", endpoint.pod);
            return;
        }
    };
    if let Ok(local) = upstream.local_addr() {
        let mut record = crate::records::record("outbound", &config.node.pod, local, addr, start_ms);
        record.security = "tls-passthrough".into();
        shared.records.send(record);
    }
    tracing::debug!(%peer, port, sni = shown, endpoint = %endpoint.pod, "gateway AUTO_PASSTHROUGH to {addr}");
    if let Err(e) = crate::copy::bidirectional(&mut stream, &mut upstream).await {
        tracing::debug!(%peer, port, error = %e, "gateway AUTO_PASSTHROUGH connection ended with an error");
    }
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

    #[test]
    fn auto_passthrough_server_takes_served_cluster_names_as_exact() {
        let mut auto = server(&["*.echo1.svc.cluster.local"]);
        auto.mode = GatewayTlsMode::AutoPassthrough;
        auto.gateway = "auto".into();
        let servers = [server(&["*.cluster.local"]), auto];
        let pick = |sni: &str| select(&servers, Some(sni)).map(|s| s.gateway.clone());
        assert_eq!(pick("outbound_.80_._.b.echo1.svc.cluster.local").as_deref(), Some("auto"), "beats a wildcard on the whole SNI");
        assert_eq!(pick("outbound_.80_.v2_.b.echo1.svc.cluster.local").as_deref(), Some("auto"));
        assert_eq!(pick("outbound_.80_._.b.echo2.svc.cluster.local").as_deref(), Some("*.cluster.local"), "host not served");
        assert_eq!(pick("b.echo1.svc.cluster.local").as_deref(), Some("*.cluster.local"), "not a cluster name");
        assert!(select(&servers[1..], Some("outbound_.80_._.b.echo2.svc.cluster.local")).is_none());
        assert!(select(&servers[1..], None).is_none());
    }
}
