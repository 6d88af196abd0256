//! The benchmark server pod's application: an HTTP/1.1 server that answers
//! every request with a 1 KiB body (Istio's published benchmark payload), and
//! a TCP echo server. Both listen on all addresses of the pod.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::BenchError;

/// Size of every HTTP response body, bytes.
pub const BODY_BYTES: usize = 1024;

async fn bind(port: u16) -> Result<TcpListener, BenchError> {
    let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    TcpListener::bind(addr).await.map_err(|e| BenchError::net(addr, format!("cannot listen: {e}")))
}

async fn answer(_req: Request<Incoming>, body: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(body)))
}

async fn http_conn(stream: TcpStream, body: Bytes) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| answer(req, body.clone()));
    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

async fn echo_conn(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Some(data) = buf.get(..n) else { return };
        if stream.write_all(data).await.is_err() {
            return;
        }
    }
}

/// Serves HTTP on `http_port` and TCP echo on `echo_port` until the process
/// is stopped.
///
/// # Errors
/// [`BenchError::Net`] when a port cannot be bound.
pub async fn serve(http_port: u16, echo_port: u16) -> Result<(), BenchError> {
    let http = bind(http_port).await?;
    let echo = bind(echo_port).await?;
    let body = Bytes::from(vec![b'v'; BODY_BYTES]);
    let http_task = tokio::spawn(async move {
        loop {
            match http.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(http_conn(stream, body.clone()))),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    });
    let echo_task = tokio::spawn(async move {
        loop {
            match echo.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(echo_conn(stream))),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    });
    let _ = tokio::join!(http_task, echo_task);
    Ok(())
}
