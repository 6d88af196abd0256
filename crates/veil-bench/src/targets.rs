//! The targets, checked against one run's figures (each the median
//! over the run's rounds). Each target is
//! reported with the numbers it was decided on; a target whose figures are
//! missing (e.g. no `external` path was configured) is `n/a`.

use crate::control_plane::ControlPlaneResult;
use crate::figures::PathKind;
use crate::report::{num, Target};
use crate::rounds::Values;

fn target(what: &str, measured: String, met: Option<bool>) -> Target {
    Target { what: what.into(), measured, met }
}

/// Veil's value against every peer's: met when Veil is better than all of them.
fn versus_peers(values: &Values, key: &str, what: &str, lower: bool) -> Target {
    let veil = values.get("veil", key);
    let peers: Vec<(String, f64)> = values
        .paths()
        .iter()
        .filter(|(_, kind)| *kind == PathKind::Peer)
        .filter_map(|(name, _)| values.get(name, key).map(|v| (name.clone(), v)))
        .collect();
    let measured = std::iter::once(format!("veil {}", veil.map_or("missing".into(), num)))
        .chain(peers.iter().map(|(n, v)| format!("{n} {}", num(*v))))
        .collect::<Vec<_>>()
        .join(", ");
    let met = veil.filter(|_| !peers.is_empty()).map(|v| peers.iter().all(|(_, p)| if lower { v < *p } else { v > *p }));
    target(what, measured, met)
}

/// `veil value ≤ limit`.
fn at_most(values: &Values, key: &str, what: &str, limit: f64, unit: &str) -> Target {
    let v = values.get("veil", key);
    target(what, v.map_or("missing".into(), |v| format!("{} {unit}", num(v))), v.map(|v| v <= limit))
}

/// `veil ÷ other` compared with `factor` (`at_least`: ratio ≥ factor, else ≤).
fn ratio(values: &Values, key: &str, other: Option<&str>, factor: f64, at_least: bool, what: &str) -> Target {
    let v = values.get("veil", key);
    let o = other.and_then(|o| values.get(o, key));
    match (v, o, other) {
        (Some(v), Some(o), Some(name)) if o != 0.0 => {
            let r = v / o;
            target(what, format!("veil {} vs {name} {} = {}×", num(v), num(o), num(r)), Some(if at_least { r >= factor } else { r <= factor }))
        }
        (v, o, other) => {
            let peer = match (o, other) {
                (Some(o), Some(name)) => format!("{name} {}", num(o)),
                _ => format!("{} missing", other.unwrap_or("peer")),
            };
            target(what, format!("veil {}, {peer}", v.map_or("missing".into(), num)), None)
        }
    }
}

/// Every target of the issue (set at 1000 rps; the labels name the run's
/// fixed rate, `rate` requests/s). `external` names the external path (the
/// issue's ztunnel), if one ran.
pub fn check(values: &Values, rate: u32, external: Option<&str>, cp: Option<&ControlPlaneResult>) -> Vec<Target> {
    let ext = external.unwrap_or("ztunnel (external)");
    let ext_opt = external;
    let mut t = vec![
        ratio(values, "http_p50_us", Some("direct"), 1.3, false, &format!("p50 at {rate} rps ≤ 1.3× direct")),
        versus_peers(values, "http_p99_us", &format!("p99 at {rate} rps lower than every peer's (µs)"), true),
        at_most(values, "cpu_s_per_1000_req", &format!("CPU per 1000 requests at {rate} rps, both Veil proxies ≤ 0.05 s (= vCPU at 1000 rps)"), 0.05, "s"),
        versus_peers(values, "cpu_s_per_1000_req", &format!("CPU per 1000 requests at {rate} rps lower than every peer's (s)"), true),
        at_most(values, "rss_idle_mib", "RSS idle ≤ 5 MiB", 5.0, "MiB"),
        at_most(values, "rss_load_mib", &format!("RSS at {rate} rps ≤ 10 MiB"), 10.0, "MiB"),
        at_most(values, "rss_idle_conns_mib", "RSS with the idle connections ≤ 20 MiB", 20.0, "MiB"),
    ];
    let at_rate = format!("at {rate} rps");
    for (key, label) in [("rss_idle_mib", "idle"), ("rss_load_mib", at_rate.as_str()), ("rss_idle_conns_mib", "with idle connections")] {
        t.push(ratio(values, key, ext_opt, 0.5, false, &format!("RSS {label} ≤ half of {ext}'s")));
    }
    t.push(ratio(values, "iperf_gbps", ext_opt, 1.5, true, &format!("bulk throughput ≥ 1.5× {ext}'s")));
    t.push(ratio(values, "iperf_gbps", Some("direct"), 0.5, true, "bulk throughput ≥ 50 % of direct"));
    t.push(ratio(values, "conn_per_s", ext_opt, 1.5, true, &format!("new mTLS connections/s ≥ 1.5× {ext}'s")));
    t.push(ratio(values, "conn_per_s", Some("haproxy"), 1.0, true, "new mTLS connections/s ≥ HAProxy's"));
    match cp {
        Some(cp) => {
            t.push(target("control plane: every proxy config < 1 s", format!("{} ms for {} proxies", num(cp.compute_ms), cp.proxies), Some(cp.compute_ms < 1000.0)));
            t.push(target("control plane: < 100 MB", format!("peak RSS {} MiB", num(cp.peak_rss_mib)), Some(cp.peak_rss_mib * 1.048_576 < 100.0)));
        }
        None => t.push(target("control plane", "missing".into(), None)),
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::{PathKind, PathResult};

    #[test]
    fn a_missing_figure_names_only_the_path_that_lacks_it() {
        let mut direct = PathResult::new("direct", PathKind::Direct);
        direct.iperf_gbps = Some(17.0);
        let veil = PathResult::new("veil", PathKind::Veil);
        let values = Values::new(&[vec![direct, veil]]);
        let t = ratio(&values, "iperf_gbps", Some("direct"), 0.5, true, "bulk");
        assert_eq!((t.measured.as_str(), t.met), ("veil missing, direct 17.00", None));
        let t = ratio(&values, "iperf_gbps", Some("ztunnel"), 1.5, true, "bulk");
        assert_eq!(t.measured, "veil missing, ztunnel missing");
    }
}
