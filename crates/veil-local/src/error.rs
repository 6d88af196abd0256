//! The one error type of `veil-local`; every message tells the operator what to do next.

use std::path::PathBuf;

/// Everything that can go wrong while making, running or unmaking local hosts.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// An external command (`ip`, `iptables`, …) exited with a failure status.
    #[error("`{command}` failed: {stderr}; {hint}")]
    Command {
        /// The command line, space separated.
        command: String,
        /// What the command wrote to stderr (trimmed).
        stderr: String,
        /// What the operator should check.
        hint: &'static str,
    },
    /// An external command could not be started at all.
    #[error("cannot run `{command}`: {source}; is it installed and on PATH?")]
    Exec {
        /// The command line, space separated.
        command: String,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// `veil.local.yaml` is invalid; `line` is 1-based.
    #[error("{file}:{line}: {message}")]
    RuntimeFile {
        /// The file as given by the caller.
        file: String,
        /// 1-based line of the offending value (0 when unknown).
        line: usize,
        /// `field.path: what is wrong`.
        message: String,
    },
    /// A file or directory could not be read, written or removed.
    #[error("cannot {action} {path}: {source}; check that it exists and that you are root")]
    Io {
        /// What was attempted (`read`, `write`, `create`, `remove`).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// No `mesh.json` in the state directory: no `veil up` is running there.
    #[error("no mesh is running: {} does not exist; start one with `veil up DIR`, or give the --state-dir (VEIL_STATE_DIR) it was started with", path.display())]
    NoMesh {
        /// The `mesh.json` looked for.
        path: PathBuf,
    },
    /// A journal line could not be parsed.
    #[error("{path}:{line}: unreadable journal entry: {message}; fix or remove the line, then run `veil down` again")]
    JournalEntry {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// An address in CIDR notation could not be parsed.
    #[error("invalid address {value:?}: {reason}; write it like 10.209.0.1/16")]
    Cidr {
        /// The text given.
        value: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The address plan ran out of addresses.
    #[error("address range {range} is exhausted after {allocated} allocations; run fewer workloads or use a larger range")]
    Exhausted {
        /// The range, in CIDR notation.
        range: String,
        /// How many addresses were handed out.
        allocated: u32,
    },
    /// A name (netns, link, user) is not acceptable.
    #[error("invalid name {name:?}: {reason}")]
    Name {
        /// The name given.
        name: String,
        /// Why it was refused and what to use instead.
        reason: &'static str,
    },
    /// A signal could not be delivered.
    #[error("cannot signal process group {pgid}: {source}; are you root?")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The errno from `kill(2)`.
        source: nix::errno::Errno,
    },
    /// A TCP port did not start accepting connections in time.
    #[error("{addr} in netns {netns} did not accept TCP connections within {timeout_ms} ms; check the workload's log")]
    NotReady {
        /// The network namespace checked from.
        netns: String,
        /// Address and port.
        addr: std::net::SocketAddr,
        /// The bound waited, in milliseconds.
        timeout_ms: u128,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter netns {netns}: {reason}; does `ip netns list` show it?")]
    Netns {
        /// The namespace name.
        netns: String,
        /// The underlying error text.
        reason: String,
    },
    /// A port forward could not listen.
    #[error("cannot listen on {addr}: {source}; pick another port or stop what uses it")]
    Listen {
        /// The listen address requested.
        addr: std::net::SocketAddr,
        /// The operating-system error.
        source: std::io::Error,
    },
    /// A bridge, netns or link with this name already exists (left over from a run whose
    /// state directory is gone, or someone else's).
    #[error("{what} {name} already exists; run `veil down` to remove a previous run, or sweep leftovers by prefix")]
    Exists {
        /// `bridge`, `netns` or `link`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// Something in the journal belongs to another live process.
    #[error("{what} is owned by running process {pid}; stop that `veil up` first")]
    Owned {
        /// What is owned.
        what: String,
        /// The owner's pid.
        pid: u32,
    },
}

impl LocalError {
    /// Wraps an `std::io::Error` with the action and path it concerns.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        LocalError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
