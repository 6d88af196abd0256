//! The explain tools, thin clients of the control plane's admin API
//! (`veil_control::admin`) of a running `veil up`: `veil x describe pod`,
//! `veil authn tls-check` and `veil x auth check`. Each prints a table by
//! default and the admin API's JSON with `--output json`.

mod auth_check;
mod describe;
mod table;
mod tls_check;

use anyhow::{bail, Result};
use clap::Subcommand;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use veil_local::up::MeshState;

use crate::commands::StateArgs;

/// How long one admin API request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to find the mesh, and how to print.
#[derive(clap::Args, Debug, Clone)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub state: StateArgs,
    /// `table` or `json`.
    #[arg(long, short, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// `veil x …`: experimental commands (Istio's `istioctl x`).
#[derive(Subcommand)]
pub enum XCommand {
    /// Describe a resource of the running mesh.
    #[command(subcommand)]
    Describe(DescribeCommand),
    /// Authentication checks of a pod's proxy.
    #[command(subcommand)]
    Auth(AuthCommand),
}

/// `veil x describe …`.
#[derive(Subcommand)]
pub enum DescribeCommand {
    /// A pod's Services and their ports, the DestinationRule and
    /// VirtualServices for them, and its effective PeerAuthentication with
    /// the policies applied and ignored (Istio's `istioctl x describe pod`).
    Pod {
        /// `<namespace>/<pod>`.
        pod: String,
        #[command(flatten)]
        args: ExplainArgs,
    },
}

/// `veil x auth …`.
#[derive(Subcommand)]
pub enum AuthCommand {
    /// Per inbound listener: the certificate and `mTLS (MODE)`; then every
    /// outbound cluster with the client certificate and how the peer is
    /// validated (Istio 1.3's `istioctl experimental auth check`).
    Check {
        /// `<namespace>/<pod>`.
        pod: String,
        #[command(flatten)]
        args: ExplainArgs,
    },
}

/// `veil authn …` (Istio 1.4's `istioctl authn`).
#[derive(Subcommand)]
pub enum AuthnCommand {
    /// One row per host:port(|subset): STATUS (OK, CONFLICT, AUTO), the
    /// server's mTLS mode, the client's DestinationRule TLS mode, the
    /// policies and DestinationRules. The client side is seen from the
    /// pod's namespace; without a pod, from each Service's own namespace.
    TlsCheck {
        /// `<namespace>/<pod>` whose view of the DestinationRules to show.
        pod: Option<String>,
        #[command(flatten)]
        args: ExplainArgs,
    },
}

/// Runs `veil x …`.
pub fn x(cmd: XCommand) -> Result<ExitCode> {
    match cmd {
        XCommand::Describe(DescribeCommand::Pod { pod, args }) => describe::run(&pod, &args),
        XCommand::Auth(AuthCommand::Check { pod, args }) => auth_check::run(&pod, &args),
    }
}

/// Runs `veil authn …`.
pub fn authn(cmd: AuthnCommand) -> Result<ExitCode> {
    match cmd {
        AuthnCommand::TlsCheck { pod, args } => tls_check::run(pod.as_deref(), &args),
    }
}

/// The running mesh and its admin API address.
fn mesh(state: &StateArgs) -> Result<(MeshState, SocketAddr)> {
    let mesh = MeshState::load(&state.state_dir)?;
    let Some(addr) = mesh.admin else {
        bail!("the running mesh has no admin API address in its state; restart it with this version of `veil up`");
    };
    Ok((mesh, addr))
}

/// `?pod=<namespace>/<name>` after checking the argument's shape.
fn pod_query(pod: &str) -> Result<String> {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    match pod.split_once('/') {
        Some((ns, name)) if ok(ns) && ok(name) => Ok(format!("?pod={ns}/{name}")),
        _ => bail!("pod {pod:?}: give it as <namespace>/<pod>, e.g. pii-demo/httpd-server (see `veil status`)"),
    }
}

/// `GET <path_and_query>` on the admin API, decoded as `T`.
fn fetch<T: DeserializeOwned>(addr: SocketAddr, path_and_query: &str) -> Result<T> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(rt.block_on(veil_control::admin::client::get_json(addr, path_and_query, ADMIN_TIMEOUT))?)
}

/// Prints `value` as pretty JSON.
fn print_json<T: serde::Serialize>(value: &T) -> Result<ExitCode> {
    emit(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

/// Writes `text` to stdout; a reader that went away (`| head`) is not an error.
fn emit(text: &str) -> Result<ExitCode> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
