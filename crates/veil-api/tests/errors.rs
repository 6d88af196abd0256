//! Error positions and messages, warnings, and the parsing corner cases of the brief.

use std::path::Path;
use veil_api::{
    load_dir, load_str, snapshot_from_str, AnyResource, ConfigError, LegacyMtlsMode, Protocol,
    TargetPort,
};

fn errors(file: &str, text: &str) -> Vec<ConfigError> {
    match load_str(Path::new(file), text) {
        Ok(r) => panic!("expected errors, loaded {} resources", r.len()),
        Err(e) => e.0,
    }
}

const PII: &str = "# PII demo: namespace-wide STRICT
apiVersion: v1
kind: Namespace
metadata:
  name: pii-demo
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: pii-demo
spec:
  mtls:
    mode: STRCT
";

#[test]
fn bad_mode_message_is_exact() {
    let errs = errors("pii.yaml", PII);
    let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            r#"pii.yaml:14: spec.mtls.mode: unknown mode "STRCT"; expected one of UNSET, DISABLE, PERMISSIVE, STRICT"#
        ]
    );
    let fixed = PII.replace("STRCT", "STRICT");
    assert_eq!(
        load_str(Path::new("pii.yaml"), &fixed).map(|r| r.len()),
        Ok(2)
    );
}

#[test]
fn unknown_kind_warns_without_error() {
    let text = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: sleep\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: g\n";
    let snap = snapshot_from_str(Path::new("w.yaml"), text).expect("no errors");
    let shown: Vec<String> = snap.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown
            .first()
            .is_some_and(|w| w.starts_with("w.yaml:1: kind Widget")),
        "{shown:?}"
    );
    assert!(
        shown
            .get(1)
            .is_some_and(|w| w.starts_with("w.yaml:11: apiVersion gateway.networking.k8s.io/v1")),
        "{shown:?}"
    );
    assert_eq!(snap.service_accounts.len(), 1);
    assert!(snap.gateways.is_empty());
}

#[test]
fn third_document_errors_carry_absolute_lines() {
    let head = "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n# second\n\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: b\n---\n";
    let enum_err = format!("{head}apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  host: x\n  trafficPolicy:\n    tls:\n      sni: x\n      mode: BOGUS\n");
    let e = errors("m.yaml", &enum_err);
    assert_eq!(e.len(), 1);
    let first = e.first().expect("one error");
    assert_eq!(
        (first.line, first.field.as_str()),
        (22, "spec.trafficPolicy.tls.mode")
    );
    assert!(first
        .message
        .starts_with("unknown tls mode \"BOGUS\"; expected one of DISABLE, SIMPLE"));

    let validation = format!("{head}apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: p\nspec:\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n    8080:\n      mode: DISABLE\n");
    let e = errors("m.yaml", &validation);
    let first = e.first().expect("one error");
    assert_eq!(
        (first.line, first.field.as_str()),
        (20, "spec.portLevelMtls")
    );
    assert!(first
        .message
        .starts_with("mesh/namespace peer authentication cannot have port level mTLS"));

    let syntax = format!("{head}apiVersion: v1\nkind: Service\nmetadata:\n  name: [oops\n");
    let e = errors("m.yaml", &syntax);
    let shown: Vec<String> = e.iter().map(ToString::to_string).collect();
    assert_eq!(shown, vec!["m.yaml:17: did not find expected ',' or ']', while parsing a flow sequence at line 16 column 9"]);
}

#[test]
fn errors_are_collected_across_documents() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n  - port: 70000\n---\nmetadata:\n  name: nokind\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: d\nspec:\n  trafficPolicy: {}\n";
    let shown: Vec<String> = errors("c.yaml", text)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        shown,
        vec![
            "c.yaml:7: spec.ports[0].port: port 70000 is out of range 1..65535",
            "c.yaml:9: apiVersion: missing or not a string; every document needs apiVersion and kind",
            "c.yaml:9: kind: missing or not a string; every document needs apiVersion and kind",
            "c.yaml:16: spec.host: required field is missing; name the service host this rule applies to",
        ]
    );
}

#[test]
fn peer_authentication_port_rules() {
    let pa = |body: &str| {
        format!("apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: p\nspec:\n  selector:\n    matchLabels:\n      app: b\n{body}")
    };
    let e = errors("p.yaml", &pa("  portLevelMtls: {}\n"));
    assert!(
        e.iter()
            .any(|e| e.message.starts_with("port level mTLS must not be empty")),
        "{e:?}"
    );
    let e = errors(
        "p.yaml",
        &pa("  portLevelMtls:\n    70000:\n      mode: STRICT\n"),
    );
    let first = e.first().expect("error");
    assert_eq!(
        (first.line, first.field.as_str()),
        (10, "spec.portLevelMtls.70000")
    );
    let ok = load_str(
        Path::new("p.yaml"),
        &pa("  portLevelMtls:\n    8080:\n      mode: DISABLE\n"),
    );
    assert_eq!(ok.map(|r| r.len()), Ok(1));
}

