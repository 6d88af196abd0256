//! DestinationRule `tls.credentialName` (istio-cases 40, Istio's
//! `TestSimpleTlsOrigination` / `TestMutualTlsOrigination`): the egress
//! gateway originates SIMPLE / MUTUAL TLS with the Secret read from its own
//! namespace (keys `tls.crt`/`tls.key`/`ca.crt` or `cert`/`key`/`cacert`, CA
//! from `<name>-cacert` first); sidecars ignore it unless the rule selects
//! them; a missing Secret refuses only the affected endpoints, with a message
//! naming the rule's file:line and field.

mod common;

use common::*;
use veil_model::dr;
use veil_model::*;

const SERVER: &str = "server.echo1.svc.cluster.local";
const GATEWAY: &str = "istio-egressgateway";

/// A Secret in `ns` with `stringData` `keys`.
fn secret(ns: &str, name: &str, keys: &[(&str, &str)]) -> String {
    let mut y = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {ns}\nstringData:\n");
    for (k, v) in keys {
        y.push_str(&format!("  {k}: \"{v}\"\n"));
    }
    y
}

/// Case 40 with `mode` and `credential`: the Gateway, VirtualService and
/// gateway-subset rule in the client namespace (echo1), the originating rule
/// in the gateway's namespace (istio-system), as the Istio test applies them;
/// the apps, the external `server` (no sidecar) and a sidecar `sys` in
/// istio-system; plus `extra` documents.
fn case_40(mode: &str, credential: &str, extra: &[String]) -> MeshInput {
    let params = [
        ("EgressLabel", "egressgateway"),
        ("EgressService", GATEWAY),
        ("EgressNamespace", ROOT),
        ("to.Config.ClusterLocalFQDN", SERVER),
        ("DestinationPort", "443"),
        ("PortNumber", "443"),
        ("Mode", mode),
        ("CredentialName", credential),
    ];
    let filled = template("40-egress-gateway-tls-origination-credentialName.yaml.tmpl", &params);
    let docs: Vec<&str> = filled.split("\n---\n").collect();
    let (originate, client_side) = docs.split_last().expect("four documents");
    assert!(originate.contains("credentialName"), "{originate}");
    let mut all = vec![apps(), echo("server", NS, true, &[]), namespace(ROOT), echo("sys", ROOT, false, &[])];
    all.extend(client_side.iter().map(|d| in_ns(d, NS)));
    all.push(in_ns(originate, ROOT));
    all.extend(extra.iter().cloned());
    input(&all)
}

/// The TLS pod `from` uses to the endpoint of `host:port`.
fn tls_of(input: &MeshInput, from: &str, host: &str, port: u16) -> UpstreamTls {
    let services = input.outbound_for(pod(input, from)).services;
    let s = services.iter().find(|s| s.hostname == host && s.port == port).unwrap_or_else(|| panic!("{from}: no {host}:{port}"));
    let [ep] = s.endpoints.as_slice() else { panic!("{host}:{port}: {:?}", s.endpoints) };
    ep.tls.clone()
}

fn pem(text: &str) -> Option<PemSource> {
    Some(PemSource::Pem(text.into()))
}

