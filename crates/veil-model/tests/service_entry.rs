//! ServiceEntry, outbound traffic policy and the egress gateway, on the real
//! YAML: seed 004 (egress gateway originating mTLS), cases 07 (sidecar TLS
//! origination with a port rewrite), 11 (CIDR and port-only entries), 12
//! (HTTPS entries, resolution NONE), 22 (mesh vs gateway matches) and 23
//! (STATIC endpoints with labels), plus `exportTo`, `location` and the
//! MeshConfig ConfigMap.

mod common;

use common::*;
use std::net::{IpAddr, Ipv4Addr};
use veil_model::from_api;
use veil_model::*;

const EXTERNAL: &str = "external-service.apps.e5dd.opentlc.com";
const EGRESS: &str = "istio-egressgateway.istio-system.svc.cluster.local";
const EXTERNAL_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 209, 250, 10));

fn seed_004() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/egress-origination/004-egress-mtls-origination.yaml");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// An injected `sleep` client in `ns`.
fn client(ns: &str) -> String {
    format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: sleep\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels: {{app: sleep}}\n  template:\n    metadata:\n      labels: {{app: sleep, version: v1}}\n    spec:\n      serviceAccountName: sleep\n      containers:\n      - name: sleep\n        image: curl\n",
        namespace(ns)
    )
}

/// Resolves the seed's external host (and `www.googleapis.com`) like a
/// hosts file; anything else does not resolve.
fn resolve(name: &str) -> Vec<IpAddr> {
    match name {
        EXTERNAL => vec![EXTERNAL_IP],
        "www.googleapis.com" => vec![IpAddr::V4(Ipv4Addr::new(10, 209, 250, 11))],
        _ => Vec::new(),
    }
}

/// The input `veil up` would build, ServiceEntries included.
fn with_entries(docs: &[String]) -> (MeshInput, Vec<String>) {
    let snap = snapshot(docs);
    let mut input = input_of(&snap);
    let (entries, warnings) = from_api::service_entries(&snap, &resolve);
    input.service_entries = entries;
    input.settings.outbound_traffic_policy = from_api::outbound_traffic_policy(&snap, ROOT).expect("mesh config");
    (input, warnings)
}

fn outbound_of(input: &MeshInput, pod_name: &str) -> Outbound {
    input.outbound_for(pod(input, pod_name))
}

#[test]
fn seed_004_sidecar_sends_port_80_to_the_egress_gateway_over_istio_mutual() {
    let (input, warnings) = with_entries(&[client("default"), seed_004()]);
    assert!(warnings.is_empty(), "{warnings:?}");
    let gw = pod(&input, "istio-egressgateway");
    assert!(gw.gateway && gw.namespace == "istio-system", "{gw:?}");
    let out = outbound_of(&input, "sleep");
    // The app dials the external host's address on port 80: the VirtualService's
    // `match: port 80, gateways: [mesh]` makes that an HTTP port of the host.
    let (svc, endpoint) = out.lookup(EXTERNAL_IP, 80).expect("port 80 of the external host is known");
    assert_eq!((svc.hostname.as_str(), svc.port, svc.protocol, endpoint), (EXTERNAL, 80, Protocol::Http, None));
    let [rule] = svc.routes.http.as_slice() else { panic!("one mesh rule (the gateway rule is not for sidecars): {:#?}", svc.routes) };
    assert_eq!(
        rule.destinations,
        vec![WeightedDestination { host: EGRESS.into(), port: 443, subset: Some("nginx".into()), weight: 100 }]
    );
    // Control: a port neither declared nor routed is not the entry's.
    assert!(out.lookup(EXTERNAL_IP, 8080).is_none());
    // The subset `nginx` of the egress gateway: ISTIO_MUTUAL with the external SNI.
    let egress = out.service(EGRESS, 443).expect("the egress gateway Service");
    let eps = egress.subsets.get("nginx").expect("subset nginx");
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!((eps[0].ip, eps[0].port), (gw.ip, 443));
    assert_eq!(
        eps[0].tls,
        UpstreamTls::IstioMutual {
            identities: vec!["spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account".into()],
            sni: EXTERNAL.into()
        }
    );
}

