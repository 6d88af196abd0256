//! Runs the external tools (`ip`, `iptables`, `iptables-restore`) and turns failures into
//! [`LocalError`]s with a hint for the operator.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::LocalError;

/// Hint for `ip` failures.
pub(crate) const HINT_IP: &str = "are you root, and is iproute2 installed?";
/// Hint for `iptables` failures.
pub(crate) const HINT_IPTABLES: &str =
    "are you root, and is the `iptables` command (nft or legacy backend) installed?";

/// Runs `program args…`, returning its stdout; a non-zero exit becomes [`LocalError::Command`].
pub(crate) fn run(program: &str, args: &[&str], hint: &'static str) -> Result<String, LocalError> {
    run_with_input(program, args, None, hint)
}

/// Like [`run`], writing `input` to the command's stdin first.
pub(crate) fn run_with_input(
    program: &str,
    args: &[&str],
    input: Option<&str>,
    hint: &'static str,
) -> Result<String, LocalError> {
    let command = command_line(program, args);
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LocalError::Exec {
            command: command.clone(),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| LocalError::Exec {
                command: command.clone(),
                source,
            })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| LocalError::Exec {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        let stderr = if stderr.is_empty() {
            format!("exit status {}", output.status)
        } else {
            stderr
        };
        Err(LocalError::Command {
            command,
            stderr,
            hint,
        })
    }
}

/// Runs `program args…` and reports only whether it succeeded (used for `iptables -C`).
pub(crate) fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `ip netns exec NETNS program args…` (with `input` on stdin when given).
pub(crate) fn in_netns(
    netns: &str,
    program: &str,
    args: &[&str],
    input: Option<&str>,
    hint: &'static str,
) -> Result<String, LocalError> {
    let mut full: Vec<&str> = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run_with_input("ip", &full, input, hint)
}

fn command_line(program: &str, args: &[&str]) -> String {
    let mut line = program.to_string();
    for arg in args {
        line.push(' ');
        line.push_str(arg);
    }
    line
}

/// True when `stderr` says the object does not exist (so undoing it is already done).
pub(crate) fn is_gone(err: &LocalError) -> bool {
    match err {
        LocalError::Command { stderr, .. } => {
            let s = stderr.to_ascii_lowercase();
            s.contains("cannot find device")
                || s.contains("does not exist")
                || s.contains("no such file")
                || s.contains("bad rule")
                || s.contains("no chain/target/match")
        }
        _ => false,
    }
}
