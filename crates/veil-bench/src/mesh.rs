//! The benchmark mesh (`examples/bench`) run by the real `veil up`: a client
//! pod and a server pod, with sidecars (`veil` path) or with injection
//! disabled (every other path, so that the topology is the same).

use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::BenchError;

/// How long `veil up` may take to print "mesh ready".
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// The bridge every `veil up` creates.
pub const BRIDGE: &str = "/sys/class/net/veil0";

/// One pod of `mesh.json` (the fields the benchmark reads).
#[derive(Debug, Clone, Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub ip: IpAddr,
    pub netns: String,
    pub sidecar: bool,
    pub proxy_pid: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct MeshJson {
    pods: Vec<PodInfo>,
}

/// A running `veil up`; stopped (and `veil down` run) on drop.
#[derive(Debug)]
pub struct Mesh {
    child: Child,
    veil: PathBuf,
    state: PathBuf,
    pub client: PodInfo,
    pub server: PodInfo,
    /// The Service address of the server (its ClusterIP).
    pub service_ip: IpAddr,
}

/// Copies `src` to `dst`, with `istio-injection: disabled` when `inject` is
/// false, and puts the `veil-bench` binary in `dst/bin/`.
///
/// # Errors
/// [`BenchError::Io`] when a file cannot be copied.
pub fn prepare(src: &Path, dst: &Path, inject: bool, bench_bin: &Path) -> Result<(), BenchError> {
    copy_tree(src, dst, inject, 0)?;
    use std::os::unix::fs::PermissionsExt;
    let script = dst.join("bin/server.sh");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| BenchError::io("chmod", &script, e))?;
    let to = dst.join("bin/veil-bench");
    std::fs::copy(bench_bin, &to).map_err(|e| BenchError::io("copy", bench_bin, e))?;
    Ok(())
}

/// Deepest directory `copy_tree` follows (`veil up` reads YAML recursively).
const MAX_DEPTH: usize = 8;

/// Copies every file of the example, so that a resource in any YAML file
/// `veil up` would read is in the copy too; without `inject`, a
/// namespace's `istio-injection: enabled` becomes `disabled`.
fn copy_tree(src: &Path, dst: &Path, inject: bool, depth: usize) -> Result<(), BenchError> {
    if depth > MAX_DEPTH {
        return Err(BenchError::io("copy", src, std::io::Error::other("directories nested too deep; check for a symlink loop")));
    }
    std::fs::create_dir_all(dst).map_err(|e| BenchError::io("create", dst, e))?;
    for entry in std::fs::read_dir(src).map_err(|e| BenchError::io("read", src, e))? {
        let from = entry.map_err(|e| BenchError::io("read", src, e))?.path();
        let Some(name) = from.file_name() else { continue };
        let to = dst.join(name);
        if from.is_dir() {
            copy_tree(&from, &to, inject, depth + 1)?;
        } else if from.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            let mut text = std::fs::read_to_string(&from).map_err(|e| BenchError::io("read", &from, e))?;
            if !inject {
                text = text.replace("istio-injection: enabled", "istio-injection: disabled");
            }
            std::fs::write(&to, text).map_err(|e| BenchError::io("write", &to, e))?;
        } else {
            std::fs::copy(&from, &to).map_err(|e| BenchError::io("copy", &from, e))?;
        }
    }
    Ok(())
}

