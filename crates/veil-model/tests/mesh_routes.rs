//! VirtualService routing on sidecars: which VirtualService applies to a
//! client (gateways, exportTo, hosts), match selectors decided at config
//! time (port, sourceLabels, match gateways), first-match order and
//! catch-all truncation, weights, subsets (istio-cases 02, 04, 05, 06, 29),
//! rewrite, redirect, timeout and retries, and TCP routes.

mod common;

use common::*;
use veil_model::mesh_routes::{duration_ms, retry_on};
use veil_model::*;

const NSD: &str = "default";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

/// Namespace `default` (injected), Service `reviews` with Deployments
/// reviews-v1/v2/v3 (`version` labels), and clients `productpage`
/// (`version: v1`) and `other` (`version: v2`).
fn bookinfo() -> Vec<String> {
    let mut v = vec![namespace(NSD), echo_service("reviews", NSD, false)];
    for version in ["v1", "v2", "v3"] {
        v.push(echo_deployment(&format!("reviews-{version}"), "reviews", NSD, false, &[("version", version)]));
    }
    v.push(echo("productpage", NSD, false, &[("version", "v1")]));
    v.push(echo("other", NSD, false, &[("version", "v2")]));
    v
}

fn with(extra: &[String]) -> MeshInput {
    let mut docs = bookinfo();
    docs.extend(extra.iter().cloned());
    input(&docs)
}

fn vs(name: &str, ns: &str, body: &str) -> String {
    format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{body}")
}

/// The routes of `to:port` as client pod `from` sees them.
fn routes(i: &MeshInput, from: &str, to: &str, port: u16) -> ServiceRoutes {
    let s = i.outbound_for(pod(i, from)).services.into_iter().find(|s| s.hostname == to && s.port == port);
    s.unwrap_or_else(|| panic!("no service {to}:{port}")).routes
}

fn dest(subset: &str, weight: u32) -> WeightedDestination {
    WeightedDestination { host: REVIEWS.into(), port: 80, subset: Some(subset.into()), weight }
}

#[test]
fn case_04_all_v1_with_case_02_subsets() {
    let i = with(&[case("02-bookinfo-destination-rule-all.yaml"), case("04-bookinfo-virtual-service-all-v1.yaml")]);
    let r = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(r.source, "default/reviews");
    assert_eq!(r.http.len(), 1);
    assert!(r.http[0].matches.is_empty(), "no match: every request");
    assert_eq!(r.http[0].destinations, vec![dest("v1", 100)]);
    assert_eq!(r.http[0].retries, RetryPolicy::default(), "Istio's default retry policy");
    let s = i.outbound_for(pod(&i, "productpage")).services.into_iter().find(|s| s.hostname == REVIEWS && s.port == 80).unwrap();
    let pods: Vec<&str> = s.subsets["v1"].iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(pods, ["reviews-v1"]);
    // The VirtualService of productpage applies to productpage, not to reviews.
    let p = routes(&i, "other", "productpage.default.svc.cluster.local", 80);
    assert_eq!(p.source, "default/productpage");
    // Control: without the VirtualService, no routes.
    let plain = with(&[case("02-bookinfo-destination-rule-all.yaml")]);
    assert!(routes(&plain, "productpage", REVIEWS, 80).is_empty());
}

#[test]
fn case_05_header_match_first_then_fall_through() {
    let i = with(&[case("02-bookinfo-destination-rule-all.yaml"), case("05-bookinfo-vs-reviews-jason-v2-v3.yaml")]);
    let r = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(r.http.len(), 2);
    let m = &r.http[0].matches;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].headers.get("end-user"), Some(&StringMatch::Exact("jason".into())));
    assert_eq!(r.http[0].destinations, vec![dest("v2", 100)]);
    assert!(r.http[1].matches.is_empty());
    assert_eq!(r.http[1].destinations, vec![dest("v3", 100)]);
}

#[test]
fn case_06_weights_90_10() {
    let i = with(&[case("02-bookinfo-destination-rule-all.yaml"), case("06-bookinfo-vs-reviews-90-10.yaml")]);
    let r = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(r.http[0].destinations, vec![dest("v1", 90), dest("v2", 10)]);
    // Every HTTP port of the Service gets the rule; the TCP port does not.
    assert_eq!(routes(&i, "productpage", REVIEWS, 85).http.len(), 1);
    assert!(routes(&i, "productpage", REVIEWS, 9090).is_empty());
}

