//! External workloads (`external: true` in `veil.local.yaml`): servers that
//! stand for hosts outside the mesh, such as seed 004's nginx. Each runs in
//! its own network namespace on the pod bridge at its fixed address, with
//! no sidecar and no interception, and is not in the registry: a mesh
//! reaches it only as Istio reaches an external host, through a
//! ServiceEntry (or, under `ALLOW_ANY`, by passthrough). Being on the
//! bridge, its traffic is in `veil audit`'s capture.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::plan::{ExternalPlan, MeshPlan};
use super::run::UpOptions;
use super::state::ExternalState;
use super::UpError;
use crate::journal::Journal;
use crate::net::{Bridge, Host};
use crate::process::{run_as, spawn, ProcessSpec};

/// Network namespace of an external workload.
pub fn netns_name(e: &ExternalPlan) -> String {
    format!("veil-ext-{}", e.name)
}

/// Creates each external workload's namespace, starts its command and waits
/// (until `deadline`) for its `ready.tcpPort`.
///
/// # Errors
/// [`UpError::Local`] when a namespace or process cannot be made,
/// [`UpError::NotReady`] naming the workload and its log.
pub async fn start(
    options: &UpOptions,
    journal: &Journal,
    plan: &MeshPlan,
    bridge: &Bridge,
    bridge_cidr: crate::ipam::Ipv4Cidr,
    deadline: Instant,
) -> Result<Vec<ExternalState>, UpError> {
    let hosts = plan.hosts_entries();
    let mut out = Vec::new();
    for e in &plan.externals {
        let netns = netns_name(e);
        let cidr = crate::ipam::Ipv4Cidr::new(e.address, bridge_cidr.prefix).map_err(UpError::Local)?;
        let host = Host::create(journal, &netns, bridge, cidr, bridge_cidr.addr).map_err(UpError::Local)?;
        host.write_hosts(journal, &hosts).map_err(UpError::Local)?;
        let dir = options.state_dir.join("pods").join(format!("external.{}", e.name));
        std::fs::create_dir_all(&dir).map_err(|err| UpError::Io(dir.clone(), err))?;
        let log = options.state_dir.join("logs").join(format!("external.{}.log", e.name));
        let mut env: BTreeMap<String, String> = e.run.env.clone();
        env.insert("VEIL_POD_NAME".into(), e.name.clone());
        env.insert("VEIL_POD_IP".into(), e.address.to_string());
        env.insert("VEIL_POD_DIR".into(), dir.display().to_string());
        env.insert("VEIL_EXAMPLE_DIR".into(), options.dir.display().to_string());
        let (uid, gid) = run_as(&e.run.user).map_err(UpError::Local)?;
        let Some((program, args)) = e.run.command.split_first() else { continue };
        let spec = ProcessSpec {
            program: program.into(),
            args: args.to_vec(),
            cwd: Some(options.dir.clone()),
            env,
            uid,
            gid,
            log_path: log.clone(),
        };
        let process = spawn(journal, &netns, &spec).map_err(UpError::Local)?;
        println!("  external {} {} ({}) outside the mesh", e.name, e.address, e.hosts.join(", "));
        if let Some(ready) = e.run.ready {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = Duration::from_secs(ready.timeout_seconds).min(left);
            let ns = netns.clone();
            let waited = tokio::task::spawn_blocking(move || {
                crate::process::wait_tcp_ready(&ns, IpAddr::from([127, 0, 0, 1]), ready.tcp_port, timeout)
            })
            .await
            .map_err(|err| UpError::NotReady(format!("external {}: {err}", e.name)))?;
            if let Err(err) = waited {
                let port = ready.tcp_port;
                return Err(UpError::NotReady(format!("external {} did not open port {port}: {err}; see {}", e.name, log.display())));
            }
        }
        out.push(ExternalState {
            name: e.name.clone(),
            ip: IpAddr::V4(e.address),
            netns,
            hosts: e.hosts.clone(),
            pid: Some(process.pid()),
        });
    }
    Ok(out)
}