impl Mesh {
    /// Runs `veil up dir` with its own state directory and waits for it.
    ///
    /// # Errors
    /// [`BenchError::MeshNotReady`] with the end of its log when it exits or
    /// is not ready in 180 s.
    pub fn up(veil: &Path, dir: &Path, state: &Path) -> Result<Mesh, BenchError> {
        wait_no_bridge()?;
        std::fs::create_dir_all(state).map_err(|e| BenchError::io("create", state, e))?;
        let log_path = state.with_extension("log");
        let log = std::fs::File::create(&log_path).map_err(|e| BenchError::io("create", &log_path, e))?;
        let err = log.try_clone().map_err(|e| BenchError::io("open", &log_path, e))?;
        let child = Command::new(veil)
            .arg("up")
            .arg(dir)
            .arg("--state-dir")
            .arg(state)
            .env("VEIL_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| BenchError::Spawn { program: veil.display().to_string(), source: e })?;
        let mut guard = Starting { child: Some(child), veil: veil.to_path_buf(), state: state.to_path_buf() };
        let deadline = Instant::now() + READY_TIMEOUT;
        let tail = |p: &Path| {
            let t = std::fs::read_to_string(p).unwrap_or_default();
            let mut lines: Vec<&str> = t.lines().rev().take(15).collect();
            lines.reverse();
            lines.join("\n")
        };
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains("mesh ready") {
                break;
            }
            let exited = guard.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(BenchError::MeshNotReady(format!("veil up exited ({status}):\n{}", tail(&log_path))));
            }
            if Instant::now() > deadline {
                return Err(BenchError::MeshNotReady(format!("not ready in 180 s:\n{}", tail(&log_path))));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let json_path = state.join("mesh.json");
        let text = std::fs::read_to_string(&json_path).map_err(|e| BenchError::io("read", &json_path, e))?;
        let mesh: MeshJson = serde_json::from_str(&text)
            .map_err(|e| BenchError::Parse { program: "veil up (mesh.json)".into(), detail: e.to_string() })?;
        let pod = |name: &str| {
            mesh.pods.iter().find(|p| p.name == name).cloned().ok_or_else(|| {
                BenchError::MeshNotReady(format!("no pod {name} in {}", json_path.display()))
            })
        };
        let (client, server) = (pod("client")?, pod("server")?);
        let service_ip = resolve(&client.netns, "server.bench")?;
        let child = guard.child.take().ok_or_else(|| BenchError::MeshNotReady("lost veil up".into()))?;
        Ok(Mesh { child, veil: veil.to_path_buf(), state: state.to_path_buf(), client, server, service_ip })
    }

    /// The sidecar proxy pids (client side first), when the pods have sidecars.
    pub fn proxy_pids(&self) -> Vec<u32> {
        [&self.client, &self.server].iter().filter_map(|p| p.proxy_pid).collect()
    }
}

/// Every mesh uses the bridge `veil0`: waits (≤ 10 s) for the previous one
/// to be gone, and refuses to start next to a mesh that is not ours.
fn wait_no_bridge() -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(BRIDGE).exists() {
        if Instant::now() > deadline {
            return Err(BenchError::MeshRunning);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The address `name` has in the hosts file of `netns`.
fn resolve(netns: &str, name: &str) -> Result<IpAddr, BenchError> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "getent", "hosts", name])
        .output()
        .map_err(|e| BenchError::Spawn { program: "ip netns exec … getent".into(), source: e })?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| BenchError::MeshNotReady(format!("{name} does not resolve in {netns}: {text}")))
}

fn stop(child: &mut Child, veil: &Path, state: &Path) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = Command::new(veil).arg("down").arg("--state-dir").arg(state).output();
}

/// Tears a mesh down if `up` fails half way.
struct Starting {
    child: Option<Child>,
    veil: PathBuf,
    state: PathBuf,
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop(&mut c, &self.veil, &self.state);
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        stop(&mut self.child, &self.veil, &self.state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_yaml_file_of_the_example_is_copied_and_injection_follows_the_path() {
        let src = tempfile::tempdir().expect("tempdir");
        let bench_bin = src.path().join("fake-bench");
        std::fs::write(&bench_bin, "x").expect("write");
        std::fs::create_dir_all(src.path().join("bin")).expect("mkdir");
        std::fs::create_dir_all(src.path().join("extra")).expect("mkdir");
        std::fs::write(src.path().join("bin/server.sh"), "#!/bin/sh\n").expect("write");
        std::fs::write(src.path().join("namespace.yaml"), "labels:\n  istio-injection: enabled\n").expect("write");
        std::fs::write(src.path().join("mesh.yaml"), "kind: PeerAuthentication\n").expect("write");
        std::fs::write(src.path().join("extra/rule.yml"), "kind: DestinationRule\n").expect("write");
        for (inject, label) in [(true, "enabled"), (false, "disabled")] {
            let dst = tempfile::tempdir().expect("tempdir");
            prepare(src.path(), dst.path(), inject, &bench_bin).expect("prepare");
            let ns = std::fs::read_to_string(dst.path().join("namespace.yaml")).expect("namespace");
            assert!(ns.contains(&format!("istio-injection: {label}")), "{ns}");
            assert_eq!(std::fs::read_to_string(dst.path().join("extra/rule.yml")).expect("copied"), "kind: DestinationRule\n");
            assert!(dst.path().join("mesh.yaml").is_file() && dst.path().join("bin/veil-bench").is_file());
        }
    }
}
