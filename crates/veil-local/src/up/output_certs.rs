//! `outputCerts` of `veil.local.yaml` (Istio's `OUTPUT_CERTS`): in a pod
//! without a sidecar whose own software speaks mesh mTLS (seed 000's
//! third-party gateway), a certificate agent beside the workload — `veil
//! proxy` with `VEIL_CERTS_ONLY`, no listeners, no interception — gets the
//! pod's certificate from the control plane with a one-time bootstrap token,
//! as a sidecar does, renews it at half-life, and keeps `key.pem`,
//! `cert-chain.pem` and `root-cert.pem` current in a directory of the pod.
//! The workload starts once the three files exist.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::UpError;
use crate::journal::Journal;
use crate::process::{run_as, spawn, LocalProcess, ProcessSpec};
use crate::runtime_file::RuntimeWorkload;

/// The files the agent writes (veil-identity's export layout).
const FILES: [&str; 3] = [veil_identity::KEY_FILE, veil_identity::CHAIN_FILE, veil_identity::ROOT_FILE];

/// The absolute `OUTPUT_CERTS` directory of a workload whose pod directory
/// is `pod_dir`, when it asks for one.
pub fn dir(pod_dir: &Path, run: &RuntimeWorkload) -> Option<PathBuf> {
    run.output_certs.as_ref().map(|d| pod_dir.join(d))
}

/// Starts the certificate agent (`veil-sidecar`, else `veil_binary proxy`) in `netns` as the
/// workload's user, so that the files it writes (mode 0600) belong to the
/// workload. `env` is a proxy's environment (`VEIL_CA_ADDR`, `VEIL_TOKEN`, …);
/// `SECRET_TTL` (seconds) in the workload's `env` sets the certificate lifetime.
///
/// # Errors
/// [`UpError::Io`] when the directory cannot be made, [`UpError::Local`] when
/// the user is unknown or the process cannot start.
pub fn start(
    journal: &Journal,
    netns: &str,
    veil_binary: &Path,
    mut env: BTreeMap<String, String>,
    run: &RuntimeWorkload,
    dir: &Path,
    log_path: PathBuf,
) -> Result<LocalProcess, UpError> {
    let (uid, gid) = run_as(&run.user).map_err(UpError::Local)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(dir).map_err(|e| UpError::Io(dir.to_path_buf(), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| UpError::Io(dir.to_path_buf(), e))?;
        let owner = (uid.map(nix::unistd::Uid::from_raw), gid.map(nix::unistd::Gid::from_raw));
        nix::unistd::chown(dir, owner.0, owner.1).map_err(|e| UpError::Io(dir.to_path_buf(), e.into()))?;
    }
    // Istio sets the agent's certificate lifetime with SECRET_TTL (proxyMetadata);
    // here the workload's `env` carries it (seconds).
    if let Some(ttl) = run.env.get("SECRET_TTL") {
        env.insert("SECRET_TTL".into(), ttl.clone());
    }
    env.insert("VEIL_CERTS_ONLY".into(), "1".into());
    env.insert("OUTPUT_CERTS".into(), dir.display().to_string());
    let (program, args) = super::run::proxy_command(veil_binary);
    let spec = ProcessSpec {
        program,
        args,
        cwd: Some(dir.to_path_buf()),
        env,
        uid,
        gid,
        log_path,
    };
    spawn(journal, netns, &spec).map_err(UpError::Local)
}

/// Waits until `dir` holds all three files, polling every 50 ms until
/// `deadline`.
///
/// # Errors
/// [`UpError::NotReady`] naming the missing file and the agent's `log`.
pub async fn wait(dir: &Path, deadline: Instant, log: &Path) -> Result<(), UpError> {
    loop {
        let missing = FILES.iter().find(|f| !dir.join(f).is_file());
        let Some(missing) = missing else { return Ok(()) };
        if Instant::now() >= deadline {
            return Err(UpError::NotReady(format!(
                "the certificate agent did not write {} (outputCerts); see {}",
                dir.join(missing).display(),
                log.display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{check, MeshPlan};
    use crate::ipam::AddressPlan;

    const WORKLOAD: &str = "apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: enroute, namespace: default}
spec:
  selector: {matchLabels: {app: enroute}}
  template:
    metadata: {labels: {app: enroute}, annotations: {sidecar.istio.io/inject: \"false\"}}
    spec: {serviceAccountName: enroute, containers: [{name: enroute, image: haproxy}]}
";
    const RUNTIME: &str = "apiVersion: veil.dev/v1alpha1
kind: LocalRuntime
workloads:
- name: enroute
  command: [haproxy]
  outputCerts: istio-output-certs
";

    fn plan_of(name: &str, workload: &str) -> Result<MeshPlan, String> {
        let dir = std::env::temp_dir().join(format!("veil-output-certs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("w.yaml"), workload).map_err(|e| e.to_string())?;
        std::fs::write(dir.join(veil_api::LOCAL_RUNTIME_FILE), RUNTIME).map_err(|e| e.to_string())?;
        let report = check(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        MeshPlan::new(&report.map_err(|e| e.join("\n"))?, &mut AddressPlan::default())
    }

    #[test]
    fn output_certs_is_for_pods_without_a_sidecar() {
        let plan = plan_of("naked", WORKLOAD).expect("a pod without a sidecar may have outputCerts");
        let pod = plan.pods.first().expect("the enroute pod");
        assert!(!pod.pod.sidecar);
        let run = pod.run.as_ref().expect("its command");
        let dir = super::dir(std::path::Path::new("/state/pods/default.enroute"), run);
        assert_eq!(dir, Some("/state/pods/default.enroute/istio-output-certs".into()));

        let injected = WORKLOAD.replace("annotations: {sidecar.istio.io/inject: \"false\"}", "annotations: {}");
        let err = plan_of("injected", &injected).err().unwrap_or_default();
        assert!(err.contains("default/enroute: outputCerts is for a pod without a sidecar"), "{err}");
    }
}
