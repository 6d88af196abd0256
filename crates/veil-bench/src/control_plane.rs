//! Control-plane cost: time and memory to compute every proxy's config of the
//! synthetic mesh (1000 Services, 2000 workloads, 200 DestinationRules, 100
//! PeerAuthentications at scale 1). Run in a fresh process
//! (`veil-bench control-plane`) so that its peak RSS is the computation's.
//! The mesh generator is shared with the criterion bench of `veil-model`.

use serde::{Deserialize, Serialize};
use std::time::Instant;

use crate::procfs::parse_status_kib;
use crate::BenchError;

#[path = "../../veil-model/benches/synthetic/mod.rs"]
mod synthetic;

/// What one control-plane measurement found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ControlPlaneResult {
    pub services: usize,
    pub proxies: usize,
    pub destination_rules: usize,
    pub peer_authentications: usize,
    /// YAML text → snapshot → model input, ms.
    pub load_ms: f64,
    /// `MeshInput::proxy_configs()`, best of `runs`, ms.
    pub compute_ms: f64,
    pub runs: u32,
    /// Peak RSS of the whole process (YAML, snapshot, input, configs), MiB.
    pub peak_rss_mib: f64,
    /// Peak RSS growth during one `proxy_configs()` call, MiB.
    pub compute_rss_growth_mib: f64,
    /// Size of all configs as JSON (what the config stream would send), bytes.
    pub config_json_bytes: usize,
}

fn status_kib(field: &str) -> Option<u64> {
    parse_status_kib(&std::fs::read_to_string("/proc/self/status").ok()?, field)
}

/// Resets the peak RSS of this process (`VmHWM`) to its current RSS.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Builds the synthetic mesh at `scale` and times `proxy_configs()` `runs` times.
///
/// # Errors
/// [`BenchError::Tool`] when the generated YAML does not load.
pub fn measure(scale: f64, runs: u32) -> Result<ControlPlaneResult, BenchError> {
    let s = synthetic::Scale::times(scale);
    let t = Instant::now();
    let text = synthetic::yaml(&s);
    let snapshot = synthetic::snapshot(&text).map_err(|e| BenchError::Tool { program: "synthetic mesh".into(), detail: e })?;
    let input = synthetic::mesh_input(&snapshot);
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;
    let mut out = ControlPlaneResult {
        services: input.registry.services.len(),
        destination_rules: snapshot.destination_rules.len(),
        peer_authentications: input.peer_authentications.len(),
        load_ms,
        compute_ms: f64::INFINITY,
        runs: runs.max(1),
        ..ControlPlaneResult::default()
    };
    drop(text);
    for i in 0..runs.max(1) {
        let before = status_kib("VmRSS:").unwrap_or(0);
        reset_peak();
        let t = Instant::now();
        let configs = input.proxy_configs();
        out.compute_ms = out.compute_ms.min(t.elapsed().as_secs_f64() * 1000.0);
        let grown = status_kib("VmHWM:").unwrap_or(0).saturating_sub(before) as f64 / 1024.0;
        out.compute_rss_growth_mib = out.compute_rss_growth_mib.max(grown);
        out.proxies = configs.len();
        if i == 0 {
            out.config_json_bytes = configs.iter().filter_map(|c| serde_json::to_vec(c).ok()).map(|v| v.len()).sum();
            out.peak_rss_mib = status_kib("VmHWM:").unwrap_or(0) as f64 / 1024.0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_synthetic_mesh_gives_every_proxy_a_config() {
        let r = match measure(0.02, 1) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.services, 20);
        assert_eq!(r.proxies, 40, "two replicas per Service, each with a sidecar");
        assert_eq!(r.destination_rules, 4);
        assert_eq!(r.peer_authentications, 2);
        assert!(r.compute_ms.is_finite() && r.compute_ms > 0.0);
        assert!(r.peak_rss_mib > 0.0 && r.config_json_bytes > 0);
    }
}
