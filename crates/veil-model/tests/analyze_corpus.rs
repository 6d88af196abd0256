//! `veil_model::analyze` over every real Istio case (templates filled with each mode INDEX.md
//! lists) and every tutorial file: the findings of each file are stated explicitly, so that
//! a new false positive (or a lost true one) fails. Only files that are themselves a trap give
//! findings: 07 (double TLS, Istio #17031: sidecars originate on the HTTPS port their
//! applications also reach with their own TLS), 35–38 and seeds 002/003 (legacy v1alpha1
//! API), 38 (DR DISABLE towards the port its Policy makes STRICT). Seed 004 and case 40
//! originate at the egress gateway after it terminated the mesh mTLS: no finding.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use veil_api::{fill_template, snapshot_from_str, Snapshot};
use veil_model::analyze::{analyze, analyze_with, Finding};

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/istio-cases");
const SEEDS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/seeds-yaml");
const PII_DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/pii-demo");

/// (file, [(code, line)]) for every file that gives findings; every other file gives none.
const EXPECTED: &[(&str, &[(&str, u32)])] = &[
    (
        "07-egress-rule-google-apis-tls-origination.yaml",
        &[("VEIL0203", 46)],
    ),
    (
        "35-legacy-v1alpha1-meshpolicy-mtls-on.yaml",
        &[("VEIL0106", 1)],
    ),
    (
        "36-legacy-v1alpha1-meshpolicy-permissive.yaml",
        &[("VEIL0106", 1)],
    ),
    ("37-legacy-v1alpha1-meshpolicy-off.yaml", &[("VEIL0106", 1)]),
    (
        "38-legacy-v1alpha1-policy-single-port.yaml",
        &[("VEIL0106", 1), ("VEIL0201", 21)],
    ),
    ("002-cloud-cargo.yaml", &[("VEIL0106", 3)]),
    ("003-hipster-app.yaml", &[("VEIL0106", 2)]),
];

