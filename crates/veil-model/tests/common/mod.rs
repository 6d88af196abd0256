//! Fixture for the policy tests: Istio's echo apps (`a`, `b` with sidecars,
//! `naked` without) as Services + Deployments, the real cases of
//! `testdata/istio-cases`, a `MeshInput` built the way `veil up` builds it, and
//! a reachability oracle that combines the client's `UpstreamTls` with the
//! server's inbound mode (spec §1.1 table).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use veil_api::{fill_template, snapshot_from_str, Snapshot};
use veil_model::from_api;
use veil_model::*;

pub const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/istio-cases");
pub const NS: &str = "echo1";
pub const ROOT: &str = "istio-system";

/// Istio echo ports: (name, Service port, workload port). Service ports
/// differ from workload ports, as in Istio's echo framework.
pub const PORTS: [(&str, u16, u16); 5] =
    [("http", 80, 18080), ("http2", 85, 18085), ("https", 443, 18443), ("tcp", 9090, 19090), ("grpc", 7070, 17070)];

/// The text of a case file.
pub fn case(name: &str) -> String {
    let path = Path::new(CASES).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// A case template filled with `params` plus the echo defaults for `To = b`.
pub fn template(name: &str, params: &[(&str, &str)]) -> String {
    let mut p: BTreeMap<String, String> = [
        ("To.ServiceName", "b".to_string()),
        ("To.ClusterLocalFQDN", format!("b.{NS}.svc.cluster.local")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (n, _, w) in PORTS {
        p.insert(format!("To.PortForName({n}).WorkloadPort"), w.to_string());
    }
    for (k, v) in params {
        p.insert(k.to_string(), v.to_string());
    }
    fill_template(&case(name), &p).unwrap_or_else(|e| panic!("fill {name}: {e}"))
}

/// `text` with `namespace: ns` added to every `metadata:` block.
pub fn in_ns(text: &str, ns: &str) -> String {
    text.replace("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"))
}

/// `template` with `To` set to another echo service.
pub fn template_to(name: &str, to: &str, params: &[(&str, &str)]) -> String {
    let mut all: Vec<(&str, &str)> = params.to_vec();
    let fqdn = format!("{to}.{NS}.svc.cluster.local");
    all.push(("To.ServiceName", to));
    all.push(("To.ClusterLocalFQDN", &fqdn));
    template(name, &all)
}

/// A namespace with injection on.
pub fn namespace(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels:\n    istio-injection: enabled\n")
}

/// Service `name` (echo ports, selector `app: name`) and a one-replica
/// Deployment with `labels` (plus `app: name`), injected unless `naked`.
pub fn echo(name: &str, ns: &str, naked: bool, labels: &[(&str, &str)]) -> String {
    format!("{}---\n{}", echo_service(name, ns, false), echo_deployment(name, name, ns, naked, labels))
}

/// The Service of an echo app; `headless` sets `clusterIP: None`.
pub fn echo_service(name: &str, ns: &str, headless: bool) -> String {
    let mut y = format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n");
    if headless {
        y.push_str("  clusterIP: None\n");
    }
    y.push_str(&format!("  selector:\n    app: {name}\n  ports:\n"));
    for (n, port, target) in PORTS {
        y.push_str(&format!("  - name: {n}\n    port: {port}\n    targetPort: {target}\n"));
    }
    y
}

/// A Deployment `deploy` of app `app`.
pub fn echo_deployment(deploy: &str, app: &str, ns: &str, naked: bool, labels: &[(&str, &str)]) -> String {
    let mut l = format!("        app: {app}\n");
    for (k, v) in labels {
        l.push_str(&format!("        {k}: {v}\n"));
    }
    let inject = if naked { "      annotations:\n        sidecar.istio.io/inject: \"false\"\n" } else { "" };
    let mut ports = String::new();
    for (n, _, target) in PORTS {
        ports.push_str(&format!("        - name: {n}\n          containerPort: {target}\n"));
    }
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {deploy}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels:\n      app: {app}\n  template:\n    metadata:\n{inject}      labels:\n{l}    spec:\n      serviceAccountName: {deploy}\n      containers:\n      - name: app\n        image: echo\n        ports:\n{ports}"
    )
}

/// The standard apps: namespace `echo1` with `a`, `b` and `naked`.
pub fn apps() -> String {
    [namespace(NS), echo("a", NS, false, &[]), echo("b", NS, false, &[]), echo("naked", NS, true, &[])].join("---\n")
}

/// Loads YAML documents (joined with `---`) into a snapshot.
pub fn snapshot(docs: &[String]) -> Snapshot {
    let text = docs.join("\n---\n");
    snapshot_from_str(&Path::new(CASES).join("test-input.yaml"), &text).unwrap_or_else(|e| panic!("load failed:\n{e}\n{text}"))
}

/// A `MeshInput` built the way `veil up` builds it (pods get 10.1.0.x,
/// Services 10.96.0.x, headless Services none).
pub fn input_of(snap: &Snapshot) -> MeshInput {
    let pods: Vec<Pod> = from_api::planned_pods(snap)
        .into_iter()
        .zip(1u8..)
        .map(|(p, i)| Pod {
            name: p.name,
            namespace: p.namespace,
            labels: p.labels,
            service_account: p.service_account,
            ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)),
            sidecar: p.sidecar,
            gateway: p.gateway,
            ports: p.ports,
        })
        .collect();
    let ips: BTreeMap<(String, String), IpAddr> = snap
        .services
        .iter()
        .zip(1u8..)
        .map(|(s, i)| ((s.namespace_or_default().to_string(), s.meta.name.clone()), IpAddr::V4(Ipv4Addr::new(10, 96, 0, i))))
        .collect();
    let lookup = |ns: &str, name: &str| ips.get(&(ns.to_string(), name.to_string())).copied();
    let settings = MeshSettings::default();
    let (gateway_servers, http_routes, tcp_routes) = from_api::routing(snap);
    MeshInput {
        registry: Registry { pods, services: from_api::services(snap, &lookup) },
        peer_authentications: from_api::peer_authentications(snap, &settings.root_namespace),
        destination_rules: from_api::destination_rules(snap),
        gateway_servers,
        http_routes,
        tcp_routes,
        virtual_services: from_api::virtual_services(snap),
        service_entries: Vec::new(),
        settings,
    }
}

