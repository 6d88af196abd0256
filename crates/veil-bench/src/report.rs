//! The report of a run: a Markdown table (each figure per path, with its
//! ratio to `direct`, and Veil's ratio to the best peer), the targets of the
//! issue with met / missed, and the same as JSON.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::control_plane::ControlPlaneResult;
use crate::figures::{Better, Figure, PathKind, PathResult, FIGURES};
use crate::rounds::Values;

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    /// `full`, `quick` or `smoke`.
    pub mode: String,
    /// What is special about this run (`--note`, e.g. an A/B setting), printed
    /// under its heading; `None` for a run with the default settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub machine: BTreeMap<String, String>,
    /// Workload sizes, as text.
    pub workloads: Vec<String>,
    /// Every path's results, per round (`--rounds`; one by default).
    pub rounds: Vec<Vec<PathResult>>,
    pub control_plane: Option<ControlPlaneResult>,
    /// figure key → path → median over the rounds, ratio to direct, ratio to the best peer.
    pub ratios: BTreeMap<String, BTreeMap<String, Ratio>>,
    pub targets: Vec<Target>,
}

/// One value of one path, with its ratios.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ratio {
    /// The median over the rounds that produced it.
    pub value: f64,
    /// Lowest and highest over the rounds, when more than one produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(f64, f64)>,
    pub to_direct: Option<f64>,
    /// Against the best peer that is not this path.
    pub to_best_peer: Option<f64>,
    pub best_peer: Option<String>,
}

/// One target of the issue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub measured: String,
    /// None when a figure it needs is missing (e.g. no external peer).
    pub met: Option<bool>,
}

fn value(p: &PathResult, f: &Figure) -> Option<f64> {
    (f.get)(p).filter(|v| v.is_finite())
}

/// The best value of `f` among the peers other than `except`.
pub fn best_peer(values: &Values, f: &Figure, except: &str) -> Option<(String, f64)> {
    values
        .paths()
        .iter()
        .filter(|(name, kind)| *kind == PathKind::Peer && name != except)
        .filter_map(|(name, _)| values.get(name, f.key).map(|v| (name.clone(), v)))
        .reduce(|a, b| match f.better {
            Better::Lower if b.1 < a.1 => b,
            Better::Higher if b.1 > a.1 => b,
            _ => a,
        })
}

/// Every figure of every path (its median over the rounds) with its ratios.
pub fn ratios(values: &Values) -> BTreeMap<String, BTreeMap<String, Ratio>> {
    let mut out = BTreeMap::new();
    let direct = values.paths().iter().find(|(_, kind)| *kind == PathKind::Direct);
    for f in FIGURES {
        let d = direct.and_then(|(name, _)| values.get(name, f.key)).filter(|v| *v != 0.0);
        let mut row = BTreeMap::new();
        for (name, _) in values.paths() {
            let Some(spread) = values.spread(name, f.key) else { continue };
            let v = spread.median;
            let best = best_peer(values, f, name);
            row.insert(
                name.clone(),
                Ratio {
                    value: v,
                    range: (spread.count > 1).then_some((spread.min, spread.max)),
                    to_direct: d.map(|d| v / d),
                    to_best_peer: best.as_ref().filter(|b| b.1 != 0.0).map(|b| v / b.1),
                    best_peer: best.map(|b| b.0),
                },
            );
        }
        out.insert(f.key.to_string(), row);
    }
    out
}

