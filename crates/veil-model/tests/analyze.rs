//! `veil_model::analyze`: one fixture per finding (exact code, file and line, and the
//! resource or port the message must name) with a fixed control that gives no finding.
//! The Istio cases and tutorial files are checked in `analyze_corpus.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use veil_api::{
    snapshot_from_str, ObjectMeta, PeerAuthenticationSpec, PeerMtls, Resource, Snapshot, Source,
    WorkloadSelector,
};
use veil_model::analyze::{analyze, Finding, Level};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/analyze");

fn path(name: &str) -> PathBuf {
    Path::new(FIXTURES).join(name)
}

fn findings(name: &str) -> Vec<Finding> {
    let p = path(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let snap = snapshot_from_str(&p, &text).unwrap_or_else(|e| panic!("{name}: {e}"));
    analyze(&snap)
}

/// The one finding of `name`, which must have `code` and be on `line` of that file.
fn single(name: &str, code: &str, line: u32) -> Finding {
    let all = findings(name);
    let [f] = all.as_slice() else {
        panic!("{name}: expected one finding, got {all:#?}")
    };
    assert_eq!(
        (f.code, f.file.as_path(), f.line),
        (code, path(name).as_path(), line),
        "{f}"
    );
    f.clone()
}

fn assert_none(name: &str) {
    let all = findings(name);
    assert!(
        all.is_empty(),
        "{name}: expected no finding, got:\n{}",
        lines(&all)
    );
}

fn lines(all: &[Finding]) -> String {
    all.iter().map(|f| format!("{f}\n")).collect()
}

fn says(f: &Finding, parts: &[&str]) {
    for p in parts {
        assert!(f.to_string().contains(p), "{f}\n  does not contain {p:?}");
    }
}

#[test]
fn port_level_mtls_on_the_service_port() {
    let f = single("port-level-service-port.yaml", "VEIL0103", 47);
    assert_eq!(f.level, Level::Warning);
    assert_eq!(f.resource, "PeerAuthentication shop/web");
    says(
        &f,
        &[
            "port 80",
            "Service shop/web",
            "stays PERMISSIVE",
            "Key it on 8080",
        ],
    );
    assert_none("port-level-service-port-fixed.yaml");
}

#[test]
fn dr_disable_towards_strict_namespace() {
    let f = single("strict-vs-dr-disable.yaml", "VEIL0201", 63);
    assert_eq!(f.resource, "DestinationRule shop/cart");
    let pa_at = format!(
        "PeerAuthentication shop/default ({}:11)",
        path("strict-vs-dr-disable.yaml").display()
    );
    says(
        &f,
        &[
            &pa_at,
            "Service shop/cart port 80",
            "workload cart port 8080",
            "503",
        ],
    );
    assert_none("strict-vs-dr-disable-fixed.yaml");
}

#[test]
fn dr_istio_mutual_towards_disable_workload() {
    let f = single("disable-vs-dr-istio-mutual.yaml", "VEIL0202", 55);
    assert_eq!(f.resource, "DestinationRule shop/db");
    says(
        &f,
        &[
            "PeerAuthentication shop/db",
            "Service shop/db port 3306",
            "only plaintext",
        ],
    );
    assert_none("disable-vs-dr-istio-mutual-fixed.yaml");
}

#[test]
fn dr_originating_tls_on_an_https_service_entry_port() {
    let f = single("double-tls.yaml", "VEIL0203", 27);
    says(
        &f,
        &[
            "tls.mode SIMPLE",
            "port 443 of api.payments.example",
            "ServiceEntry shop/payments",
            "declare an HTTP port",
        ],
    );
    assert_none("double-tls-fixed.yaml");
}

/// Seed 004's pattern: the egress gateway terminates the sidecars' mesh mTLS and its `http`
/// route sends plain HTTP to the HTTPS port, so the origination is the only TLS. The same
/// route bound to `mesh` only is the trap again.
#[test]
fn egress_gateway_origination_on_an_https_port_is_not_double_tls() {
    assert_none("double-tls-egress-gateway.yaml");
    let f = single("double-tls-mesh-route.yaml", "VEIL0203", 31);
    says(
        &f,
        &[
            "tls.mode MUTUAL",
            "port 443 of api.payments.example",
            "route it through an egress gateway",
        ],
    );
}

#[test]
fn root_namespace_selector_is_ignored() {
    let f = single("root-selector.yaml", "VEIL0104", 8);
    says(
        &f,
        &["PeerAuthentication istio-system/web-strict", "ignores it"],
    );
    assert_none("root-selector-fixed.yaml");
}

#[test]
fn competing_namespace_policies_name_the_one_that_applies() {
    let f = single("competing.yaml", "VEIL0105", 3);
    assert_eq!(f.resource, "PeerAuthentication shop/default");
    says(
        &f,
        &[
            "namespace-wide in shop",
            "so PeerAuthentication shop/ns-strict applies",
        ],
    );
    let f = single("competing-selectors.yaml", "VEIL0105", 21);
    assert_eq!(f.resource, "PeerAuthentication shop/web-by-tier");
    says(
        &f,
        &[
            "to workload web",
            "so PeerAuthentication shop/web-by-app applies",
        ],
    );
    assert_none("competing-fixed.yaml");
}

#[test]
fn legacy_targeted_policy_gets_selector_and_target_port_snippet() {
    let f = single("legacy-targeted.yaml", "VEIL0106", 3);
    assert_eq!(f.resource, "Policy shop/web-mtls");
    says(
        &f,
        &[
            "removed after 1.5",
            "Replace it with this PeerAuthentication",
        ],
    );
    let yaml: String = f
        .hint
        .lines()
        .skip(1)
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    let snippet = snapshot_from_str(Path::new("snippet.yaml"), &yaml)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let [pa] = snippet.peer_authentications.as_slice() else {
        panic!("one PeerAuthentication:\n{yaml}")
    };
    assert_eq!(pa.namespace_or_default(), "shop");
    let labels = pa
        .spec
        .selector
        .as_ref()
        .map(|s| s.match_labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels,
        [("app".to_string(), "web".to_string())].into(),
        "{yaml}"
    );
    assert_eq!(pa.spec.mtls, None, "other ports inherit:\n{yaml}");
    let ports: Vec<(u32, veil_api::MtlsMode)> = pa
        .spec
        .port_level_mtls
        .iter()
        .flatten()
        .map(|(p, m)| (*p, m.mode))
        .collect();
    assert_eq!(
        ports,
        vec![(8080, veil_api::MtlsMode::Strict)],
        "the target port, not Service port 80:\n{yaml}"
    );
    assert_none("legacy-targeted-fixed.yaml");
}

#[test]
fn gateway_secret_in_the_gateway_namespace() {
    let f = single("gateway-secret-namespace.yaml", "VEIL0301", 21);
    says(
        &f,
        &[
            "Secret shop/shop-cert",
            "gateway pods (istio-system)",
            "kubectl -n istio-system create secret tls shop-cert",
        ],
    );
    assert_none("gateway-secret-namespace-fixed.yaml");
}

#[test]
fn unknown_hosts_in_destination_rule_and_virtual_service() {
    let all = findings("unknown-hosts.yaml");
    let got: Vec<(&str, u32)> = all.iter().map(|f| (f.code, f.line)).collect();
    assert_eq!(
        got,
        vec![("VEIL0401", 21), ("VEIL0402", 38)],
        "{}",
        lines(&all)
    );
    for f in &all {
        says(
            f,
            &[
                "catalgo",
                "matches no Service or ServiceEntry",
                "Did you mean catalog.shop.svc.cluster.local?",
            ],
        );
    }
    assert_none("unknown-hosts-fixed.yaml");
}

fn pa(
    name: &str,
    selector: Option<&str>,
    ports: &[(u32, &str)],
) -> Resource<PeerAuthenticationSpec> {
    let mode = |m: &str| PeerMtls {
        mode: veil_api::MtlsMode::parse(m).expect("mode"),
    };
    Resource {
        api_version: "security.istio.io/v1".into(),
        kind: "PeerAuthentication".into(),
        meta: ObjectMeta {
            name: name.into(),
            namespace: Some("shop".into()),
            ..ObjectMeta::default()
        },
        spec: PeerAuthenticationSpec {
            selector: selector.map(|app| WorkloadSelector {
                match_labels: [("app".to_string(), app.to_string())].into(),
            }),
            mtls: Some(mode("STRICT")),
            port_level_mtls: Some(
                ports
                    .iter()
                    .map(|(p, m)| (*p, mode(m)))
                    .collect::<BTreeMap<_, _>>(),
            ),
        },
        source: Source {
            file: PathBuf::from("built.yaml"),
            line: 4,
        },
    }
}

/// A snapshot made without the loader's validation still gets the two errors.
#[test]
fn port_level_errors_without_validation() {
    let mut snap = Snapshot::default();
    snap.peer_authentications
        .push(pa("ns-wide", None, &[(8080, "DISABLE")]));
    snap.peer_authentications
        .push(pa("empty", Some("web"), &[]));
    snap.peer_authentications
        .push(pa("fine", Some("db"), &[(3306, "DISABLE")]));
    let all = veil_model::analyze::analyze_with(&snap, &|_, _| None);
    let got: Vec<(&str, Level, &str, u32)> = all
        .iter()
        .map(|f| (f.code, f.level, f.resource.as_str(), f.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "VEIL0101",
                Level::Error,
                "PeerAuthentication shop/ns-wide",
                4
            ),
            ("VEIL0102", Level::Error, "PeerAuthentication shop/empty", 4),
        ],
        "{}",
        lines(&all)
    );
}

