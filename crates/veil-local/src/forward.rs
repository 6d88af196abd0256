//! Port forwarding from the host's loopback into a namespace: a tokio TCP relay, run by the
//! `veil up` process, that makes the ingress gateway reachable at `127.0.0.1:<port>`.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::journal::{Entry, Journal};
use crate::LocalError;

/// Bound on connecting to the target, per accepted connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop never spins.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A running relay; dropping it stops accepting (connections already relayed finish).
#[derive(Debug)]
pub struct PortForward {
    local_addr: SocketAddr,
    target: SocketAddr,
    task: JoinHandle<()>,
}

impl PortForward {
    /// The address actually bound (the chosen port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where connections go.
    pub fn target(&self) -> SocketAddr {
        self.target
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `listen` (port 0 picks a free port) and relays every connection to `target`,
/// bytes both ways, until the returned handle is dropped. Journaled (owned by this process).
/// Must be called inside a tokio runtime. Errors with [`LocalError::Listen`] when the
/// address cannot be bound.
pub async fn forward(
    journal: &Journal,
    listen: SocketAddr,
    target: SocketAddr,
) -> Result<PortForward, LocalError> {
    journal.append(&Entry::PortForward {
        owner_pid: std::process::id(),
        listen,
        target,
    })?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| LocalError::Listen {
            addr: listen,
            source,
        })?;
    let local_addr = listener.local_addr().map_err(|source| LocalError::Listen {
        addr: listen,
        source,
    })?;
    let task = tokio::spawn(accept_loop(listener, target));
    tracing::info!(%local_addr, %target, "port forward listening");
    Ok(PortForward {
        local_addr,
        target,
        task,
    })
}

async fn accept_loop(listener: TcpListener, target: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                tokio::spawn(relay(client, peer, target));
            }
            Err(e) => {
                tracing::warn!(error = %e, "port forward accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

async fn relay(mut client: TcpStream, peer: SocketAddr, target: SocketAddr) {
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::warn!(%peer, %target, error = %e, "port forward cannot reach target; is the gateway running?");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, %target, "port forward timed out connecting to target");
            return;
        }
    };
    let mut upstream = upstream;
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(%peer, %target, error = %e, "port forward connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn relays_bytes_both_ways_on_loopback() {
        let dir = std::env::temp_dir().join(format!("veil-local-forward-{}", std::process::id()));
        let journal = Journal::open(&dir).unwrap();
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(b"echo:").await.unwrap();
            s.write_all(&buf).await.unwrap();
        });
        let fwd = forward(&journal, "127.0.0.1:0".parse().unwrap(), echo_addr)
            .await
            .unwrap();
        assert_ne!(fwd.local_addr().port(), 0);
        let mut c = TcpStream::connect(fwd.local_addr()).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out, b"echo:hello");
        let addr = fwd.local_addr();
        drop(fwd);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener must close when the handle drops"
        );
        assert!(matches!(
            journal.entries().unwrap().as_slice(),
            [Entry::PortForward { .. }]
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
