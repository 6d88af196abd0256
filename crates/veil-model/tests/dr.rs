//! DestinationRule selection and client TLS: lookup order and `exportTo`,
//! host matching, port-level and subset merging, subsets (istio-cases 29),
//! PASSTHROUGH and headless per-endpoint decisions (case 30), and TLS
//! origination settings (SIMPLE / MUTUAL; credentialName on sidecars).

mod common;

use common::*;
use std::path::PathBuf;
use veil_api::SimpleLb;
use veil_model::dr::{self, host_matches};
use veil_model::{MeshInput, UpstreamTls};

fn dr_yaml(name: &str, ns: &str, host: &str, extra: &str, policy: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  host: \"{host}\"\n{extra}{policy}")
}

fn mutual_sni(sni: &str) -> String {
    format!("  trafficPolicy:\n    tls:\n      mode: ISTIO_MUTUAL\n      sni: {sni}\n")
}

fn sni(i: &MeshInput, from: &str, to: &str, port: u16) -> String {
    match tls(i, from, to, port) {
        UpstreamTls::IstioMutual { sni, .. } => sni,
        other => panic!("{from} -> {to}:{port}: expected mesh mTLS, got {other:?}"),
    }
}

fn clients() -> Vec<String> {
    let mut v = vec![apps()];
    for (ns, app) in [("echo2", "c"), ("echo3", "d"), ("echo4", "e")] {
        v.push(namespace(ns));
        v.push(echo(app, ns, false, &[]));
    }
    v
}

#[test]
fn host_matching_rules() {
    let h = "b.echo1.svc.cluster.local";
    for p in [h, "*", "*.local", "*.cluster.local", "*.echo1.svc.cluster.local"] {
        assert!(host_matches(p, h), "{p}");
    }
    for p in ["b.echo2.svc.cluster.local", "*.echo2.svc.cluster.local", "*b.echo1.svc.cluster.local", "echo1.svc.cluster.local"] {
        assert!(!host_matches(p, h), "{p}");
    }
}

#[test]
fn lookup_order_client_then_service_then_root_namespace() {
    let client_ns = dr_yaml("b", "echo2", "b.echo1.svc.cluster.local", "", &mutual_sni("client-ns"));
    let service_ns = dr_yaml("b", NS, "b", "", &mutual_sni("service-ns"));
    let root = dr_yaml("echo1", ROOT, "*.echo1.svc.cluster.local", "", &mutual_sni("root"));
    let root_star = dr_yaml("all", ROOT, "*", "", &mutual_sni("root-star"));
    let mut docs = clients();
    docs.extend([client_ns.clone(), service_ns.clone(), root.clone(), root_star.clone()]);
    let i = input(&docs);
    assert_eq!(sni(&i, "c", "b", 80), "client-ns");
    assert_eq!(sni(&i, "d", "b", 80), "service-ns", "a short host resolves in the rule's namespace");
    assert_eq!(sni(&i, "a", "b", 80), "service-ns");
    assert_eq!(sni(&i, "c", "a", 80), "root", "the most specific root host wins");
    let i = input(&[clients(), vec![client_ns.clone(), root.clone(), root_star.clone()]].concat());
    assert_eq!(sni(&i, "d", "b", 80), "root");
    let i = input(&[clients(), vec![root_star]].concat());
    assert_eq!(sni(&i, "d", "b", 80), "root-star");
    let i = input(&clients());
    assert_eq!(sni(&i, "d", "b", 80), "outbound_.80_._.b.echo1.svc.cluster.local", "no rule: auto-mTLS");
}

#[test]
fn export_to_hides_rules_from_other_namespaces() {
    let private = dr_yaml("b", NS, "b", "  exportTo: [\".\"]\n", &mutual_sni("private"));
    let root = dr_yaml("echo1", ROOT, "*.echo1.svc.cluster.local", "", &mutual_sni("root"));
    let i = input(&[clients(), vec![private, root.clone()]].concat());
    assert_eq!(sni(&i, "a", "b", 80), "private", "visible in its own namespace");
    assert_eq!(sni(&i, "d", "b", 80), "root", "hidden from echo3");
    let to_echo3 = dr_yaml("b", NS, "b", "  exportTo: [echo3]\n", &mutual_sni("echo3-only"));
    let i = input(&[clients(), vec![to_echo3, root]].concat());
    assert_eq!(sni(&i, "d", "b", 80), "echo3-only");
    assert_eq!(sni(&i, "e", "b", 80), "root");
}

