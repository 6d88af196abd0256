//! A running packet capture: tcpdump (or dumpcap) writing every TCP packet of
//! one interface to a pcap file, started only once the tool reports that it
//! is capturing, so that traffic sent right after [`Capture::start`] is in
//! the file.

use crate::AuditError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the tool may take to report that it is capturing (seconds).
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the tool may take to flush and exit after SIGINT (seconds).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Time given to the tool to write packets already received before it is
/// told to stop (milliseconds): on SIGINT tcpdump exits without draining
/// the kernel buffer.
const DRAIN_GRACE: Duration = Duration::from_millis(200);
/// At most this many stderr lines are kept for error messages.
const STDERR_LINES: usize = 50;

/// A capture process writing packets to a pcap file until [`Capture::stop`].
///
/// Dropping a `Capture` without stopping it kills the process.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    tool: &'static str,
    stderr_lines: Arc<Mutex<Vec<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

/// One capture tool: its name, its arguments and the stderr text it prints
/// once it is capturing.
struct Tool {
    name: &'static str,
    args: Vec<String>,
    ready: &'static str,
}

fn tools(interface: &str, pcap_path: &Path) -> [Tool; 2] {
    let path = pcap_path.display().to_string();
    [
        Tool {
            name: "tcpdump",
            args: [
                "-i",
                interface,
                "--immediate-mode",
                "-U",
                "-s",
                "0",
                "-n",
                "-w",
                &path,
                "tcp",
            ]
            .map(String::from)
            .to_vec(),
            ready: "listening on",
        },
        Tool {
            name: "dumpcap",
            args: ["-i", interface, "-P", "-q", "-w", &path, "-f", "tcp"]
                .map(String::from)
                .to_vec(),
            ready: "Capturing on",
        },
    ]
}

impl Capture {
    /// Starts `tcpdump -i INTERFACE --immediate-mode -U -s 0 -w PCAP_PATH tcp` (or dumpcap if
    /// tcpdump is missing) and returns once it reports that it is capturing
    /// (within 10 s).
    ///
    /// Errors: [`AuditError::CaptureToolMissing`] when neither tool is
    /// installed, [`AuditError::CaptureFailed`] when the tool exits (no such
    /// interface, not root), [`AuditError::CaptureTimeout`].
    pub fn start(interface: &str, pcap_path: &Path) -> Result<Capture, AuditError> {
        for tool in tools(interface, pcap_path) {
            let spawned = Command::new(tool.name)
                .args(&tool.args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn();
            match spawned {
                Ok(child) => return Capture::wait_ready(child, &tool, interface),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(AuditError::CaptureSpawn {
                        tool: tool.name,
                        interface: interface.to_string(),
                        source,
                    })
                }
            }
        }
        Err(AuditError::CaptureToolMissing)
    }

    fn wait_ready(mut child: Child, tool: &Tool, interface: &str) -> Result<Capture, AuditError> {
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr_thread = child.stderr.take().map(|stderr| {
            let lines = Arc::clone(&stderr_lines);
            let marker = tool.ready;
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains(marker) {
                        let _ = ready_tx.send(());
                    }
                    if let Ok(mut kept) = lines.lock() {
                        if kept.len() < STDERR_LINES {
                            kept.push(line);
                        }
                    }
                }
            })
        });
        let mut capture = Capture {
            child: Some(child),
            tool: tool.name,
            stderr_lines,
            stderr_thread,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        match ready_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(()) => {
                tracing::debug!(tool = tool.name, interface, "capture started");
                Ok(capture)
            }
            Err(RecvTimeoutError::Disconnected) => {
                capture.kill_and_join();
                Err(AuditError::CaptureFailed {
                    tool: tool.name,
                    interface: interface.to_string(),
                    stderr: capture.stderr_text(),
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                capture.kill_and_join();
                Err(AuditError::CaptureTimeout {
                    tool: tool.name,
                    interface: interface.to_string(),
                    seconds: START_TIMEOUT.as_secs(),
                })
            }
        }
    }

    /// Stops the capture: after a 200 ms grace for packets still in the
    /// kernel buffer, sends SIGINT and waits (at most 5 s, then SIGKILL)
    /// until the tool has flushed the file and exited.
    ///
    /// Errors: [`AuditError::CaptureStop`] when the process cannot be
    /// signalled or waited for, or had to be killed.
    pub fn stop(mut self) -> Result<(), AuditError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        let stop_err = |reason: String| AuditError::CaptureStop { pid, reason };
        let raw = i32::try_from(pid).map_err(|e| stop_err(e.to_string()))?;
        std::thread::sleep(DRAIN_GRACE);
        if let Err(e) = kill(Pid::from_raw(raw), Signal::SIGINT) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(stop_err(e.to_string()));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.join_stderr();
                    return Err(stop_err(format!(
                        "{} did not exit within {} s of SIGINT and was killed; the capture file may be truncated",
                        self.tool,
                        STOP_TIMEOUT.as_secs()
                    )));
                }
                Err(e) => return Err(stop_err(e.to_string())),
            }
        }
        self.join_stderr();
        Ok(())
    }

    fn kill_and_join(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_stderr();
    }

    fn join_stderr(&mut self) {
        if let Some(handle) = self.stderr_thread.take() {
            let _ = handle.join();
        }
    }

    fn stderr_text(&self) -> String {
        self.stderr_lines
            .lock()
            .map(|lines| lines.join("; "))
            .unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill_and_join();
    }
}
