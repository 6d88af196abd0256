//! PeerAuthentication × DestinationRule × auto-mTLS, from Istio's own
//! reachability cases (istio-cases 24–28) and the `TestPeerAuthenticationPassthrough`
//! truth table (spec §1.1): the client's computed `UpstreamTls` against the
//! server's computed inbound mode gives Istio's expected outcome.

mod common;

use common::*;
use veil_model::{MtlsMode, Protocol, UpstreamTls};

fn mesh_pa(mode: &str) -> String {
    in_ns(&template("24-reachability-global-peer-authn.yaml.tmpl", &[("MTLSMode", mode)]), ROOT)
}

fn global_dr(mode: &str) -> String {
    in_ns(&template("25-reachability-global-dr.yaml.tmpl", &[("TLSMode", mode)]), ROOT)
}

#[test]
fn case24_mesh_peer_authentication_with_auto_mtls() {
    let strict = input(&[apps(), mesh_pa("STRICT")]);
    assert_eq!(inbound(&strict, "b", 18080).0, MtlsMode::Strict);
    assert_matrix(&strict, "mesh STRICT", |from_naked, to_naked| match (from_naked, to_naked) {
        (false, false) => OK_MTLS,
        (true, _) => FAIL,
        (false, true) => OK_PLAIN,
    });
    let permissive = input(&[apps(), mesh_pa("PERMISSIVE")]);
    assert_matrix(&permissive, "mesh PERMISSIVE", |f, t| if !f && !t { OK_MTLS } else { OK_PLAIN });
    let disable = input(&[apps(), mesh_pa("DISABLE")]);
    assert_eq!(tls(&disable, "a", "b", 80), UpstreamTls::Disable, "namespace/mesh DISABLE turns auto-mTLS off");
    assert_matrix(&disable, "mesh DISABLE", |_, _| OK_PLAIN);
}

#[test]
fn case25_global_destination_rule_with_each_tls_mode() {
    let run = |pa: &str, dr: &str| input(&[apps(), mesh_pa(pa), global_dr(dr)]);
    assert_matrix(&run("STRICT", "ISTIO_MUTUAL"), "STRICT+ISTIO_MUTUAL", |f, t| match (f, t) {
        (false, false) => OK_MTLS,
        _ => FAIL,
    });
    assert_matrix(&run("PERMISSIVE", "ISTIO_MUTUAL"), "PERMISSIVE+ISTIO_MUTUAL", |f, t| match (f, t) {
        (false, false) => OK_MTLS,
        (true, false) => OK_PLAIN,
        (_, true) => FAIL,
    });
    assert_matrix(&run("DISABLE", "DISABLE"), "DISABLE+DISABLE", |_, _| OK_PLAIN);
    assert_matrix(&run("PERMISSIVE", "DISABLE"), "PERMISSIVE+DISABLE", |_, _| OK_PLAIN);
    // ISTIO_MUTUAL is sent even to a naked endpoint, with the default SNI and
    // the service's identities.
    let i = run("STRICT", "ISTIO_MUTUAL");
    assert_eq!(
        tls(&i, "a", "naked", 80),
        UpstreamTls::IstioMutual {
            identities: vec!["spiffe://cluster.local/ns/echo1/sa/naked".into()],
            sni: "outbound_.80_._.naked.echo1.svc.cluster.local".into(),
        }
    );
}

#[test]
fn case25_root_namespace_client_sees_the_local_opt_out() {
    let sys = echo_deployment("sys", "sys", ROOT, false, &[("sidecar.istio.io/inject", "\"true\"")]);
    let sys_svc = echo_service("sys", ROOT, false);
    let i = input(&[apps(), sys, sys_svc, mesh_pa("STRICT"), global_dr("ISTIO_MUTUAL")]);
    // The opt-out rule (exportTo ".", no tls) wins for clients in the root
    // namespace: auto-mTLS sends plaintext to the naked pod, which works.
    assert_eq!(tls(&i, "sys", "naked", 80), UpstreamTls::Disable);
    assert_eq!(reach(&i, "sys", "naked", 80), OK_PLAIN);
    assert_eq!(reach(&i, "sys", "b", 80), OK_MTLS);
    // Control: the exported rule applies to clients elsewhere.
    assert!(matches!(tls(&i, "a", "naked", 80), UpstreamTls::IstioMutual { .. }));
    assert_eq!(reach(&i, "a", "naked", 80), FAIL);
}

