//! How the client sidecar carries HTTP, between two network namespaces over
//! mesh mTLS (needs root): a Service port with one endpoint and no routes is
//! forwarded per connection (one upstream connection per client
//! connection, as for TCP), everything that can route differently per
//! request is served per request over pooled upstream connections (the
//! control of each case), a change of HTTP version keeps the per-request
//! path, a route added later applies to the next connection, and the pool
//! keeps an idle connection for every request a burst sent at once.

mod common;
mod routing_support;

use common::spiffe;
use routing_support::*;
use std::net::Ipv4Addr;
use veil_model::*;

async fn run(mesh: &Routing, vip: Ipv4Addr, count: usize, h2: bool) -> Vec<Answer> {
    let answers = mesh.client_app.spawn(requests(vip, "/", &[], count, h2)).await.unwrap();
    answers.unwrap_or_else(|e| panic!("requests failed: {e}"))
}

fn connections(mesh: &Routing, ports: &[u16]) -> usize {
    ports.iter().map(|p| mesh.count(*p).0).sum()
}

fn only_v1(s: &mut OutboundService) {
    s.endpoints.truncate(1);
}

#[tokio::test]
async fn one_endpoint_without_routes_is_forwarded_per_connection() {
    let mesh = Routing::start().await;
    // Control: three endpoints, so every request is balanced on its own, and
    // the second client connection reuses the pooled upstream connections.
    for _ in 0..2 {
        let t = tally(&run(&mesh, VIP_REVIEWS, 6, false).await);
        assert_eq!(t.len(), 3, "per-request round robin: {t:?}");
    }
    let pooled = connections(&mesh, &[V1, V2, V3]);
    assert_eq!(pooled, 3, "one pooled upstream connection per endpoint for two client connections");

    mesh.update(REVIEWS, 80, only_v1);
    for _ in 0..2 {
        let answers = run(&mesh, VIP_REVIEWS, 5, false).await;
        assert!(answers.iter().all(|a| a.body == "reviews-v1 / reviews HTTP/1.1"), "{answers:?}");
    }
    assert_eq!(mesh.count(V1), (pooled / 3 + 2, 4 + 10), "one new upstream connection per client connection");
    // Records are written in batches: wait (bounded) for the third to V1.
    let to_v1 = |r: &ConnectionRecord| r.direction == "outbound" && r.dst.port() == V1;
    let mut outbound = Vec::new();
    for _ in 0..50 {
        outbound = mesh.client.records().into_iter().filter(to_v1).collect();
        if outbound.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(outbound.len(), 3, "the pooled connection's record, then one per client connection: {outbound:?}");
    let server_id = spiffe(NS, "server").to_string();
    assert!(
        outbound.iter().all(|r| r.security == "mesh-mtls" && r.destination_principal.as_deref() == Some(server_id.as_str())),
        "{outbound:?}"
    );
}

#[tokio::test]
async fn a_change_of_http_version_is_served_per_request() {
    let mesh = Routing::start().await;
    mesh.update(REVIEWS, 80, only_v1);
    // An h2c client of an `http` port: the upstream gets HTTP/1.1.
    let h2 = run(&mesh, VIP_REVIEWS, 3, true).await;
    assert!(h2.iter().all(|a| a.body == "reviews-v1 / reviews HTTP/1.1"), "{h2:?}");
    // An `http2` port: an HTTP/1.1 client is converted (per request) ...
    mesh.update(REVIEWS, 80, |s| {
        only_v1(s);
        s.protocol = Protocol::Http2;
    });
    let up2 = run(&mesh, VIP_REVIEWS, 3, false).await;
    assert!(up2.iter().all(|a| a.body == "reviews-v1 / reviews HTTP/2.0"), "{up2:?}");
    let after_h1 = mesh.count(V1).0;
    // ... while an h2c client is forwarded as it is, one connection each.
    for _ in 0..2 {
        let same = run(&mesh, VIP_REVIEWS, 3, true).await;
        assert!(same.iter().all(|a| a.body == "reviews-v1 / reviews HTTP/2.0"), "{same:?}");
    }
    assert_eq!(mesh.count(V1).0, after_h1 + 2, "per connection: the pooled HTTP/2 connection was not used");
}

#[tokio::test]
async fn a_route_added_later_applies_to_the_next_connection() {
    let mesh = Routing::start().await;
    mesh.update(REVIEWS, 80, only_v1);
    let first = tally(&run(&mesh, VIP_REVIEWS, 3, false).await);
    assert_eq!(first.get("reviews-v1"), Some(&3), "{first:?}");
    let to_v2 = ServiceRoutes {
        source: "shop/reviews".into(),
        http: vec![HttpRouteRule {
            destinations: vec![WeightedDestination { host: REVIEWS.into(), port: 80, subset: Some("v2".into()), weight: 100 }],
            ..HttpRouteRule::default()
        }],
        tcp: Vec::new(),
    };
    mesh.update(REVIEWS, 80, |s| {
        only_v1(s);
        s.routes = to_v2.clone();
    });
    let routed = tally(&run(&mesh, VIP_REVIEWS, 3, false).await);
    assert_eq!(routed.get("reviews-v2"), Some(&3), "the route applies: {routed:?}");
}

#[tokio::test]
async fn the_pool_keeps_a_connection_for_each_concurrent_request() {
    const BURST: usize = 48;
    let mesh = Routing::start().await;
    let slow = format!("slow.{NS}.svc.cluster.local");
    let vip = Ipv4Addr::new(10, 96, 0, 22);
    // A route makes the port per request (pooled) although it has one endpoint.
    let to_slow = WeightedDestination { host: slow.clone(), port: 80, subset: None, weight: 1 };
    let rule = HttpRouteRule { destinations: vec![to_slow], ..HttpRouteRule::default() };
    mesh.set_routes(&slow, 80, ServiceRoutes { source: "shop/slow".into(), http: vec![rule], tcp: Vec::new() });
    let mut opened = Vec::new();
    for _ in 0..2 {
        let before = mesh.count(SLOW).0;
        let burst: Vec<_> = (0..BURST).map(|_| mesh.client_app.spawn(requests(vip, "/", &[], 1, false))).collect();
        for request in burst {
            let answers = request.await.unwrap().unwrap_or_else(|e| panic!("request failed: {e}"));
            assert_eq!(answers[0].status, 200);
        }
        opened.push(mesh.count(SLOW).0 - before);
    }
    // Each request holds its upstream connection for SLOW_MS, so the first
    // burst opens one per request; the second finds them all idle.
    assert_eq!(opened, vec![BURST, 0], "upstream connections opened per burst of {BURST} concurrent requests");
}

#[tokio::test]
async fn an_unreachable_endpoint_answers_503_on_the_per_connection_path() {
    let mesh = Routing::start().await;
    // Control: the one endpoint listens, the request is served.
    mesh.update(REVIEWS, 80, only_v1);
    let served = run(&mesh, VIP_REVIEWS, 1, false).await;
    assert_eq!(served[0].status, 200, "{served:?}");
    // The same single endpoint on a port nothing listens on: the client gets
    // Envoy's 503 with the reason, not a closed connection.
    mesh.update(REVIEWS, 80, |s| {
        only_v1(s);
        s.endpoints[0].port = 9099;
    });
    let failed = run(&mesh, VIP_REVIEWS, 1, false).await;
    assert_eq!(failed[0].status, 503, "{failed:?}");
    assert!(failed[0].body.starts_with("upstream connect error"), "{failed:?}");
}