#[test]
fn case_29_uri_prefix_then_default_subset() {
    let mut docs = vec![apps()];
    docs.push(in_ns(&template("29-reachability-migration-subsets.yaml.tmpl", &[("TLSMode", "")]), NS));
    let i = input(&docs);
    let r = routes(&i, "a", &format!("b.{NS}.svc.cluster.local"), 80);
    assert_eq!(r.http.len(), 2);
    assert_eq!(r.http[0].name.as_deref(), Some("vistio-route"));
    assert_eq!(r.http[0].matches[0].uri, Some(StringMatch::Prefix("/vistio".into())));
    assert_eq!(r.http[0].destinations[0].subset.as_deref(), Some("vistio"));
    assert_eq!(r.http[1].destinations[0].subset.as_deref(), Some("vlegacy"));
}

#[test]
fn source_labels_are_decided_per_client() {
    // The shape of istio-cases 23 on a Service of the registry.
    let body = "  hosts: [reviews]\n  http:\n  - match:\n    - headers:\n        foo:\n          regex: \"b.*\"\n      sourceLabels:\n        version: v1\n    route:\n    - destination: {host: reviews, subset: v2}\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
    let i = with(&[vs("regex-route", NSD, body)]);
    let v1 = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(v1.http.len(), 2);
    assert_eq!(v1.http[0].matches[0].headers.get("foo"), Some(&StringMatch::Regex("b.*".into())));
    let v2 = routes(&i, "other", REVIEWS, 80);
    assert_eq!(v2.http.len(), 1, "the sourceLabels match does not select version v2: {v2:?}");
    assert_eq!(v2.http[0].destinations[0].subset.as_deref(), Some("v1"));
    // proxy_configs (cached per sourceLabels signature) agrees with outbound_for.
    for cfg in i.proxy_configs().iter().filter(|c| c.node.pod == "productpage" || c.node.pod == "other") {
        let s = cfg.outbound.services.iter().find(|s| s.hostname == REVIEWS && s.port == 80).unwrap();
        assert_eq!(s.routes, routes(&i, &cfg.node.pod, REVIEWS, 80), "{}", cfg.node.pod);
    }
}

#[test]
fn gateways_decide_whether_sidecars_apply_a_rule() {
    // istio-cases 22's shape: bound to a gateway and mesh, one match per side.
    let both = "  hosts: [reviews]\n  gateways: [istio-egressgateway, mesh]\n  http:\n  - match:\n    - gateways: [mesh]\n    route:\n    - destination: {host: reviews, subset: v1}\n  - match:\n    - gateways: [istio-egressgateway]\n    route:\n    - destination: {host: reviews, subset: v2}\n";
    let i = with(&[vs("via-egress", NSD, both)]);
    let r = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(r.http.len(), 1, "{r:?}");
    assert!(r.http[0].matches.is_empty(), "a match with only gateways [mesh] is a catch-all on sidecars");
    assert_eq!(r.http[0].destinations, vec![dest("v1", 100)]);
    let gateway_only = "  hosts: [reviews]\n  gateways: [istio-egressgateway]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n";
    assert!(routes(&with(&[vs("gw", NSD, gateway_only)]), "productpage", REVIEWS, 80).is_empty());
}

#[test]
fn a_match_gateways_entry_narrows_the_gateway_binding_too() {
    // The same VirtualService, on the ingress gateway: only the match naming it binds there.
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: edge\n  namespace: default\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    let body = "  hosts: [\"*\"]\n  gateways: [edge, mesh]\n  http:\n  - match:\n    - gateways: [mesh]\n      uri: {prefix: /mesh}\n    route:\n    - destination: {host: reviews, port: {number: 80}}\n  - match:\n    - gateways: [edge]\n      uri: {prefix: /edge}\n    route:\n    - destination: {host: reviews, port: {number: 80}}\n";
    let i = with(&[gw.to_string(), vs("both", NSD, body)]);
    let gateway = pod(&i, "istio-ingressgateway");
    let config = i.proxy_config(gateway, &Outbound::default());
    let listeners = config.gateway.expect("gateway").listeners;
    let prefixes: Vec<&str> = listeners.iter().flat_map(|l| l.http_routes.iter()).map(|r| r.uri_prefix.as_str()).collect();
    assert_eq!(prefixes, ["/edge"], "{listeners:#?}");
    let r = routes(&i, "productpage", REVIEWS, 80);
    let uris: Vec<_> = r.http.iter().flat_map(|h| h.matches.iter()).map(|m| m.uri.clone()).collect();
    assert_eq!(uris, [Some(StringMatch::Prefix("/mesh".into()))], "the sidecar gets only the mesh match");
}

