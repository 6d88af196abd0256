//! From a directory to a plan: the resources (validated), the local runtime
//! file, the pods with their addresses, the external workloads (servers
//! outside the mesh) and mounts, and the model input the control plane
//! computes proxy configs from. Nothing is created here.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use veil_api::{load_dir, Snapshot, LOCAL_RUNTIME_FILE};
use veil_model::from_api::{self, PlannedPod};
use veil_model::{MeshInput, MeshSettings, Pod, Registry};

use super::resolve::Resolver;
use crate::ipam::AddressPlan;
use crate::runtime_file::{LocalRuntime, Mount, RuntimeWorkload};

/// What `veil validate` reports for a good directory.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Number of resources loaded.
    pub resources: usize,
    /// Warnings (`file:line: message`).
    pub warnings: Vec<String>,
    pub snapshot: Snapshot,
    /// The local runtime, when the directory has `veil.local.yaml`.
    pub runtime: Option<LocalRuntime>,
}

fn count(s: &Snapshot) -> usize {
    s.namespaces.len()
        + s.services.len()
        + s.deployments.len()
        + s.stateful_sets.len()
        + s.daemon_sets.len()
        + s.pods.len()
        + s.service_accounts.len()
        + s.secrets.len()
        + s.config_maps.len()
        + s.peer_authentications.len()
        + s.authorization_policies.len()
        + s.destination_rules.len()
        + s.gateways.len()
        + s.virtual_services.len()
        + s.service_entries.len()
        + s.workload_entries.len()
        + s.sidecars.len()
        + s.policies.len()
        + s.mesh_policies.len()
        + s.gateway_hosts.len()
}

/// Loads and validates a directory: every YAML file, and `veil.local.yaml`
/// when present. Returns every error as `file:line: field: message`.
pub fn check(dir: &Path) -> Result<CheckReport, Vec<String>> {
    if !dir.is_dir() {
        return Err(vec![format!("{}: not a directory; give the directory that holds the mesh's YAML", dir.display())]);
    }
    let snapshot = load_dir(dir).map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let runtime_path = dir.join(LOCAL_RUNTIME_FILE);
    let runtime = if runtime_path.exists() {
        Some(crate::runtime_file::load(&runtime_path).map_err(|e| vec![e.to_string()])?)
    } else {
        None
    };
    let (dr_errors, dr_warnings) = veil_model::dr::check(&from_api::destination_rules(&snapshot));
    if !dr_errors.is_empty() {
        return Err(dr_errors);
    }
    let mut warnings: Vec<String> = snapshot.warnings.iter().map(ToString::to_string).collect();
    warnings.extend(dr_warnings);
    let root = MeshSettings::default().root_namespace;
    from_api::outbound_traffic_policy(&snapshot, &root).map_err(|e| vec![e])?;
    let resolver = Resolver { hosts: runtime.iter().flat_map(external_hosts).collect() };
    warnings.extend(from_api::service_entries(&snapshot, &|n: &str| resolver.resolve(n)).1);
    if let Some(rt) = &runtime {
        for w in rt.workloads.iter().filter(|w| !w.external) {
            let known = snapshot.workloads().iter().any(|x| x.name == w.name && x.namespace == w.namespace);
            if !known {
                warnings.push(format!(
                    "{}: workload {}/{} has no Deployment, StatefulSet, DaemonSet or Pod in the YAML; it is ignored",
                    runtime_path.display(),
                    w.namespace,
                    w.name
                ));
            }
        }
    }
    Ok(CheckReport { resources: count(&snapshot), warnings, snapshot, runtime })
}

/// One pod of the plan: the model's pod (with its address) and how to run it.
#[derive(Debug, Clone)]
pub struct PodPlan {
    pub planned: PlannedPod,
    pub pod: Pod,
    /// Local command, for workload pods (gateways run only the proxy).
    pub run: Option<RuntimeWorkload>,
}

/// A server outside the mesh (`external: true` in `veil.local.yaml`).
#[derive(Debug, Clone)]
pub struct ExternalPlan {
    pub name: String,
    /// Its fixed address on the bridge.
    pub address: Ipv4Addr,
    /// Names every pod's hosts file resolves to `address`.
    pub hosts: Vec<String>,
    pub run: RuntimeWorkload,
}

