//! Plain TLS servers outside the mesh for the origination tests: a rustls
//! server config from PEM and an echo server that uses it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A server config presenting `chain_pem`/`key_pem`; with `client_ca_pem`,
/// client certificates signed by it are required.
pub fn server_config(chain_pem: &[u8], key_pem: &[u8], client_ca_pem: Option<&[u8]>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem).map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_slice(key_pem).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let config = match client_ca_pem {
        None => builder.with_no_client_auth().with_single_cert(chain, key),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier).with_single_cert(chain, key)
        }
    };
    Arc::new(config.unwrap())
}

/// TLS echo server on `port`: copies what it reads back until EOF.
pub async fn tls_echo(port: u16, config: Arc<rustls::ServerConfig>) {
    let listener = TcpListener::bind(("0.0.0.0", port)).await.unwrap();
    let acceptor = TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else { return };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else { return };
            let (mut r, mut w) = tokio::io::split(tls);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}
