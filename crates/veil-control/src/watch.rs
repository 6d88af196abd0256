//! The watched-directory config source: reloads the YAML directory when a
//! file changes, and hands the caller either a new snapshot or the errors
//! (in which case the caller keeps serving the last good config).
//!
//! Polls file metadata (default every 500 ms) rather than relying on inotify,
//! so it behaves the same on every filesystem, bind mount and editor.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What identifies one state of the directory: every YAML file's path,
/// modification time and size.
type Fingerprint = Vec<(PathBuf, Option<SystemTime>, u64)>;

fn fingerprint(dir: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    let mut visited = 0usize;
    while let Some(d) = stack.pop() {
        visited += 1;
        if visited > 10_000 {
            break;
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                out.push((p, meta.modified().ok(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// Calls `on_change` once at start and then each time a YAML file under
/// `dir` is added, removed or modified, until `shutdown` resolves.
/// `interval` is the polling period (ms resolution).
pub async fn watch_directory<F>(
    dir: PathBuf,
    interval: Duration,
    mut on_change: F,
    shutdown: impl std::future::Future<Output = ()>,
) where
    F: FnMut(&Path),
{
    let mut last = fingerprint(&dir);
    on_change(&dir);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = fingerprint(&dir);
        if now != last {
            // Let an editor finish writing before reading.
            tokio::time::sleep(Duration::from_millis(100)).await;
            last = fingerprint(&dir);
            on_change(&dir);
        }
    }
}