/// A number with a sensible number of digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The Markdown of a report.
pub fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let machine: Vec<String> = r.machine.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    let _ = writeln!(m, "## Benchmark {} ({} run)\n", r.date, r.mode);
    if let Some(note) = &r.note {
        let _ = writeln!(m, "{note}\n");
    }
    let _ = writeln!(m, "{}\n", machine.join("; "));
    let _ = writeln!(m, "Workloads: {}\n", r.workloads.join("; "));
    let values = Values::new(&r.rounds);
    let paths = values.paths();
    let names: Vec<&str> = paths.iter().map(|(name, _)| name.as_str()).collect();
    let _ = writeln!(m, "| figure | {} | veil ÷ best peer |", names.join(" | "));
    let _ = writeln!(m, "|---|{}---|", "---|".repeat(names.len()));
    for f in FIGURES {
        let row = r.ratios.get(f.key);
        let cells: Vec<String> = paths
            .iter()
            .map(|(name, kind)| match row.and_then(|x| x.get(name)) {
                None if f.proxy_only && *kind == PathKind::Direct => "—".into(),
                None => "missing".into(),
                Some(x) => {
                    let range = x.range.map(|(lo, hi)| format!(" [{}–{}]", num(lo), num(hi))).unwrap_or_default();
                    match x.to_direct.filter(|_| *kind != PathKind::Direct) {
                        Some(d) => format!("{} ({}×){range}", num(x.value), num(d)),
                        None => format!("{}{range}", num(x.value)),
                    }
                }
            })
            .collect();
        let veil = row.and_then(|x| x.get("veil")).and_then(|x| Some(format!("{}× ({})", num(x.to_best_peer?), x.best_peer.as_deref()?)));
        let _ = writeln!(m, "| {} ({}) | {} | {} |", f.label, f.unit, cells.join(" | "), veil.unwrap_or_else(|| "—".into()));
    }
    let cells = match r.rounds.len() {
        1 => "Cells: value (ratio to direct).".to_string(),
        n => format!("Cells: median of {n} rounds (its ratio to direct) [lowest–highest]; ratios and targets use the medians."),
    };
    let _ = writeln!(m, "\n{cells} Proxy figures: CPU of both proxies of a path together; RSS of the larger one.");
    if let Some(cp) = &r.control_plane {
        let _ = writeln!(
            m,
            "\nControl plane: {} Services, {} proxies, {} DestinationRules, {} PeerAuthentications → every proxy config in {} ms (best of {}), peak RSS {} MiB (growth while computing {} MiB); YAML load + model input {} ms.",
            cp.services, cp.proxies, cp.destination_rules, cp.peer_authentications, num(cp.compute_ms), cp.runs, num(cp.peak_rss_mib), num(cp.compute_rss_growth_mib), num(cp.load_ms)
        );
    }
    if !r.targets.is_empty() {
        let _ = writeln!(m, "\n| target | measured | met |\n|---|---|---|");
        for t in &r.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "n/a",
            };
            let _ = writeln!(m, "| {} | {} | {met} |", t.what, t.measured);
        }
    }
    for (i, round) in r.rounds.iter().enumerate() {
        for p in round.iter().filter(|p| !p.failures.is_empty()) {
            let failures = p.failures.iter().map(|f| format!("- {f}")).collect::<Vec<_>>().join("\n");
            let _ = writeln!(m, "\n{}{} failures:\n{failures}", round_prefix(r, i), p.name);
        }
    }
    m
}

/// `round N: ` when the run had several rounds.
fn round_prefix(r: &Report, i: usize) -> String {
    if r.rounds.len() > 1 {
        format!("round {}: ", i + 1)
    } else {
        String::new()
    }
}

