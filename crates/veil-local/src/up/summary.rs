//! The summary `veil up` prints once every pod is ready: pods, addresses,
//! identities, and how to reach the app through the ingress gateway.

use veil_model::MeshInput;

use super::state::MeshState;

/// Prints the summary of a ready mesh.
pub fn print(state: &MeshState, input: &MeshInput) {
    println!();
    println!("mesh ready in {:.1} s", state.ready_after_ms as f64 / 1000.0);
    print!("{}", state.table());
    for p in &state.published {
        let hosts: Vec<&String> = input
            .http_routes
            .iter()
            .filter(|r| r.gateways.iter().any(|g| g != "mesh"))
            .flat_map(|r| r.hosts.iter())
            .filter(|h| !h.contains('*'))
            .collect();
        if p.protocol.starts_with("HTTP") {
            match hosts.first() {
                Some(h) => println!("reach the app: curl -H 'Host: {h}' http://{}/", p.host),
                None => println!("reach the app: curl http://{}/", p.host),
            }
        } else {
            println!("reach port {}: connect to {}", p.port, p.host);
        }
    }
    // The command as this process was started (e.g. `./target/release/veil`), so that the
    // hints work where `veil` is not on the PATH.
    let veil = std::env::args().next().unwrap_or_else(|| "veil".into());
    println!("prove the encryption: {veil} audit --duration 10 --expect-encrypted   (in another terminal, while sending traffic)");
    println!("stop: Ctrl-C here, or `{veil} down`");
}
