//! `veil up`: creates the bridge, starts the control plane, makes one
//! network namespace per pod with its sidecar and workload (and one per
//! external workload, outside the mesh), publishes the gateways on
//! 127.0.0.1, then serves (reloading the directory on change) until
//! shutdown, and removes everything it made.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veil_control::{ControlPlane, ControlPlaneSettings};
use veil_identity::{SpiffeId, TrustDomain};

use super::plan::{check, MeshPlan, PodPlan};
use super::state::{records_dir, MeshState, PodState, Published};
use super::UpError;
use crate::intercept::{install_cluster_ip_rules, install_sidecar_interception, ClusterIpRule, InterceptionSettings};
use crate::ipam::AddressPlan;
use crate::journal::Journal;
use crate::net::{Bridge, EdgeLink, Host};
use crate::process::{spawn, LocalProcess, ProcessSpec};

/// Name of the bridge the pods are on.
pub const BRIDGE: &str = "veil0";
/// The proxies' uid (Istio's 1337), excluded from interception.
pub const PROXY_UID: u32 = 1337;
/// Control plane port (Istio's istiod 15012).
pub const CONTROL_PORT: u16 = 15012;

/// Options of `veil up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub state_dir: PathBuf,
    /// How long to wait for every pod to be ready.
    pub ready_timeout: Duration,
    /// The `veil` binary the proxies run (`veil proxy`), unless
    /// [`SIDECAR_BINARY`] sits next to it (see [`proxy_command`]).
    pub veil_binary: PathBuf,
}

/// File name of the proxy-only binary (the `veil` package's `veil-sidecar`).
pub const SIDECAR_BINARY: &str = "veil-sidecar";

/// The program and arguments of a sidecar or gateway proxy: [`SIDECAR_BINARY`]
/// (no arguments) when it is an executable file in the directory of
/// `veil_binary`, else `veil_binary proxy`. Both run the same agent from the
/// same environment; the proxy-only binary maps a fraction of the pages,
/// which is most of an idle proxy's resident memory.
pub fn proxy_command(veil_binary: &Path) -> (PathBuf, Vec<String>) {
    use std::os::unix::fs::PermissionsExt;
    let sidecar = veil_binary.with_file_name(SIDECAR_BINARY);
    let executable = std::fs::metadata(&sidecar).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if executable {
        (sidecar, Vec::new())
    } else {
        (veil_binary.to_path_buf(), vec!["proxy".into()])
    }
}

fn say(msg: impl AsRef<str>) {
    println!("{}", msg.as_ref());
}

fn netns_name(p: &PodPlan) -> String {
    format!("veil-{}-{}", p.pod.namespace, p.pod.name)
}

/// Host port a gateway server port is published on: privileged ports move
/// up by 8000 (80 → 8080, 443 → 8443), others keep their number.
pub fn published_port(port: u16) -> u16 {
    if port < 1024 {
        port + 8000
    } else {
        port
    }
}

async fn http_ready(addr: SocketAddr) -> bool {
    let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    if s.write_all(b"GET /healthz/ready HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match tokio::time::timeout(Duration::from_millis(500), s.read(&mut buf)).await {
        Ok(Ok(n)) => buf.get(..n).is_some_and(|b| b.starts_with(b"HTTP/1.1 200") || b.starts_with(b"HTTP/1.0 200")),
        _ => false,
    }
}