#[test]
fn gateway_protocol_is_case_insensitive_and_required() {
    let gw = |port: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: g\nspec:\n  servers:\n  - port:\n{port}    hosts: [\"*\"]\n")
    };
    let ok = load_str(
        Path::new("g.yaml"),
        &gw("      number: 15012\n      protocol: tls\n"),
    )
    .expect("loads");
    let Some(AnyResource::Gateway(g)) = ok.first() else {
        panic!("not a gateway")
    };
    assert_eq!(
        g.spec.servers.first().map(|s| s.port.protocol),
        Some(Protocol::Tls)
    );
    let e = errors("g.yaml", &gw("      number: 80\n"));
    let first = e.first().expect("error");
    assert_eq!(
        first.to_string(),
        "g.yaml:7: spec.servers[0].port.protocol: required field is missing"
    );
    let e = errors("g.yaml", &gw("      number: 80\n      protocol: HTTPX\n"));
    assert!(
        e.first().is_some_and(|e| e.line == 9
            && e.message
                .starts_with("unknown protocol \"HTTPX\"; expected one of HTTP, HTTPS")),
        "{e:?}"
    );
}

#[test]
fn legacy_peers_mtls_empty_and_null_mean_strict() {
    let policy = |spec: &str| {
        format!("apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata:\n  name: default\nspec:\n{spec}")
    };
    let mode = |spec: &str| match load_str(Path::new("l.yaml"), &policy(spec))
        .expect("loads")
        .first()
    {
        Some(AnyResource::Policy(p)) => p.spec.mtls_mode(),
        other => panic!("not a policy: {other:?}"),
    };
    assert_eq!(
        mode("  peers:\n  - mtls: {}\n"),
        Some(LegacyMtlsMode::Strict)
    );
    assert_eq!(mode("  peers:\n  - mtls:\n"), Some(LegacyMtlsMode::Strict));
    assert_eq!(
        mode("  peers:\n  - mtls:\n      mode: PERMISSIVE\n"),
        Some(LegacyMtlsMode::Permissive)
    );
    assert_eq!(
        mode("  targets:\n  - name: b\n    ports:\n    - name: http\n"),
        None
    );
}

#[test]
fn target_port_by_name_and_secret_data() {
    let text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  clusterIP: None\n  ports:\n  - name: http\n    port: 80\n    targetPort: http-web\n  - port: 81\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: cred\ntype: kubernetes.io/tls\ndata:\n  tls.crt: aGVsbG8=\nstringData:\n  cert: plain\n";
    let snap = snapshot_from_str(Path::new("s.yaml"), text).expect("loads");
    let svc = snap.services.first().expect("service");
    assert!(svc.spec.is_headless());
    let targets: Vec<TargetPort> = svc.spec.ports.iter().map(|p| p.target()).collect();
    assert_eq!(
        targets,
        vec![TargetPort::Name("http-web".into()), TargetPort::Number(81)]
    );
    let secret = snap.secrets.first().expect("secret");
    assert_eq!(secret.spec.get("tls.crt"), Some(&b"hello"[..]));
    assert_eq!(secret.spec.get("cert"), Some(&b"plain"[..]));
    let bad = text.replace("aGVsbG8=", "not*base64");
    let e = errors("s.yaml", &bad);
    assert!(
        e.first()
            .is_some_and(|e| e.line == 19 && e.field == "data.tls.crt"),
        "{e:?}"
    );
}

#[test]
fn empty_and_comment_documents_are_skipped() {
    let text = "---\n# only a comment\n---\n\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: a\n---\n";
    let loaded = load_str(Path::new("e.yaml"), text).expect("loads");
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded.first().map(|r| r.source().line), Some(6));
}

#[test]
fn load_dir_recurses_skips_local_file_and_finds_duplicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sa =
        |name: &str| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n");
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    write("a.yaml", &sa("one"));
    write("sub/b.yml", &sa("two"));
    write("notes.txt", "not: [yaml");
    write("veil.local.yaml", "not: [yaml");
    let snap = load_dir(dir.path()).expect("loads");
    let names: Vec<&str> = snap.service_accounts.iter().map(|r| r.name()).collect();
    assert_eq!(names, vec!["one", "two"]);

    write("sub/veil.local.yml", "not: [yaml");
    let e = load_dir(dir.path()).expect_err("a .yml local file is not exempt");
    assert_eq!(e.0.len(), 1);
    std::fs::remove_file(dir.path().join("sub/veil.local.yml")).expect("rm");

    write("sub/c.yaml", &sa("one"));
    let e = load_dir(dir.path()).expect_err("duplicate");
    let first = e.0.first().expect("error");
    assert_eq!(first.file, dir.path().join("sub/c.yaml"));
    assert!(
        first
            .message
            .starts_with("duplicate ServiceAccount default/one, first defined at "),
        "{first}"
    );
}