/// `(address, hosts)` of every external workload of `rt` that has an address.
fn external_hosts(rt: &LocalRuntime) -> Vec<(IpAddr, Vec<String>)> {
    rt.workloads.iter().filter(|w| w.external).filter_map(|w| Some((IpAddr::V4(w.address?), w.hosts.clone()))).collect()
}

/// The whole plan of a mesh.
#[derive(Debug, Clone)]
pub struct MeshPlan {
    pub pods: Vec<PodPlan>,
    /// (namespace, name) → ClusterIP.
    pub cluster_ips: BTreeMap<(String, String), IpAddr>,
    pub settings: MeshSettings,
    pub externals: Vec<ExternalPlan>,
    /// Directories mounted into pods (checked: the pod exists, the path is absolute).
    pub mounts: Vec<Mount>,
}

impl MeshPlan {
    /// Assigns addresses (pods in file order, then ClusterIPs) and matches
    /// each workload with its local command.
    ///
    /// # Errors
    /// A message naming the workload that has no command in `veil.local.yaml`,
    /// or an address range that ran out.
    pub fn new(report: &CheckReport, addrs: &mut AddressPlan) -> Result<MeshPlan, String> {
        let planned = from_api::planned_pods(&report.snapshot);
        let mut pods = Vec::new();
        for p in planned {
            let run = match &report.runtime {
                _ if p.gateway => None,
                Some(rt) => {
                    let mine = |w: &&RuntimeWorkload| !w.external && w.name == p.workload && w.namespace == p.namespace;
                    rt.workloads.iter().find(mine).cloned()
                }
                None => None,
            };
            if run.as_ref().is_some_and(|r| r.output_certs.is_some()) && p.sidecar {
                return Err(format!(
                    "workload {}/{}: outputCerts is for a pod without a sidecar (annotation sidecar.istio.io/inject: \"false\"), \
                     whose own software speaks mesh mTLS; remove outputCerts from {} or disable injection for the pod",
                    p.namespace, p.workload, LOCAL_RUNTIME_FILE
                ));
            }
            if !p.gateway && run.is_none() {
                return Err(format!(
                    "workload {}/{} has no local command: add it to {} in the directory (see README, \"How a workload runs on one machine\")",
                    p.namespace, p.workload, LOCAL_RUNTIME_FILE
                ));
            }
            let ip = IpAddr::V4(addrs.next_pod().map_err(|e| e.to_string())?.addr);
            let pod = Pod {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                service_account: p.service_account.clone(),
                ip,
                sidecar: p.sidecar,
                gateway: p.gateway,
                ports: p.ports.clone(),
            };
            pods.push(PodPlan { planned: p, pod, run });
        }
        let mut cluster_ips = BTreeMap::new();
        for s in &report.snapshot.services {
            if s.spec.is_headless() {
                continue;
            }
            let ip: Ipv4Addr = addrs.next_cluster_ip().map_err(|e| e.to_string())?;
            cluster_ips.insert((s.namespace_or_default().to_string(), s.meta.name.clone()), IpAddr::V4(ip));
        }
        if let Some(s) = from_api::egress_gateway_service(&report.snapshot) {
            let ip: Ipv4Addr = addrs.next_cluster_ip().map_err(|e| e.to_string())?;
            cluster_ips.insert((s.namespace, s.name), IpAddr::V4(ip));
        }
        let externals = externals(report.runtime.as_ref(), &pods, addrs)?;
        let mounts = mounts(report.runtime.as_ref(), &pods)?;
        Ok(MeshPlan { pods, cluster_ips, settings: MeshSettings::default(), externals, mounts })
    }

    /// What every pod's hosts file says: each Service name form → its
    /// ClusterIP, and each external workload's `hosts` → its address.
    pub fn hosts_entries(&self) -> Vec<(IpAddr, Vec<String>)> {
        let mut hosts: Vec<(IpAddr, Vec<String>)> = Vec::new();
        for ((ns, name), ip) in &self.cluster_ips {
            hosts.push((*ip, vec![name.clone(), format!("{name}.{ns}"), format!("{name}.{ns}.svc.{}", self.settings.domain)]));
        }
        for e in &self.externals {
            hosts.push((IpAddr::V4(e.address), e.hosts.clone()));
        }
        hosts
    }

