//! `veil x describe pod <ns>/<pod>`: the facts `istioctl x describe pod`
//! prints, from the admin API's `/debug/describe`.

use anyhow::Result;
use std::fmt::Write as _;
use std::process::ExitCode;
use veil_control::admin::describe::{PodDescription, ServiceDescription};
use veil_model::Protocol;

use super::{emit, fetch, mesh, pod_query, print_json, ExplainArgs};

/// Runs the command.
pub fn run(pod: &str, args: &ExplainArgs) -> Result<ExitCode> {
    let (_, addr) = mesh(&args.state)?;
    let d: PodDescription = fetch(addr, &format!("/debug/describe{}", pod_query(pod)?))?;
    if args.output == "json" {
        return print_json(&d);
    }
    emit(&text(&d))
}

fn protocol(p: Protocol) -> String {
    match p {
        Protocol::Unknown => "auto-detect".into(),
        other => format!("{other:?}").to_uppercase(),
    }
}

/// The description as text, in `istioctl x describe pod`'s order.
pub fn text(d: &PodDescription) -> String {
    let mut out = String::new();
    let p = &d.pod;
    let _ = writeln!(out, "Pod: {}", p.name);
    let _ = writeln!(out, "   Namespace: {}", p.namespace);
    let ports: Vec<String> = p
        .ports
        .iter()
        .map(|c| match &c.name {
            Some(n) => format!("{} ({n})", c.port),
            None => c.port.to_string(),
        })
        .collect();
    let _ = writeln!(out, "   Pod Ports: {}", if ports.is_empty() { "-".into() } else { ports.join(", ") });
    let _ = writeln!(out, "   Identity: {}", p.spiffe_id);
    match &d.proxy {
        Some(s) if s.kind != "none" => {
            let version = s.config_version.map_or_else(|| "none".into(), |v| v.to_string());
            let stream = match &s.stream {
                Some(st) if s.synced => format!("connected, in sync (sent version {})", st.sent_version),
                Some(st) => format!("connected, NOT in sync (sent version {})", st.sent_version),
                None => "NOT connected to the control plane".into(),
            };
            let _ = writeln!(out, "   Proxy: {}, config version {version}, {stream}", s.kind);
        }
        _ => {}
    }
    if !p.sidecar && !p.gateway {
        let _ = writeln!(out, "WARNING: {} is not part of mesh; no sidecar", p.name);
    }
    for svc in &d.services {
        out.push_str("--------------------\n");
        service(&mut out, svc);
    }
    out.push_str("--------------------\n");
    let pa = &d.peer_authentication;
    out.push_str("Effective PeerAuthentication:\n");
    let _ = writeln!(out, "   Workload mTLS mode: {}", pa.workload_mode);
    if !pa.port_modes.is_empty() {
        out.push_str("   Port Level mTLS mode:\n");
        for (port, mode) in &pa.port_modes {
            let _ = writeln!(out, "      {port}: {mode}");
        }
    }
    if !pa.applied.is_empty() {
        out.push_str("Applied PeerAuthentication:\n");
        let _ = writeln!(out, "   {}", pa.applied.join(", "));
    }
    if !pa.ignored.is_empty() {
        out.push_str("Ignored PeerAuthentication:\n");
        for i in &pa.ignored {
            let _ = writeln!(out, "   {}: {}", i.policy, i.reason);
        }
    }
    out
}

fn service(out: &mut String, svc: &ServiceDescription) {
    let _ = writeln!(out, "Service: {}", svc.name);
    for sp in &svc.ports {
        let name = sp.name.as_deref().map(|n| format!("{n} ")).unwrap_or_default();
        let target = match sp.target_port {
            Some(t) => format!("targets pod port {t}"),
            None => "targets a port the pod does not declare".into(),
        };
        let mode = sp.server_mode.map(|m| format!(" (mTLS {m})")).unwrap_or_default();
        let _ = writeln!(out, "   Port: {name}{}/{} {target}{mode}", sp.port, protocol(sp.protocol));
    }
    if let Some(r) = &svc.destination_rule {
        let _ = writeln!(out, "DestinationRule: {} for \"{}\"", r.rules.join(", "), r.host);
        if !r.matching_subsets.is_empty() {
            let _ = writeln!(out, "   Matching subsets: {}", r.matching_subsets.join(","));
        }
        if !r.other_subsets.is_empty() {
            let _ = writeln!(out, "      (Non-matching subsets {})", r.other_subsets.join(","));
        }
        match r.tls_mode {
            Some(m) => {
                let _ = writeln!(out, "   Traffic Policy TLS Mode: {m}");
            }
            None => out.push_str("   No Traffic Policy TLS (auto-mTLS decides)\n"),
        }
        if !r.port_level.is_empty() {
            out.push_str("   Port Level Settings:\n");
            for pl in &r.port_level {
                let mode = pl.tls_mode.map_or_else(|| "unset (auto-mTLS decides)".into(), |m| m.to_string());
                let _ = writeln!(out, "    {}:\n      TLS Mode: {mode}", pl.port);
            }
        }
    }
    for vs in &svc.virtual_services {
        let _ = writeln!(out, "VirtualService: {}", vs.virtual_service);
        let port = vs.port.map(|p| format!(" port {p}")).unwrap_or_default();
        let _ = writeln!(out, "   {} route to host \"{}\"{port} (gateways: {})", vs.kind.to_uppercase(), svc.host, vs.gateways.join(", "));
        if let Some(uri) = &vs.uri {
            let _ = writeln!(out, "   Match: {uri}{}", if vs.exact { "" } else { "*" });
        }
    }
}
