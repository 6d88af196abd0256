//! `veil up` / `veil down` / `veil status`: a whole mesh on one machine.
//!
//! `plan` turns a directory into pods with addresses; `run` creates them and
//! serves; `workloads` starts the real processes; `externals` starts the
//! servers outside the mesh; `mounts` gives pods their mounted directories;
//! `output_certs` runs the certificate agent of a pod's `outputCerts`;
//! `resolve` resolves ServiceEntry names; `reload` applies changed files
//! live; `state` is what the other commands read.

mod externals;
mod mounts;
mod output_certs;
mod plan;
mod reload;
mod resolve;
mod run;
mod state;
mod summary;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use plan::{check, CheckReport, ExternalPlan, MeshPlan, PodPlan};
pub use resolve::Resolver;
pub use run::{published_port, run, UpOptions, BRIDGE, CONTROL_PORT, PROXY_UID};
pub use state::{records_dir, ExternalState, MeshState, PodState, Published, MESH_FILE};

use crate::LocalError;

/// Errors of `veil up` and `veil down`.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// The directory has errors; nothing was started.
    #[error("the configuration has errors; nothing was started:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    /// The plan could not be made (e.g. a workload without a local command).
    #[error("{0}")]
    Plan(String),
    /// Another `veil up` is running.
    #[error("a mesh is already running (veil up, pid {0}); stop it with `veil down` first")]
    AlreadyRunning(u32),
    /// Creating a namespace, link, rule or process failed.
    #[error(transparent)]
    Local(LocalError),
    /// The control plane could not start.
    #[error("control plane: {0}")]
    Control(String),
    /// A pod did not become ready in time.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A state file or directory could not be written.
    #[error("{path}: {source}; is the state directory writable (run as root)?", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
}

/// Stops a running `veil up` (SIGTERM, waits up to 60 s for it to clean
/// up), then removes anything still recorded in the journal and any
/// leftover `veil-*` namespace or link. Returns how many items were removed.
///
/// # Errors
/// [`UpError::Local`] when the journal cannot be read.
pub fn down(state_dir: &Path) -> Result<usize, UpError> {
    let mut removed = 0;
    if let Ok(state) = MeshState::load(state_dir) {
        let pid = state.pid as i32;
        if crate::process::is_running(pid) && state.pid != std::process::id() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(60);
            while crate::process::is_running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            removed += 1;
        }
    }
    if state_dir.exists() {
        let report = crate::teardown::teardown(state_dir).map_err(UpError::Local)?;
        removed += report.removed.len();
    }
    removed += crate::teardown::sweep("veil").map_err(UpError::Local)?.len();
    MeshState::remove(state_dir);
    Ok(removed)
}

/// The state of the running mesh.
///
/// # Errors
/// [`LocalError::NoMesh`] when no mesh is running; [`LocalError::Io`] when its
/// state cannot be read.
pub fn status(state_dir: &Path) -> Result<MeshState, LocalError> {
    MeshState::load(state_dir)
}