    /// The model input for a (possibly changed) snapshot with this plan's
    /// pods and addresses. Pods are fixed for the life of `veil up`; policies,
    /// Services' ports and routes follow the snapshot.
    pub fn mesh_input(&self, snapshot: &Snapshot) -> MeshInput {
        let ips = &self.cluster_ips;
        let lookup = |ns: &str, name: &str| ips.get(&(ns.to_string(), name.to_string())).copied();
        let services = from_api::services(snapshot, &lookup);
        let (gateway_servers, http_routes, tcp_routes) = from_api::routing(snapshot);
        let resolver = Resolver { hosts: self.hosts_entries() };
        let (service_entries, _) = from_api::service_entries(snapshot, &|n: &str| resolver.resolve(n));
        let mut settings = self.settings.clone();
        settings.outbound_traffic_policy =
            from_api::outbound_traffic_policy(snapshot, &settings.root_namespace).unwrap_or_default();
        MeshInput {
            registry: Registry { pods: self.pods.iter().map(|p| p.pod.clone()).collect(), services },
            peer_authentications: from_api::peer_authentications(snapshot, &self.settings.root_namespace),
            destination_rules: from_api::destination_rules(snapshot),
            gateway_servers,
            http_routes,
            tcp_routes,
            virtual_services: from_api::virtual_services(snapshot),
            service_entries,
            settings,
        }
    }
}

/// The external workloads of `rt`, each at its fixed address, which must be
/// inside the bridge subnet and used by no pod or other external workload.
fn externals(rt: Option<&LocalRuntime>, pods: &[PodPlan], addrs: &AddressPlan) -> Result<Vec<ExternalPlan>, String> {
    let bridge = addrs.bridge();
    let mut out: Vec<ExternalPlan> = Vec::new();
    for w in rt.iter().flat_map(|rt| rt.workloads.iter()).filter(|w| w.external) {
        if w.output_certs.is_some() {
            return Err(format!("external workload {}: outputCerts needs a pod of the mesh (it has no service account); remove it in {LOCAL_RUNTIME_FILE}", w.name));
        }
        let Some(address) = w.address else {
            return Err(format!("external workload {}: give it a fixed `address` inside the bridge subnet {}/{} in {LOCAL_RUNTIME_FILE}", w.name, bridge.network(), bridge.prefix));
        };
        let inside = crate::ipam::Ipv4Cidr { addr: address, prefix: bridge.prefix }.network() == bridge.network();
        let taken = pods.iter().any(|p| p.pod.ip == IpAddr::V4(address)) || out.iter().any(|e| e.address == address);
        if !inside || taken || address == bridge.addr {
            return Err(format!(
                "external workload {}: address {address} must be inside the bridge subnet {}/{} and used by nothing else (pods start at .0.10; use e.g. 10.209.250.x)",
                w.name,
                bridge.network(),
                bridge.prefix
            ));
        }
        out.push(ExternalPlan { name: w.name.clone(), address, hosts: w.hosts.clone(), run: w.clone() });
    }
    Ok(out)
}

/// The mounts of `rt`, checked: the pod is planned, the mount path is
/// absolute with a parent, the source is a directory.
fn mounts(rt: Option<&LocalRuntime>, pods: &[PodPlan]) -> Result<Vec<Mount>, String> {
    let mut out = Vec::new();
    for m in rt.iter().flat_map(|rt| rt.mounts.iter()) {
        let known = pods.iter().any(|p| format!("{}/{}", p.pod.namespace, p.pod.name) == m.pod);
        let fix = format!("fix `mounts` in {LOCAL_RUNTIME_FILE}");
        if !known {
            return Err(format!("mount {}: no pod {} (give namespace/name of a pod or gateway); {fix}", m.mount_path.display(), m.pod));
        }
        if !m.mount_path.is_absolute() || m.mount_path.parent().is_none_or(|p| p == Path::new("/")) {
            return Err(format!("mount {}: mountPath must be an absolute path below a directory (e.g. /etc/certs); {fix}", m.mount_path.display()));
        }
        if !m.source.is_dir() {
            return Err(format!("mount {}: source {} is not a directory; {fix}", m.mount_path.display(), m.source.display()));
        }
        out.push(m.clone());
    }
    Ok(out)
}