async fn wait_proxy_ready(ip: IpAddr, deadline: Instant) -> bool {
    let addr = SocketAddr::new(ip, 15021);
    while Instant::now() < deadline {
        if http_ready(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn mkdir(path: &Path, mode: u32) -> Result<(), UpError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(|e| UpError::Io(path.to_path_buf(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|e| UpError::Io(path.to_path_buf(), e))
}

/// The proxies run as uid 1337 and read the mesh root and write their
/// records under the state directory: every ancestor must let others in.
fn check_reachable_by_proxies(state_dir: &Path) -> Result<(), UpError> {
    use std::os::unix::fs::PermissionsExt;
    let abs = state_dir.canonicalize().map_err(|e| UpError::Io(state_dir.to_path_buf(), e))?;
    for dir in abs.ancestors() {
        let mode = std::fs::metadata(dir).map_err(|e| UpError::Io(dir.to_path_buf(), e))?.permissions().mode();
        if mode & 0o001 == 0 {
            return Err(UpError::Plan(format!(
                "the state directory {} is not reachable by the proxies (uid {PROXY_UID}): {} has mode {:o} without o+x; \
                 use a state directory under /var/lib (the default) or `chmod o+x {}`",
                abs.display(),
                dir.display(),
                mode & 0o777,
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Runs the mesh of `options.dir` until `shutdown` resolves, then removes
/// everything it created. A directory with errors starts nothing.
///
/// # Errors
/// [`UpError`] naming what failed; whatever was created is removed first.
pub async fn run(mut options: UpOptions, shutdown: impl std::future::Future<Output = ()>) -> Result<(), UpError> {
    let started = Instant::now();
    options.dir = options.dir.canonicalize().map_err(|e| UpError::Io(options.dir.clone(), e))?;
    let report = check(&options.dir).map_err(UpError::Config)?;
    for w in &report.warnings {
        say(format!("warning: {w}"));
    }
    for f in veil_model::analyze::analyze(&report.snapshot) {
        say(format!("warning: {}", f.body()));
    }
    if let Ok(old) = MeshState::load(&options.state_dir) {
        if old.pid != std::process::id() && crate::process::is_running(old.pid as i32) {
            return Err(UpError::AlreadyRunning(old.pid));
        }
    }
    mkdir(&options.state_dir, 0o755)?;
    check_reachable_by_proxies(&options.state_dir)?;
    let leftovers = crate::teardown::teardown(&options.state_dir).map_err(UpError::Local)?;
    if !leftovers.removed.is_empty() {
        say(format!("removed {} leftover item(s) of an earlier run", leftovers.removed.len()));
    }
    if std::path::Path::new("/sys/class/net").join(BRIDGE).exists() {
        return Err(UpError::Plan(format!(
            "another mesh is running on this machine (bridge {BRIDGE} exists); stop it with `veil down` \
             (with its --state-dir), or remove what a crashed one left with `veil down`"
        )));
    }
    MeshState::remove(&options.state_dir);

    let mut addrs = AddressPlan::default();
    let plan = MeshPlan::new(&report, &mut addrs).map_err(UpError::Plan)?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = start_and_serve(&options, &report.snapshot, plan, addrs, started, shutdown, stop_rx).await;
    let _ = stop_tx.send(true);
    say("stopping: removing pods, links, rules and processes");
    let down = crate::teardown::teardown(&options.state_dir).map_err(UpError::Local);
    MeshState::remove(&options.state_dir);
    match (&result, &down) {
        (Ok(()), Ok(r)) => say(format!("veil up: stopped; removed {} item(s)", r.removed.len())),
        (_, Err(e)) => say(format!("cleanup incomplete: {e}; run `veil down`")),
        _ => {}
    }
    result.and(down.map(|_| ()))
}

#[allow(clippy::too_many_arguments)]
async fn start_and_serve(
    options: &UpOptions,
    snapshot: &veil_api::Snapshot,
    mut plan: MeshPlan,
    mut addrs: AddressPlan,
    started: Instant,
    shutdown: impl std::future::Future<Output = ()>,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) -> Result<(), UpError> {
    let state_dir = &options.state_dir;
    let journal = Journal::open(state_dir).map_err(UpError::Local)?;
    let bridge_cidr = addrs.bridge();
    let bridge = Bridge::create(&journal, BRIDGE, bridge_cidr).map_err(UpError::Local)?;
    say(format!("bridge {BRIDGE} {bridge_cidr}"));

    let td = TrustDomain::default();
    let cp = Arc::new(
        ControlPlane::new(ControlPlaneSettings {
            state_dir: state_dir.join("ca"),
            trust_domain: td.clone(),
            max_cert_ttl: veil_identity::SECRET_TTL,
        })
        .map_err(|e| UpError::Control(e.to_string()))?,
    );
    let control_addr = SocketAddr::new(IpAddr::V4(bridge_cidr.addr), CONTROL_PORT);
    {
        let cp = cp.clone();
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stop = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = cp.serve(control_addr, stop).await {
                tracing::error!(error = %e, "control plane stopped");
            }
        });
    }
    let mesh_dir = state_dir.join("mesh");
    mkdir(&mesh_dir, 0o755)?;
    let root_path = mesh_dir.join("root-cert.pem");
    std::fs::write(&root_path, cp.ca.root_pem()).map_err(|e| UpError::Io(root_path.clone(), e))?;
    let records = records_dir(state_dir);
    mkdir(&records, 0o755)?;
    mkdir(&state_dir.join("logs"), 0o755)?;
    mkdir(&state_dir.join("pods"), 0o755)?;
    let input = plan.mesh_input(snapshot);
    cp.store.publish_mesh(input.clone());
    say(format!("control plane {control_addr} (CA {}, root in {})", td.as_str(), root_path.display()));
    let admin = veil_control::admin::bind(veil_control::admin::ADMIN_PORT).await.map_err(|e| UpError::Control(e.to_string()))?;
    let admin_addr = admin.local_addr().map_err(|e| UpError::Control(format!("admin API: {e}")))?;
    {
        let (store, mut rx) = (cp.store.clone(), stop_rx.clone());
        tokio::spawn(veil_control::admin::serve(admin, store, async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
    }
    say(format!("admin API http://{admin_addr} (veil x describe pod, veil authn tls-check, veil x auth check)"));

    // Hosts entries: every Service name form → its ClusterIP, every external host → its address.
    let hosts = plan.hosts_entries();
    let cluster_rules: Vec<ClusterIpRule> = input
        .outbound()
        .services
        .iter()
        .filter_map(|s| {
            let ep = s.endpoints.first()?;
            let (Some(IpAddr::V4(cluster_ip)), IpAddr::V4(endpoint_ip)) = (s.cluster_ip, ep.ip) else { return None };
            Some(ClusterIpRule { cluster_ip, port: s.port, endpoint_ip, target_port: ep.port })
        })
        .collect();

    // What a proxy (or a certificate agent) needs to get its pod's certificate and config.
    let agent_env = |pod: &veil_model::Pod, spiffe: &SpiffeId| -> BTreeMap<String, String> {
        [
            ("VEIL_CA_ADDR", format!("https://{control_addr}")),
            ("VEIL_CA_NAME", veil_control::server::CONTROL_PLANE_NAME.to_string()),
            ("VEIL_ROOT_CERT", root_path.display().to_string()),
            ("VEIL_TOKEN", cp.bootstrap_token(spiffe)),
            ("VEIL_SPIFFE_ID", spiffe.to_string()),
            ("VEIL_POD", pod.name.clone()),
            ("VEIL_NAMESPACE", pod.namespace.clone()),
            ("VEIL_LOG", std::env::var("VEIL_LOG").unwrap_or_else(|_| "info".into())),
            ("MALLOC_ARENA_MAX", "1".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        // Passed on when set: the proxies' scheduler slice (µs; 0 = the kernel's),
        // whether they give back their start-up pages (0 = keep them) and whether
        // they offer streams on kept mesh connections (0 = one connection each).
        .chain(
            ["VEIL_SCHED_SLICE_US", "VEIL_RELEASE_PAGES", "VEIL_MESH_STREAMS"]
                .into_iter()
                .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v))),
        )
        .collect()
    };
    let total = plan.pods.len();
    let mut states = Vec::new();
    let mut proxies: Vec<(usize, LocalProcess)> = Vec::new();
    for (i, p) in plan.pods.iter().enumerate() {
        let netns = netns_name(p);
        let IpAddr::V4(ip) = p.pod.ip else { continue };
        let cidr = crate::ipam::Ipv4Cidr::new(ip, bridge_cidr.prefix).map_err(UpError::Local)?;
        let host = Host::create(&journal, &netns, &bridge, cidr, bridge_cidr.addr).map_err(UpError::Local)?;
        host.write_hosts(&journal, &hosts).map_err(UpError::Local)?;
        let kind = if p.pod.gateway { "gateway" } else if p.pod.sidecar { "sidecar" } else { "no sidecar" };
        say(format!("[{}/{total}] pod {}/{} {} ({kind})", i + 1, p.pod.namespace, p.pod.name, p.pod.ip));
        if p.pod.sidecar {
            install_sidecar_interception(&netns, &InterceptionSettings::default()).map_err(UpError::Local)?;
        } else if !p.pod.gateway {
            install_cluster_ip_rules(&netns, &cluster_rules).map_err(UpError::Local)?;
        }
        let spiffe = SpiffeId::new(&td, &p.pod.namespace, &p.pod.service_account);
        let mut st = PodState {
            name: p.pod.name.clone(),
            namespace: p.pod.namespace.clone(),
            ip: p.pod.ip,
            netns: netns.clone(),
            sidecar: p.pod.sidecar,
            gateway: p.pod.gateway,
            service_account: p.pod.service_account.clone(),
            spiffe_id: None,
            workload_pid: None,
            proxy_pid: None,
        };
        if p.pod.sidecar || p.pod.gateway {
            if p.pod.gateway {
                crate::cmd::run(
                    "ip",
                    &["netns", "exec", &netns, "sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=0"],
                    "cannot let the gateway bind ports below 1024",
                )
                .map_err(UpError::Local)?;
            }
            let rec = records.join(format!("{}.{}.jsonl", p.pod.namespace, p.pod.name));
            std::fs::write(&rec, b"").map_err(|e| UpError::Io(rec.clone(), e))?;
            let _ = nix::unistd::chown(&rec, Some(nix::unistd::Uid::from_raw(PROXY_UID)), Some(nix::unistd::Gid::from_raw(PROXY_UID)));
            let mut env = agent_env(&p.pod, &spiffe);
            env.insert("VEIL_RECORDS".into(), rec.display().to_string());
            let (program, args) = proxy_command(&options.veil_binary);
            let spec = ProcessSpec {
                program,
                args,
                cwd: Some(state_dir.clone()),
                env,
                uid: Some(PROXY_UID),
                gid: Some(PROXY_UID),
                log_path: state_dir.join("logs").join(format!("{}.{}.proxy.log", p.pod.namespace, p.pod.name)),
            };
            let stage = state_dir.join("pods").join(format!("{}.{}", p.pod.namespace, p.pod.name)).join("mounts-proxy");
            let spec = super::mounts::wrap(spec, &netns, &pod_mounts(&plan, p), &stage)?;
            let proc_ = spawn(&journal, &netns, &spec).map_err(UpError::Local)?;
            st.proxy_pid = Some(proc_.pid());
            st.spiffe_id = Some(spiffe.to_string());
            proxies.push((i, proc_));
        }
        let pod_dir = state_dir.join("pods").join(format!("{}.{}", p.pod.namespace, p.pod.name));
        if let Some((run, dir)) = p.run.as_ref().and_then(|r| Some((r, super::output_certs::dir(&pod_dir, r)?))) {
            let log = state_dir.join("logs").join(format!("{}.{}.certs.log", p.pod.namespace, p.pod.name));
            super::output_certs::start(&journal, &netns, &options.veil_binary, agent_env(&p.pod, &spiffe), run, &dir, log)?;
            say(format!("  certificate agent for {spiffe} writes OUTPUT_CERTS {}", dir.display()));
        }
        states.push(st);
    }
    let deadline = Instant::now() + options.ready_timeout;
    for (i, _) in &proxies {
        let Some(p) = plan.pods.get(*i) else { continue };
        if !wait_proxy_ready(p.pod.ip, deadline).await {
            return Err(UpError::NotReady(format!(
                "proxy of {}/{} is not ready; see {}",
                p.pod.namespace,
                p.pod.name,
                state_dir.join("logs").join(format!("{}.{}.proxy.log", p.pod.namespace, p.pod.name)).display()
            )));
        }
    }
    say(format!("{} proxies ready (certificates issued, config received)", proxies.len()));
    let externals = super::externals::start(options, &journal, &plan, &bridge, bridge_cidr, deadline).await?;
    super::workloads::start(options, &journal, &plan, &mut states, deadline).await?;

    let mut published = Vec::new();
    let mut forwards = Vec::new();
    for p in plan.pods.iter().filter(|p| p.pod.gateway) {
        let edge = addrs.next_edge().map_err(UpError::Local)?;
        let netns = netns_name(p);
        EdgeLink::create(&journal, &netns, edge.host, edge.ns).map_err(UpError::Local)?;
        let cfg = input.proxy_config(&p.pod, &input.outbound_for(&p.pod));
        for l in cfg.gateway.iter().flat_map(|g| g.listeners.iter()) {
            let want = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), published_port(l.port));
            let target = SocketAddr::new(IpAddr::V4(edge.ns.addr), l.port);
            let fwd = match crate::forward::forward(&journal, want, target).await {
                Ok(f) => f,
                Err(_) => crate::forward::forward(&journal, SocketAddr::new(want.ip(), 0), target)
                    .await
                    .map_err(UpError::Local)?,
            };
            published.push(Published {
                gateway: format!("{}/{}", p.pod.namespace, p.pod.name),
                port: l.port,
                protocol: format!("{:?}", l.protocol).to_uppercase(),
                host: fwd.local_addr(),
            });
            forwards.push(fwd);
        }
    }
    let state = MeshState {
        pid: std::process::id(),
        dir: options.dir.clone(),
        bridge: bridge.name.clone(),
        control_plane: control_addr,
        pods: states,
        published,
        ready_after_ms: started.elapsed().as_millis() as u64,
        admin: Some(admin_addr),
        externals,
    };
    state.save(state_dir).map_err(UpError::Local)?;
    super::summary::print(&state, &input);
    plan.settings = input.settings.clone();
    super::reload::serve(options, &plan, &cp, shutdown).await;
    drop(forwards);
    drop(proxies);
    Ok(())
}

/// The mounts of `veil.local.yaml` for pod `p`.
pub(super) fn pod_mounts<'a>(plan: &'a MeshPlan, p: &PodPlan) -> Vec<&'a crate::runtime_file::Mount> {
    let id = format!("{}/{}", p.pod.namespace, p.pod.name);
    plan.mounts.iter().filter(|m| m.pod == id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_proxy_only_binary_is_preferred_when_it_is_executable_next_to_veil() {
        let dir = std::env::temp_dir().join(format!("veil-proxy-command-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let veil = dir.join("veil");
        let sidecar = dir.join(SIDECAR_BINARY);
        // Control: without the sidecar binary, `veil proxy`.
        assert_eq!(proxy_command(&veil), (veil.clone(), vec!["proxy".to_string()]));
        std::fs::write(&sidecar, b"#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(proxy_command(&veil), (veil.clone(), vec!["proxy".to_string()]), "not executable: not used");
        std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(proxy_command(&veil), (sidecar, Vec::new()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
