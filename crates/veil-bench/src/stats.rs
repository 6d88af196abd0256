//! Latency histograms (HdrHistogram, nanosecond values, 3 significant digits)
//! and the percentiles the reports show.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Highest latency recorded, ns (60 s); longer ones are clamped.
const MAX_NS: u64 = 60_000_000_000;

/// Latency percentiles, µs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// A latency histogram.
#[derive(Debug, Clone)]
pub struct Histogram(Option<hdrhistogram::Histogram<u64>>);

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram from 1 ns to 60 s.
    pub fn new() -> Histogram {
        Histogram(hdrhistogram::Histogram::new_with_bounds(1, MAX_NS, 3).ok())
    }

    /// Records one latency (clamped to 1 ns ..= 60 s).
    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(MAX_NS).clamp(1, MAX_NS);
        if let Some(h) = self.0.as_mut() {
            let _ = h.record(ns);
        }
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if let (Some(a), Some(b)) = (self.0.as_mut(), other.0.as_ref()) {
            let _ = a.add(b);
        }
    }

    /// Number of values recorded.
    pub fn len(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// p50/p90/p99/p99.9/max/mean in µs; all zero when empty.
    pub fn percentiles(&self) -> Percentiles {
        let Some(h) = self.0.as_ref().filter(|h| !h.is_empty()) else { return Percentiles::default() };
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::new();
        for i in 1..=1000u64 {
            h.record(Duration::from_micros(i));
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn merge_adds_counts_and_empty_gives_zeros() {
        let mut a = Histogram::new();
        assert!(a.is_empty());
        assert_eq!(a.percentiles(), Percentiles::default());
        let mut b = Histogram::new();
        b.record(Duration::from_millis(2));
        a.record(Duration::from_millis(1));
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert!(a.percentiles().max >= 1999.0);
    }
}
