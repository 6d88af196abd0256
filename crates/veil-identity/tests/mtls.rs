//! Mesh mTLS between two workload certificates, over real TCP on 127.0.0.1, and every
//! refusal the verifiers must make, each next to a control that succeeds.

mod common;

use std::sync::Arc;

use common::{expired_cert, handshake, id, new_ca, valid_cert};
use veil_identity::{mesh_client_config, mesh_server_config, SpiffeServerVerifier};

#[tokio::test]
async fn mutual_tls_between_workloads_of_one_ca() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let client =
        mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[id("reviews")]).unwrap();
    let out = handshake(server, client).await;
    let (peer, alpn) = out.server.expect("server side");
    assert_eq!(peer, id("productpage"));
    assert_eq!(alpn, b"istio");
    assert_eq!(out.client.expect("client side"), b"istio");
}

#[tokio::test]
async fn empty_allowed_accepts_any_identity_of_the_trust_domain() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "anything"), &bundle).unwrap();
    let client = mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[]).unwrap();
    let out = handshake(server, client).await;
    assert!(out.client.is_ok(), "{:?}", out.client);
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let (_dir, ca) = new_ca();
    let (_other_dir, other) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let rogue = mesh_client_config(
        &valid_cert(&other, "productpage"),
        &bundle,
        &[id("reviews")],
    )
    .unwrap();
    let out = handshake(server.clone(), rogue).await;
    let err = out.server.expect_err("server must refuse a foreign CA");
    assert!(
        err.contains("certificate not signed by the mesh CA"),
        "{err}"
    );
    assert!(out.client.is_err());

    let control =
        mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[id("reviews")]).unwrap();
    assert!(handshake(server, control).await.server.is_ok());
}

#[tokio::test]
async fn missing_client_certificate_is_refused() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut anonymous = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            bundle.clone(),
            vec![],
        )))
        .with_no_client_auth();
    anonymous.alpn_protocols = vec![b"istio".to_vec()];
    let out = handshake(server, Arc::new(anonymous)).await;
    let err = out
        .server
        .expect_err("server must require a client certificate");
    assert!(err.contains("peer sent no certificates"), "{err}");
    assert!(out.client.is_err());
}

#[tokio::test]
async fn server_identity_not_in_allowed_is_refused() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "ratings"), &bundle).unwrap();
    let client =
        mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[id("reviews")]).unwrap();
    let err = handshake(server.clone(), client)
        .await
        .client
        .expect_err("client must refuse");
    assert!(
        err.contains(
            "server presented spiffe://cluster.local/ns/default/sa/ratings; \
             expected one of [spiffe://cluster.local/ns/default/sa/reviews]"
        ),
        "{err}"
    );
    let control = mesh_client_config(
        &valid_cert(&ca, "productpage"),
        &bundle,
        &[id("reviews"), id("ratings")],
    )
    .unwrap();
    assert!(handshake(server, control).await.client.is_ok());
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&valid_cert(&ca, "reviews"), &bundle).unwrap();
    let client = mesh_client_config(&expired_cert(&ca, "productpage"), &bundle, &[]).unwrap();
    let err = handshake(server, client)
        .await
        .server
        .expect_err("server must refuse an expired cert");
    assert!(err.contains("certificate expired at"), "{err}");
}

#[tokio::test]
async fn expired_server_certificate_is_refused() {
    let (_dir, ca) = new_ca();
    let bundle = ca.trust_bundle();
    let server = mesh_server_config(&expired_cert(&ca, "reviews"), &bundle).unwrap();
    let client =
        mesh_client_config(&valid_cert(&ca, "productpage"), &bundle, &[id("reviews")]).unwrap();
    let err = handshake(server, client)
        .await
        .client
        .expect_err("client must refuse an expired cert");
    assert!(err.contains("certificate expired at"), "{err}");
}

#[tokio::test]
async fn pem_round_trip_keeps_a_usable_certificate() {
    let (_dir, ca) = new_ca();
    let cert = valid_cert(&ca, "reviews");
    let again =
        veil_identity::WorkloadCertificate::from_pem(&cert.chain_pem(), &cert.key_pem()).unwrap();
    assert_eq!(again.spiffe_id, id("reviews"));
    assert_eq!(again.chain, cert.chain);
    let bundle = veil_identity::TrustBundle::from_pem(&ca.trust_bundle().to_pem()).unwrap();
    assert_eq!(bundle.roots(), ca.trust_bundle().roots());
    let other = valid_cert(&ca, "ratings");
    assert!(
        veil_identity::WorkloadCertificate::from_pem(&cert.chain_pem(), &other.key_pem()).is_err()
    );
}
