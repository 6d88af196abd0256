//! Workload processes: started inside a network namespace with `ip netns exec` (and
//! `setpriv` to drop to the workload's uid/gid), each in its own process group, output
//! appended to a log file; stopped with SIGTERM to the group, then SIGKILL after a grace.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::journal::{Entry, Journal};
use crate::LocalError;

/// Environment variables passed through from the caller; everything else is cleared.
const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];
/// Poll interval while waiting for a process group to exit.
const POLL: Duration = Duration::from_millis(50);

/// What to run, and as whom.
#[derive(Clone, Debug, Default)]
pub struct ProcessSpec {
    /// Program path (or a name looked up on PATH).
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// Working directory; the caller's when `None`.
    pub cwd: Option<PathBuf>,
    /// Extra environment, on top of PATH/HOME/LANG.
    pub env: BTreeMap<String, String>,
    /// Run as this uid (via `setpriv`); root (unchanged) when `None`.
    pub uid: Option<u32>,
    /// Run with this gid; defaults to `uid` when only `uid` is given.
    pub gid: Option<u32>,
    /// stdout and stderr are appended here (parent directories are created).
    pub log_path: PathBuf,
}

/// A started workload process. Dropping it does not stop the process; use
/// [`LocalProcess::stop`] or [`crate::teardown`].
#[derive(Debug)]
pub struct LocalProcess {
    child: Child,
}

impl LocalProcess {
    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to the process group, up to `grace`, then SIGKILL; reaps the child.
    /// Returns whether anything was still running.
    pub fn stop(mut self, grace: Duration) -> Result<bool, LocalError> {
        let pid = pid_i32(self.child.id());
        let was_running = stop(pid, grace)?;
        let _ = self.child.try_wait();
        Ok(was_running)
    }
}

fn pid_i32(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

/// Starts `spec` in network namespace `netns` and journals its pid and process group.
/// Errors: [`LocalError::Io`] for the log file, [`LocalError::Exec`] when `ip` cannot start.
pub fn spawn(
    journal: &Journal,
    netns: &str,
    spec: &ProcessSpec,
) -> Result<LocalProcess, LocalError> {
    if let Some(parent) = spec.log_path.parent() {
        fs::create_dir_all(parent).map_err(|e| LocalError::io("create", parent, e))?;
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log_path)
        .map_err(|e| LocalError::io("write", &spec.log_path, e))?;
    let log_err = log
        .try_clone()
        .map_err(|e| LocalError::io("write", &spec.log_path, e))?;

    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]);
    if let Some(uid) = spec.uid {
        let gid = spec.gid.unwrap_or(uid);
        command.args([
            "setpriv",
            "--reuid",
            &uid.to_string(),
            "--regid",
            &gid.to_string(),
            "--clear-groups",
            "--",
        ]);
    }
    command.arg(&spec.program).args(&spec.args);
    command.env_clear();
    for key in INHERITED_ENV {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.envs(&spec.env);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    command
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0);

    let program = spec.program.display().to_string();
    let child = command.spawn().map_err(|source| LocalError::Exec {
        command: format!("ip netns exec {netns} {program}"),
        source,
    })?;
    let pid = pid_i32(child.id());
    let entry = Entry::Process {
        pid,
        pgid: pid,
        start_time: start_time(pid),
        netns: netns.to_string(),
        program,
    };
    let process = LocalProcess { child };
    if let Err(e) = journal.append(&entry) {
        let _ = process.stop(Duration::ZERO);
        return Err(e);
    }
    tracing::debug!(pid, netns, "started workload process");
    Ok(process)
}

/// Stops the process group led by `pid`: SIGTERM, wait up to `grace`, then SIGKILL (and
/// up to 2 s more). Returns whether any member was running. Errors with
/// [`LocalError::Signal`] when a signal is refused (not root).
pub fn stop(pid: i32, grace: Duration) -> Result<bool, LocalError> {
    stop_group(pid, pid, None, grace)
}

