//! Full `VirtualService` HTTP rules on a gateway listener, end to end over
//! mesh mTLS in network namespaces (needs root): host selection, a header
//! match, a 90/10 weight split measured over 500 requests, a rewrite, and
//! 404 for a request no rule matches.

mod common;
mod routing_support;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use routing_support::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use veil_model::*;

/// Gateway port in the client's namespace.
const GATEWAY_PORT: u16 = 8000;

fn dest(subset: &str, weight: u32) -> WeightedDestination {
    WeightedDestination { host: REVIEWS.into(), port: 80, subset: Some(subset.into()), weight }
}

fn gateway_rule(matches: Vec<HttpMatch>, destinations: Vec<WeightedDestination>, rewrite: Option<HttpRewrite>) -> GatewayHttpRule {
    GatewayHttpRule {
        hosts: vec!["shop.example".into()],
        source: "shop/reviews-gw".into(),
        rule: HttpRouteRule { matches, destinations, rewrite, ..HttpRouteRule::default() },
    }
}

/// Case 05 on a gateway, a rewrite for `/v1/api`, and a 90/10 split for
/// everything else.
fn rules() -> Vec<GatewayHttpRule> {
    let jason = HttpMatch { headers: [("end-user".to_string(), StringMatch::Exact("jason".into()))].into(), ..HttpMatch::default() };
    let api = HttpMatch { uri: Some(StringMatch::Prefix("/v1/api".into())), ..HttpMatch::default() };
    let rewrite = HttpRewrite { uri: Some("/api".into()), authority: Some("reviews.internal".into()) };
    vec![
        gateway_rule(vec![jason], vec![dest("v3", 100)], None),
        gateway_rule(vec![api], vec![dest("v1", 100)], Some(rewrite)),
        gateway_rule(Vec::new(), vec![dest("v1", 90), dest("v2", 10)], None),
    ]
}

/// Sends `count` GETs on one connection to `addr` with `host`, `path` and
/// `headers`, each bounded by 5 s; returns (status, body) of each.
async fn get(addr: SocketAddr, host: String, path: String, headers: Vec<(String, String)>, count: usize) -> Result<Vec<(u16, String)>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut out = Vec::new();
    for _ in 0..count {
        let mut b = Request::get(path.as_str()).header(http::header::HOST, host.as_str());
        for (k, v) in &headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let req = b.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let call = async {
            let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        out.push(tokio::time::timeout(Duration::from_secs(5), call).await.map_err(|_| "request timed out".to_string())??);
    }
    Ok(out)
}

/// Runs [`get`] from the gateway's namespace (as the proxy's uid, so the
/// request is not captured), retrying the first connection while the
/// listener binds (at most 100 tries, about 2 s).
async fn run(mesh: &Routing, host: &str, path: &str, headers: &[(&str, &str)], count: usize) -> Vec<(u16, String)> {
    let addr: SocketAddr = ([127, 0, 0, 1], GATEWAY_PORT).into();
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut last = String::new();
    for _ in 0..100 {
        match mesh.client.rt.spawn(get(addr, host.into(), path.into(), headers.clone(), count)).await.unwrap() {
            Ok(answers) => return answers,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gateway listener {addr} never answered: {last}");
}

fn first_words(answers: &[(u16, String)]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (_, body) in answers {
        *out.entry(body.split(' ').next().unwrap_or_default().to_string()).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn gateway_applies_header_match_weights_and_rewrite() {
    let mesh = Routing::start().await;
    let mut config = mesh.base.clone();
    config.version += 1;
    let listener = GatewayListener { port: GATEWAY_PORT, protocol: Protocol::Http, http_rules: rules(), ..GatewayListener::default() };
    config.gateway = Some(GatewayConfig { listeners: vec![listener] });
    mesh.client.config.send(Arc::new(config)).unwrap();

    // Header match: every request of jason goes to v3.
    let jason = run(&mesh, "shop.example", "/reviews/1", &[("end-user", "jason")], 50).await;
    assert_eq!(first_words(&jason).get("reviews-v3"), Some(&50), "{jason:?}");

    // Weights: 90 % of 500 to v1 (standard deviation 6.7 requests; ±6 % is
    // 30 requests, more than 4 of them); no request reaches v3 (control of
    // the header match).
    let split = run(&mesh, "shop.example:8000", "/reviews/1", &[("end-user", "mallory")], 500).await;
    assert!(split.iter().all(|(s, _)| *s == 200), "{split:?}");
    let t = first_words(&split);
    let v1 = t.get("reviews-v1").copied().unwrap_or(0);
    let v2 = t.get("reviews-v2").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 500, "{t:?}");
    assert!((420..=480).contains(&v1), "v1 got {v1} of 500 (want 84–96 %)");

    // Rewrite: the matched prefix and the authority are replaced, and the
    // request goes over mesh mTLS to v1.
    let rewritten = run(&mesh, "shop.example", "/v1/api/items?x=1", &[], 1).await;
    assert_eq!(rewritten, vec![(200, "reviews-v1 /api/items reviews.internal HTTP/1.1".to_string())]);
    let plain = run(&mesh, "shop.example", "/v2/api/items", &[], 1).await;
    assert!(plain[0].1.contains(" /v2/api/items shop.example "), "control: no rewrite elsewhere: {plain:?}");
    let server_ip = mesh.net.ip_b;
    let record = mesh.client.wait_record(|r| r.direction == "outbound" && r.dst.ip() == server_ip).await;
    assert_eq!(record.map(|r| r.security), Some("mesh-mtls".to_string()));

    // Another host: no rule; without the catch-all rule, no match is 404 too.
    let other = run(&mesh, "other.example", "/reviews/1", &[], 1).await;
    assert_eq!(other[0].0, 404, "{other:?}");
    let mut config = mesh.base.clone();
    config.version += 2;
    let mut two = rules();
    two.truncate(2);
    config.gateway = Some(GatewayConfig {
        listeners: vec![GatewayListener { port: GATEWAY_PORT, protocol: Protocol::Http, http_rules: two, ..GatewayListener::default() }],
    });
    mesh.client.config.send(Arc::new(config)).unwrap();
    let mut miss = Vec::new();
    for _ in 0..50 {
        miss = run(&mesh, "shop.example", "/reviews/1", &[], 1).await;
        if miss[0].0 == 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(miss[0].0, 404, "{miss:?}");
    let hit = run(&mesh, "shop.example", "/reviews/1", &[("end-user", "jason")], 1).await;
    assert_eq!(first_words(&hit).get("reviews-v3"), Some(&1), "control: the matching rule still routes");
}