fn reason(tls: UpstreamTls) -> String {
    match tls {
        UpstreamTls::Unsupported { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn simple_takes_the_ca_from_the_cacert_secret_on_the_gateway_only() {
    // Istio's "simple" case: only `tls-credential-cacert` (key ca.crt) exists.
    let i = case_40("SIMPLE", "tls-credential", &[secret(ROOT, "tls-credential-cacert", &[("ca.crt", "ROOT-CA")])]);
    assert_eq!(
        tls_of(&i, GATEWAY, SERVER, 443),
        UpstreamTls::Credential {
            sni: Some(SERVER.into()),
            subject_alt_names: vec![],
            insecure_skip_verify: false,
            source: "Secret istio-system/tls-credential-cacert".into(),
            ca: pem("ROOT-CA"),
            client: None,
        }
    );
    // Sidecars (no workloadSelector on the rule) build no TLS for it, as
    // Istio: the rule is for the gateway.
    assert_eq!(tls_of(&i, "a", SERVER, 443), UpstreamTls::Disable);
    // Same namespace as the gateway, same rules: still a sidecar.
    assert_eq!(tls_of(&i, "sys", SERVER, 443), UpstreamTls::Disable);
    let configs = i.proxy_configs();
    let of = |name: &str| {
        let c = configs.iter().find(|c| c.node.pod == name).unwrap_or_else(|| panic!("no config {name}"));
        let s = c.outbound.services.iter().find(|s| s.hostname == SERVER && s.port == 443).expect("server:443");
        s.endpoints[0].tls.clone()
    };
    assert!(matches!(of(GATEWAY), UpstreamTls::Credential { .. }), "{:?}", of(GATEWAY));
    assert_eq!(of("sys"), UpstreamTls::Disable, "the gateway's outbound is not shared with a sidecar of its namespace");
    // The sidecar's route to the gateway is untouched: ISTIO_MUTUAL, sni = the external host.
    let gw_host = format!("{GATEWAY}.{ROOT}.svc.cluster.local");
    let s = i.outbound_for(pod(&i, "a")).services.into_iter().find(|s| s.hostname == gw_host && s.port == 443).expect("gateway service");
    assert!(matches!(&s.subsets["server"][0].tls, UpstreamTls::IstioMutual { sni, .. } if sni == SERVER), "{:?}", s.subsets);
}

#[test]
fn mutual_with_generic_or_tls_keys_and_a_separate_cacert_secret() {
    let generic = secret(ROOT, "mtls-generic", &[("cert", "G-CERT"), ("key", "G-KEY"), ("cacert", "G-CA")]);
    let i = case_40("MUTUAL", "mtls-generic", &[generic]);
    let UpstreamTls::Credential { source, ca, client, sni, .. } = tls_of(&i, GATEWAY, SERVER, 443) else { panic!("generic") };
    assert_eq!((source.as_str(), ca, sni.as_deref()), ("Secret istio-system/mtls-generic", pem("G-CA"), Some(SERVER)));
    assert_eq!(client, Some(ClientCertificate { cert: PemSource::Pem("G-CERT".into()), key: PemSource::Pem("G-KEY".into()) }));

    // kubernetes.io/tls keys (base64 `data`), with the CA in `<name>-cacert`,
    // which wins over the Secret's own ca.crt.
    let tls_keys = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: mtls-tls\n  namespace: istio-system\ntype: kubernetes.io/tls\ndata:\n  tls.crt: VC1DRVJU\n  tls.key: VC1LRVk=\n  ca.crt: T1dOLUNB\n";
    let cacert = secret(ROOT, "mtls-tls-cacert", &[("ca.crt", "SEPARATE-CA")]);
    let i = case_40("MUTUAL", "mtls-tls", &[tls_keys.to_string(), cacert]);
    let UpstreamTls::Credential { source, ca, client, .. } = tls_of(&i, GATEWAY, SERVER, 443) else { panic!("tls keys") };
    assert_eq!(source, "Secrets istio-system/mtls-tls and istio-system/mtls-tls-cacert");
    assert_eq!(ca, pem("SEPARATE-CA"));
    assert_eq!(client, Some(ClientCertificate { cert: PemSource::Pem("T-CERT".into()), key: PemSource::Pem("T-KEY".into()) }));
    // Control: without the -cacert Secret the Secret's own ca.crt is used.
    let i = case_40("MUTUAL", "mtls-tls", &[tls_keys.to_string()]);
    assert!(matches!(tls_of(&i, GATEWAY, SERVER, 443), UpstreamTls::Credential { ca, .. } if ca == pem("OWN-CA")));
}

#[test]
fn missing_secret_refuses_only_that_endpoint_and_names_file_line_and_field() {
    let i = case_40("MUTUAL", "mtls-credential-not-created", &[]);
    let why = reason(tls_of(&i, GATEWAY, SERVER, 443));
    for part in [
        "test-input.yaml:",
        "DestinationRule istio-system/originate-tls-for-server-sds-mtls-credential-not-created",
        "trafficPolicy.portLevelSettings[443].tls.credentialName",
        "no Secret mtls-credential-not-created in namespace istio-system",
        "create it there with keys tls.crt, tls.key and ca.crt",
    ] {
        assert!(why.contains(part), "{part:?} not in {why}");
    }
    // The rest of the gateway's config still works.
    assert!(matches!(tls_of(&i, GATEWAY, &format!("b.{NS}.svc.cluster.local"), 80), UpstreamTls::IstioMutual { .. }));
    // `veil validate`: a warning (config keeps serving), not an error.
    let (errors, warnings) = dr::check(&i.destination_rules);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("portLevelSettings[443].tls.credentialName: no Secret mtls-credential-not-created in any namespace"), "{warnings:?}");
    // Control: with the Secret, no warning.
    let ok = case_40("MUTUAL", "c", &[secret(ROOT, "c", &[("tls.crt", "C"), ("tls.key", "K"), ("ca.crt", "A")])]);
    assert_eq!(dr::check(&ok.destination_rules), (vec![], vec![]));
    assert!(matches!(tls_of(&ok, GATEWAY, SERVER, 443), UpstreamTls::Credential { .. }));
}

#[test]
fn unusable_secrets_are_refused_with_what_to_add() {
    // Istio's "no client certs": only the CA Secret exists for MUTUAL.
    let i = case_40("MUTUAL", "simple-only", &[secret(ROOT, "simple-only-cacert", &[("ca.crt", "A")])]);
    assert!(reason(tls_of(&i, GATEWAY, SERVER, 443)).contains("no Secret simple-only in namespace istio-system"));
    // Keys under other names.
    let i = case_40("MUTUAL", "odd", &[secret(ROOT, "odd", &[("certificate", "C"), ("pkey", "K")])]);
    let why = reason(tls_of(&i, GATEWAY, SERVER, 443));
    assert!(why.contains("didn't have expected keys (cert and key) or (tls.crt and tls.key); found: certificate, pkey"), "{why}");
    // Cert and key but no CA anywhere.
    let i = case_40("MUTUAL", "noca", &[secret(ROOT, "noca", &[("tls.crt", "C"), ("tls.key", "K")])]);
    let why = reason(tls_of(&i, GATEWAY, SERVER, 443));
    assert!(why.contains("no CA to verify the server") && why.contains("insecureSkipVerify"), "{why}");
    // SIMPLE with neither Secret: Istio's "missing secret".
    let i = case_40("SIMPLE", "none", &[]);
    assert!(reason(tls_of(&i, GATEWAY, SERVER, 443)).contains("key ca.crt (or cacert)"));
}

#[test]
fn secret_is_read_from_the_gateway_namespace_not_the_rule_namespace() {
    // The originating rule in echo1 (exported everywhere), its Secret next to it.
    let rule = format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: originate\n  namespace: {NS}\nspec:\n  host: {SERVER}\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      credentialName: app-ca\n"
    );
    let docs = [apps(), echo("server", NS, true, &[]), rule.clone(), secret(NS, "app-ca", &[("ca.crt", "A")])];
    let gateway_doc = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: egress\n  namespace: echo1\nspec:\n  selector:\n    istio: egressgateway\n  servers:\n  - port:\n      number: 443\n      name: https\n      protocol: HTTPS\n    hosts: [\"*\"]\n    tls:\n      mode: ISTIO_MUTUAL\n".to_string();
    let i = input(&[docs.to_vec(), vec![gateway_doc.clone()]].concat());
    let why = reason(tls_of(&i, GATEWAY, SERVER, 443));
    assert!(why.contains("a Secret of that name exists in namespace echo1, the DestinationRule's namespace") && why.contains("create the Secret in istio-system"), "{why}");
    // Control: the Secret in the gateway's namespace.
    let i = input(&[docs.to_vec(), vec![gateway_doc, secret(ROOT, "app-ca", &[("cacert", "GW-CA")])]].concat());
    assert!(matches!(tls_of(&i, GATEWAY, SERVER, 443), UpstreamTls::Credential { ca, .. } if ca == pem("GW-CA")));
}

#[test]
fn sidecars_honour_credential_name_of_a_rule_that_selects_them() {
    // Istio's sidecar origination (egress_sidecar_tls_origination_test): a
    // rule with a workloadSelector, its Secret in the client's namespace.
    let rule = |selector: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: sel\n  namespace: {NS}\nspec:\n  host: {SERVER}\n  workloadSelector:\n    matchLabels:\n      app: {selector}\n  subsets:\n  - name: v1\n    labels:\n      app: server\n    trafficPolicy:\n      tls:\n        mode: MUTUAL\n        credentialName: side\n"
        )
    };
    let side = secret(NS, "side", &[("cert", "C"), ("key", "K"), ("cacert", "A")]);
    let i = input(&[apps(), echo("server", NS, true, &[]), rule("a"), side.clone()]);
    let subset_tls = |i: &MeshInput, from: &str| {
        let s = i.outbound_for(pod(i, from)).services.into_iter().find(|s| s.hostname == SERVER && s.port == 443).expect("server");
        s.subsets.get("v1").map(|v| v[0].tls.clone())
    };
    assert!(matches!(subset_tls(&i, "a"), Some(UpstreamTls::Credential { client: Some(_), .. })), "{:?}", subset_tls(&i, "a"));
    assert_eq!(subset_tls(&i, "b"), None, "the rule does not select b");
    // Subset-level field in the message when its Secret is missing.
    let i = input(&[apps(), echo("server", NS, true, &[]), rule("a")]);
    let Some(UpstreamTls::Unsupported { reason }) = subset_tls(&i, "a") else { panic!("{:?}", subset_tls(&i, "a")) };
    assert!(reason.contains("DestinationRule echo1/sel: subsets[v1].trafficPolicy.tls.credentialName: credentialName side: no Secret side in namespace echo1"), "{reason}");
}