/// Every figure a path should have that it does not, in any round (`direct`
/// has no proxy figures), and every failed phase.
pub fn missing(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    for (i, round) in r.rounds.iter().enumerate() {
        let prefix = round_prefix(r, i);
        for p in round {
            for f in FIGURES.iter().filter(|f| !(f.proxy_only && p.kind == PathKind::Direct)) {
                if value(p, f).is_none() {
                    out.push(format!("{prefix}{}: {}", p.name, f.label));
                }
            }
            out.extend(p.failures.iter().map(|e| format!("{prefix}{}: {e}", p.name)));
        }
    }
    match &r.control_plane {
        Some(cp) if cp.proxies > 0 && cp.compute_ms > 0.0 => {}
        _ => out.push("control plane: no result".into()),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::Resources;
    use crate::tcp::ConnectResult;

    fn path(name: &str, kind: PathKind, conn_per_s: f64, rss_kib: u64) -> PathResult {
        let mut p = PathResult::new(name, kind);
        p.connect = Some(ConnectResult { connections: 10, errors: 0, per_second: conn_per_s });
        if kind != PathKind::Direct {
            p.resources = Some(Resources { rss_idle_kib: vec![rss_kib, rss_kib / 2], ..Resources::default() });
        }
        p
    }

    #[test]
    fn ratios_to_direct_and_to_the_best_peer_follow_the_better_direction() {
        let paths = vec![
            path("direct", PathKind::Direct, 1000.0, 0),
            path("veil", PathKind::Veil, 500.0, 4096),
            path("stunnel", PathKind::Peer, 200.0, 8192),
            path("haproxy", PathKind::Peer, 400.0, 16384),
        ];
        let r = ratios(&Values::new(&[paths]));
        let conn = &r["conn_per_s"]["veil"];
        assert_eq!(conn.to_direct, Some(0.5));
        assert_eq!(conn.best_peer.as_deref(), Some("haproxy"), "higher is better for conn/s");
        assert_eq!(conn.to_best_peer, Some(1.25));
        let rss = &r["rss_idle_mib"]["veil"];
        assert_eq!(rss.value, 4.0, "the larger of the two proxies");
        assert_eq!(rss.best_peer.as_deref(), Some("stunnel"), "lower is better for RSS");
        assert_eq!(rss.to_best_peer, Some(0.5));
        assert!(!r["rss_idle_mib"].contains_key("direct"));
        assert_eq!(r["conn_per_s"]["haproxy"].best_peer.as_deref(), Some("stunnel"), "a peer is compared with the others");
    }

    #[test]
    fn missing_figures_are_listed_and_the_table_marks_them() {
        let paths = vec![path("direct", PathKind::Direct, 1000.0, 0), path("veil", PathKind::Veil, 500.0, 4096)];
        let report = Report {
            date: "2026-01-01 00:00".into(),
            mode: "smoke".into(),
            note: Some("A/B run: something set".into()),
            machine: BTreeMap::new(),
            workloads: Vec::new(),
            ratios: ratios(&Values::new(std::slice::from_ref(&paths))),
            targets: crate::targets::check(&Values::new(std::slice::from_ref(&paths)), 1000, None, None),
            rounds: vec![paths],
            control_plane: None,
        };
        let missing = missing(&report);
        assert!(missing.iter().any(|m| m.starts_with("veil: HTTP 1 KiB at fixed rate: p50")), "{missing:?}");
        assert!(!missing.iter().any(|m| m.starts_with("direct: RSS")), "direct has no proxy: {missing:?}");
        assert!(missing.iter().any(|m| m.starts_with("control plane")));
        let md = markdown(&report);
        assert!(md.contains("| New connections per second (conn/s) | 1000 | 500.0 (0.500×) |"), "{md}");
        assert!(md.contains("missing"));
        assert!(md.starts_with("## Benchmark 2026-01-01 00:00 (smoke run)\n\nA/B run: something set\n"), "{md}");
        assert!(report.targets.iter().any(|t| t.what.contains("ztunnel") && t.met.is_none()));
    }

    #[test]
    fn rounds_give_medians_ranges_and_targets_on_the_medians() {
        let round = |veil: f64, haproxy: f64| {
            vec![path("direct", PathKind::Direct, 1000.0, 0), path("veil", PathKind::Veil, veil, 4096), path("haproxy", PathKind::Peer, haproxy, 8192)]
        };
        // Veil beats HAProxy in two rounds of three: the medians decide.
        let rounds = vec![round(500.0, 400.0), round(300.0, 450.0), round(600.0, 420.0)];
        let values = Values::new(&rounds);
        let report = Report {
            date: "2026-01-01 00:00".into(),
            mode: "quick".into(),
            note: None,
            machine: BTreeMap::new(),
            workloads: Vec::new(),
            ratios: ratios(&values),
            targets: crate::targets::check(&values, 1000, None, None),
            rounds,
            control_plane: None,
        };
        let conn = &report.ratios["conn_per_s"]["veil"];
        assert_eq!((conn.value, conn.range), (500.0, Some((300.0, 600.0))));
        assert_eq!(conn.to_best_peer, Some(500.0 / 420.0));
        let haproxy = report.targets.iter().find(|t| t.what.contains("≥ HAProxy")).expect("target");
        assert_eq!(haproxy.met, Some(true), "{haproxy:?}");
        let md = markdown(&report);
        assert!(md.contains("| 500.0 (0.500×) [300.0–600.0] |"), "{md}");
        assert!(md.contains("median of 3 rounds"), "{md}");
        assert!(!md.contains("A/B"), "no note, no note line: {md}");
        assert!(missing(&report).iter().any(|m| m.starts_with("round 2: veil: HTTP")), "missing figures name their round");
    }
}
