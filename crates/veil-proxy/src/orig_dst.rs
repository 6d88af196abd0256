//! The original destination of a connection that iptables redirected to the proxy.
//!
//! Istio's init container installs `nat` REDIRECT rules; the kernel keeps the
//! address the workload dialled and returns it through `SO_ORIGINAL_DST`
//! (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6), as Envoy's `original_dst` listener
//! filter reads it.

use nix::sys::socket::{getsockopt, sockopt, SockaddrIn, SockaddrIn6};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use tokio::net::TcpStream;

/// The address the peer originally dialled.
///
/// When the connection was not redirected (the socket option fails, e.g. a
/// client connected to the proxy port directly), this is the socket's own
/// local address. Returns `None` only when the socket has no local address
/// (it was closed already).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let redirected = match local {
        SocketAddr::V4(_) => getsockopt(stream, sockopt::OriginalDst)
            .ok()
            .map(|raw| SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw)))),
        SocketAddr::V6(_) => getsockopt(stream, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|raw| SocketAddr::V6(SocketAddrV6::from(SockaddrIn6::from(raw)))),
    };
    Some(redirected.unwrap_or(local))
}