#[test]
fn exact_host_beats_wildcards_in_one_namespace() {
    let mut docs = clients();
    docs.push(dr_yaml("wild", NS, "*.echo1.svc.cluster.local", "", &mutual_sni("wild")));
    docs.push(dr_yaml("exact", NS, "b.echo1.svc.cluster.local", "", &mutual_sni("exact")));
    let i = input(&docs);
    assert_eq!(sni(&i, "a", "b", 80), "exact");
    assert_eq!(sni(&i, "b", "a", 80), "wild");
}

const PORT_LEVEL: &str = "  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    tls:
      mode: ISTIO_MUTUAL
      sni: top
    portLevelSettings:
    - port:
        number: 9090
      loadBalancer:
        simple: LEAST_REQUEST
    - port:
        number: 7070
      tls:
        mode: DISABLE
";

#[test]
fn port_level_settings_replace_the_top_level_policy_wholesale() {
    let i = input(&[apps(), dr_yaml("b", NS, "b", "", PORT_LEVEL)]);
    assert_eq!(sni(&i, "a", "b", 80), "top");
    assert_eq!(sni(&i, "a", "b", 9090), "outbound_.9090_._.b.echo1.svc.cluster.local", "tls not inherited: auto-mTLS");
    assert_eq!(tls(&i, "a", "b", 7070), UpstreamTls::Disable);
    let rule = applied(&i, "a", "b").expect("rule");
    assert_eq!(rule.effective(80, None).simple_lb(), SimpleLb::RoundRobin);
    assert_eq!(rule.effective(9090, None).simple_lb(), SimpleLb::LeastRequest);
    assert_eq!(rule.effective(7070, None).simple_lb(), SimpleLb::Unspecified, "loadBalancer not inherited");
}

fn applied(i: &MeshInput, from: &str, to: &str) -> Option<dr::AppliedRule> {
    let client = pod(i, from);
    let host = format!("{to}.{NS}.svc.cluster.local");
    dr::lookup(
        &i.destination_rules,
        dr::Client { namespace: &client.namespace, labels: Some(&client.labels) },
        dr::Target { host: &host, namespace: NS },
        ROOT,
        "cluster.local",
    )
}

const SUBSETS: &str = "  trafficPolicy:
    loadBalancer:
      simple: PASSTHROUGH
    tls:
      mode: DISABLE
  subsets:
  - name: v1
    labels:
      version: v1
    trafficPolicy:
      tls:
        mode: ISTIO_MUTUAL
        sni: v1
      portLevelSettings:
      - port:
          number: 9090
        loadBalancer:
          simple: RANDOM
  - name: v2
    labels:
      version: v2
";

#[test]
fn subset_policy_overrides_per_field_and_its_port_level_wholesale() {
    let docs = [namespace(NS), echo("a", NS, false, &[]), echo("b", NS, false, &[("version", "v1")]), dr_yaml("b", NS, "b", "", SUBSETS)];
    let i = input(&docs);
    let s = service(&i, "a", "b", 80);
    assert_eq!(s.endpoints[0].tls, UpstreamTls::Disable, "no subset: the rule's DISABLE");
    let v1 = &s.subsets["v1"];
    assert!(matches!(&v1[0].tls, UpstreamTls::IstioMutual { sni, .. } if sni == "v1"), "{v1:?}");
    assert!(s.subsets["v2"].is_empty(), "b is not version v2");
    let rule = applied(&i, "a", "b").expect("rule");
    assert_eq!(rule.effective(80, Some("v1")).simple_lb(), SimpleLb::Passthrough, "loadBalancer inherited per field");
    let p9090 = rule.effective(9090, Some("v1"));
    assert_eq!((p9090.simple_lb(), p9090.tls), (SimpleLb::Random, None));
    let s9090 = service(&i, "a", "b", 9090);
    assert!(
        matches!(&s9090.subsets["v1"][0].tls, UpstreamTls::IstioMutual { sni, .. } if sni == "outbound_.9090_.v1_.b.echo1.svc.cluster.local"),
        "subset port-level without tls: auto-mTLS with the subset's SNI"
    );
}

