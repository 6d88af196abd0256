//! Starts each pod's workload process (the command of `veil.local.yaml`)
//! inside its network namespace (after its `outputCerts` files exist), and
//! waits for its readiness port.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::plan::MeshPlan;
use super::run::UpOptions;
use super::state::PodState;
use super::UpError;
use crate::journal::Journal;
use crate::process::{run_as, spawn, ProcessSpec};

/// Starts every workload, then waits (until `deadline`) for each `ready.tcpPort`.
///
/// # Errors
/// [`UpError::NotReady`] naming the pod and its log when a port never accepts.
pub async fn start(
    options: &UpOptions,
    journal: &Journal,
    plan: &MeshPlan,
    states: &mut [PodState],
    deadline: Instant,
) -> Result<(), UpError> {
    let state_dir = &options.state_dir;
    let mut waits = Vec::new();
    for (p, st) in plan.pods.iter().zip(states.iter_mut()) {
        let Some(run) = &p.run else { continue };
        let Some((program, args)) = run.command.split_first() else { continue };
        let pod_dir = state_dir.join("pods").join(format!("{}.{}", p.pod.namespace, p.pod.name));
        std::fs::create_dir_all(&pod_dir).map_err(|e| UpError::Io(pod_dir.clone(), e))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&pod_dir, std::fs::Permissions::from_mode(0o755));
        }
        let mut env: BTreeMap<String, String> = p.planned.env.clone();
        env.extend(run.env.clone());
        env.insert("VEIL_POD_NAME".into(), p.pod.name.clone());
        env.insert("VEIL_POD_NAMESPACE".into(), p.pod.namespace.clone());
        env.insert("VEIL_POD_IP".into(), p.pod.ip.to_string());
        env.insert("VEIL_POD_DIR".into(), pod_dir.display().to_string());
        env.insert("VEIL_EXAMPLE_DIR".into(), options.dir.canonicalize().unwrap_or(options.dir.clone()).display().to_string());
        if let Some(dir) = super::output_certs::dir(&pod_dir, run) {
            let agent_log = state_dir.join("logs").join(format!("{}.{}.certs.log", p.pod.namespace, p.pod.name));
            super::output_certs::wait(&dir, deadline, &agent_log).await?;
            env.insert("OUTPUT_CERTS".into(), dir.display().to_string());
        }
        let (uid, gid) = run_as(&run.user).map_err(UpError::Local)?;
        let log = state_dir.join("logs").join(format!("{}.{}.log", p.pod.namespace, p.pod.name));
        let spec = ProcessSpec {
            program: program.into(),
            args: args.to_vec(),
            cwd: Some(options.dir.clone()),
            env,
            uid,
            gid,
            log_path: log.clone(),
        };
        let spec = super::mounts::wrap(spec, &st.netns, &super::run::pod_mounts(plan, p), &pod_dir.join("mounts-workload"))?;
        let proc_ = spawn(journal, &st.netns, &spec).map_err(UpError::Local)?;
        st.workload_pid = Some(proc_.pid());
        if let Some(ready) = &run.ready {
            waits.push((st.netns.clone(), p.pod.ip, ready.tcp_port, ready.timeout_seconds, log, format!("{}/{}", p.pod.namespace, p.pod.name)));
        }
    }
    for (netns, ip, port, timeout_s, log, name) in waits {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = Duration::from_secs(timeout_s).min(left);
        let res = tokio::task::spawn_blocking(move || crate::process::wait_tcp_ready(&netns, IpAddr::from(loopback_of(ip)), port, timeout))
            .await
            .map_err(|e| UpError::NotReady(format!("{name}: {e}")))?;
        if let Err(e) = res {
            return Err(UpError::NotReady(format!("{name} did not open port {port}: {e}; see {}", log.display())));
        }
        println!("  {name} ready (port {port})");
    }
    Ok(())
}

/// Readiness is checked inside the pod, on loopback, so that interception
/// (which would send a connection to the pod's own address through the
/// proxy) is not in the way.
fn loopback_of(_ip: IpAddr) -> std::net::Ipv4Addr {
    std::net::Ipv4Addr::LOCALHOST
}