#[test]
fn export_to_and_namespaces() {
    let body = "  hosts: [reviews.default.svc.cluster.local]\n  exportTo: [\".\"]\n  http:\n  - route:\n    - destination: {host: reviews.default.svc.cluster.local, subset: v3}\n";
    let mut docs = bookinfo();
    docs.push(namespace("shop"));
    docs.push(echo("shopper", "shop", false, &[]));
    docs.push(vs("private", NSD, body));
    let i = input(&docs);
    assert_eq!(routes(&i, "productpage", REVIEWS, 80).http.len(), 1, "visible in its own namespace");
    assert!(routes(&i, "shopper", REVIEWS, 80).is_empty(), "exportTo . hides it from namespace shop");
    // A short host resolves in the VirtualService's namespace, not the Service's.
    let elsewhere = "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
    docs.push(vs("elsewhere", "shop", elsewhere));
    assert!(routes(&input(&docs), "shopper", REVIEWS, 80).is_empty());
}

#[test]
fn the_most_specific_host_wins() {
    let wild = "  hosts: [\"*.default.svc.cluster.local\"]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v2}\n";
    let exact = "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
    let i = with(&[vs("wild", NSD, wild), vs("exact", NSD, exact)]);
    assert_eq!(routes(&i, "productpage", REVIEWS, 80).source, "default/exact");
    assert_eq!(routes(&i, "productpage", "other.default.svc.cluster.local", 80).source, "default/wild");
}

#[test]
fn port_match_catch_all_truncation_and_unknown_hosts() {
    let body = "  hosts: [reviews]\n  http:\n  - match:\n    - port: 9999\n    route:\n    - destination: {host: reviews, subset: v1}\n  - match:\n    - port: 80\n    route:\n    - destination: {host: nowhere}\n      weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 0\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
    let i = with(&[vs("ports", NSD, body)]);
    let r = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(r.http.len(), 1, "port 9999 dropped; the port-80 rule is a catch-all and ends the list: {r:?}");
    assert_eq!(r.http[0].destinations, vec![dest("v2", 1)], "weights all 0 after skipping: equal shares");
    assert_eq!(r.http[0].skipped, vec!["nowhere.default.svc.cluster.local:80".to_string()]);
    // On port 85 neither port match applies: the last rule serves.
    let r85 = routes(&i, "productpage", REVIEWS, 85);
    assert_eq!(r85.http.len(), 1);
    assert_eq!(r85.http[0].destinations[0].subset.as_deref(), Some("v3"));
    assert_eq!(r85.http[0].destinations[0].port, 85, "destination port defaults to the called port");
}

#[test]
fn rewrite_redirect_timeout_retries() {
    let body = "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {prefix: /old}\n    redirect: {uri: /new, authority: elsewhere.example, redirectCode: 302}\n  - match:\n    - uri: {exact: /v1/api}\n      ignoreUriCase: true\n      withoutHeaders:\n        X-Debug: {}\n    rewrite: {uri: /api, authority: reviews.internal}\n    timeout: 1.5s\n    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: \"5xx,connect-failure,409,bogus\"}\n    route:\n    - destination: {host: reviews, port: {number: 9090}}\n  - retries: {attempts: 0}\n    route:\n    - destination: {host: reviews}\n";
    let i = with(&[vs("features", NSD, body)]);
    let r = routes(&i, "productpage", REVIEWS, 80);
    assert_eq!(r.http.len(), 3);
    let redirect = r.http[0].redirect.as_ref().expect("redirect");
    assert_eq!((redirect.uri.as_deref(), redirect.authority.as_deref(), redirect.code), (Some("/new"), Some("elsewhere.example"), 302));
    let rule = &r.http[1];
    assert!(rule.matches[0].ignore_uri_case);
    assert_eq!(rule.matches[0].without_headers.get("x-debug"), Some(&StringMatch::Present), "header names lower-cased");
    assert_eq!(rule.rewrite, Some(HttpRewrite { uri: Some("/api".into()), authority: Some("reviews.internal".into()) }));
    assert_eq!(rule.timeout_ms, Some(1500));
    assert_eq!(rule.retries.attempts, 3);
    assert_eq!(rule.retries.per_try_timeout_ms, Some(250));
    assert_eq!(rule.retries.retry_on, vec![RetryOn::Status5xx, RetryOn::ConnectFailure, RetryOn::Status(409)]);
    assert_eq!(rule.destinations[0].port, 9090, "explicit destination port");
    assert_eq!(r.http[2].retries, RetryPolicy::none());
}

