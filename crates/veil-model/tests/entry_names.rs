//! ServiceEntries without `addresses` (`resolution: NONE`), matched by name
//! instead of taking their whole port: by SNI on TLS ports (cases 11 and
//! 12), by `Host` on HTTP ports, most specific host first, and by port
//! alone on opaque TCP ports; `STATIC` entries without `addresses` also by name on
//! HTTP and TLS ports; entries with addresses are not affected.

mod common;

use common::*;
use veil_model::entry_names::PortNames;
use veil_model::*;

/// A `NONE` ServiceEntry without addresses: `hosts` on one port.
fn entry(name: &str, hosts: &[&str], port: u16, protocol: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  hosts: [{}]\n  ports:\n  - {{number: {port}, name: p{port}, protocol: {protocol}}}\n  resolution: NONE\n",
        hosts.iter().map(|h| format!("\"{h}\"")).collect::<Vec<_>>().join(", ")
    )
}

/// The outbound section of an injected client in `default`, with `docs`.
fn outbound(docs: &[String]) -> Outbound {
    let mut all = vec![namespace("default"), echo_deployment("sleep", "sleep", "default", false, &[])];
    all.extend(docs.iter().cloned());
    let snap = snapshot(&all);
    let mut input = input_of(&snap);
    input.service_entries = from_api::service_entries(&snap, &|_| Vec::new()).0;
    input.outbound_for(pod(&input, "sleep"))
}

fn host_of(s: Option<&OutboundService>) -> Option<&str> {
    s.map(|s| s.hostname.as_str())
}

#[test]
fn case_12_three_https_entries_on_443_are_told_apart_by_sni() {
    let out = outbound(&[case("12-serviceentry-package-index.yaml")]);
    assert_eq!(out.names_on(443), PortNames::Names { http: false, tls: true });
    for host in ["index.packages.example", "packages.example", "files.packages.example"] {
        assert_eq!(host_of(out.entry_by_sni(host, 443)), Some(host), "each SNI finds its own entry");
        assert!(out.is_unaddressed(out.service(host, 443).expect("entry port")));
    }
    assert_eq!(host_of(out.entry_by_sni("FILES.packages.example.", 443)), Some("files.packages.example"), "case and a final dot");
    assert_eq!(out.entry_by_sni("other.example", 443), None, "an unlisted SNI is no entry's");
    assert_eq!(out.entry_by_sni("packages.example", 8443), None, "another port");
    assert_eq!(out.entry_by_host("packages.example", 443), None, "an HTTPS entry is not matched by Host");
}

#[test]
fn case_11_only_the_entry_without_addresses_is_matched_by_name() {
    let out = outbound(&[case("11-serviceentry-github.yaml")]);
    assert_eq!(out.names_on(443), PortNames::Names { http: false, tls: true });
    assert_eq!(host_of(out.entry_by_sni("github.com", 443)), Some("github.com"));
    assert_eq!(out.entry_by_sni("gitlab.com", 443), None);
    // The TCP entry has addresses: found by them (`lookup`), never by name or port alone.
    assert_eq!(out.names_on(22), PortNames::None);
    let tcp = out.service("dummy.github.com", 22).expect("tcp entry");
    assert!(!out.is_unaddressed(tcp));
    assert!(out.lookup("140.82.113.4".parse().expect("ip"), 22).is_some(), "control: found by address");
}

#[test]
fn hosts_match_exact_first_then_the_longest_wildcard() {
    let docs = [
        entry("any", &["*.example.com"], 443, "TLS"),
        entry("shop", &["*.shop.example.com"], 443, "TLS"),
        entry("api", &["api.shop.example.com"], 443, "TLS"),
    ];
    let out = outbound(&docs);
    assert_eq!(host_of(out.entry_by_sni("api.shop.example.com", 443)), Some("api.shop.example.com"));
    assert_eq!(host_of(out.entry_by_sni("www.shop.example.com", 443)), Some("*.shop.example.com"));
    assert_eq!(host_of(out.entry_by_sni("www.example.com", 443)), Some("*.example.com"));
    assert_eq!(out.entry_by_sni("example.com", 443), None, "a wildcard needs a label before its suffix");
}

