//! `veil authn tls-check [<ns>/<pod>]`: Istio 1.4's table, from the admin
//! API's `/debug/tls-check`.

use anyhow::Result;
use std::process::ExitCode;
use veil_control::admin::tls_check::TlsCheck;

use super::table::{list, render};
use super::{emit, fetch, mesh, pod_query, print_json, ExplainArgs};

/// Runs the command.
pub fn run(pod: Option<&str>, args: &ExplainArgs) -> Result<ExitCode> {
    let (_, addr) = mesh(&args.state)?;
    let query = match pod {
        Some(p) => pod_query(p)?,
        None => String::new(),
    };
    let check: TlsCheck = fetch(addr, &format!("/debug/tls-check{query}"))?;
    if args.output == "json" {
        return print_json(&check);
    }
    emit(&text(&check))
}

/// The table: HOST:PORT, STATUS, SERVER, CLIENT, AUTHN POLICY, DESTINATION RULE.
pub fn text(check: &TlsCheck) -> String {
    let mut rows = vec![["HOST:PORT", "STATUS", "SERVER", "CLIENT", "AUTHN POLICY", "DESTINATION RULE"]
        .map(String::from)
        .to_vec()];
    for r in &check.rows {
        rows.push(vec![
            r.key(),
            r.status.to_string(),
            r.server.to_string(),
            r.client.map_or_else(|| "-".to_string(), |c| c.to_string()),
            list(&r.authn_policies),
            list(&r.destination_rules),
        ]);
    }
    render(&rows)
}
