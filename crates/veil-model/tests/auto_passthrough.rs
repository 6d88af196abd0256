//! AUTO_PASSTHROUGH (case 13): Istio's cluster-name SNI
//! `outbound_.<port>_.<subset>_.<hostname>` parsed, malformed forms
//! refused, the server's hosts filtering the hostname, subsets, the Istio
//! mTLS ALPN rule, and only endpoints that speak mesh mTLS.

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr};
use veil_model::auto_passthrough::{parse_sni_cluster, served_cluster, AutoPassthroughError as E, SniCluster};
use veil_model::*;

const B: &str = "b.echo1.svc.cluster.local";

fn cluster(port: u16, subset: Option<&str>, hostname: &str) -> SniCluster {
    SniCluster { port, subset: subset.map(str::to_string), hostname: hostname.into() }
}

#[test]
fn cluster_names_parse_with_and_without_subset() {
    let plain = parse_sni_cluster("outbound_.80_._.b.echo1.svc.cluster.local").expect("no subset");
    assert_eq!(plain, cluster(80, None, B));
    assert_eq!(plain.to_string(), "outbound_.80_._.b.echo1.svc.cluster.local", "prints back to the same SNI");
    let v2 = parse_sni_cluster("OUTBOUND_.9080_.V2_.Reviews.Default.svc.cluster.local").expect("subset, any case");
    assert_eq!(v2, cluster(9080, Some("v2"), "reviews.default.svc.cluster.local"));
    assert_eq!(parse_sni_cluster("outbound_.443_._.*.example.com").expect("wildcard host").hostname, "*.example.com");
}

#[test]
fn malformed_cluster_names_are_refused_with_the_reason() {
    let cases = [
        ("b.echo1.svc.cluster.local", "does not start with outbound_."),
        ("outbound|80||b.echo1.svc.cluster.local", "does not start with outbound_."),
        ("inbound_.80_._.b.echo1.svc.cluster.local", "does not start with outbound_."),
        ("outbound_80_._.b", "does not start with outbound_."),
        ("outbound_.http_._.b", "1..=65535"),
        ("outbound_.0_._.b", "1..=65535"),
        ("outbound_.70000_._.b", "1..=65535"),
        ("outbound_.80", "nothing after the port"),
        ("outbound_.80_.v1", "no subset part"),
        ("outbound_.80_._.", "no hostname"),
        ("outbound_.80_.v1_.b_.c", "more parts"),
    ];
    for (sni, reason) in cases {
        match parse_sni_cluster(sni) {
            Err(E::Malformed { sni: named, reason: got }) => {
                assert_eq!(named, sni);
                assert!(got.contains(reason), "{sni}: {got}");
            }
            other => panic!("{sni}: {other:?}"),
        }
    }
}

#[test]
fn the_server_hosts_filter_the_hostname_not_the_whole_sni() {
    let hosts = |h: &[&str]| h.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let sni = Some("outbound_.80_._.b.echo1.svc.cluster.local");
    assert_eq!(served_cluster(&hosts(&["*.local"]), sni).expect("*.local").hostname, B);
    assert!(served_cluster(&hosts(&[B]), sni).is_ok(), "an exact host serves its own cluster names");
    assert!(served_cluster(&[], sni).is_ok(), "`*` (no names) serves any host");
    let err = served_cluster(&hosts(&["*.echo2.svc.cluster.local", "a.echo1.svc.cluster.local"]), sni).expect_err("not served");
    assert!(matches!(&err, E::HostNotServed { hostname, .. } if hostname == B), "{err:?}");
    assert!(err.to_string().contains("Gateway server's hosts"), "{err}");
    assert_eq!(served_cluster(&hosts(&["*.local"]), None), Err(E::NoSni));
}

/// The echo apps, a second version of `b` with `version: v2`, subsets of
/// `b`, and an east-west gateway pod with case 13's server.
fn mesh() -> (MeshInput, Pod) {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: b\n  namespace: echo1\nspec:\n  host: b\n  subsets:\n  - name: v2\n    labels: {version: v2}\n  - name: v9\n    labels: {version: v9}\n";
    let docs = [apps(), echo_deployment("b-v2", "b", NS, false, &[("version", "v2")]), dr.to_string(), case("13-gateway-auto-passthrough.yaml")];
    let mut input = input(&docs);
    let gw = Pod {
        name: "eastwest".into(),
        namespace: "istio-system".into(),
        labels: [("istio".to_string(), "eastwestgateway".to_string())].into(),
        service_account: "eastwest".into(),
        ip: IpAddr::V4(Ipv4Addr::new(10, 1, 9, 9)),
        sidecar: false,
        gateway: true,
        ports: Vec::new(),
    };
    input.registry.pods.push(gw.clone());
    (input, gw)
}

