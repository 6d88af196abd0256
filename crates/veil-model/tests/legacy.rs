//! Legacy `authentication.istio.io/v1alpha1` MeshPolicy and Policy (istio-cases
//! 35–38, Istio 1.4.0 TestReachability expectations), the 1.4 precedence
//! (service+port → service → namespace → mesh), and the v1beta1
//! `PeerAuthentication` printed as the equivalent.

mod common;

use common::*;
use veil_api::Snapshot;
use veil_model::authn::effective_authn;
use veil_model::legacy::{equivalent_peer_authentication, equivalent_peer_authentications};
use veil_model::{MeshInput, MtlsMode};

fn apps_with_two_naked() -> String {
    format!("{}---\n{}", apps(), echo("naked2", NS, true, &[]))
}

/// Loads `docs`, moving every DestinationRule without a namespace into `dr_ns`.
fn load(docs: &[String], dr_ns: &str) -> Snapshot {
    let mut snap = snapshot(docs);
    for dr in &mut snap.destination_rules {
        dr.meta.namespace.get_or_insert_with(|| dr_ns.to_string());
    }
    snap
}

/// Inbound mode of every echo port of every sidecar pod.
fn modes(i: &MeshInput) -> Vec<(String, u16, MtlsMode)> {
    let mut out = Vec::new();
    for p in i.registry.pods.iter().filter(|p| p.sidecar) {
        for (_, _, w) in PORTS {
            out.push((p.name.clone(), w, i.inbound(p).port(w).0));
        }
    }
    out
}

/// The merged v1beta1 YAML of all legacy resources in `snap` gives the
/// same inbound modes as the legacy resources themselves. Returns the
/// per-resource hints.
fn assert_equivalent(snap: &Snapshot, apps_yaml: &str) -> Vec<String> {
    let legacy = input_of(snap);
    let merged = equivalent_peer_authentications(snap, ROOT);
    let translated = input(&[apps_yaml.to_string(), merged.clone()]);
    assert!(translated.peer_authentications.iter().all(|p| !p.name.starts_with("policy-")), "{merged}");
    assert!(!translated.peer_authentications.is_empty(), "{merged}");
    assert_eq!(modes(&translated), modes(&legacy), "equivalent YAML differs:\n{merged}");
    snap.mesh_policies.iter().chain(snap.policies.iter()).map(|p| equivalent_peer_authentication(snap, p, ROOT)).collect()
}

#[test]
fn case35_meshpolicy_strict_with_istio_mutual() {
    let apps = apps_with_two_naked();
    let snap = load(&[apps.clone(), case("35-legacy-v1alpha1-meshpolicy-mtls-on.yaml")], ROOT);
    let i = input_of(&snap);
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Strict, "mtls: {{}} means STRICT");
    for (from, to) in [("a", "b"), ("b", "a")] {
        assert_eq!(reach(&i, from, to, 80), OK_MTLS, "{from} -> {to}");
    }
    assert_eq!(reach(&i, "naked", "naked2", 80), OK_PLAIN, "naked -> naked");
    for (from, to) in [("a", "naked"), ("naked", "a"), ("b", "naked2"), ("naked2", "b")] {
        assert_eq!(reach(&i, from, to, 80), FAIL, "{from} -> {to}: exactly one naked end");
    }
    let yaml = assert_equivalent(&snap, &apps);
    assert!(yaml[0].contains("namespace: \"istio-system\"") && yaml[0].contains("mode: STRICT"), "{}", yaml[0]);
}

#[test]
fn case36_meshpolicy_permissive_with_istio_mutual() {
    let snap = load(&[apps(), case("36-legacy-v1alpha1-meshpolicy-permissive.yaml")], ROOT);
    let i = input_of(&snap);
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Permissive);
    assert_matrix(&i, "MeshPolicy PERMISSIVE + ISTIO_MUTUAL", |f, t| match (f, t) {
        (false, false) => OK_MTLS,
        (true, false) => OK_PLAIN,
        (_, true) => FAIL,
    });
    assert_equivalent(&snap, &apps());
}

#[test]
fn case37_meshpolicy_without_peers_disables_mtls() {
    let snap = load(&[apps(), case("37-legacy-v1alpha1-meshpolicy-off.yaml")], ROOT);
    let i = input_of(&snap);
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Disable, "spec: {{}} means DISABLE");
    assert_matrix(&i, "MeshPolicy off + DISABLE", |_, _| OK_PLAIN);
    let yaml = assert_equivalent(&snap, &apps());
    assert!(yaml[0].contains("mode: DISABLE"));
}