#[test]
fn cases26_27_workload_peer_authentication_and_destination_rule() {
    let run = |to: &str, pa: &str, dr: &str| {
        let p = in_ns(&template_to("26-reachability-workload-peer-authn.yaml.tmpl", to, &[("MTLSMode", pa)]), NS);
        let d = in_ns(&template_to("27-reachability-workload-dr.yaml.tmpl", to, &[("TLSMode", dr)]), NS);
        input(&[apps(), p, d])
    };
    let i = run("b", "STRICT", "ISTIO_MUTUAL");
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Strict);
    assert_eq!(inbound(&i, "a", 18080).0, MtlsMode::Permissive, "the selector picks only app=b");
    assert_eq!(reach(&i, "a", "b", 80), OK_MTLS);
    assert_eq!(reach(&i, "naked", "b", 80), FAIL);
    assert_eq!(reach(&run("naked", "STRICT", "ISTIO_MUTUAL"), "a", "naked", 80), FAIL);

    let i = run("b", "PERMISSIVE", "ISTIO_MUTUAL");
    assert_eq!(reach(&i, "a", "b", 80), OK_MTLS);
    assert_eq!(reach(&i, "naked", "b", 80), OK_PLAIN);
    assert_eq!(reach(&run("naked", "PERMISSIVE", "ISTIO_MUTUAL"), "a", "naked", 80), FAIL);

    let i = run("b", "DISABLE", "DISABLE");
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Disable);
    assert_eq!(reach(&i, "a", "b", 80), OK_PLAIN);
    assert_eq!(reach(&i, "naked", "b", 80), OK_PLAIN);
    // Without the DR, a workload DISABLE still makes auto-mTLS send plaintext.
    let p = in_ns(&template("26-reachability-workload-peer-authn.yaml.tmpl", &[("MTLSMode", "DISABLE")]), NS);
    let no_dr = input(&[apps(), p]);
    assert_eq!(tls(&no_dr, "a", "b", 80), UpstreamTls::Disable);
    assert!(matches!(tls(&no_dr, "a", "naked", 80), UpstreamTls::Disable));
    assert!(matches!(tls(&no_dr, "b", "a", 80), UpstreamTls::IstioMutual { .. }), "control: a is not DISABLE");
}

#[test]
fn case28_port_level_mtls_is_keyed_on_workload_ports() {
    let pa = in_ns(
        &template("28-reachability-workload-peer-authn-port-override.yaml.tmpl", &[("MTLSMode", "STRICT"), ("MTLSModeOverride", "DISABLE")]),
        NS,
    );
    let i = input(&[apps(), pa]);
    for (name, service_port, workload_port) in PORTS {
        assert_eq!(inbound(&i, "b", workload_port).0, MtlsMode::Disable, "{name}");
        assert_eq!(tls(&i, "a", "b", service_port), UpstreamTls::Disable, "{name}: auto-mTLS follows the port override");
        assert_eq!(reach(&i, "naked", "b", service_port), OK_PLAIN, "{name}");
        assert_eq!(reach(&i, "a", "b", service_port), OK_PLAIN, "{name}");
    }
    // Every other workload port of b stays STRICT.
    assert_eq!(inbound(&i, "b", 18081).0, MtlsMode::Strict);

    // The same policy keyed on the Service ports (80, 85, …) changes nothing
    // on the workload ports: b stays STRICT there and gets mTLS.
    let service_keys = pa_yaml_with_ports(&PORTS.map(|(_, s, _)| s));
    let i = input(&[apps(), service_keys]);
    assert_eq!(inbound(&i, "b", 18080).0, MtlsMode::Strict);
    assert_eq!(reach(&i, "a", "b", 80), OK_MTLS);
    assert_eq!(reach(&i, "naked", "b", 80), FAIL);
}