#[test]
fn tcp_routes_by_port_with_weights() {
    // The shape of istio-cases 10, bound to sidecars.
    let body = "  hosts: [reviews]\n  tcp:\n  - match:\n    - port: 9090\n    route:\n    - destination: {host: reviews, port: {number: 9090}, subset: v1}\n      weight: 80\n    - destination: {host: reviews, port: {number: 9090}, subset: v2}\n      weight: 20\n";
    let i = with(&[vs("tcp", NSD, body)]);
    let r = routes(&i, "productpage", REVIEWS, 9090);
    let subsets: Vec<(Option<&str>, u32)> = r.tcp.iter().map(|d| (d.subset.as_deref(), d.weight)).collect();
    assert_eq!(subsets, [(Some("v1"), 80), (Some("v2"), 20)]);
    assert!(routes(&i, "productpage", REVIEWS, 80).is_empty(), "an HTTP port takes http rules only");
    assert!(routes(&i, "productpage", REVIEWS, 443).is_empty(), "port 443 does not match port 9090");
}

#[test]
fn durations_and_retry_conditions() {
    assert_eq!(duration_ms("5s"), Some(5000));
    assert_eq!(duration_ms("0.5s"), Some(500));
    assert_eq!(duration_ms("250ms"), Some(250));
    assert_eq!(duration_ms("1m30s"), Some(90_000));
    assert_eq!(duration_ms("1h"), Some(3_600_000));
    assert_eq!(duration_ms("1500us"), Some(2));
    for bad in ["", "5", "s", "5x", "-1s"] {
        assert_eq!(duration_ms(bad), None, "{bad:?}");
    }
    assert_eq!(retry_on("gateway-error, reset,refused-stream"), vec![RetryOn::GatewayError, RetryOn::Reset]);
    assert_eq!(retry_on("retriable-4xx,retriable-status-codes"), vec![RetryOn::Retriable4xx, RetryOn::Status(503)]);
}

#[test]
fn gateway_listeners_carry_the_full_rules_of_bound_virtual_services() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: edge\n  namespace: default\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*.shop.example\"]\n";
    let body = "  hosts: [www.shop.example, other.example]\n  gateways: [edge]\n  http:\n  - match:\n    - headers: {end-user: {exact: jason}}\n    route:\n    - destination: {host: reviews, subset: v2}\n  - match:\n    - uri: {prefix: /v1/api}\n    rewrite: {uri: /api}\n    route:\n    - destination: {host: reviews, subset: v1}\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 90\n    - destination: {host: reviews, subset: v2}\n      weight: 10\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
    let mesh_only = "  hosts: [www.shop.example]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n";
    let i = with(&[case("02-bookinfo-destination-rule-all.yaml"), gw.to_string(), vs("edge-routes", NSD, body), vs("mesh", NSD, mesh_only)]);
    let config = i.proxy_config(pod(&i, "istio-ingressgateway"), &Outbound::default());
    let listeners = config.gateway.expect("gateway").listeners;
    let rules: Vec<&GatewayHttpRule> = listeners.iter().flat_map(|l| l.http_rules.iter()).collect();
    assert_eq!(rules.len(), 3, "the rule after the catch-all is left out; mesh-only VirtualServices do not bind: {rules:#?}");
    assert!(rules.iter().all(|r| r.hosts == ["www.shop.example"] && r.source == "default/edge-routes"), "{rules:#?}");
    let jason = &rules[0].rule;
    assert_eq!(jason.matches[0].headers.get("end-user"), Some(&StringMatch::Exact("jason".into())));
    assert_eq!(jason.destinations, vec![dest("v2", 100)]);
    let api = &rules[1].rule;
    assert_eq!(api.rewrite.as_ref().and_then(|r| r.uri.as_deref()), Some("/api"));
    assert_eq!(rules[2].rule.destinations, vec![dest("v1", 90), dest("v2", 10)]);
    assert!(rules[2].rule.matches.is_empty());
}