#[test]
fn case38_policy_on_one_named_service_port() {
    let text = in_ns(&case("38-legacy-v1alpha1-policy-single-port.yaml"), NS);
    let snap = load(&[apps(), text], NS);
    let i = input_of(&snap);
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Strict, "service port http -> target 18080");
    for (name, service_port, workload_port) in PORTS {
        for from in ["a", "naked"] {
            let want = if name == "http" { FAIL } else { OK_PLAIN };
            assert_eq!(reach(&i, from, "b", service_port), want, "{from} -> b:{name}");
            assert!(!reach(&i, from, "b", service_port).mtls, "DR DISABLE: never mTLS");
        }
        if name != "http" {
            assert_eq!(inbound(&i, "b", workload_port).0, MtlsMode::Permissive, "{name}: no policy at any level");
        }
        assert_eq!(inbound(&i, "a", workload_port).0, MtlsMode::Permissive, "a is not targeted");
    }
    let yaml = assert_equivalent(&snap, &apps());
    assert!(yaml[0].contains("app: b") || yaml[0].contains("\"app\": \"b\""), "{}", yaml[0]);
    assert!(yaml[0].contains("portLevelMtls:\n    18080:\n      mode: STRICT"), "{}", yaml[0]);
}

const PRECEDENCE: &str = r#"apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata:
  name: default
spec:
  peers:
  - mtls: {}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata:
  name: default
  namespace: echo1
spec:
  peers:
  - mtls:
      mode: PERMISSIVE
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata:
  name: b-all
  namespace: echo1
spec:
  targets:
  - name: b
  peers:
  - mtls:
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata:
  name: b-tcp
  namespace: echo1
spec:
  targets:
  - name: b
    ports:
    - number: 9090
"#;

#[test]
fn legacy_precedence_port_then_service_then_namespace_then_mesh() {
    let snap = snapshot(&[apps(), PRECEDENCE.to_string()]);
    let i = input_of(&snap);
    assert_eq!(inbound(&i, "b", 19090).0, MtlsMode::Disable, "service+port (no peers) beats the service policy");
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Strict, "service policy (mtls: null) beats the namespace");
    assert_eq!(inbound(&i, "b", 5555).0, MtlsMode::Permissive, "a port of b outside the Service: namespace");
    assert_eq!(inbound(&i, "a", 18080).0, MtlsMode::Permissive, "namespace beats the mesh");
    let eff = effective_authn(&i.peer_authentications, pod(&i, "b"), ROOT);
    assert!(eff.applied.contains(&"echo1/policy-b-tcp".to_string()), "{:?}", eff.applied);
    // Without the namespace policy, the mesh level applies to a.
    let no_ns = PRECEDENCE.replace("name: default\n  namespace: echo1", "name: default\n  namespace: other");
    let i2 = input(&[apps(), no_ns]);
    assert_eq!(inbound(&i2, "a", 18080).0, MtlsMode::Strict);
    assert_eq!(inbound(&i2, "b", 19090).0, MtlsMode::Disable);
    let hints = assert_equivalent(&snap, &apps());
    let b_tcp = hints.iter().find(|h| h.contains("Policy echo1/b-tcp")).expect("hint for b-tcp");
    assert!(b_tcp.contains("also target Service b: merge them"), "{b_tcp}");
    assert!(b_tcp.contains("19090:\n      mode: DISABLE"), "{b_tcp}");
}

#[test]
fn a_v1beta1_workload_policy_shadows_legacy_targets() {
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: b\n  namespace: echo1\nspec:\n  selector:\n    matchLabels:\n      app: b\n  mtls:\n    mode: PERMISSIVE\n";
    let i = input(&[apps(), PRECEDENCE.to_string(), pa.to_string()]);
    assert_eq!(inbound(&i, "b", 19090).0, MtlsMode::Permissive);
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Permissive);
    let eff = effective_authn(&i.peer_authentications, pod(&i, "b"), ROOT);
    assert!(eff.shadowed.contains(&"echo1/policy-b-all".to_string()), "{:?}", eff.shadowed);
}

#[test]
fn named_target_ports_resolve_through_the_pods() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: bn\n  namespace: echo1\nspec:\n  selector:\n    app: b\n  ports:\n  - name: web\n    port: 8080\n    targetPort: tcp\n";
    let policy = "apiVersion: authentication.istio.io/v1alpha1\nkind: Policy\nmetadata:\n  name: bn-web\n  namespace: echo1\nspec:\n  targets:\n  - name: bn\n    ports:\n    - name: web\n  peers:\n  - mtls: {}\n";
    let snap = snapshot(&[apps(), svc.to_string(), policy.to_string()]);
    let i = input_of(&snap);
    assert_eq!(inbound(&i, "b", 19090).0, MtlsMode::Strict, "web -> targetPort tcp -> container port 19090");
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Permissive);
    let yaml = assert_equivalent(&snap, &format!("{}---\n{svc}", apps()));
    assert!(yaml[0].contains("19090:"), "{}", yaml[0]);
    // A target naming a port the Service does not have applies nowhere.
    let wrong = policy.replace("name: web", "name: nope");
    let i = input(&[apps(), svc.to_string(), wrong]);
    assert_eq!(inbound(&i, "b", 19090).0, MtlsMode::Permissive);
}
