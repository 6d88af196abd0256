//! Hot reload: while `veil up` serves, a changed file in the directory is
//! validated and, when good, turned into new proxy configs that reach the
//! proxies over their config streams without restarting them. A bad file is
//! rejected with file:line errors and the last good config keeps serving.
//! Pods are fixed for the life of `veil up`: new workloads need a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};
use veil_control::ControlPlane;

use super::plan::{check, MeshPlan};
use super::run::UpOptions;

/// Watches `options.dir` and republishes configs on change until `shutdown`.
pub async fn serve(options: &UpOptions, plan: &MeshPlan, cp: &Arc<ControlPlane>, shutdown: impl std::future::Future<Output = ()>) {
    let mut first = true;
    veil_control::watch::watch_directory(
        options.dir.clone(),
        Duration::from_millis(500),
        |dir| {
            if first {
                first = false;
                return;
            }
            let t = Instant::now();
            match check(dir) {
                Err(errors) => {
                    println!("config rejected; the last good config keeps serving:");
                    for e in errors {
                        println!("  error: {e}");
                    }
                }
                Ok(report) => {
                    let changed = cp.store.publish_mesh(plan.mesh_input(&report.snapshot));
                    println!(
                        "config reloaded: {changed} proxy config(s) changed, computed in {} ms",
                        t.elapsed().as_millis()
                    );
                }
            }
        },
        shutdown,
    )
    .await;
}
