//! The audit's result: a `kubectl get`-style table, JSON, and the pod-to-pod
//! flows that were not mesh mTLS (what `--expect-encrypted` fails on).

use crate::{Flow, FlowClass};
use serde_json::json;

/// Every captured flow, in order of first packet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub flows: Vec<Flow>,
}

const HEADERS: [&str; 6] = [
    "SOURCE",
    "DESTINATION",
    "BYTES",
    "CLASS",
    "IDENTITIES",
    "NOTE",
];

fn source(flow: &Flow) -> String {
    flow.client_pod
        .clone()
        .unwrap_or_else(|| flow.client.ip().to_string())
}

fn destination(flow: &Flow) -> String {
    match &flow.server_pod {
        Some(pod) => format!("{pod}:{}", flow.server.port()),
        None => flow.server.to_string(),
    }
}

fn identities(flow: &Flow) -> String {
    match (&flow.source_principal, &flow.destination_principal) {
        (None, None) => "-".to_string(),
        (src, dst) => format!(
            "{} → {}",
            src.as_deref().unwrap_or("?"),
            dst.as_deref().unwrap_or("?")
        ),
    }
}

impl Report {
    /// The flows as a table with columns SOURCE, DESTINATION (pod:port),
    /// BYTES (both directions), CLASS, IDENTITIES (source → destination
    /// SPIFFE IDs) and NOTE ([`Flow::note`], e.g. `handshake not captured`),
    /// aligned like `kubectl get`.
    pub fn table(&self) -> String {
        let rows: Vec<[String; 6]> = self
            .flows
            .iter()
            .map(|f| {
                [
                    source(f),
                    destination(f),
                    f.bytes().to_string(),
                    f.class.to_string(),
                    identities(f),
                    f.note().unwrap_or("-").to_string(),
                ]
            })
            .collect();
        let mut widths = HEADERS.map(|h| h.chars().count());
        for row in &rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header = HEADERS.map(String::from);
        for row in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = width - cell.chars().count() + 3;
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// The flows as JSON: `{"flows": [...], "unencrypted_pod_flows": N}`;
    /// each flow has the [`Flow`] fields plus `bytes`, `pod_to_pod` and
    /// `note` (null when there is none).
    pub fn to_json(&self) -> serde_json::Value {
        let flows: Vec<serde_json::Value> = self
            .flows
            .iter()
            .map(|f| {
                let mut value = serde_json::to_value(f).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("bytes".into(), json!(f.bytes()));
                    object.insert("pod_to_pod".into(), json!(f.is_pod_to_pod()));
                    object.insert("note".into(), json!(f.note()));
                }
                value
            })
            .collect();
        json!({
            "flows": flows,
            "unencrypted_pod_flows": self.unencrypted_pod_flows().len(),
        })
    }

    /// Pod-to-pod flows that carried bytes and were not mesh mTLS. A
    /// connection that carried no payload at all (e.g. refused) exposed
    /// nothing and is not listed.
    pub fn unencrypted_pod_flows(&self) -> Vec<&Flow> {
        self.flows
            .iter()
            .filter(|f| f.is_pod_to_pod() && f.bytes() > 0 && f.class != FlowClass::MeshMtls)
            .collect()
    }
}