#[test]
fn http_entries_are_matched_by_host_and_tls_ones_by_sni_on_one_port() {
    let docs = [entry("known", &["known.example"], 8080, "HTTP"), entry("secure", &["secure.example"], 8080, "TLS")];
    let out = outbound(&docs);
    assert_eq!(out.names_on(8080), PortNames::Names { http: true, tls: true });
    assert_eq!(host_of(out.entry_by_host("known.example", 8080)), Some("known.example"));
    assert_eq!(out.entry_by_host("other.example", 8080), None);
    assert_eq!(out.entry_by_host("secure.example", 8080), None, "a TLS entry is matched by SNI only");
    assert_eq!(host_of(out.entry_by_sni("secure.example", 8080)), Some("secure.example"));
    assert_eq!(out.entry_by_sni("known.example", 8080), None, "an HTTP entry is matched by Host only");
}

#[test]
fn an_opaque_tcp_entry_takes_its_whole_port() {
    let docs = [entry("tls", &["db-tls.example"], 5432, "TLS"), entry("db", &["db.example"], 5432, "TCP")];
    let out = outbound(&docs);
    let PortNames::Port(service) = out.names_on(5432) else { panic!("{:?}", out.names_on(5432)) };
    assert_eq!(service.hostname, "db.example", "Istio matches TCP entries without addresses by port only");
    // Control: without the TCP entry the port is matched by name.
    let out = outbound(&docs[..1]);
    assert_eq!(out.names_on(5432), PortNames::Names { http: false, tls: true });
}

#[test]
fn a_routed_port_of_an_entry_without_addresses_is_matched_by_host() {
    let vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: plain\n  namespace: default\nspec:\n  hosts: [api.example.com]\n  http:\n  - match:\n    - port: 80\n    route:\n    - destination:\n        host: api.example.com\n        port: {number: 443}\n";
    let out = outbound(&[entry("api", &["api.example.com"], 443, "HTTPS"), vs.to_string()]);
    assert_eq!(out.names_on(80), PortNames::Names { http: true, tls: false });
    let svc = out.entry_by_host("api.example.com", 80).expect("port 80 of api.example, from the route");
    assert_eq!((svc.port, svc.protocol), (80, Protocol::Http));
    assert_eq!(svc.routes.http[0].destinations[0].port, 443, "{:#?}", svc.routes);
    assert_eq!(out.entry_by_host("other.example.com", 80), None, "port 80 is not taken for every host");
    // Control: without the VirtualService, port 80 is nobody's.
    let out = outbound(&[entry("api", &["api.example.com"], 443, "HTTPS")]);
    assert_eq!(out.names_on(80), PortNames::None);
}

/// A `STATIC` ServiceEntry on `port` with one endpoint address.
fn static_entry(name: &str, host: &str, port: u16, protocol: &str, endpoint: &str, addresses: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  hosts: [{host}]\n{addresses}  ports:\n  - {{number: {port}, name: p{port}, protocol: {protocol}}}\n  resolution: STATIC\n  endpoints:\n  - address: {endpoint}\n"
    )
}

#[test]
fn static_entries_without_addresses_also_match_by_name_on_http_and_tls_ports() {
    let out = outbound(&[
        static_entry("api", "api.example", 443, "TLS", "192.0.2.10", ""),
        static_entry("web", "web.example", 80, "HTTP", "192.0.2.11", ""),
        static_entry("db", "db.example", 5432, "TCP", "192.0.2.12", ""),
        static_entry("vip", "vip.example", 8443, "TLS", "192.0.2.13", "  addresses: [240.0.0.1]\n"),
    ]);
    // Found by their endpoints' addresses, as before...
    assert_eq!(host_of(out.lookup("192.0.2.10".parse().expect("ip"), 443).map(|(s, _)| s)), Some("api.example"));
    assert!(!out.is_unaddressed(out.service("api.example", 443).expect("entry")), "an address names it");
    // ...and by SNI or Host when the workload dialled another address of the host.
    assert_eq!(out.names_on(443), PortNames::Names { http: false, tls: true });
    assert_eq!(host_of(out.entry_by_sni("api.example", 443)), Some("api.example"));
    assert_eq!(out.names_on(80), PortNames::Names { http: true, tls: false });
    assert_eq!(host_of(out.entry_by_host("web.example", 80)), Some("web.example"));
    assert_eq!(out.entry_by_host("other.example", 80), None);
    // An opaque TCP port keeps its endpoints' addresses: it does not take the whole port.
    assert_eq!(out.names_on(5432), PortNames::None);
    // An entry with `addresses` is only ever found by them.
    assert_eq!(out.names_on(8443), PortNames::None);
    assert_eq!(out.entry_by_sni("vip.example", 8443), None);
}