#[test]
fn seed_004_egress_gateway_terminates_mesh_mtls_and_originates_mutual_tls() {
    let (input, _) = with_entries(&[client("default"), seed_004()]);
    let gw = pod(&input, "istio-egressgateway");
    let config = input.proxy_config(gw, &input.outbound_for(gw));
    let listeners = &config.gateway.as_ref().expect("gateway config").listeners;
    let [listener] = listeners.as_slice() else { panic!("one listener: {listeners:#?}") };
    let [server] = listener.tls_servers.as_slice() else { panic!("one TLS server: {listener:#?}") };
    // MUTUAL with Istio's mounted /etc/certs files is the gateway's own mesh certificate.
    assert_eq!((listener.port, server.mode, server.error.as_deref()), (443, GatewayTlsMode::IstioMutual, None));
    assert_eq!(server.sni_hosts, vec![EXTERNAL.to_string()]);
    let [route] = server.http_routes.as_slice() else { panic!("one gateway route: {server:#?}") };
    assert_eq!(route.destination, RouteDestination { host: EXTERNAL.into(), port: 443 });
    // The DestinationRule of the external host (default namespace, exported)
    // reaches the gateway in istio-system: MUTUAL with the files.
    let ext = config.outbound.service(EXTERNAL, 443).expect("the ServiceEntry port");
    assert_eq!(ext.endpoints.len(), 1);
    assert_eq!((ext.endpoints[0].ip, ext.endpoints[0].port), (EXTERNAL_IP, 443));
    let UpstreamTls::Mutual { sni, ca_file, cert_file, key_file, .. } = &ext.endpoints[0].tls else {
        panic!("MUTUAL origination expected: {:?}", ext.endpoints[0].tls)
    };
    assert_eq!(sni.as_deref(), Some(EXTERNAL));
    assert_eq!(ca_file.as_deref(), Some(std::path::Path::new("/etc/nginx-ca-certs/ca-chain.cert.pem")));
    assert_eq!(cert_file, std::path::Path::new("/etc/nginx-client-certs/tls.crt"));
    assert_eq!(key_file, std::path::Path::new("/etc/nginx-client-certs/tls.key"));
}

#[test]
fn without_the_service_entry_the_external_host_is_unknown() {
    let without = seed_004().split("---\n").skip(1).collect::<Vec<_>>().join("---\n");
    let (input, _) = with_entries(&[client("default"), without]);
    let out = outbound_of(&input, "sleep");
    assert!(out.lookup(EXTERNAL_IP, 80).is_none() && out.lookup(EXTERNAL_IP, 443).is_none());
    // Control: with it, both ports are known.
    let (input, _) = with_entries(&[client("default"), seed_004()]);
    let out = outbound_of(&input, "sleep");
    assert!(out.lookup(EXTERNAL_IP, 80).is_some() && out.lookup(EXTERNAL_IP, 443).is_some());
}

#[test]
fn case_07_sidecar_rewrites_port_80_to_443_and_originates_simple_tls() {
    let (input, _) = with_entries(&[client("default"), case("07-egress-rule-google-apis-tls-origination.yaml")]);
    let out = outbound_of(&input, "sleep");
    let ip = resolve("www.googleapis.com")[0];
    let (http, _) = out.lookup(ip, 80).expect("port 80");
    assert_eq!(http.routes.http[0].destinations[0].port, 443, "{:#?}", http.routes);
    assert_eq!(http.endpoints[0].tls, UpstreamTls::Disable, "MESH_EXTERNAL: no auto-mTLS");
    let https = out.service("www.googleapis.com", 443).expect("port 443");
    let UpstreamTls::Simple { sni, .. } = &https.endpoints[0].tls else { panic!("{:?}", https.endpoints[0].tls) };
    assert_eq!(sni.as_deref(), Some("www.googleapis.com"));
}

