//! The targets, checked against one run's figures. Each target is
//! reported with the numbers it was decided on; a target whose figures are
//! missing (e.g. no `external` path was configured) is `n/a`.

use crate::control_plane::ControlPlaneResult;
use crate::figures::{figure, PathKind, PathResult};
use crate::report::{num, Target};

fn get(paths: &[PathResult], name: &str, key: &str) -> Option<f64> {
    let f = figure(key)?;
    paths.iter().find(|p| p.name == name).and_then(|p| (f.get)(p)).filter(|v| v.is_finite())
}

fn target(what: &str, measured: String, met: Option<bool>) -> Target {
    Target { what: what.into(), measured, met }
}

/// Veil's value against every peer's: met when Veil is better than all of them.
fn versus_peers(paths: &[PathResult], key: &str, what: &str, lower: bool) -> Target {
    let veil = get(paths, "veil", key);
    let peers: Vec<(String, f64)> = paths
        .iter()
        .filter(|p| p.kind == PathKind::Peer)
        .filter_map(|p| get(paths, &p.name, key).map(|v| (p.name.clone(), v)))
        .collect();
    let measured = std::iter::once(format!("veil {}", veil.map_or("missing".into(), num)))
        .chain(peers.iter().map(|(n, v)| format!("{n} {}", num(*v))))
        .collect::<Vec<_>>()
        .join(", ");
    let met = veil.filter(|_| !peers.is_empty()).map(|v| peers.iter().all(|(_, p)| if lower { v < *p } else { v > *p }));
    target(what, measured, met)
}

/// `veil value ≤ limit`.
fn at_most(paths: &[PathResult], key: &str, what: &str, limit: f64, unit: &str) -> Target {
    let v = get(paths, "veil", key);
    target(what, v.map_or("missing".into(), |v| format!("{} {unit}", num(v))), v.map(|v| v <= limit))
}

/// `veil ÷ other` compared with `factor` (`at_least`: ratio ≥ factor, else ≤).
fn ratio(paths: &[PathResult], key: &str, other: Option<&str>, factor: f64, at_least: bool, what: &str) -> Target {
    let v = get(paths, "veil", key);
    let o = other.and_then(|o| get(paths, o, key));
    match (v, o, other) {
        (Some(v), Some(o), Some(name)) if o != 0.0 => {
            let r = v / o;
            target(what, format!("veil {} vs {name} {} = {}×", num(v), num(o), num(r)), Some(if at_least { r >= factor } else { r <= factor }))
        }
        _ => target(what, format!("veil {}, {} missing", v.map_or("missing".into(), num), other.unwrap_or("peer")), None),
    }
}

/// Every target of the issue. `external` names the external path (the
/// issue's ztunnel), if one ran.
pub fn check(paths: &[PathResult], external: Option<&str>, cp: Option<&ControlPlaneResult>) -> Vec<Target> {
    let ext = external.unwrap_or("ztunnel (external)");
    let ext_opt = external;
    let mut t = vec![
        ratio(paths, "http_p50_us", Some("direct"), 1.3, false, "p50 at 1000 rps ≤ 1.3× direct"),
        versus_peers(paths, "http_p99_us", "p99 at 1000 rps lower than every peer's (µs)", true),
        at_most(paths, "cpu_s_per_1000_req", "CPU per 1000 rps, both Veil proxies ≤ 0.05 vCPU", 0.05, "vCPU"),
        versus_peers(paths, "cpu_s_per_1000_req", "CPU per 1000 rps lower than every peer's (vCPU)", true),
        at_most(paths, "rss_idle_mib", "RSS idle ≤ 5 MiB", 5.0, "MiB"),
        at_most(paths, "rss_load_mib", "RSS at 1000 rps ≤ 10 MiB", 10.0, "MiB"),
        at_most(paths, "rss_idle_conns_mib", "RSS with the idle connections ≤ 20 MiB", 20.0, "MiB"),
    ];
    for (key, label) in [("rss_idle_mib", "idle"), ("rss_load_mib", "at 1000 rps"), ("rss_idle_conns_mib", "with idle connections")] {
        t.push(ratio(paths, key, ext_opt, 0.5, false, &format!("RSS {label} ≤ half of {ext}'s")));
    }
    t.push(ratio(paths, "iperf_gbps", ext_opt, 1.5, true, &format!("bulk throughput ≥ 1.5× {ext}'s")));
    t.push(ratio(paths, "iperf_gbps", Some("direct"), 0.5, true, "bulk throughput ≥ 50 % of direct"));
    t.push(ratio(paths, "conn_per_s", ext_opt, 1.5, true, &format!("new mTLS connections/s ≥ 1.5× {ext}'s")));
    t.push(ratio(paths, "conn_per_s", Some("haproxy"), 1.0, true, "new mTLS connections/s ≥ HAProxy's"));
    match cp {
        Some(cp) => {
            t.push(target("control plane: every proxy config < 1 s", format!("{} ms for {} proxies", num(cp.compute_ms), cp.proxies), Some(cp.compute_ms < 1000.0)));
            t.push(target("control plane: < 100 MB", format!("peak RSS {} MiB", num(cp.peak_rss_mib)), Some(cp.peak_rss_mib * 1.048_576 < 100.0)));
        }
        None => t.push(target("control plane", "missing".into(), None)),
    }
    t
}
