//! VirtualService routing in the sidecar, end to end between two network
//! namespaces over mesh mTLS (needs root): header routing (istio-cases 05),
//! weights measured over 1000 requests (case 06), one subset (case 04),
//! rewrite, redirect, retries, timeout, h2c and the upstream HTTP version,
//! WebSocket-style upgrades, TCP weights per connection, and upstream
//! connection reuse.

mod common;
mod routing_support;

use common::wait_log;
use routing_support::*;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use veil_model::*;

fn dest(subset: &str, weight: u32) -> WeightedDestination {
    WeightedDestination { host: REVIEWS.into(), port: 80, subset: Some(subset.into()), weight }
}

fn rule(destinations: Vec<WeightedDestination>) -> HttpRouteRule {
    HttpRouteRule { destinations, ..HttpRouteRule::default() }
}

fn routes(http: Vec<HttpRouteRule>) -> ServiceRoutes {
    ServiceRoutes { source: "shop/reviews".into(), http, tcp: Vec::new() }
}

/// Case 05: `end-user: jason` → v2, everything else → v3.
fn case_05() -> ServiceRoutes {
    let jason = HttpMatch { headers: [("end-user".to_string(), StringMatch::Exact("jason".into()))].into(), ..HttpMatch::default() };
    routes(vec![HttpRouteRule { matches: vec![jason], ..rule(vec![dest("v2", 100)]) }, rule(vec![dest("v3", 100)])])
}

