//! Connection records: one JSON line of [`ConnectionRecord`] per proxied
//! connection, appended to a file by a single writer task.
//!
//! The data path only does a non-blocking `try_send` into a bounded channel;
//! when the writer falls behind, records are dropped and counted. The writer
//! collects records for [`BATCH_MS`] after the first of a burst and appends
//! them with one write, so that the data path wakes it at most once per
//! batch (it runs on the proxy's side runtime, see `Proxy::run_with`).

use crate::ProxyError;
use std::net::SocketAddr;
use std::path::Path;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};
use veil_model::ConnectionRecord;

/// Records queued before new ones are dropped.
const QUEUE_LEN: usize = 4096;
/// Longest a record waits for the rest of its batch, in milliseconds.
pub(crate) const BATCH_MS: u64 = 50;

/// Where the data path hands records off.
pub(crate) struct RecordSink {
    tx: Option<mpsc::Sender<ConnectionRecord>>,
    dropped: AtomicU64,
}

/// The writer half, run by [`RecordWriter::run`].
pub(crate) struct RecordWriter {
    file: std::fs::File,
    rx: mpsc::Receiver<ConnectionRecord>,
}

/// Opens (creates, appends to) `path` and returns the sink and its writer;
/// with no path, records are discarded.
///
/// Errors: [`ProxyError::Records`] when the file cannot be opened.
pub(crate) fn open(path: Option<&Path>) -> Result<(RecordSink, Option<RecordWriter>), ProxyError> {
    let Some(path) = path else {
        return Ok((RecordSink { tx: None, dropped: AtomicU64::new(0) }, None));
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ProxyError::Records { path: path.to_path_buf(), source })?;
    let (tx, rx) = mpsc::channel(QUEUE_LEN);
    let sink = RecordSink { tx: Some(tx), dropped: AtomicU64::new(0) };
    Ok((sink, Some(RecordWriter { file, rx })))
}

impl RecordSink {
    /// Queues `record` without waiting; counts it as dropped when the queue is full.
    pub(crate) fn send(&self, record: ConnectionRecord) {
        let Some(tx) = &self.tx else { return };
        if tx.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "connection records dropped: the records file is not keeping up");
            }
        }
    }

    /// Records dropped so far because the writer fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl RecordWriter {
    /// Appends records in batches until every sender is gone or `stop`
    /// resolves (or is dropped); what is queued then is written first.
    pub(crate) async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut stopping = false;
        while !stopping {
            let first = tokio::select! {
                first = self.rx.recv() => first,
                _ = &mut stop => None,
            };
            let Some(first) = first else { break };
            let mut lines = Vec::new();
            append(&mut lines, &first);
            stopping = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(BATCH_MS)) => false,
                _ = &mut stop => true,
            };
            self.write(lines);
        }
        self.write(Vec::new());
    }

    /// Appends `lines` and every record queued now (at most [`QUEUE_LEN`]).
    fn write(&mut self, mut lines: Vec<u8>) {
        for _ in 0..QUEUE_LEN {
            match self.rx.try_recv() {
                Ok(record) => append(&mut lines, &record),
                Err(_) => break,
            }
        }
        if lines.is_empty() {
            return;
        }
        if let Err(e) = self.file.write_all(&lines) {
            tracing::warn!(error = %e, "cannot append connection records; check disk space");
        }
    }
}

fn append(lines: &mut Vec<u8>, record: &ConnectionRecord) {
    match serde_json::to_vec(record) {
        Ok(line) => {
            lines.extend_from_slice(&line);
            lines.push(b'\n');
        }
        Err(e) => tracing::warn!(error = %e, "cannot serialise a connection record"),
    }
}

/// Unix time now, in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The fields every record has; the rest start empty.
pub(crate) fn record(direction: &str, pod: &str, src: SocketAddr, dst: SocketAddr, start_ms: u64) -> ConnectionRecord {
    ConnectionRecord {
        direction: direction.to_string(),
        pod: pod.to_string(),
        src,
        dst,
        security: "plaintext".to_string(),
        alpn: None,
        source_principal: None,
        destination_principal: None,
        start_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> usize {
        std::fs::read_to_string(path).unwrap_or_default().lines().count()
    }

    fn sample(n: u16) -> ConnectionRecord {
        let addr = SocketAddr::from(([127, 0, 0, 1], n));
        record("inbound", "pod", addr, addr, now_ms())
    }

    #[tokio::test]
    async fn records_are_written_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let (sink, writer) = open(Some(&path)).unwrap();
        let (_stop, stopped) = oneshot::channel();
        let writer = tokio::spawn(writer.unwrap().run(stopped));
        sink.send(sample(1));
        tokio::time::sleep(Duration::from_millis(BATCH_MS / 5)).await;
        sink.send(sample(2));
        assert_eq!(lines(&path), 0, "the first record waits for the rest of its batch");
        tokio::time::sleep(Duration::from_millis(BATCH_MS * 3)).await;
        assert_eq!(lines(&path), 2, "one batch, both records");
        sink.send(sample(3));
        tokio::time::sleep(Duration::from_millis(BATCH_MS * 3)).await;
        assert_eq!(lines(&path), 3, "the next batch");
        assert_eq!(sink.dropped(), 0);
        writer.abort();
    }

    #[tokio::test]
    async fn records_queued_at_shutdown_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let (sink, writer) = open(Some(&path)).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let writer = tokio::spawn(writer.unwrap().run(stopped));
        for n in 0..5 {
            sink.send(sample(n));
        }
        tokio::task::yield_now().await;
        drop(stop);
        tokio::time::timeout(Duration::from_secs(1), writer).await.expect("the writer ends at stop").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().all(|l| serde_json::from_str::<ConnectionRecord>(l).is_ok()));
    }
}
