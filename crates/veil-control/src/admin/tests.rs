//! Unit tests of the admin API's computations on small hand-made meshes,
//! and of the server itself on a loopback port.

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use veil_api::ClientTlsMode;
use veil_model::authn::PeerAuthn;
use veil_model::dr::DestinationRule;
use veil_model::{MeshInput, MtlsMode, Pod, Service};

use super::auth_check::auth_check;
use super::describe::describe;
use super::tls_check::{conflicts, tls_check, ServerMode, TlsStatus};
use crate::store::ConfigStore;

fn pod(name: &str, sidecar: bool) -> Pod {
    serde_json::from_value(json!({
        "name": name, "namespace": "shop", "labels": {"app": name}, "service_account": name,
        "ip": "10.0.0.1", "sidecar": sidecar, "gateway": false, "ports": [{"port": 8080, "name": "http"}]
    }))
    .expect("pod")
}

fn service(name: &str) -> Service {
    serde_json::from_value(json!({
        "name": name, "namespace": "shop", "selector": {"app": name}, "cluster_ip": "10.1.0.1",
        "ports": [{"name": "http", "port": 80, "target_port": {"Number": 8080}, "app_protocol": null}]
    }))
    .expect("service")
}

fn rule(name: &str, host: &str, mode: &str) -> DestinationRule {
    serde_json::from_value(json!({
        "namespace": "shop", "name": name, "created": null, "host": host, "export_to": [],
        "workload_selector": null, "traffic_policy": {"tls": {"mode": mode}},
        "subsets": [{"name": "v1", "labels": {"app": host}}], "base_dir": null, "source": "test.yaml:1"
    }))
    .expect("rule")
}

fn policy(name: &str, selector: Option<&str>, mode: MtlsMode, ports: &[(u16, MtlsMode)]) -> PeerAuthn {
    PeerAuthn {
        namespace: "shop".into(),
        name: name.into(),
        created: None,
        selector: selector.map(|s| [("app".to_string(), s.to_string())].into()),
        mode: Some(mode),
        port_level: ports.iter().map(|(p, m)| (*p, Some(*m))).collect::<BTreeMap<_, _>>(),
        legacy_target: None,
    }
}

/// Namespace `shop` STRICT; `a` (DR DISABLE), `b` (DR ISTIO_MUTUAL), `c`
/// (no DR), `naked` without sidecar (DR ISTIO_MUTUAL).
fn mesh() -> MeshInput {
    let mut input = MeshInput::default();
    for name in ["a", "b", "c"] {
        input.registry.pods.push(pod(name, true));
        input.registry.services.push(service(name));
    }
    input.registry.pods.push(pod("naked", false));
    input.registry.services.push(service("naked"));
    input.peer_authentications.push(policy("default", None, MtlsMode::Strict, &[]));
    input.destination_rules.push(rule("a", "a", "DISABLE"));
    input.destination_rules.push(rule("b", "b", "ISTIO_MUTUAL"));
    input.destination_rules.push(rule("naked", "naked", "ISTIO_MUTUAL"));
    input
}

#[test]
fn conflict_table_follows_istio_1_4() {
    use ClientTlsMode::*;
    assert!(conflicts(MtlsMode::Strict, Some(Disable), true));
    assert!(conflicts(MtlsMode::Strict, Some(Simple), true));
    assert!(!conflicts(MtlsMode::Strict, Some(IstioMutual), true));
    assert!(conflicts(MtlsMode::Disable, Some(IstioMutual), true));
    assert!(!conflicts(MtlsMode::Disable, Some(Disable), true));
    assert!(!conflicts(MtlsMode::Permissive, Some(Disable), true));
    assert!(!conflicts(MtlsMode::Permissive, Some(IstioMutual), true));
    assert!(!conflicts(MtlsMode::Strict, None, true), "auto-mTLS adapts");
    assert!(conflicts(MtlsMode::Strict, None, false), "auto-mTLS off sends plaintext");
}

#[test]
fn tls_check_rows_statuses_and_subsets() {
    let input = mesh();
    let client = input.registry.pods.first().cloned().expect("pod a");
    let check = tls_check(&input, Some(&client));
    let find = |host: &str, subset: Option<&str>| {
        check
            .rows
            .iter()
            .find(|r| r.host == format!("{host}.shop.svc.cluster.local") && r.subset.as_deref() == subset)
            .cloned()
            .unwrap_or_else(|| panic!("no row {host} {subset:?}: {check:#?}"))
    };
    let a = find("a", None);
    assert_eq!((a.status, a.server, a.client), (TlsStatus::Conflict, ServerMode::Strict, Some(ClientTlsMode::Disable)));
    assert_eq!(a.destination_rules, ["shop/a"]);
    assert_eq!(a.authn_policies, ["shop/default"]);
    assert_eq!(find("a", Some("v1")).key(), "a.shop.svc.cluster.local:80|v1");
    let b = find("b", None);
    assert_eq!((b.status, b.client), (TlsStatus::Ok, Some(ClientTlsMode::IstioMutual)));
    let c = find("c", None);
    assert_eq!((c.status, c.client, c.destination_rules.len()), (TlsStatus::Auto, None, 0));
    let naked = find("naked", None);
    assert_eq!((naked.status, naked.server), (TlsStatus::Conflict, ServerMode::Disable), "a pod without sidecar takes only plaintext");
    assert_eq!(check.rows.len(), 7, "one row per port and one per subset");
}

