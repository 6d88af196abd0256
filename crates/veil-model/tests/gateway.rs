//! Gateway servers → gateway listeners: TLS modes, SNI and Host filters with
//! `ns/host` forms, httpsRedirect, PASSTHROUGH `tls` routes, and certificates
//! from files or from `credentialName` resolved in the gateway pod's
//! namespace (cases 13, 14, 20, 39 and seed 002; Istio issue 27740).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use veil_model::*;

const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/seeds-yaml");

fn seed(name: &str) -> String {
    std::fs::read_to_string(Path::new(SEEDS).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn secret(ns: &str, name: &str, keys: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\nstringData:\n");
    for (k, v) in keys {
        y.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    y
}

/// A gateway pod that is not the built-in ingress gateway.
fn gateway_pod(input: &mut MeshInput, ns: &str, labels: &[(&str, &str)]) -> Pod {
    let pod = Pod {
        name: "gw".into(),
        namespace: ns.into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        service_account: "gw".into(),
        ip: IpAddr::V4(Ipv4Addr::new(10, 1, 9, 9)),
        sidecar: false,
        gateway: true,
        ports: Vec::new(),
    };
    input.registry.pods.push(pod.clone());
    pod
}

fn listeners(input: &MeshInput, pod: &Pod) -> Vec<GatewayListener> {
    input.proxy_config(pod, &Outbound::default()).gateway.expect("gateway config").listeners
}

fn listener(all: &[GatewayListener], port: u16) -> GatewayListener {
    all.iter().find(|l| l.port == port).cloned().unwrap_or_else(|| panic!("no listener {port}: {all:#?}"))
}

/// The listeners of the built-in ingress gateway (`istio-system`).
fn ingress(docs: &[String]) -> Vec<GatewayListener> {
    let input = input(docs);
    let pod = pod(&input, "istio-ingressgateway").clone();
    assert_eq!(pod.namespace, "istio-system");
    listeners(&input, &pod)
}

/// The east-west gateway pod planned for a Gateway selecting `istio:
/// eastwestgateway` (none of the mesh's workloads carries that label).
fn eastwest(input: &MeshInput) -> &Pod {
    let pod = pod(input, "istio-eastwestgateway");
    assert_eq!((pod.namespace.as_str(), pod.gateway, pod.sidecar), ("istio-system", true, false), "{pod:#?}");
    assert_eq!(pod.labels.get("istio").map(String::as_str), Some("eastwestgateway"));
    assert_eq!(pod.service_account, "istio-eastwestgateway-service-account");
    pod
}

#[test]
fn a_workload_carrying_the_eastwest_label_is_the_gateway_and_none_is_added() {
    let own = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: my-eastwest\n  namespace: istio-system\nspec:\n  selector:\n    matchLabels:\n      istio: eastwestgateway\n  template:\n    metadata:\n      labels:\n        istio: eastwestgateway\n    spec:\n      containers:\n      - name: gw\n        image: istio/proxyv2\n";
    let input = input(&[case("13-gateway-auto-passthrough.yaml"), own.to_string()]);
    let names: Vec<&str> = input.registry.pods.iter().map(|p| p.name.as_str()).collect();
    assert!(names.contains(&"my-eastwest") && !names.contains(&"istio-eastwestgateway"), "{names:?}");
    let without = input_of(&snapshot(&[own.to_string()]));
    assert!(without.registry.pods.iter().all(|p| p.name != "istio-eastwestgateway"), "no Gateway selects it: no pod");
}

fn pem(s: &str) -> Option<PemSource> {
    Some(PemSource::Pem(s.into()))
}

#[test]
fn case_20_https_redirect_and_simple_with_files() {
    let mut input = input(&[case("20-gateway-https-redirect-and-simple-files.yaml")]);
    let pod = gateway_pod(&mut input, "testns", &[("app", "my-gateway-controller")]);
    let all = listeners(&input, &pod);
    let http = listener(&all, 80);
    assert_eq!(http.https_redirect_hosts, ["uk.bookinfo.com", "eu.bookinfo.com", "c.foo"]);
    assert!(http.tls_servers.is_empty(), "an httpsRedirect HTTP server is not a TLS server");
    let https = listener(&all, 443);
    let [server] = https.tls_servers.as_slice() else { panic!("{https:#?}") };
    assert_eq!(server.mode, GatewayTlsMode::Simple);
    assert_eq!(server.sni_hosts, ["uk.bookinfo.com", "eu.bookinfo.com"]);
    assert!(server.http && server.error.is_none());
    let cred = server.credential.clone().expect("file credential");
    assert_eq!(cred.cert, PemSource::File("/etc/certs/servercert.pem".into()));
    assert_eq!(cred.key, PemSource::File("/etc/certs/privatekey.pem".into()));
    assert_eq!(cred.ca, None);
    // Control: a pod without the selector's labels gets no listener.
    let other = gateway_pod(&mut input, "testns", &[("app", "other")]);
    assert!(listeners(&input, &other).is_empty());
}

#[test]
fn relative_certificate_paths_follow_the_gateway_file() {
    let text = case("20-gateway-https-redirect-and-simple-files.yaml")
        .replace("/etc/certs/servercert.pem", "certs/server.pem")
        .replace("mode: SIMPLE", "mode: MUTUAL\n      caCertificates: certs/ca.pem");
    let mut input = input(&[text]);
    let pod = gateway_pod(&mut input, "testns", &[("app", "my-gateway-controller")]);
    let server = listener(&listeners(&input, &pod), 443).tls_servers[0].clone();
    let cred = server.credential.expect("credential");
    assert_eq!(cred.cert, PemSource::File(Path::new(CASES).join("certs/server.pem")));
    assert_eq!(cred.ca, Some(PemSource::File(Path::new(CASES).join("certs/ca.pem"))));
    assert_eq!(server.mode, GatewayTlsMode::Mutual);
}

fn case_39(mode: &str, cred: &str) -> String {
    let params: BTreeMap<String, String> =
        [("Mode", mode), ("CredentialName", cred), ("Host", "foo.example.com"), ("ServiceName", "b")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    veil_api::fill_template(&case("39-sds-ingress-credentialName-gateway-vs.yaml.tmpl"), &params).expect("fill 39")
}

fn server_of(all: &[GatewayListener]) -> GatewayTlsServer {
    let l = listener(all, 443);
    let [server] = l.tls_servers.as_slice() else { panic!("{l:#?}") };
    server.clone()
}

#[test]
fn case_39_credential_name_in_the_gateway_pod_namespace() {
    // SIMPLE with a kubernetes.io/tls style Secret.
    let tls = secret("istio-system", "cred-a", &[("tls.crt", "CERT-A"), ("tls.key", "KEY-A"), ("ca.crt", "CA-A")]);
    let s = server_of(&ingress(&[apps(), case_39("SIMPLE", "cred-a"), tls.clone()]));
    assert_eq!((s.mode, s.error.as_deref()), (GatewayTlsMode::Simple, None));
    let c = s.credential.expect("credential");
    assert_eq!((Some(c.cert), Some(c.key), c.ca), (pem("CERT-A"), pem("KEY-A"), None), "SIMPLE carries no CA");
    assert_eq!(c.source, "Secret istio-system/cred-a");
    assert_eq!(s.sni_hosts, ["foo.example.com"]);
    let [route] = s.http_routes.as_slice() else { panic!("{:#?}", s.http_routes) };
    assert_eq!((route.uri_prefix.as_str(), route.exact), ("/cred-a", true));
    assert_eq!(route.destination, RouteDestination { host: "b.default.svc.cluster.local".into(), port: 80 });

    // MUTUAL and OPTIONAL_MUTUAL: the CA from the same Secret ...
    for mode in ["MUTUAL", "OPTIONAL_MUTUAL"] {
        let s = server_of(&ingress(&[case_39(mode, "cred-a"), tls.clone()]));
        assert_eq!(s.credential.and_then(|c| c.ca), pem("CA-A"), "{mode}");
    }
    // ... generic keys with the CA in `<name>-cacert`, which wins over the main Secret's.
    let generic = secret("istio-system", "cred-b", &[("cert", "CERT-B"), ("key", "KEY-B"), ("cacert", "CA-MAIN")]);
    let ca_only = secret("istio-system", "cred-b-cacert", &[("cacert", "CA-B")]);
    let s = server_of(&ingress(&[case_39("MUTUAL", "cred-b"), generic.clone(), ca_only]));
    let c = s.credential.expect("credential");
    assert_eq!((Some(c.cert), c.ca), (pem("CERT-B"), pem("CA-B")));
    let s = server_of(&ingress(&[case_39("OPTIONAL_MUTUAL", "cred-b"), generic]));
    assert_eq!(s.credential.and_then(|c| c.ca), pem("CA-MAIN"));

    // MUTUAL without any CA: no credential, an error naming both places.
    let no_ca = secret("istio-system", "cred-c", &[("cert", "C"), ("key", "K")]);
    let s = server_of(&ingress(&[case_39("MUTUAL", "cred-c"), no_ca.clone()]));
    assert!(s.credential.is_none());
    let e = s.error.expect("error");
    assert!(e.contains("istio-system/cred-c") && e.contains("cred-c-cacert"), "{e}");
    // Control: the same Secret serves SIMPLE.
    assert!(server_of(&ingress(&[case_39("SIMPLE", "cred-c"), no_ca])).error.is_none());

    // A Secret with the wrong keys is named with the keys it has.
    let wrong = secret("istio-system", "cred-d", &[("certificate", "C")]);
    let e = server_of(&ingress(&[case_39("SIMPLE", "cred-d"), wrong])).error.expect("error");
    assert!(e.contains("didn't have expected keys") && e.contains("found: certificate"), "{e}");
}

#[test]
fn a_changed_secret_changes_the_listener() {
    let docs = |cert: &str| [case_39("SIMPLE", "rot"), secret("istio-system", "rot", &[("tls.crt", cert), ("tls.key", "K")])];
    let before = server_of(&ingress(&docs("OLD")));
    let after = server_of(&ingress(&docs("NEW")));
    assert_eq!(before.credential.map(|c| c.cert), pem("OLD"));
    assert_eq!(after.credential.map(|c| c.cert), pem("NEW"));
}

#[test]
fn case_14_passthrough_tls_routes_by_port_and_sni() {
    let input = input(&[case("14-gateway-tls-passthrough-istiod.yaml")]);
    let all = listeners(&input, eastwest(&input));
    for (port, dest_port) in [(15012, 15012), (15017, 443)] {
        let l = listener(&all, port);
        assert_eq!(l.protocol, Protocol::Tls, "lower-case `tls` is TLS");
        let [s] = l.tls_servers.as_slice() else { panic!("{l:#?}") };
        assert_eq!(s.mode, GatewayTlsMode::Passthrough);
        assert!(s.sni_hosts.is_empty(), "hosts `*` matches any SNI");
        assert!(s.credential.is_none(), "PASSTHROUGH holds no certificate");
        let [route] = s.tls_routes.as_slice() else { panic!("{s:#?}") };
        assert_eq!(route.sni_hosts, ["*"]);
        assert_eq!(route.destination, RouteDestination { host: "istiod.istio-system.svc.cluster.local".into(), port: dest_port });
    }
}

#[test]
fn case_13_auto_passthrough_serves_by_sni_without_routes() {
    let input = input(&[case("13-gateway-auto-passthrough.yaml")]);
    let l = listener(&listeners(&input, eastwest(&input)), 15443);
    assert_eq!(l.protocol, Protocol::Tls);
    let [s] = l.tls_servers.as_slice() else { panic!("one TLS server: {l:#?}") };
    assert_eq!((s.mode, s.error.as_deref()), (GatewayTlsMode::AutoPassthrough, None), "{s:#?}");
    assert_eq!(s.sni_hosts, ["*.local"], "the server's hosts filter the SNI's hostname");
    assert!(s.credential.is_none() && s.tls_routes.is_empty() && s.tcp_route.is_none(), "no certificate, no route: {s:#?}");
    assert_eq!(s.mode.to_string(), "AUTO_PASSTHROUGH");
}

const CARGO_HTTP: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: cargo-extra
  namespace: cloud-cargo
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [\"*\"]
  - port: {number: 443, name: https-admin, protocol: HTTPS}
    hosts: [\"admin.cargo.com\"]
    tls: {mode: SIMPLE, credentialName: admin-certs}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: cargo-extra
  namespace: cloud-cargo
spec:
  hosts: [\"*\"]
  gateways: [cargo-extra]
  http:
  - route:
    - destination: {host: cargo-webapp, port: {number: 80}}
";

#[test]
fn seed_002_credential_name_read_in_istio_system() {
    let good = secret("istio-system", "cargo-gateway-certs", &[("key", "CARGO-KEY"), ("cert", "CARGO-CERT")]);
    let unrelated = secret("istio-system", "unrelated", &[("key", "UNRELATED-KEY")]);
    let input = input(&[apps(), seed("002-cloud-cargo.yaml"), good, unrelated]);
    let configs = input.proxy_configs();
    let gw = configs.iter().find(|c| c.node.kind == ProxyKind::Gateway).expect("ingress gateway config");
    let all = &gw.gateway.as_ref().expect("gateway").listeners;
    let s = server_of(all);
    assert_eq!((s.mode, s.error.as_deref(), s.sni_hosts.len()), (GatewayTlsMode::Simple, None, 0));
    let c = s.credential.expect("credential");
    assert_eq!((Some(c.cert), Some(c.key)), (pem("CARGO-CERT"), pem("CARGO-KEY")));
    let routes: Vec<(&str, &str, u16)> =
        s.http_routes.iter().map(|r| (r.uri_prefix.as_str(), r.destination.host.as_str(), r.destination.port)).collect();
    assert_eq!(
        routes,
        [
            ("/api/freight-rating", "freight-rating-server.cloud-cargo.svc.cluster.local", 8080),
            ("/api/freight-tariff", "freight-tariff-server.cloud-cargo.svc.cluster.local", 8080),
            ("/", "cargo-webapp.cloud-cargo.svc.cluster.local", 80),
        ]
    );
    // Only the gateway carries the key it serves, and no proxy carries other Secrets.
    for c in &configs {
        let json = serde_json::to_string(c).expect("json");
        assert!(!json.contains("UNRELATED-KEY"), "{} carries an unrelated Secret", c.node.pod);
        assert_eq!(json.contains("CARGO-KEY"), c.node.kind == ProxyKind::Gateway, "{}", c.node.pod);
    }
}

#[test]
fn seed_002_secret_in_the_gateway_namespace_is_istio_issue_27740() {
    let misplaced = secret("cloud-cargo", "cargo-gateway-certs", &[("key", "K"), ("cert", "C")]);
    let admin = secret("istio-system", "admin-certs", &[("tls.key", "AK"), ("tls.crt", "AC")]);
    let all = ingress(&[apps(), seed("002-cloud-cargo.yaml"), CARGO_HTTP.to_string(), misplaced, admin]);
    let l = listener(&all, 443);
    let broken = l.tls_servers.iter().find(|s| s.gateway == "cloud-cargo/cargo-gateway").expect("cargo server");
    assert!(broken.credential.is_none());
    let e = broken.error.clone().expect("error");
    for needle in ["cargo-gateway-certs", "istio-system", "cloud-cargo", "27740"] {
        assert!(e.contains(needle), "{needle} missing from: {e}");
    }
    // The other servers keep serving: TLS on the same port, and HTTP.
    let ok = l.tls_servers.iter().find(|s| s.gateway == "cloud-cargo/cargo-extra").expect("admin server");
    assert_eq!((ok.error.as_deref(), ok.credential.clone().map(|c| c.cert)), (None, pem("AC")));
    assert_eq!(ok.sni_hosts, ["admin.cargo.com"]);
    let http = listener(&all, 80).http_routes;
    assert_eq!(http.len(), 1, "{http:#?}");
    assert_eq!(http[0].destination.host, "cargo-webapp.cloud-cargo.svc.cluster.local");
    assert_eq!(ok.http_routes.len(), 1, "the admin server serves its own VirtualService");

    // No Secret anywhere: the error names the namespace searched only.
    let all = ingress(&[seed("002-cloud-cargo.yaml")]);
    let e = server_of(&all).error.expect("error");
    assert!(e.contains("no Secret cargo-gateway-certs in namespace istio-system") && !e.contains("27740"), "{e}");
}

const NS_HOSTS: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: gw-ns
spec:
  selector:
    istio: ingressgateway
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [\"app-ns/shop.example\", \"./own.example\"]
    tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}
";

fn vs(ns: &str, name: &str, host: &str, dest: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [gw-ns/gw]\n  http:\n  - route:\n    - destination: {{host: {dest}, port: {{number: 80}}}}\n"
    )
}

#[test]
fn server_hosts_with_namespace_parts_filter_virtual_services() {
    let all = ingress(&[
        NS_HOSTS.to_string(),
        vs("app-ns", "shop", "shop.example", "shop"),
        vs("other-ns", "shop", "shop.example", "thief"),
        vs("gw-ns", "own", "own.example", "own"),
        vs("app-ns", "wide", "*.example", "wide"),
    ]);
    let s = server_of(&all);
    assert_eq!(s.sni_hosts, ["shop.example", "own.example"]);
    let bound: Vec<(Vec<String>, String)> =
        s.http_routes.iter().map(|r| (r.hosts.clone(), r.destination.host.clone())).collect();
    assert_eq!(
        bound,
        [
            (vec!["shop.example".to_string()], "shop.app-ns.svc.cluster.local".to_string()),
            (vec!["own.example".to_string()], "own.gw-ns.svc.cluster.local".to_string()),
            (vec!["shop.example".to_string()], "wide.app-ns.svc.cluster.local".to_string()),
        ],
        "other-ns is not admitted; a wildcard VS host narrows to the server's host"
    );
}

#[test]
fn two_tls_servers_on_one_port_are_told_apart_by_sni_and_duplicates_dropped() {
    let second = NS_HOSTS.replace("name: gw\n", "name: gw2\n").replace("\"./own.example\"", "\"*/api.example\"");
    let all = ingress(&[NS_HOSTS.to_string(), second]);
    let l = listener(&all, 443);
    let names: Vec<(String, Vec<String>)> = l.tls_servers.iter().map(|s| (s.gateway.clone(), s.sni_hosts.clone())).collect();
    assert_eq!(
        names,
        [
            ("gw-ns/gw".to_string(), vec!["shop.example".to_string(), "own.example".to_string()]),
            ("gw-ns/gw2".to_string(), vec!["api.example".to_string()]),
        ],
        "shop.example stays with the first server"
    );
}