#[test]
fn case_11_cidr_entries_match_their_ranges_and_port_only_entries_any_address() {
    let (input, _) = with_entries(&[client("default"), case("11-serviceentry-github.yaml")]);
    let out = outbound_of(&input, "sleep");
    let inside = IpAddr::V4(Ipv4Addr::new(140, 82, 113, 4));
    let (tcp, _) = out.lookup(inside, 22).expect("140.82.112.0/20 port 22");
    assert_eq!((tcp.hostname.as_str(), tcp.protocol), ("dummy.github.com", Protocol::Tcp));
    let entry = out.entry("dummy.github.com", 22).expect("entry");
    assert_eq!(entry.original_destination, Some(UpstreamTls::Disable), "NONE: to the dialled address, no TLS");
    assert!(out.lookup(IpAddr::V4(Ipv4Addr::new(140, 82, 128, 1)), 22).is_none(), "outside the /20");
    // github.com:443 has no addresses: every address on 443 is it.
    let (https, _) = out.lookup(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 443).expect("port 443");
    assert_eq!(https.hostname, "github.com");
}

#[test]
fn case_12_https_entries_default_to_none_and_mesh_external() {
    let (input, _) = with_entries(&[client("default"), case("12-serviceentry-package-index.yaml")]);
    assert_eq!(input.service_entries.len(), 3);
    assert!(input.service_entries.iter().all(|e| !e.mesh_internal && e.resolution == service_entry::EntryResolution::None));
    let out = outbound_of(&input, "sleep");
    for host in ["index.packages.example", "packages.example", "files.packages.example"] {
        let svc = out.service(host, 443).unwrap_or_else(|| panic!("{host}"));
        assert_eq!((svc.protocol, svc.endpoints.len()), (Protocol::Tls, 0));
        assert_eq!(out.entry(host, 443).and_then(|e| e.original_destination.clone()), Some(UpstreamTls::Disable));
    }
}

#[test]
fn case_23_static_endpoints_form_subsets_by_label() {
    let docs = [client("testns"), case("23-se-dr-vs-regex-header-sourcelabels.yaml")];
    let (input, _) = with_entries(&docs);
    let out = outbound_of(&input, "sleep");
    let (svc, _) = out.lookup(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 9003).expect("by endpoint address");
    assert_eq!(svc.hostname, "regex.extsvc.com");
    let addr = |s: &str| svc.subsets.get(s).map(|e| e.iter().map(|e| (e.ip.to_string(), e.port)).collect::<Vec<_>>());
    assert_eq!(addr("v1"), Some(vec![("127.0.0.2".to_string(), 8080)]));
    assert_eq!(addr("v2"), Some(vec![("127.0.0.3".to_string(), 8081)]));
    // The sleep pod has version v1: the header rule applies to it.
    assert_eq!(svc.routes.http.len(), 2, "{:#?}", svc.routes);
    assert_eq!(svc.routes.http[0].destinations[0].subset.as_deref(), Some("v2"));
}

fn entry(ns: &str, export: &str, location: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: db\n  namespace: {ns}\nspec:\n  hosts: [db.internal.example]\n  exportTo: [\"{export}\"]\n  location: {location}\n  ports:\n  - {{number: 5432, name: tcp, protocol: TCP}}\n  resolution: STATIC\n  endpoints:\n  - address: 10.1.0.1\n    serviceAccount: sleep\n"
    )
}

#[test]
fn export_to_dot_hides_the_entry_from_other_namespaces() {
    let docs = [client("shop"), client("other"), entry("shop", ".", "MESH_EXTERNAL")];
    let (input, _) = with_entries(&docs);
    let find = |ns: &str| {
        let p = input.registry.pods.iter().find(|p| p.namespace == ns).expect("pod");
        input.outbound_for(p).service("db.internal.example", 5432).is_some()
    };
    assert!(find("shop"), "visible in its own namespace");
    assert!(!find("other"), "hidden from namespace other");
}