#[test]
fn a_rule_without_tls_keeps_auto_mtls_on() {
    let only_subsets = "  subsets:\n  - name: v1\n    labels:\n      version: v1\n";
    let only_lb = "  trafficPolicy:\n    loadBalancer:\n      simple: LEAST_REQUEST\n";
    for body in [only_subsets, only_lb] {
        let i = input(&[apps(), dr_yaml("b", NS, "b", "", body), dr_yaml("n", NS, "naked", "", body)]);
        assert!(applied(&i, "a", "b").is_some(), "control: the rule applies");
        assert!(matches!(tls(&i, "a", "b", 80), UpstreamTls::IstioMutual { .. }), "{body}");
        assert_eq!(tls(&i, "a", "naked", 80), UpstreamTls::Disable, "auto-mTLS: plaintext to naked");
    }
}

fn migration(mode: &str) -> MeshInput {
    let mig = [
        echo_service("mig", NS, false),
        echo_deployment("mig-vistio", "mig", NS, false, &[("version", "vistio")]),
        echo_deployment("mig-vlegacy", "mig", NS, true, &[("version", "vlegacy")]),
    ];
    let ns_strict = format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: {NS}\nspec:\n  mtls:\n    mode: STRICT\n");
    let t = in_ns(&template_to("29-reachability-migration-subsets.yaml.tmpl", "mig", &[("TLSMode", mode)]), NS);
    input(&[vec![apps(), ns_strict, t], mig.to_vec()].concat())
}

#[test]
fn case29_migration_subsets_with_each_tls_mode() {
    let outcome = |i: &MeshInput, subset: &str| {
        let s = service(i, "a", "mig", 80);
        assert_eq!(s.endpoints.len(), 2);
        let eps = &s.subsets[subset];
        assert_eq!(eps.len(), 1, "{subset}");
        reach_endpoint(i, "a", &eps[0])
    };
    let auto = migration("");
    assert_eq!(outcome(&auto, "vistio"), OK_MTLS);
    assert_eq!(outcome(&auto, "vlegacy"), OK_PLAIN);
    let s = service(&auto, "a", "mig", 80);
    assert!(matches!(&s.subsets["vistio"][0].tls, UpstreamTls::IstioMutual { sni, .. } if sni == "outbound_.80_.vistio_.mig.echo1.svc.cluster.local"));
    let disable = migration("DISABLE");
    assert_eq!(outcome(&disable, "vistio"), FAIL);
    assert_eq!(outcome(&disable, "vlegacy"), OK_PLAIN);
    let mutual = migration("ISTIO_MUTUAL");
    assert_eq!(outcome(&mutual, "vistio"), OK_MTLS);
    assert_eq!(outcome(&mutual, "vlegacy"), FAIL);
}

#[test]
fn case30_passthrough_decides_per_endpoint() {
    let t = in_ns(&case("30-reachability-automtls-passthrough.yaml.tmpl"), ROOT);
    let hl = [
        echo_service("hl", NS, true),
        echo_deployment("hl-side", "hl", NS, false, &[]),
        echo_deployment("hl-naked", "hl", NS, true, &[]),
    ];
    let i = input(&[vec![apps(), t], hl.to_vec()].concat());
    assert_eq!(applied(&i, "a", "b").expect("rule").effective(80, None).simple_lb(), SimpleLb::Passthrough);
    assert_matrix(&i, "automtls PASSTHROUGH", |f, t| if !f && !t { OK_MTLS } else { OK_PLAIN });
    let s = service(&i, "a", "hl", 80);
    assert_eq!(s.cluster_ip, None, "headless");
    for ep in &s.endpoints {
        let want = if ep.pod == "hl-side" { OK_MTLS } else { OK_PLAIN };
        assert_eq!(reach_endpoint(&i, "a", ep), want, "{}", ep.pod);
    }
}