fn files(dir: &str, suffix: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("corpus dir {dir}: {e}"));
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn load(p: &Path, text: &str) -> Snapshot {
    snapshot_from_str(p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn codes_and_lines(found: &[Finding]) -> Vec<(&str, u32)> {
    found.iter().map(|f| (f.code, f.line)).collect()
}

fn shown(found: &[Finding]) -> String {
    found.iter().map(|f| format!("{f}\n")).collect()
}

fn check_plain(path: &Path) {
    let found = analyze(&load(path, &read(path)));
    let want = EXPECTED
        .iter()
        .find(|(f, _)| *f == name(path))
        .map(|(_, w)| w.to_vec())
        .unwrap_or_default();
    assert_eq!(
        codes_and_lines(&found),
        want,
        "{}:\n{}",
        name(path),
        shown(&found)
    );
    for f in &found {
        assert_eq!(f.file, path, "{f}");
    }
}

#[test]
fn every_plain_istio_case() {
    let plain = files(CASES, ".yaml");
    assert_eq!(plain.len(), 27, "plain case files");
    plain.iter().for_each(|p| check_plain(p));
}

#[test]
fn every_tutorial_file() {
    let seeds = files(SEEDS, ".yaml");
    assert_eq!(seeds.len(), 6, "tutorial files");
    seeds.iter().for_each(|p| check_plain(p));
}

#[test]
fn expectations_name_existing_files() {
    for (file, _) in EXPECTED {
        assert!(
            Path::new(CASES).join(file).exists() || Path::new(SEEDS).join(file).exists(),
            "{file}"
        );
    }
}

fn params(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let base = [
        ("To.ServiceName", "b"),
        ("To.ClusterLocalFQDN", "b.echo1.svc.cluster.local"),
        ("To.NamespaceName", "echo1"),
        ("Denied.NamespaceName", "echo2"),
        ("Allowed.SpiffeIdentity", "cluster.local/ns/echo1/sa/a"),
        ("To.PortForName(http).WorkloadPort", "18080"),
        ("To.PortForName(http2).WorkloadPort", "18085"),
        ("To.PortForName(https).WorkloadPort", "18443"),
        ("To.PortForName(tcp).WorkloadPort", "19090"),
        ("To.PortForName(grpc).WorkloadPort", "17070"),
        ("CredentialName", "bookinfo-credential-1"),
        ("Host", "bookinfo1.example.com"),
        ("ServiceName", "productpage"),
        ("EgressLabel", "egressgateway"),
        ("EgressService", "istio-egressgateway"),
        ("EgressNamespace", "istio-system"),
        (
            "to.Config.ClusterLocalFQDN",
            "server.echo1.svc.cluster.local",
        ),
        ("DestinationPort", "443"),
        ("PortNumber", "443"),
    ];
    base.iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The parameter variations each template is used with (INDEX.md).
fn variations(file: &str) -> Vec<Vec<(&'static str, &'static str)>> {
    let one = |key: &'static str, values: &[&'static str]| {
        values.iter().map(|v| vec![(key, *v)]).collect()
    };
    match file.get(..2).unwrap_or("") {
        "24" | "26" => one("MTLSMode", &["STRICT", "PERMISSIVE", "DISABLE"]),
        "25" | "27" => one("TLSMode", &["ISTIO_MUTUAL", "DISABLE"]),
        "28" => vec![vec![
            ("MTLSMode", "STRICT"),
            ("MTLSModeOverride", "DISABLE"),
        ]],
        "29" => one("TLSMode", &["", "DISABLE", "ISTIO_MUTUAL"]),
        "39" => one("Mode", &["SIMPLE", "MUTUAL", "OPTIONAL_MUTUAL"]),
        "40" => one("Mode", &["SIMPLE", "MUTUAL"]),
        _ => vec![vec![]],
    }
}

fn filled(file: &str, extra: &[(&str, &str)]) -> String {
    let text = read(&Path::new(CASES).join(file));
    fill_template(&text, &params(extra)).unwrap_or_else(|e| panic!("{file} {extra:?}: {e}"))
}

/// Templates are analyzed without reading field lines back from the (unfilled) file.
fn analyze_text(file: &str, text: &str) -> Vec<Finding> {
    analyze_with(&load(&Path::new(CASES).join(file), text), &|_, _| None)
}

#[test]
fn every_template_with_each_mode_gives_no_finding() {
    let templates = files(CASES, ".yaml.tmpl");
    assert_eq!(templates.len(), 13, "template files");
    let mut runs = 0;
    for path in &templates {
        for variation in variations(name(path)) {
            let found = analyze_text(name(path), &filled(name(path), &variation));
            assert!(
                found.is_empty(),
                "{} {variation:?}:\n{}",
                name(path),
                shown(&found)
            );
            runs += 1;
        }
    }
    assert_eq!(runs, 24, "template runs");
}

/// 24 (namespace PeerAuthentication) and 25 (DestinationRule `*`) are applied together in
/// TestReachability; the two pairs it never runs, because they fail, are the findings.
#[test]
fn global_peer_authn_with_global_dr() {
    let matrix = [
        ("STRICT", "ISTIO_MUTUAL", None),
        ("STRICT", "DISABLE", Some("VEIL0201")),
        ("PERMISSIVE", "ISTIO_MUTUAL", None),
        ("PERMISSIVE", "DISABLE", None),
        ("DISABLE", "DISABLE", None),
        ("DISABLE", "ISTIO_MUTUAL", Some("VEIL0202")),
    ];
    for (pa, dr, want) in matrix {
        let pa_text = filled(
            "24-reachability-global-peer-authn.yaml.tmpl",
            &[("MTLSMode", pa)],
        );
        let dr_text = filled("25-reachability-global-dr.yaml.tmpl", &[("TLSMode", dr)]);
        let found = analyze_text("24+25", &format!("{pa_text}\n---\n{dr_text}"));
        let codes: Vec<&str> = found.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            want.into_iter().collect::<Vec<_>>(),
            "{pa}+{dr}:\n{}",
            shown(&found)
        );
        for f in &found {
            assert_eq!(f.resource, "DestinationRule default/default", "{f}");
            assert!(
                f.message.contains("PeerAuthentication default/default")
                    && f.message.contains("namespace default"),
                "{f}"
            );
        }
    }
}

#[test]
fn pii_demo_example_gives_no_finding() {
    let snap = veil_api::load_dir(Path::new(PII_DEMO)).unwrap_or_else(|e| panic!("{e}"));
    let found = analyze(&snap);
    assert!(found.is_empty(), "{}", shown(&found));
    assert!(
        !snap.peer_authentications.is_empty() && !snap.services.is_empty(),
        "the example is the real mesh"
    );
}

/// 29 (sidecar subset `vistio`, naked subset `vlegacy`) under a STRICT namespace, as
/// INDEX.md describes it: TLSMode DISABLE makes the sidecar subset fail; "" (auto-mTLS) and
/// ISTIO_MUTUAL towards the STRICT side do not.
#[test]
fn migration_subsets_under_strict_namespace() {
    let strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: default\nspec:\n  mtls:\n    mode: STRICT\n";
    for (tls, want) in [
        ("", None),
        ("DISABLE", Some("VEIL0201")),
        ("ISTIO_MUTUAL", None),
    ] {
        let extra = [
            ("TLSMode", tls),
            ("To.ClusterLocalFQDN", "b.default.svc.cluster.local"),
        ];
        let dr = filled("29-reachability-migration-subsets.yaml.tmpl", &extra);
        let found = analyze_text("29", &format!("{strict}---\n{dr}"));
        let codes: Vec<&str> = found.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            want.into_iter().collect::<Vec<_>>(),
            "TLSMode {tls:?}:\n{}",
            shown(&found)
        );
        if let Some(f) = found.first() {
            assert!(
                f.message.contains("b.default.svc.cluster.local (STRICT)"),
                "{f}"
            );
        }
    }
}
