//! Processes the harness starts inside a pod's network namespace (tunnel
//! daemons, external proxies, load tools): each in its own process group,
//! stopped with SIGTERM then SIGKILL to the group on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use crate::BenchError;

/// A command to run inside `netns` (`ip netns exec <netns> program args…`).
pub fn in_netns(netns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.arg("netns").arg("exec").arg(netns).arg(program);
    c
}

/// Runs a command to completion with a time bound, returning its output.
///
/// # Errors
/// [`BenchError::Spawn`] when it cannot start, [`BenchError::Tool`] when it
/// runs longer than `limit` (it is killed) or exits non-zero.
pub fn output(mut cmd: Command, what: &str, limit: Duration) -> Result<Output, BenchError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let child = cmd.spawn().map_err(|e| BenchError::Spawn { program: what.into(), source: e })?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(|e| BenchError::Spawn { program: what.into(), source: e })?,
        Err(_) => {
            kill_group(pid, nix::sys::signal::Signal::SIGKILL);
            return Err(BenchError::Tool { program: what.into(), detail: format!("still running after {limit:?}; killed") });
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        return Err(BenchError::Tool { program: what.into(), detail: format!("{}: {tail}", out.status) });
    }
    Ok(out)
}

fn kill_group(pid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(p) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// A long-running process (daemon under test), logged to a file.
#[derive(Debug)]
pub struct Daemon {
    child: Child,
    pub label: String,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` in its own process group with stdout/stderr to `log`.
    ///
    /// # Errors
    /// [`BenchError::Io`] for the log, [`BenchError::Spawn`] when it cannot start.
    pub fn start(mut cmd: Command, label: &str, log: &Path) -> Result<Daemon, BenchError> {
        let out = std::fs::File::create(log).map_err(|e| BenchError::io("create", log, e))?;
        let err = out.try_clone().map_err(|e| BenchError::io("open", log, e))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        let child = cmd.spawn().map_err(|e| BenchError::Spawn { program: label.into(), source: e })?;
        Ok(Daemon { child, label: label.into(), log: log.to_path_buf() })
    }

    /// Its pid (the root of the tree whose resources are measured).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited (a daemon under test must not).
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        kill_group(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Also whatever the process left behind in its group.
        kill_group(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}