const ORIGINATION: &str = "  trafficPolicy:
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE
        caCertificates: certs/ca.pem
    - port:
        number: 9090
      tls:
        mode: MUTUAL
        clientCertificate: /etc/certs/client.pem
        privateKey: /etc/certs/client.key
        caCertificates: /etc/certs/ca.pem
        subjectAltNames: [server.example]
        sni: server.example
    - port:
        number: 7070
      tls:
        mode: MUTUAL
        credentialName: client-credential
    - port:
        number: 85
      tls:
        mode: MUTUAL
        clientCertificate: /etc/certs/client.pem
";

#[test]
fn simple_and_mutual_origination_settings() {
    let i = input(&[apps(), dr_yaml("b", NS, "b", "", ORIGINATION)]);
    assert_eq!(
        tls(&i, "a", "b", 443),
        UpstreamTls::Simple {
            sni: Some("b.echo1.svc.cluster.local".into()),
            ca_file: Some(PathBuf::from(CASES).join("certs/ca.pem")),
            subject_alt_names: vec![],
            insecure_skip_verify: false,
        },
        "relative paths are taken from the YAML file's directory; the SNI defaults to the host"
    );
    assert_eq!(
        tls(&i, "a", "b", 9090),
        UpstreamTls::Mutual {
            sni: Some("server.example".into()),
            ca_file: Some("/etc/certs/ca.pem".into()),
            subject_alt_names: vec!["server.example".into()],
            insecure_skip_verify: false,
            cert_file: "/etc/certs/client.pem".into(),
            key_file: "/etc/certs/client.key".into(),
        }
    );
    // credentialName on a sidecar the rule does not select: no TLS, as Istio
    // (see dr_credentials.rs for gateways).
    assert_eq!(tls(&i, "a", "b", 7070), UpstreamTls::Disable);
    assert!(matches!(tls(&i, "a", "b", 85), UpstreamTls::Unsupported { reason } if reason.contains("privateKey")));
    let (errors, warnings) = dr::check(&i.destination_rules);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("[85].tls: mode MUTUAL needs clientCertificate and privateKey")), "{errors:?}");
    assert!(errors.iter().all(|e| e.contains("test-input.yaml:") && e.contains("DestinationRule echo1/b")), "{errors:?}");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("[85].tls: no caCertificates")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("[7070].tls.credentialName: no Secret client-credential in any namespace")), "{warnings:?}");
    // Control: a rule with only good settings has no findings.
    let good = input(&[apps(), dr_yaml("b", NS, "b", "", &mutual_sni("x"))]);
    assert_eq!(dr::check(&good.destination_rules), (vec![], vec![]));
}

#[test]
fn workload_selector_rules_apply_only_to_matching_clients() {
    let selected = dr_yaml("sel", NS, "b", "  workloadSelector:\n    matchLabels:\n      app: a\n", &mutual_sni("selected"));
    let plain = dr_yaml("plain", NS, "b", "", &mutual_sni("everyone"));
    let docs = [apps(), echo("a2", NS, false, &[]), selected, plain];
    let i = input(&docs);
    assert_eq!(sni(&i, "a", "b", 80), "selected");
    assert_eq!(sni(&i, "a2", "b", 80), "everyone");
    let configs = i.proxy_configs();
    let of = |pod: &str| configs.iter().find(|c| c.node.pod == pod).expect("config").outbound.clone();
    let b_of = |pod: &str| of(pod).services.iter().find(|s| s.hostname.starts_with("b.") && s.port == 80).cloned().expect("b");
    assert!(matches!(&b_of("a").endpoints[0].tls, UpstreamTls::IstioMutual { sni, .. } if sni == "selected"));
    assert!(matches!(&b_of("a2").endpoints[0].tls, UpstreamTls::IstioMutual { sni, .. } if sni == "everyone"));
}
