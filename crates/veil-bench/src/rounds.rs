//! Several rounds of the same paths folded into one value per figure.
//!
//! On a shared machine a path's tail latency moves by tens of percent from
//! one minute to the next, so a figure measured once per path compares the
//! paths and the minute they ran in. `veil-bench run --rounds N` measures
//! every path N times, alternating the order of the meshes, and the report
//! gives each figure's median over the rounds (with its range), from which
//! the ratios and the targets are decided.

use std::collections::BTreeMap;

use crate::figures::{PathKind, PathResult, FIGURES};

/// One figure of one path over the rounds that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    /// The median (for an even count, the mean of the two middle values).
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many rounds produced the figure.
    pub count: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Spread> {
        values.sort_by(f64::total_cmp);
        let (min, max) = (*values.first()?, *values.last()?);
        let n = values.len();
        let median = if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 };
        Some(Spread { median, min, max, count: n })
    }
}

/// Each path's figures over every round, in the order the paths first ran.
#[derive(Debug, Clone, Default)]
pub struct Values {
    paths: Vec<(String, PathKind)>,
    /// path → figure key → spread.
    figures: BTreeMap<String, BTreeMap<&'static str, Spread>>,
}

impl Values {
    /// Folds `rounds` (each a list of path results); a figure a round did
    /// not produce (failed phase) is left out of that path's median.
    pub fn new(rounds: &[Vec<PathResult>]) -> Values {
        let mut paths: Vec<(String, PathKind)> = Vec::new();
        let mut raw: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
        for p in rounds.iter().flatten() {
            if !paths.iter().any(|(n, _)| *n == p.name) {
                paths.push((p.name.clone(), p.kind));
            }
            for f in FIGURES {
                if let Some(v) = (f.get)(p).filter(|v| v.is_finite()) {
                    raw.entry(p.name.clone()).or_default().entry(f.key).or_default().push(v);
                }
            }
        }
        let figures = raw
            .into_iter()
            .map(|(path, keys)| (path, keys.into_iter().filter_map(|(k, v)| Spread::of(v).map(|s| (k, s))).collect()))
            .collect();
        Values { paths, figures }
    }

    /// The paths (name, kind).
    pub fn paths(&self) -> &[(String, PathKind)] {
        &self.paths
    }

    /// The figure `key` of `path` over the rounds.
    pub fn spread(&self, path: &str, key: &str) -> Option<&Spread> {
        self.figures.get(path)?.get(key)
    }

    /// The median of figure `key` of `path`.
    pub fn get(&self, path: &str, key: &str) -> Option<f64> {
        self.spread(path, key).map(|s| s.median)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp::ConnectResult;

    fn conn(name: &str, kind: PathKind, per_second: Option<f64>) -> PathResult {
        let mut p = PathResult::new(name, kind);
        p.connect = per_second.map(|per_second| ConnectResult { connections: 10, errors: 0, per_second });
        p
    }

    #[test]
    fn median_and_range_over_rounds_skipping_missing_figures() {
        let rounds = vec![
            vec![conn("veil", PathKind::Veil, Some(300.0)), conn("haproxy", PathKind::Peer, Some(100.0))],
            vec![conn("haproxy", PathKind::Peer, Some(140.0)), conn("veil", PathKind::Veil, Some(100.0))],
            vec![conn("veil", PathKind::Veil, Some(200.0)), conn("haproxy", PathKind::Peer, None)],
        ];
        let v = Values::new(&rounds);
        assert_eq!(v.paths().iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["veil", "haproxy"]);
        assert_eq!(v.spread("veil", "conn_per_s"), Some(&Spread { median: 200.0, min: 100.0, max: 300.0, count: 3 }));
        assert_eq!(v.get("haproxy", "conn_per_s"), Some(120.0), "two rounds: the mean of the middle two");
        assert_eq!(v.get("veil", "http_p99_us"), None);
    }
}