#[test]
fn case_13_sni_names_the_service_port_subset_and_mesh_endpoints() {
    let (input, gw) = mesh();
    let config = input.proxy_config(&gw, &input.outbound_for(&gw));
    let server = config.gateway.as_ref().and_then(|g| g.listeners.first()).and_then(|l| l.tls_servers.first()).cloned();
    let server = server.expect("the AUTO_PASSTHROUGH server");
    assert_eq!(server.mode, GatewayTlsMode::AutoPassthrough);
    let out = &config.outbound;
    let istio = ["istio".to_string()];
    let pick = |sni: &str, alpn: &[String]| out.auto_passthrough(&server.sni_hosts, Some(sni), alpn);

    let all = pick("outbound_.80_._.b.echo1.svc.cluster.local", &istio).expect("b:80");
    assert_eq!((all.service.hostname.as_str(), all.service.port), (B, 80));
    let mut pods: Vec<&str> = all.endpoints.iter().map(|e| e.pod.as_str()).collect();
    pods.sort();
    assert_eq!(pods, ["b", "b-v2"], "no subset: every endpoint");
    assert!(all.endpoints.iter().all(|e| e.port == 18080), "workload port of Service port 80");

    let v2 = pick("outbound_.80_.v2_.b.echo1.svc.cluster.local", &istio).expect("subset v2");
    assert_eq!(v2.endpoints.iter().map(|e| e.pod.as_str()).collect::<Vec<_>>(), ["b-v2"]);
    assert_eq!(v2.cluster.subset.as_deref(), Some("v2"));
    // Any Istio mTLS ALPN will do; the client may offer others beside it.
    assert!(pick("outbound_.80_._.b.echo1.svc.cluster.local", &["h2".into(), "istio-http/1.1".into()]).is_ok());

    let err = |sni: &str, alpn: &[String]| pick(sni, alpn).expect_err(sni);
    assert!(matches!(err("outbound_.80_._.b.echo1.svc.cluster.local", &["h2".into()]), E::NotMeshTls { .. }));
    assert!(matches!(err("outbound_.80_._.b.echo1.svc.cluster.local", &[]), E::NotMeshTls { .. }));
    assert!(matches!(err("outbound_.81_._.b.echo1.svc.cluster.local", &istio), E::UnknownService { port: 81, .. }));
    assert!(matches!(err("outbound_.80_._.nope.echo1.svc.cluster.local", &istio), E::UnknownService { .. }));
    assert!(matches!(err("outbound_.80_.v3_.b.echo1.svc.cluster.local", &istio), E::UnknownSubset { .. }));
    let empty = err("outbound_.80_.v9_.b.echo1.svc.cluster.local", &istio);
    assert!(matches!(&empty, E::NoMeshEndpoint { subset: Some(s), .. } if s == "v9"), "a subset without pods: {empty:?}");
    // `naked` has no sidecar: its endpoint speaks no mesh mTLS and is never handed raw bytes.
    let naked = err("outbound_.80_._.naked.echo1.svc.cluster.local", &istio);
    assert!(matches!(naked, E::NoMeshEndpoint { .. }), "{naked:?}");
    assert!(naked.to_string().contains("outbound_.80_._.naked.echo1.svc.cluster.local"), "the message names the SNI: {naked}");
    assert!(matches!(err("b.echo1.svc.cluster.local", &istio), E::Malformed { .. }));
}

#[test]
fn a_narrower_server_host_refuses_other_namespaces() {
    let (mut input, gw) = mesh();
    let narrowed = case("13-gateway-auto-passthrough.yaml").replace("\"*.local\"", "\"*.echo2.svc.cluster.local\"");
    let snap = snapshot(&[apps(), narrowed]);
    input.gateway_servers = from_api::routing(&snap).0;
    let config = input.proxy_config(&gw, &input.outbound_for(&gw));
    let server = &config.gateway.as_ref().expect("gateway").listeners[0].tls_servers[0];
    assert_eq!(server.sni_hosts, ["*.echo2.svc.cluster.local"]);
    let got = config.outbound.auto_passthrough(&server.sni_hosts, Some("outbound_.80_._.b.echo1.svc.cluster.local"), &["istio".into()]);
    assert!(matches!(got, Err(E::HostNotServed { .. })), "{got:?}");
}