fn pa_yaml_with_ports(ports: &[u16]) -> String {
    let mut y = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: b\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: b\n  mtls:\n    mode: STRICT\n  portLevelMtls:\n"
    );
    for p in ports {
        y.push_str(&format!("    {p}:\n      mode: DISABLE\n"));
    }
    y
}

/// Spec §1.1 inbound table: does a port in `mode` with `protocol` accept
/// the call? A DISABLE port relays mTLS bytes opaquely (passthrough) except
/// on a declared HTTP Service port, where they are a protocol error.
fn accepted(mode: MtlsMode, protocol: Protocol, mtls: bool) -> bool {
    match (mode, mtls) {
        (MtlsMode::Strict, m) => m,
        (MtlsMode::Permissive, _) => true,
        (MtlsMode::Disable, false) => true,
        (MtlsMode::Disable, true) => !protocol.is_http(),
    }
}

fn foo_pa(mode: &str, port_mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: foo\n  namespace: {NS}\nspec:\n  selector:\n    matchLabels:\n      app: foo\n  mtls:\n    mode: {mode}\n  portLevelMtls:\n    9000:\n      mode: {port_mode}\n"
    )
}

fn foo_http_service() -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: foo\n  namespace: {NS}\nspec:\n  selector:\n    app: foo\n  ports:\n  - name: http\n    port: 8000\n    targetPort: 8000\n")
}

#[test]
fn peer_authentication_passthrough_truth_table() {
    let foo = echo_deployment("foo", "foo", NS, false, &[]);
    let row = |i: &veil_model::MeshInput, port: u16| -> (bool, bool) {
        let (mode, protocol) = inbound(i, "foo", port);
        (accepted(mode, protocol, false), accepted(mode, protocol, true))
    };
    // DISABLE + 9000: STRICT → ok / ok / ErrNoFilterChain / ok.
    let i = input(&[namespace(NS), foo.clone(), foo_pa("DISABLE", "STRICT")]);
    assert_eq!(inbound(&i, "foo", 8000).0, MtlsMode::Disable);
    assert_eq!(inbound(&i, "foo", 9000).0, MtlsMode::Strict);
    assert_eq!(row(&i, 8000), (true, true));
    assert_eq!(row(&i, 9000), (false, true));
    // STRICT + 9000: DISABLE → ErrNoFilterChain / ok / ok / ok.
    let i = input(&[namespace(NS), foo.clone(), foo_pa("STRICT", "DISABLE")]);
    assert_eq!(row(&i, 8000), (false, true));
    assert_eq!(row(&i, 9000), (true, true));
    // DISABLE + 9000: PERMISSIVE with 8000 an HTTP Service port: mTLS to
    // 8000 is a protocol error; 9000 takes both.
    let i = input(&[namespace(NS), foo, foo_pa("DISABLE", "PERMISSIVE"), foo_http_service()]);
    assert_eq!(inbound(&i, "foo", 8000), (MtlsMode::Disable, Protocol::Http));
    assert_eq!(row(&i, 8000), (true, false));
    assert_eq!(row(&i, 9000), (true, true));
}

#[test]
fn auto_mtls_off_sends_plaintext_unless_a_rule_says_otherwise() {
    let mut i = input(&[apps(), mesh_pa("PERMISSIVE")]);
    assert!(matches!(tls(&i, "a", "b", 80), UpstreamTls::IstioMutual { .. }), "control: auto-mTLS on");
    i.settings.auto_mtls = false;
    assert_eq!(tls(&i, "a", "b", 80), UpstreamTls::Disable);
    let mut with_dr = input(&[apps(), mesh_pa("PERMISSIVE"), global_dr("ISTIO_MUTUAL")]);
    with_dr.settings.auto_mtls = false;
    assert!(matches!(tls(&with_dr, "a", "b", 80), UpstreamTls::IstioMutual { .. }));
}