/// Like [`stop`], but with the pgid and `/proc` start time recorded in the journal, so that
/// a pid reused by an unrelated process is never signalled.
pub(crate) fn stop_group(
    pid: i32,
    pgid: i32,
    start: Option<u64>,
    grace: Duration,
) -> Result<bool, LocalError> {
    if let (Some(recorded), Some(now)) = (start, start_time(pid)) {
        if recorded != now {
            return Ok(false);
        }
    }
    if group_members(pgid).is_empty() {
        reap_exited(pid);
        return Ok(false);
    }
    for (signal, bound) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(2)),
    ] {
        match killpg(Pid::from_raw(pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => return Err(LocalError::Signal { pgid, source }),
        }
        if wait_group_exit(pid, pgid, bound) {
            return Ok(true);
        }
    }
    Ok(true)
}

fn wait_group_exit(pid: i32, pgid: i32, bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    let max_polls = bound.as_millis() / POLL.as_millis() + 1;
    for _ in 0..max_polls {
        if group_members(pgid).is_empty() {
            // Reaped after the check: a member that exited between an earlier reap
            // and the check is a zombie, not a member, and would be left to init.
            reap_exited(pid);
            return true;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    let gone = group_members(pgid).is_empty();
    if gone {
        reap_exited(pid);
    }
    gone
}

/// Reaps `pid`, which has exited or is exiting: a multi-threaded process's leader shows
/// as a zombie before its other threads are gone and cannot be reaped until then, so
/// this retries for up to [`REAP_BOUND`]. Harmless for a pid that is not our child.
fn reap_exited(pid: i32) {
    let deadline = Instant::now() + REAP_BOUND;
    for _ in 0..(REAP_BOUND.as_millis() / REAP_POLL.as_millis() + 1) {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(REAP_POLL)
            }
            _ => return,
        }
    }
}

/// How long [`reap_exited`] waits for an exiting process's last threads.
const REAP_BOUND: Duration = Duration::from_secs(1);
const REAP_POLL: Duration = Duration::from_millis(5);

/// Fields of `/proc/<pid>/stat` after the command name: (state, pgrp, starttime).
fn proc_stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let pgrp = fields.get(2)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, pgrp, start))
}

fn start_time(pid: i32) -> Option<u64> {
    proc_stat(pid).map(|(_, _, start)| start)
}

/// True when `pid` exists and is not a zombie.
pub fn is_running(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((state, _, _)) if state != 'Z' && state != 'X')
}

/// True when `pid` is running and is the same process as at `start` (when known).
pub(crate) fn is_same_running(pid: i32, start: Option<u64>) -> bool {
    match (proc_stat(pid), start) {
        (Some((state, _, now)), Some(recorded)) => state != 'Z' && state != 'X' && now == recorded,
        (Some((state, _, _)), None) => state != 'Z' && state != 'X',
        (None, _) => false,
    }
}

/// Running (non-zombie) members of process group `pgid`, found by scanning `/proc`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| matches!(proc_stat(*pid), Some((state, pgrp, _)) if pgrp == pgid && state != 'Z' && state != 'X'))
        .collect()
}