#[test]
fn auth_check_chains_per_mode() {
    let mut input = mesh();
    input.peer_authentications.push(policy(
        "b",
        Some("b"),
        MtlsMode::Permissive,
        &[(8080, MtlsMode::Permissive), (9000, MtlsMode::Disable)],
    ));
    let configs = input.proxy_configs();
    let b = configs.iter().find(|c| c.node.pod == "b").expect("config of b");
    let check = auth_check(b, Some(&input));
    let rows: Vec<(String, bool, MtlsMode)> = check.listeners.iter().map(|l| (l.name(), l.mtls, l.mode)).collect();
    assert_eq!(
        rows,
        [
            ("10.0.0.1_8080[0]".to_string(), true, MtlsMode::Permissive),
            ("10.0.0.1_8080[1]".to_string(), false, MtlsMode::Permissive),
            ("10.0.0.1_9000[0]".to_string(), false, MtlsMode::Disable),
            ("virtualInbound[0]".to_string(), true, MtlsMode::Permissive),
            ("virtualInbound[1]".to_string(), false, MtlsMode::Permissive),
        ]
    );
    assert!(check.listeners.iter().all(|l| l.certificate.is_some() == l.mtls));
    let a = configs.iter().find(|c| c.node.pod == "a").expect("config of a");
    let strict = auth_check(a, Some(&input));
    assert_eq!(strict.listeners.iter().filter(|l| l.port == Some(8080)).count(), 1, "STRICT: one chain");
    let to_b = strict.clusters.iter().find(|c| c.cluster == "outbound|80||b.shop.svc.cluster.local").expect("cluster b");
    assert_eq!((to_b.tls.as_str(), to_b.policy.as_str()), ("ISTIO_MUTUAL", "shop/b"));
    assert_eq!(to_b.validate_peer, ["spiffe://cluster.local/ns/shop/sa/b"]);
    let to_a = strict.clusters.iter().find(|c| c.cluster == "outbound|80||a.shop.svc.cluster.local").expect("cluster a");
    assert_eq!((to_a.tls.as_str(), to_a.certificate.is_none(), to_a.validate_peer.len()), ("DISABLE", true, 0));
    let to_c = strict.clusters.iter().find(|c| c.cluster == "outbound|80||c.shop.svc.cluster.local").expect("cluster c");
    assert_eq!((to_c.tls.as_str(), to_c.policy.as_str()), ("ISTIO_MUTUAL", "auto-mTLS"));
}

#[test]
fn describe_reports_ignored_policies_with_why() {
    let mut input = mesh();
    let mut newer = policy("newer", None, MtlsMode::Disable, &[]);
    newer.created = Some("2024-01-01T00:00:00Z".into());
    input.peer_authentications.push(newer);
    let mut root = policy("root-selector", Some("a"), MtlsMode::Disable, &[]);
    root.namespace = "istio-system".into();
    input.peer_authentications.push(root);
    let a = input.registry.pods.first().cloned().expect("pod a");
    let d = describe(&input, &a);
    assert_eq!(d.peer_authentication.workload_mode, MtlsMode::Strict);
    assert_eq!(d.peer_authentication.applied, ["shop/default"]);
    let ignored: Vec<(&str, bool)> = d
        .peer_authentication
        .ignored
        .iter()
        .map(|i| (i.policy.as_str(), i.reason.contains("older") || i.reason.contains("root namespace")))
        .collect();
    assert_eq!(ignored, [("shop/newer", true), ("istio-system/root-selector", true)]);
    let svc = d.services.first().expect("service a");
    assert_eq!((svc.ports[0].target_port, svc.ports[0].server_mode), (Some(8080), Some(MtlsMode::Strict)));
    let rule = svc.destination_rule.as_ref().expect("rule");
    assert_eq!((rule.host.as_str(), rule.tls_mode, &rule.matching_subsets), ("a.shop.svc.cluster.local", Some(ClientTlsMode::Disable), &vec!["v1".to_string()]));
}

#[tokio::test]
async fn server_answers_json_and_errors_on_loopback() {
    let store = Arc::new(ConfigStore::default());
    let listener = super::bind(0).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(listener, store.clone(), async move {
        let _ = stop_rx.await;
    }));
    let t = Duration::from_secs(5);
    let early = super::client::get(addr, "/debug/pods", t).await;
    assert!(matches!(early, Err(super::AdminError::Status { status: 503, .. })), "{early:?}");
    store.publish_mesh(mesh());
    let pods: Vec<super::ProxyStatus> = super::client::get_json(addr, "/debug/pods", t).await.expect("pods");
    assert_eq!(pods.len(), 4);
    assert!(pods.iter().all(|p| !p.synced && p.stream.is_none()), "no proxy connected yet");
    let _stream = store.open_stream("shop", "a", None);
    let d: super::describe::PodDescription = super::client::get_json(addr, "/debug/describe?pod=shop%2Fa", t).await.expect("describe");
    assert_eq!(d.proxy.map(|p| (p.stream.is_some(), p.synced)), Some((true, false)), "stream open, nothing sent yet");
    let missing = super::client::get(addr, "/debug/auth-check?pod=shop/nope", t).await;
    assert!(matches!(&missing, Err(super::AdminError::Status { status: 404, message, .. }) if message.contains("shop/a")), "{missing:?}");
    let naked = super::client::get(addr, "/debug/config_dump?pod=shop/naked", t).await;
    assert!(matches!(naked, Err(super::AdminError::Status { status: 404, .. })), "{naked:?}");
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(t, server).await;
}
