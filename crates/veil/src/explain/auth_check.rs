//! `veil x auth check <ns>/<pod>`: the listeners and clusters of a pod's
//! proxy from the admin API's `/debug/auth-check`, with the certificate the
//! proxy really holds, read from its own admin `/config_dump`
//! (127.0.0.1:15000 inside the pod's network namespace, reached from a
//! thread that joined that namespace).

use anyhow::{Context, Result};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use veil_control::admin::auth_check::{AuthCheck, CertificateFacts};
use veil_local::up::MeshState;

use super::table::{list, render};
use super::{emit, fetch, mesh, pod_query, print_json, ExplainArgs, ADMIN_TIMEOUT};

/// The proxy's admin port (Istio's 15000), loopback inside the pod.
const PROXY_ADMIN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 15000);

/// Runs the command.
pub fn run(pod: &str, args: &ExplainArgs) -> Result<ExitCode> {
    let (state, addr) = mesh(&args.state)?;
    let mut check: AuthCheck = fetch(addr, &format!("/debug/auth-check{}", pod_query(pod)?))?;
    let mut note = None;
    match proxy_dump(&state, &check.namespace, &check.pod) {
        Ok(dump) => {
            let cert = &dump["certificate"];
            let facts = CertificateFacts {
                spiffe_id: cert["spiffe_id"].as_str().map(str::to_string),
                not_after_unix: cert["not_after_unix"].as_i64(),
            };
            for l in check.listeners.iter_mut().filter(|l| l.mtls) {
                l.certificate = facts.spiffe_id.clone();
            }
            for c in check.clusters.iter_mut().filter(|c| c.tls == "ISTIO_MUTUAL") {
                c.certificate = facts.spiffe_id.clone();
            }
            check.certificate = Some(facts);
            check.proxy_version = dump["config"]["version"].as_u64();
        }
        Err(e) => note = Some(format!("{e:#}")),
    }
    if args.output == "json" {
        return print_json(&check);
    }
    if let Some(n) = note {
        eprintln!("note: the proxy's own /config_dump could not be read ({n}); showing the control plane's view only");
    }
    emit(&text(&check))
}

/// RFC 3339 of Unix seconds.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{unix} (Unix seconds)"))
}

/// The report as text: a header, the listener table, the cluster table.
pub fn text(check: &AuthCheck) -> String {
    let mut out = format!("Pod {}/{} ({}), identity {}\n", check.namespace, check.pod, check.ip, check.spiffe_id);
    match &check.certificate {
        Some(c) => {
            let id = c.spiffe_id.as_deref().unwrap_or("none");
            let expiry = c.not_after_unix.map_or_else(|| "unknown".into(), rfc3339);
            out.push_str(&format!("Certificate held by the proxy: {id}, expires {expiry}\n"));
        }
        None => out.push_str("Certificate held by the proxy: not read\n"),
    }
    let proxy = check.proxy_version.map_or_else(|| "unknown".into(), |v| v.to_string());
    out.push_str(&format!("Config version: {} (the proxy runs {proxy})\n", check.config_version));
    let mut names: Vec<&str> = check.listeners.iter().map(|l| l.listener.as_str()).collect();
    names.dedup();
    out.push_str(&format!("Checked {} listeners with node IP {}.\n", names.len(), check.ip));
    let mut rows = vec![["LISTENER[FilterChain]", "CERTIFICATE", "mTLS (MODE)"].map(String::from).to_vec()];
    for l in &check.listeners {
        rows.push(vec![
            l.name(),
            l.certificate.clone().unwrap_or_else(|| "none".into()),
            format!("{} ({})", if l.mtls { "yes" } else { "no" }, l.mode),
        ]);
    }
    out.push_str(&render(&rows));
    out.push('\n');
    let mut rows =
        vec![["CLUSTER", "TLS", "CERTIFICATE", "VALIDATE PEER CERTIFICATE", "POLICY"].map(String::from).to_vec()];
    for c in &check.clusters {
        rows.push(vec![
            c.cluster.clone(),
            c.tls.clone(),
            c.certificate.clone().unwrap_or_else(|| "none".into()),
            if c.validate_peer.is_empty() { "none".into() } else { list(&c.validate_peer) },
            c.policy.clone(),
        ]);
    }
    out.push_str(&render(&rows));
    out
}

/// The JSON of the proxy's `/config_dump`, fetched from inside its pod.
fn proxy_dump(state: &MeshState, namespace: &str, pod: &str) -> Result<serde_json::Value> {
    let p = state
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == pod)
        .with_context(|| format!("pod {namespace}/{pod} is not in the mesh state"))?;
    let path = format!("/run/netns/{}", p.netns);
    let netns = File::open(&path).with_context(|| format!("cannot open {path} (run as root)"))?;
    let worker = std::thread::spawn(move || -> Result<serde_json::Value> {
        nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).context("cannot enter the pod's network namespace")?;
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        Ok(rt.block_on(veil_control::admin::client::get_json(PROXY_ADMIN, "/config_dump", ADMIN_TIMEOUT))?)
    });
    worker.join().map_err(|_| anyhow::anyhow!("the thread reading the proxy's /config_dump failed"))?
}
