//! Reading the proxies' connection records (JSON lines of
//! [`ConnectionRecord`]) and joining them with captured flows to name the
//! SPIFFE identities that TLS 1.3 hides from the wire.

use crate::AuditError;
use std::net::SocketAddr;
use std::path::Path;
use veil_model::ConnectionRecord;

/// Reads every `*.jsonl` file in `dir` (not recursively, in name order).
/// Lines that are not a valid record are skipped with a warning.
///
/// Errors: [`AuditError::Records`] when the directory or a file cannot be
/// read.
pub fn read_records(dir: &Path) -> Result<Vec<ConnectionRecord>, AuditError> {
    let records_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuditError::Records { path, source }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(records_err(dir))? {
        let path = entry.map_err(records_err(dir))?.path();
        if path.extension().is_some_and(|ext| ext == "jsonl") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    let mut records = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(records_err(&file))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<ConnectionRecord>(line) {
                Ok(record) => records.push(record),
                Err(e) => tracing::warn!(
                    file = %file.display(),
                    line = index + 1,
                    error = %e,
                    "skipping a connection record that is not valid JSON"
                ),
            }
        }
    }
    Ok(records)
}

/// What the proxies recorded about one captured flow.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Joined {
    /// SPIFFE ID of the client side.
    pub source_principal: Option<String>,
    /// SPIFFE ID of the server side.
    pub destination_principal: Option<String>,
    /// Whether a proxy recorded the connection as `mesh-mtls`.
    pub mesh_mtls: bool,
}

/// The records of the flow between `client` and `server` that started at
/// `start_ms` (Unix ms): the inbound record gives the source principal, the
/// outbound record the destination principal, each falling back to the
/// other record; either record saying `mesh-mtls` marks the connection as
/// mesh mTLS. When the 4-tuple was reused, the records closest in time to
/// the flow's start are used.
pub(crate) fn join(
    records: &[ConnectionRecord],
    client: SocketAddr,
    server: SocketAddr,
    start_ms: u64,
) -> Joined {
    let closest = |direction: &str| {
        records
            .iter()
            .filter(|r| r.direction == direction)
            .filter(|r| (r.src, r.dst) == (client, server) || (r.src, r.dst) == (server, client))
            .min_by_key(|r| r.start_ms.abs_diff(start_ms))
    };
    let inbound = closest("inbound");
    let outbound = closest("outbound");
    let source_principal = inbound
        .and_then(|r| r.source_principal.clone())
        .or_else(|| outbound.and_then(|r| r.source_principal.clone()));
    let destination_principal = outbound
        .and_then(|r| r.destination_principal.clone())
        .or_else(|| inbound.and_then(|r| r.destination_principal.clone()));
    let mesh_mtls = [inbound, outbound]
        .into_iter()
        .flatten()
        .any(|r| r.security == "mesh-mtls");
    Joined {
        source_principal,
        destination_principal,
        mesh_mtls,
    }
}