/// `input_of(snapshot(docs))`.
pub fn input(docs: &[String]) -> MeshInput {
    input_of(&snapshot(docs))
}

pub fn pod<'a>(input: &'a MeshInput, name: &str) -> &'a Pod {
    input.registry.pods.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod {name}"))
}

/// The outbound service `host_short.echo1…:port` as client pod `from` sees it.
pub fn service(input: &MeshInput, from: &str, to: &str, port: u16) -> OutboundService {
    let host = format!("{to}.{NS}.svc.cluster.local");
    input
        .outbound_for(pod(input, from))
        .services
        .into_iter()
        .find(|s| s.hostname == host && s.port == port)
        .unwrap_or_else(|| panic!("no service {host}:{port}"))
}

/// The TLS client `from` uses to the single endpoint of `to:port`.
pub fn tls(input: &MeshInput, from: &str, to: &str, port: u16) -> UpstreamTls {
    let s = service(input, from, to, port);
    assert_eq!(s.endpoints.len(), 1, "{to} should have one endpoint");
    s.endpoints[0].tls.clone()
}

/// Inbound (mode, protocol) of pod `name` on workload port `port`.
pub fn inbound(input: &MeshInput, name: &str, port: u16) -> (MtlsMode, Protocol) {
    input.inbound(pod(input, name)).port(port)
}

/// Outcome of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub ok: bool,
    pub mtls: bool,
}

/// Whether a client sending mTLS (or plaintext) is served by an endpoint:
/// a naked server takes plaintext only; a sidecar takes per spec §1.1
/// (STRICT: mTLS only; PERMISSIVE: both; DISABLE: plaintext only).
pub fn served(server: &Pod, mode: MtlsMode, mtls: bool) -> bool {
    match (server.sidecar, mode, mtls) {
        (false, _, m) => !m,
        (true, MtlsMode::Strict, m) => m,
        (true, MtlsMode::Permissive, _) => true,
        (true, MtlsMode::Disable, m) => !m,
    }
}

/// Calls `to` on Service port `port` from `from`: the client's TLS (a naked
/// client always sends plaintext) against the server's inbound mode.
pub fn reach_endpoint(input: &MeshInput, from: &str, ep: &Endpoint) -> Reach {
    let client = pod(input, from);
    let mtls = client.sidecar && matches!(ep.tls, UpstreamTls::IstioMutual { .. });
    let server = input.registry.pods.iter().find(|p| p.name == ep.pod).unwrap_or_else(|| panic!("no pod {}", ep.pod));
    let (mode, _) = input.inbound(server).port(ep.port);
    let ok = served(server, mode, mtls);
    Reach { ok, mtls: ok && mtls }
}

/// [`reach_endpoint`] to the single endpoint of `to:port`.
pub fn reach(input: &MeshInput, from: &str, to: &str, port: u16) -> Reach {
    let s = service(input, from, to, port);
    assert_eq!(s.endpoints.len(), 1, "{to} should have one endpoint");
    reach_endpoint(input, from, &s.endpoints[0])
}

pub const OK_MTLS: Reach = Reach { ok: true, mtls: true };
pub const OK_PLAIN: Reach = Reach { ok: true, mtls: false };
pub const FAIL: Reach = Reach { ok: false, mtls: false };

/// Every (from, to) pair of the standard apps on port 80, with its outcome.
pub fn matrix(input: &MeshInput) -> Vec<(&'static str, &'static str, Reach)> {
    let names = ["a", "b", "naked"];
    let mut out = Vec::new();
    for from in names {
        for to in names {
            if from != to {
                out.push((from, to, reach(input, from, to, 80)));
            }
        }
    }
    out
}

/// Asserts that every pair of `matrix` matches `expect(from_naked, to_naked)`.
pub fn assert_matrix(input: &MeshInput, what: &str, expect: impl Fn(bool, bool) -> Reach) {
    for (from, to, got) in matrix(input) {
        let want = expect(from == "naked", to == "naked");
        assert_eq!(got, want, "{what}: {from} -> {to}");
    }
}