#[test]
fn mesh_internal_endpoints_with_sidecars_get_auto_mtls_and_external_ones_do_not() {
    let tls = |location: &str| {
        let (input, _) = with_entries(&[client("shop"), entry("shop", "*", location)]);
        let p = input.registry.pods.iter().find(|p| p.namespace == "shop").expect("pod");
        assert_eq!(p.ip, IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)), "the endpoint is the sleep pod");
        input.outbound_for(p).service("db.internal.example", 5432).expect("entry").endpoints[0].tls.clone()
    };
    assert_eq!(tls("MESH_EXTERNAL"), UpstreamTls::Disable);
    let UpstreamTls::IstioMutual { identities, .. } = tls("MESH_INTERNAL") else { panic!("auto-mTLS to a mesh pod") };
    assert_eq!(identities, vec!["spiffe://cluster.local/ns/shop/sa/sleep".to_string()]);
}

fn mesh_config(mode: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    accessLogFile: /dev/stdout\n    outboundTrafficPolicy:\n      mode: {mode}\n")
}

#[test]
fn outbound_traffic_policy_comes_from_the_istio_config_map() {
    let policy = |docs: &[String]| {
        let snap = snapshot(docs);
        from_api::outbound_traffic_policy(&snap, ROOT)
    };
    assert_eq!(policy(&[client("default")]), Ok(OutboundTrafficPolicy::AllowAny), "Istio's default");
    assert_eq!(policy(&[mesh_config("REGISTRY_ONLY")]), Ok(OutboundTrafficPolicy::RegistryOnly));
    assert_eq!(policy(&[mesh_config("ALLOW_ANY")]), Ok(OutboundTrafficPolicy::AllowAny));
    let err = policy(&[mesh_config("DENY_ALL")]).expect_err("unknown mode");
    assert!(err.contains("test-input.yaml:1: ConfigMap istio-system/istio: data.mesh") && err.contains("DENY_ALL"), "{err}");
    // The setting reaches every sidecar's outbound section.
    let (input, _) = with_entries(&[client("default"), mesh_config("REGISTRY_ONLY")]);
    assert_eq!(outbound_of(&input, "sleep").policy, OutboundTrafficPolicy::RegistryOnly);
}

#[test]
fn unresolvable_dns_hosts_and_bad_addresses_are_reported() {
    let se = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: x\nspec:\n  hosts: [nowhere.example]\n  addresses: [\"10.0.0.0/33\"]\n  ports:\n  - {number: 443, name: https, protocol: HTTPS}\n  resolution: DNS\n";
    let (input, warnings) = with_entries(&[se.to_string()]);
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("ServiceEntry default/x: addresses: \"10.0.0.0/33\""), "{warnings:?}");
    assert!(warnings[1].contains("host nowhere.example does not resolve"), "{warnings:?}");
    assert!(input.service_entries[0].endpoints.is_empty());
}

#[test]
fn cidrs_parse_and_contain() {
    let c = Cidr::parse("140.82.112.0/20").expect("cidr");
    assert!(c.contains("140.82.127.255".parse().expect("ip")));
    assert!(!c.contains("140.82.128.0".parse().expect("ip")));
    assert!(!c.contains("::1".parse().expect("ip")), "other family");
    assert!(Cidr::parse("0.0.0.0/0").expect("any").contains("8.8.8.8".parse().expect("ip")));
    assert_eq!(Cidr::parse("10.1.2.3").expect("host").prefix, 32);
    assert!(Cidr::parse("fd00::/8").expect("v6").contains("fd12::1".parse().expect("ip")));
    assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("example.com").is_err());
    let json = serde_json::to_string(&c).expect("json");
    assert_eq!(json, "\"140.82.112.0/20\"");
}
