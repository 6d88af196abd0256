//! The CA over gRPC with TLS on 127.0.0.1: bootstrap by token, refusals, renewal by
//! certificate, and background rotation.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{id, CaServer, STEP};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use veil_identity::{
    request_certificate, spawn_rotation, CaAuth, IdentityError, WorkloadKey, SECRET_TTL,
};
use veil_proto::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use veil_proto::ca::IstioCertificateRequest;

fn refused_code(err: &IdentityError) -> String {
    match err {
        IdentityError::CaRefused { code, .. } => code.clone(),
        other => format!("not a refusal: {other}"),
    }
}

#[tokio::test]
async fn token_gets_a_certificate_once() {
    let server = CaServer::start(SECRET_TTL).await;
    let cfg = server.client_config();
    let token = server.tokens.issue(&id("reviews"));
    let key = WorkloadKey::generate().unwrap();
    let cert = request_certificate(
        &cfg,
        &key,
        &id("reviews"),
        CaAuth::Token(token.clone()),
        Duration::from_secs(600),
    )
    .await
    .unwrap();
    assert_eq!(cert.spiffe_id, id("reviews"));
    let lifetime = cert.not_after.duration_since(cert.not_before).unwrap();
    assert!(
        lifetime <= Duration::from_secs(600 + 61) && lifetime >= Duration::from_secs(600),
        "{lifetime:?}"
    );

    let again = request_certificate(
        &cfg,
        &key,
        &id("reviews"),
        CaAuth::Token(token),
        Duration::from_secs(600),
    )
    .await;
    let err = again.expect_err("a token is one-time");
    assert_eq!(refused_code(&err), "Unauthenticated", "{err}");
    assert!(err.to_string().contains("already used"), "{err}");
}

#[tokio::test]
async fn token_for_one_identity_cannot_get_another() {
    let server = CaServer::start(SECRET_TTL).await;
    let token = server.tokens.issue(&id("reviews"));
    let key = WorkloadKey::generate().unwrap();
    let err = request_certificate(
        &server.client_config(),
        &key,
        &id("admin"),
        CaAuth::Token(token),
        Duration::from_secs(60),
    )
    .await
    .expect_err("the CSR claims another identity");
    assert_eq!(refused_code(&err), "PermissionDenied", "{err}");
    assert!(
        err.to_string()
            .contains("caller proved only spiffe://cluster.local/ns/default/sa/reviews"),
        "{err}"
    );
}

#[tokio::test]
async fn no_credentials_is_unauthenticated_with_a_hint() {
    let server = CaServer::start(SECRET_TTL).await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(server.ca.root_pem()))
        .domain_name(common::SERVER_NAME);
    let channel = Endpoint::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let channel = tokio::time::timeout(STEP, channel.connect())
        .await
        .unwrap()
        .unwrap();
    let key = WorkloadKey::generate().unwrap();
    let request = IstioCertificateRequest {
        csr: key.csr_pem(&id("reviews")).unwrap(),
        validity_duration: 0,
        metadata: None,
    };
    let status = IstioCertificateServiceClient::new(channel)
        .create_certificate(request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert!(
        status.message().contains("Bearer <bootstrap token>"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn a_valid_certificate_renews_itself_and_ttl_is_capped() {
    let server = CaServer::start(Duration::from_secs(300)).await;
    let cfg = server.client_config();
    let token = server.tokens.issue(&id("reviews"));
    let first = request_certificate(
        &cfg,
        &WorkloadKey::generate().unwrap(),
        &id("reviews"),
        CaAuth::Token(token),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    let capped = first.not_after.duration_since(first.not_before).unwrap();
    assert!(
        capped <= Duration::from_secs(300 + 61),
        "capped at max_ttl: {capped:?}"
    );
    let renewed = request_certificate(
        &cfg,
        &WorkloadKey::generate().unwrap(),
        &id("reviews"),
        CaAuth::Certificate(Arc::new(first.clone())),
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert_eq!(renewed.spiffe_id, id("reviews"));
    assert_ne!(renewed.chain[0], first.chain[0]);
    assert_ne!(renewed.key_pem(), first.key_pem(), "fresh key");
    // Renewal cannot change identity.
    let err = request_certificate(
        &cfg,
        &WorkloadKey::generate().unwrap(),
        &id("admin"),
        CaAuth::Certificate(Arc::new(first)),
        Duration::from_secs(60),
    )
    .await
    .expect_err("renewal for another identity");
    assert_eq!(refused_code(&err), "PermissionDenied", "{err}");
}

#[tokio::test]
async fn rotation_delivers_a_new_certificate_at_half_life() {
    let server = CaServer::start(SECRET_TTL).await;
    let cfg = server.client_config();
    let ttl = Duration::from_secs(4);
    let token = server.tokens.issue(&id("reviews"));
    let first = request_certificate(
        &cfg,
        &WorkloadKey::generate().unwrap(),
        &id("reviews"),
        CaAuth::Token(token),
        ttl,
    )
    .await
    .unwrap();
    let first_leaf = first.chain[0].clone();
    // X.509 times are whole seconds: the certificate's lifetime starts up to
    // 1 s before the request, so half-life is measured from `notAfter - ttl`.
    let start = first.not_after - ttl;
    let mut rx = spawn_rotation(cfg, id("reviews"), first, ttl);
    tokio::time::timeout(Duration::from_secs(8), rx.changed())
        .await
        .expect("renewed within 8 s")
        .unwrap();
    let renewed_at = std::time::SystemTime::now();
    let half = ttl / 2;
    // Jitter is 0.9..1.1 of half-life; 20 ms for the clocks, 1 s for the request.
    let earliest = start + half.mul_f64(0.9) - Duration::from_millis(20);
    let latest = start + half.mul_f64(1.1) + Duration::from_secs(1);
    assert!(
        renewed_at >= earliest && renewed_at <= latest,
        "renewed {:?} after the lifetime's start, not at half-life ({:?} ± 10 %)",
        renewed_at.duration_since(start).unwrap_or_default(),
        half
    );
    let current = rx.borrow().clone();
    assert_eq!(current.spiffe_id, id("reviews"));
    assert_ne!(current.chain[0], first_leaf);
    assert!(current.not_after > std::time::SystemTime::now());
}