/// The loader rejects the same two policies; as findings they keep their codes and lines.
#[test]
fn port_level_errors_from_the_loader() {
    for (name, code, line) in [
        ("port-level-no-selector.yaml", "VEIL0101", 10),
        ("port-level-empty.yaml", "VEIL0102", 13),
    ] {
        let p = path(name);
        let text = std::fs::read_to_string(&p).expect("read");
        let errors = veil_api::load_str(&p, &text).expect_err("the loader rejects it");
        let found: Vec<Finding> = errors.0.iter().map(Finding::from_load_error).collect();
        let [f] = found.as_slice() else {
            panic!("{name}: {found:#?}")
        };
        assert_eq!(
            (f.code, f.level, f.line, f.file.as_path()),
            (code, Level::Error, line, p.as_path()),
            "{f}"
        );
        says(f, &["spec.portLevelMtls"]);
    }
}

#[test]
fn display_and_body() {
    let f = single("root-selector.yaml", "VEIL0104", 8);
    let shown = f.to_string();
    let prefix = format!(
        "{}:8: warning[VEIL0104]: PeerAuthentication istio-system/web-strict",
        path("root-selector.yaml").display()
    );
    assert!(shown.starts_with(&prefix), "{shown}");
    assert!(shown.contains(". Move it to the namespace"), "{shown}");
    assert!(
        f.body().starts_with(&format!(
            "{}:8: [VEIL0104] ",
            path("root-selector.yaml").display()
        )),
        "{}",
        f.body()
    );
}
