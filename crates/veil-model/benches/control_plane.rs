//! Control-plane benchmark: every proxy's config of a synthetic mesh of 1000
//! Services, 2000 workloads, 200 DestinationRules and 100 PeerAuthentications
//! (see `synthetic`). `cargo bench -p veil-model --bench control_plane`.
//! Peak memory is measured in a fresh process by `veil-bench control-plane`.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

mod synthetic;

fn control_plane(c: &mut Criterion) {
    let scale = synthetic::Scale::times(1.0);
    let text = synthetic::yaml(&scale);
    let snapshot = match synthetic::snapshot(&text) {
        Ok(s) => s,
        Err(e) => panic!("the synthetic mesh does not load:\n{e}"),
    };
    let input = synthetic::mesh_input(&snapshot);
    assert_eq!(input.registry.services.len(), 1000);
    assert_eq!(input.registry.pods.len(), 2000);
    assert_eq!(snapshot.destination_rules.len(), 200);
    assert_eq!(input.peer_authentications.len(), 100);
    let mut group = c.benchmark_group("control_plane");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(10));
    group.bench_function("proxy_configs 1000 services 2000 proxies", |b| b.iter(|| input.proxy_configs().len()));
    group.bench_function("load yaml + model input", |b| {
        b.iter(|| synthetic::snapshot(&text).map(|s| synthetic::mesh_input(&s).registry.pods.len()))
    });
    group.finish();
}

criterion_group!(benches, control_plane);
criterion_main!(benches);