async fn run(mesh: &Routing, path: &str, headers: &[(&str, &str)], count: usize, h2: bool) -> Vec<Answer> {
    let (path, headers): (String, Vec<(String, String)>) =
        (path.into(), headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
    let work = async move {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        requests(VIP_REVIEWS, &path, &h, count, h2).await
    };
    mesh.client_app.spawn(work).await.unwrap().unwrap_or_else(|e| panic!("requests failed: {e}"))
}

#[tokio::test]
async fn header_match_routes_jason_to_v2_and_others_to_v3() {
    let mesh = Routing::start().await;
    // Control: without routes the Service's three endpoints all answer.
    let plain = tally(&run(&mesh, "/", &[], 30, false).await);
    assert_eq!(plain.len(), 3, "round robin over the Service: {plain:?}");
    mesh.set_routes(REVIEWS, 80, case_05());
    let jason = tally(&run(&mesh, "/reviews/1", &[("end-user", "jason")], 50, false).await);
    assert_eq!(jason.get("reviews-v2"), Some(&50), "{jason:?}");
    let other = tally(&run(&mesh, "/reviews/1", &[("end-user", "mallory")], 50, false).await);
    assert_eq!(other.get("reviews-v3"), Some(&50), "{other:?}");
    let none = tally(&run(&mesh, "/reviews/1", &[], 20, false).await);
    assert_eq!(none.get("reviews-v3"), Some(&20), "{none:?}");
    // Without the catch-all rule, a request no rule matches gets 404 (Envoy NR).
    let mut jason_only = case_05();
    jason_only.http.truncate(1);
    mesh.set_routes(REVIEWS, 80, jason_only);
    let miss = run(&mesh, "/", &[("end-user", "mallory")], 1, false).await;
    assert_eq!(miss[0].status, 404, "{miss:?}");
    let hit = run(&mesh, "/", &[("end-user", "jason")], 1, false).await;
    assert_eq!(tally(&hit).get("reviews-v2"), Some(&1), "control: the matching rule still routes");
    mesh.set_routes(REVIEWS, 80, case_05());
    // The same over h2c (prior knowledge); an `http` port is HTTP/1.1 upstream.
    let h2 = run(&mesh, "/", &[("end-user", "jason")], 20, true).await;
    assert_eq!(tally(&h2).get("reviews-v2"), Some(&20), "{h2:?}");
    assert!(h2.iter().all(|a| a.body.ends_with("HTTP/1.1")), "{h2:?}");
    // An `http2` port is HTTP/2 upstream, even for an HTTP/1.1 client.
    mesh.update(REVIEWS, 80, |s| {
        s.protocol = Protocol::Http2;
        s.routes = case_05();
    });
    let up2 = run(&mesh, "/", &[], 5, false).await;
    assert!(up2.iter().all(|a| a.body == "reviews-v3 / reviews HTTP/2.0"), "{up2:?}");
}

#[tokio::test]
async fn upgrade_switches_protocols_through_the_route() {
    let mesh = Routing::start().await;
    mesh.set_routes(REVIEWS, 80, routes(vec![rule(vec![dest("v2", 100)])]));
    let (head, echoed) = mesh.client_app.spawn(upgrade_echo(VIP_REVIEWS, b"ping over upgrade")).await.unwrap().unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(echoed, b"ping over upgrade");
    assert_eq!(mesh.count(V2).1, 1, "the route chose v2");
}

#[tokio::test]
async fn weights_90_10_over_1000_requests_with_connection_reuse() {
    let mesh = Routing::start().await;
    mesh.set_routes(REVIEWS, 80, routes(vec![rule(vec![dest("v1", 90), dest("v2", 10)])]));
    let answers = run(&mesh, "/", &[], 1000, false).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let t = tally(&answers);
    let v1 = t.get("reviews-v1").copied().unwrap_or(0);
    let v2 = t.get("reviews-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 1000, "{t:?}");
    // 90 % of 1000: the standard deviation is 9.5 requests; 850..=950 is > 5 of them.
    assert!((850..=950).contains(&v1), "v1 got {v1} of 1000 (want 85–95 %)");
    // Connection reuse: the apps see far fewer TCP connections than requests,
    // and the client sidecar records one record per upstream connection.
    let (c1, r1) = mesh.count(V1);
    let (c2, r2) = mesh.count(V2);
    assert_eq!(r1 + r2, 1000);
    assert!(c1 + c2 <= 10, "{} connections for 1000 requests", c1 + c2);
    let records: Vec<ConnectionRecord> =
        mesh.client.records().into_iter().filter(|r| r.direction == "outbound" && r.dst.ip() == mesh.net.ip_b).collect();
    assert!(!records.is_empty() && records.len() <= 10, "{} outbound records", records.len());
    assert!(records.iter().all(|r| r.security == "mesh-mtls" && r.source_principal.is_some()), "{records:?}");
    let inbound = mesh.server.wait_record(|r| r.direction == "inbound" && r.src == records[0].src).await;
    assert_eq!(inbound.map(|r| r.security), Some("mesh-mtls".to_string()));
}

#[tokio::test]
async fn one_subset_takes_everything_and_an_unknown_subset_is_503() {
    let mesh = Routing::start().await;
    mesh.set_routes(REVIEWS, 80, routes(vec![rule(vec![dest("v1", 100)])]));
    let t = tally(&run(&mesh, "/", &[], 100, false).await);
    assert_eq!(t.get("reviews-v1"), Some(&100), "case 04: all to v1: {t:?}");
    mesh.set_routes(REVIEWS, 80, routes(vec![rule(vec![dest("v9", 100)])]));
    let a = run(&mesh, "/", &[], 1, false).await;
    assert_eq!(a[0].status, 503);
    assert!(wait_log(&["subset \"v9\"", REVIEWS, "not defined"]).await.is_some());
}

#[tokio::test]
async fn rewrite_and_redirect() {
    let mesh = Routing::start().await;
    let prefix = |p: &str| HttpMatch { uri: Some(StringMatch::Prefix(p.into())), ..HttpMatch::default() };
    let rewrite = HttpRouteRule {
        matches: vec![prefix("/v1/api")],
        rewrite: Some(HttpRewrite { uri: Some("/api".into()), authority: Some("reviews.internal".into()) }),
        ..rule(vec![dest("v1", 100)])
    };
    let redirect = HttpRouteRule {
        matches: vec![prefix("/old")],
        redirect: Some(HttpRedirect { uri: Some("/new".into()), authority: Some("elsewhere".into()), scheme: None, port: None, code: 301 }),
        ..HttpRouteRule::default()
    };
    mesh.set_routes(REVIEWS, 80, routes(vec![rewrite, redirect, rule(vec![dest("v2", 100)])]));
    let a = run(&mesh, "/v1/api/items?x=1", &[], 1, false).await;
    assert_eq!(a[0].body, "reviews-v1 /api/items reviews.internal HTTP/1.1", "{a:?}");
    let a = run(&mesh, "/old/page?q=1", &[], 1, false).await;
    assert_eq!(a[0].status, 301);
    assert_eq!(a[0].location.as_deref(), Some("http://elsewhere/new?q=1"));
    let a = run(&mesh, "/other", &[], 1, false).await;
    assert_eq!(a[0].body, "reviews-v2 /other reviews HTTP/1.1", "control: no rewrite on the default rule");
}

#[tokio::test]
async fn retries_hide_a_failing_first_try() {
    let mesh = Routing::start().await;
    let flaky = format!("flaky.{NS}.svc.cluster.local");
    let to_flaky = WeightedDestination { host: flaky.clone(), port: 80, subset: None, weight: 1 };
    let retry_5xx = RetryPolicy { attempts: 2, per_try_timeout_ms: None, retry_on: vec![RetryOn::Status5xx] };
    // Control: Istio's default policy retries 503 only, so every other answer is a 500.
    mesh.set_routes(&flaky, 80, routes(vec![rule(vec![to_flaky.clone()])]));
    let vip = std::net::Ipv4Addr::new(10, 96, 0, 21);
    let control = mesh.client_app.spawn(requests(vip, "/", &[], 10, false)).await.unwrap().unwrap();
    assert_eq!(control.iter().filter(|a| a.status == 500).count(), 5, "{control:?}");
    mesh.set_routes(&flaky, 80, routes(vec![HttpRouteRule { retries: retry_5xx, ..rule(vec![to_flaky]) }]));
    let before = mesh.count(FLAKY).1;
    let retried = mesh.client_app.spawn(requests(vip, "/", &[], 10, false)).await.unwrap().unwrap();
    assert!(retried.iter().all(|a| a.status == 200), "{retried:?}");
    assert_eq!(mesh.count(FLAKY).1 - before, 20, "each request: one failed try, one retry");
}

#[tokio::test]
async fn timeout_answers_504_in_time() {
    let mesh = Routing::start().await;
    let slow = format!("slow.{NS}.svc.cluster.local");
    let to_slow = WeightedDestination { host: slow.clone(), port: 80, subset: None, weight: 1 };
    let vip = std::net::Ipv4Addr::new(10, 96, 0, 22);
    // Control: no timeout, the slow answer arrives.
    mesh.set_routes(&slow, 80, routes(vec![rule(vec![to_slow.clone()])]));
    let ok = mesh.client_app.spawn(requests(vip, "/", &[], 1, false)).await.unwrap().unwrap();
    assert_eq!(ok[0].status, 200);
    mesh.set_routes(&slow, 80, routes(vec![HttpRouteRule { timeout_ms: Some(200), ..rule(vec![to_slow]) }]));
    let start = Instant::now();
    let late = mesh.client_app.spawn(requests(vip, "/", &[], 1, false)).await.unwrap().unwrap();
    assert_eq!(late[0].status, 504);
    assert!(start.elapsed() < Duration::from_millis(SLOW_MS), "504 after {:?}", start.elapsed());
}

#[tokio::test]
async fn tcp_route_weights_apply_per_connection() {
    let mesh = Routing::start().await;
    let tcp = format!("tcp.{NS}.svc.cluster.local");
    let d = |subset: &str, weight| WeightedDestination { host: tcp.clone(), port: 9000, subset: Some(subset.into()), weight };
    mesh.set_routes(&tcp, 9000, ServiceRoutes { source: "shop/tcp".into(), http: Vec::new(), tcp: vec![d("v1", 80), d("v2", 20)] });
    let work = async {
        let mut v1 = 0;
        for _ in 0..300 {
            let mut s = tokio::net::TcpStream::connect((VIP_TCP, 9000)).await.unwrap();
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut line)).await.unwrap().unwrap();
            v1 += usize::from(line.trim() == "tcp-v1");
            assert!(matches!(line.trim(), "tcp-v1" | "tcp-v2"), "{line:?}");
        }
        v1
    };
    let v1 = mesh.client_app.spawn(work).await.unwrap();
    // 80 % of 300: the standard deviation is 6.9 connections; 210..=270 is > 4 of them.
    assert!((210..=270).contains(&v1), "v1 got {v1} of 300 connections (want 70–90 %)");
}