/// Kills every process still inside network namespace `netns` (SIGTERM, `grace`, SIGKILL).
/// Returns how many there were. Errors when `ip netns pids` fails for a reason other than
/// the namespace being gone.
pub(crate) fn kill_netns_pids(netns: &str, grace: Duration) -> Result<usize, LocalError> {
    let out = match crate::cmd::run("ip", &["netns", "pids", netns], crate::cmd::HINT_IP) {
        Ok(out) => out,
        Err(e) if crate::cmd::is_gone(&e) => return Ok(0),
        Err(e) => return Err(e),
    };
    let pids: Vec<i32> = out
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    for (signal, bound) in [
        (Signal::SIGTERM, grace),
        (Signal::SIGKILL, Duration::from_secs(2)),
    ] {
        let alive: Vec<i32> = pids.iter().copied().filter(|p| is_running(*p)).collect();
        for pid in &alive {
            let _ = nix::sys::signal::kill(Pid::from_raw(*pid), signal);
        }
        let deadline = Instant::now() + bound;
        for _ in 0..(bound.as_millis() / POLL.as_millis() + 1) {
            if !pids.iter().any(|p| is_running(*p)) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
    }
    // Our children among them (zombies are not "running"); others are not ours to reap.
    pids.iter().filter(|p| !is_running(**p)).for_each(|p| reap_exited(*p));
    Ok(pids.len())
}

/// The (uid, gid) a workload process switches to: `None, None` for `root`
/// or `0` (the process keeps running as root), else [`resolve_user`].
/// Errors with [`LocalError::Name`] when the user does not exist.
pub fn run_as(user: &str) -> Result<(Option<u32>, Option<u32>), LocalError> {
    if user == "root" || user == "0" {
        return Ok((None, None));
    }
    let (uid, gid) = resolve_user(user)?;
    Ok((Some(uid), Some(gid)))
}

/// Looks up a user name (or numeric uid) and returns (uid, gid).
/// Errors with [`LocalError::Name`] when the user does not exist.
pub fn resolve_user(name: &str) -> Result<(u32, u32), LocalError> {
    let unknown = || LocalError::Name {
        name: name.to_string(),
        reason: "no such user; create it or use a numeric uid",
    };
    if let Ok(uid) = name.parse::<u32>() {
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or(uid, |u| u.gid.as_raw());
        return Ok((uid, gid));
    }
    let user = nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(unknown)?;
    Ok((user.uid.as_raw(), user.gid.as_raw()))
}

/// Waits until `ip:port` accepts TCP connections, connecting from inside `netns` (so the
/// check sees what the workload's neighbours see, not the host). `timeout` bounds the whole
/// wait. Errors: [`LocalError::NotReady`] on timeout, [`LocalError::Netns`] when the
/// namespace cannot be entered.
pub fn wait_tcp_ready(
    netns: &str,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<(), LocalError> {
    let addr = SocketAddr::new(ip, port);
    let path = netns_path(netns);
    let file = File::open(&path).map_err(|e| LocalError::Netns {
        netns: netns.to_string(),
        reason: e.to_string(),
    })?;
    let name = netns.to_string();
    let worker = std::thread::spawn(move || -> Result<bool, String> {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + timeout;
        let max_tries = timeout.as_millis() / 100 + 1;
        for _ in 0..max_tries {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if TcpStream::connect_timeout(&addr, left.min(Duration::from_millis(500))).is_ok() {
                return Ok(true);
            }
            std::thread::sleep(
                Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
            );
        }
        Ok(false)
    });
    match worker.join() {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(LocalError::NotReady {
            netns: name,
            addr,
            timeout_ms: timeout.as_millis(),
        }),
        Ok(Err(reason)) => Err(LocalError::Netns {
            netns: name,
            reason,
        }),
        Err(_) => Err(LocalError::Netns {
            netns: name,
            reason: "readiness thread failed".into(),
        }),
    }
}

/// `/run/netns/<name>`, where `ip netns add` pins a namespace.
pub(crate) fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Whether `pid` still has a `/proc` entry (a zombie has one until reaped).
    fn exists(pid: i32) -> bool {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaping them is what the test checks
    fn a_stopped_child_is_reaped_not_left_a_zombie() {
        for _ in 0..20 {
            let child = Command::new("sleep").arg("30").process_group(0).spawn().expect("sleep");
            let pid = pid_i32(child.id());
            assert!(is_running(pid));
            assert!(stop(pid, Duration::from_secs(2)).expect("stop"), "it was running");
            assert!(!exists(pid), "pid {pid} left as a zombie after stop");
            // Control: a child that exits and is not waited for stays a zombie.
            let unreaped = Command::new("true").process_group(0).spawn().expect("true");
            let upid = pid_i32(unreaped.id());
            std::thread::sleep(Duration::from_millis(100));
            assert!(exists(upid) && !is_running(upid), "an unreaped exited child is a zombie");
            reap_exited(upid);
            assert!(!exists(upid));
        }
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaping it is what the test checks
    fn a_stopped_multi_threaded_child_is_reaped() {
        // This test binary running only `threaded_sleeper`: threads that outlive the
        // main thread's exit by a little, as a proxy's do.
        let exe = std::env::current_exe().expect("test binary");
        for _ in 0..5 {
            let child = Command::new(&exe)
                .args(["--ignored", "--exact", "process::tests::threaded_sleeper", "--test-threads=1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .expect("test binary");
            let pid = pid_i32(child.id());
            std::thread::sleep(Duration::from_millis(300));
            assert!(stop(pid, Duration::from_secs(2)).expect("stop"), "it was running");
            assert!(!exists(pid), "pid {pid} left as a zombie after stop");
        }
    }

    #[test]
    #[ignore = "started as a child by a_stopped_multi_threaded_child_is_reaped"]
    fn threaded_sleeper() {
        let threads: Vec<_> = (0..8).map(|_| std::thread::spawn(|| std::thread::sleep(Duration::from_secs(30)))).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}