#[test]
fn config_dump_redacts_the_client_key_and_a_changed_secret_changes_the_config() {
    let cred = |key: &str| secret(ROOT, "c", &[("tls.crt", "CERT"), ("tls.key", key), ("ca.crt", "CA")]);
    let i = case_40("MUTUAL", "c", &[cred("KEY-1")]);
    let gw = i.proxy_configs().into_iter().find(|c| c.node.pod == GATEWAY).expect("gateway config");
    let client_of = |c: &ProxyConfig| {
        let s = c.outbound.services.iter().find(|s| s.hostname == SERVER && s.port == 443).expect("server");
        match &s.endpoints[0].tls {
            UpstreamTls::Credential { client: Some(c), .. } => c.clone(),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(client_of(&gw).key, PemSource::Pem("KEY-1".into()));
    let dump = gw.without_private_keys();
    assert_eq!(client_of(&dump).key, PemSource::Pem("[redacted]".into()));
    assert_eq!(client_of(&dump).cert, PemSource::Pem("CERT".into()), "certificates are kept");
    assert!(!serde_json::to_string(&dump).expect("json").contains("KEY-1"));
    assert!(format!("{gw:?}").contains("Pem(<5 bytes>)") && !format!("{gw:?}").contains("KEY-1"), "Debug never prints PEM");
    // A rotated Secret gives a different config (pushed to the proxy as any change).
    let rotated = case_40("MUTUAL", "c", &[cred("KEY-2")]);
    let gw2 = rotated.proxy_configs().into_iter().find(|c| c.node.pod == GATEWAY).expect("gateway config");
    assert_eq!(client_of(&gw2).key, PemSource::Pem("KEY-2".into()));
    assert_ne!(gw.outbound, gw2.outbound);
}
