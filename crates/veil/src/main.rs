//! `veil`: the command line of the Veil service mesh.
//!
//! Every subcommand is a thin layer over a library crate: `validate` over
//! `veil-api`, `up`/`down`/`status` over `veil-local`, `audit` over
//! `veil-audit`, `proxy` over `veil-proxy` and `veil-identity`.
#![forbid(unsafe_code)]

mod agent;
mod cert;
mod commands;
mod explain;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Veil: mutual TLS between every pair of services, configured with Istio's YAML.
#[derive(Parser)]
#[command(name = "veil", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mesh of a directory of Kubernetes + Istio YAML on this machine
    /// (each pod in its own network namespace, with its sidecar). Stops on Ctrl-C.
    Up {
        /// Directory with the YAML and `veil.local.yaml`.
        dir: PathBuf,
        #[command(flatten)]
        state: commands::StateArgs,
        /// Seconds to wait for every pod to be ready.
        #[arg(long, default_value_t = 180)]
        ready_timeout: u64,
    },
    /// Stop a running `veil up` and remove every namespace, link, rule and process it made.
    Down {
        #[command(flatten)]
        state: commands::StateArgs,
    },
    /// Show the pods, addresses and identities of the running mesh.
    Status {
        #[command(flatten)]
        state: commands::StateArgs,
        /// `table` or `json`.
        #[arg(long, short, default_value = "table")]
        output: String,
    },
    /// Capture the traffic between pods and classify every flow
    /// (mesh-mtls, tls, plaintext), with the identities of both ends.
    Audit {
        #[command(flatten)]
        state: commands::StateArgs,
        /// Capture for this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        /// Exit non-zero if any pod-to-pod flow is not mesh mTLS.
        #[arg(long)]
        expect_encrypted: bool,
        /// Report whether this text appeared in clear in any captured byte
        /// (exit non-zero if it did).
        #[arg(long)]
        grep: Option<String>,
        /// Keep the capture in this file.
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// `table` or `json`.
        #[arg(long, short, default_value = "table")]
        output: String,
    },
    /// Check a directory of YAML: print errors (file:line: field: message)
    /// and warnings; exit non-zero on errors.
    Validate {
        dir: PathBuf,
    },
    /// Find what Istio would reject (errors) and the traps it accepts (warnings: Service
    /// port in portLevelMtls, DestinationRule tls against the server's mTLS mode, double
    /// TLS, Secret in the wrong namespace, unknown hosts, legacy policies), each with
    /// file:line and a fix; exit non-zero on errors.
    Analyze {
        dir: PathBuf,
        /// `table` or `json`.
        #[arg(long, short, default_value = "table")]
        output: String,
    },
    /// Certificates for software outside the mesh.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Experimental commands reading the running mesh's control plane
    /// (Istio's `istioctl x`): `describe pod`, `auth check`.
    #[command(subcommand)]
    X(explain::XCommand),
    /// Authentication checks against the running mesh (Istio 1.4's
    /// `istioctl authn`): `tls-check`.
    #[command(subcommand)]
    Authn(explain::AuthnCommand),
    /// Run the sidecar or gateway proxy (started by `veil up` inside a pod).
    #[command(hide = true)]
    Proxy,
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write `key.pem`, `cert-chain.pem`, `root-cert.pem` (mode 0600) for an
    /// identity, signed by the mesh CA in the state directory, so that a
    /// third-party proxy can speak mesh mTLS (ALPN `istio`). Istio's `OUTPUT_CERTS`.
    Export {
        /// `<namespace>/<service-account>`.
        #[arg(long)]
        identity: String,
        /// Directory to write into (created with mode 0700).
        #[arg(long)]
        dir: PathBuf,
        /// Certificate lifetime in seconds (Istio's `SECRET_TTL`).
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// Keep running and rewrite the files at half-life (rotation) until Ctrl-C.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        state: commands::StateArgs,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("VEIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(agent::ansi_logs()).init();
    let result = match cli.command {
        Command::Up { dir, state, ready_timeout } => commands::up(&dir, &state, ready_timeout),
        Command::Down { state } => commands::down(&state),
        Command::Status { state, output } => commands::status(&state, &output),
        Command::Audit { state, duration, expect_encrypted, grep, pcap, output } => {
            commands::audit(&state, duration, expect_encrypted, grep.as_deref(), pcap, &output)
        }
        Command::Validate { dir } => commands::validate(&dir),
        Command::Analyze { dir, output } => commands::analyze(&dir, &output),
        Command::Proxy => commands::proxy(),
        Command::X(cmd) => explain::x(cmd),
        Command::Authn(cmd) => explain::authn(cmd),
        Command::Cert(CertCommand::Export { identity, dir, ttl, watch, state }) => {
            cert::export(&state.state_dir, &identity, &dir, std::time::Duration::from_secs(ttl), watch)
                .map(|()| std::process::ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text
/// the message before it already carries (most of Veil's errors name their
/// cause in their own message, and `{:#}` would print it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_the_message_already_names_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let named = anyhow::Error::new(io).context("cannot read x: No such file or directory; check it");
        assert_eq!(error_chain(&named), "cannot read x: No such file or directory; check it");
        // Control: a cause the context does not name is kept.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let unnamed = anyhow::Error::new(io).context("loading the mesh");
        assert_eq!(error_chain(&unnamed), "loading the mesh: No such file or directory");
        assert_eq!(format!("{unnamed:#}"), error_chain(&unnamed));
    }
}

