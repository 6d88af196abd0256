//! The journal: an append-only record, in the state directory, of every host-side thing
//! `veil-local` creates. Each entry is written (and synced) *before* the thing is created,
//! so that [`crate::teardown`] can undo a run even after a crash, from the file alone.
//!
//! Format: `journal.jsonl`, one JSON object per line, tagged by `kind`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::LocalError;

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";

/// One created thing, with what is needed to undo it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A Linux bridge (`ip link add NAME type bridge`); undone with `ip link del`.
    Bridge {
        /// Interface name.
        name: String,
    },
    /// A rule in the host's iptables; undone with `iptables -t TABLE -D CHAIN RULE…`.
    HostRule {
        /// Table (`filter`, `nat`).
        table: String,
        /// Chain (`FORWARD`).
        chain: String,
        /// The rule's arguments after the chain name.
        rule: Vec<String>,
    },
    /// A named network namespace; undone by killing what still runs in it, then `ip netns del`.
    Netns {
        /// Namespace name (as in `ip netns list`).
        name: String,
    },
    /// A host-side veth end (its peer goes with it); undone with `ip link del`.
    Link {
        /// Interface name on the host.
        name: String,
    },
    /// A per-namespace configuration directory (`/etc/netns/<name>`); removed recursively.
    EtcNetns {
        /// The directory.
        path: PathBuf,
    },
    /// A process started in its own process group (journaled right after fork; a crash in
    /// that window is covered by the netns undo, which kills everything left in the netns).
    Process {
        /// Process id.
        pid: i32,
        /// Process group id (equal to `pid`).
        pgid: i32,
        /// `starttime` from `/proc/<pid>/stat` (clock ticks since boot), to tell a reused pid.
        start_time: Option<u64>,
        /// Network namespace it runs in.
        netns: String,
        /// The program started.
        program: String,
    },
    /// A TCP relay owned by the process `owner_pid` (it ends with that process).
    PortForward {
        /// The `veil up` process that runs the relay.
        owner_pid: u32,
        /// Requested listen address.
        listen: SocketAddr,
        /// Where connections are relayed to.
        target: SocketAddr,
    },
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Bridge { name } => write!(f, "bridge {name}"),
            Entry::HostRule { table, chain, rule } => {
                write!(f, "iptables -t {table} {chain} {}", rule.join(" "))
            }
            Entry::Netns { name } => write!(f, "netns {name}"),
            Entry::Link { name } => write!(f, "link {name}"),
            Entry::EtcNetns { path } => write!(f, "dir {}", path.display()),
            Entry::Process {
                pid,
                netns,
                program,
                ..
            } => write!(f, "process {pid} ({program}) in {netns}"),
            Entry::PortForward {
                owner_pid,
                listen,
                target,
            } => {
                write!(f, "forward {listen} -> {target} (pid {owner_pid})")
            }
        }
    }
}

/// Handle on the journal file of one state directory.
#[derive(Clone, Debug)]
pub struct Journal {
    path: PathBuf,
}

impl Journal {
    /// Opens (creating the state directory if needed) the journal of `state_dir`.
    /// Errors with [`LocalError::Io`] when the directory cannot be created.
    pub fn open(state_dir: &Path) -> Result<Journal, LocalError> {
        fs::create_dir_all(state_dir).map_err(|e| LocalError::io("create", state_dir, e))?;
        Ok(Journal {
            path: state_dir.join(JOURNAL_FILE),
        })
    }

    /// The journal file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` and syncs it to disk; call before creating the thing it describes.
    pub fn append(&self, entry: &Entry) -> Result<(), LocalError> {
        let mut line = serde_json::to_string(entry)
            .map_err(|e| LocalError::io("write", &self.path, std::io::Error::other(e)))?;
        line.push('\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| LocalError::io("write", &self.path, e))?;
        file.write_all(line.as_bytes())
            .map_err(|e| LocalError::io("write", &self.path, e))?;
        file.sync_data()
            .map_err(|e| LocalError::io("write", &self.path, e))
    }

    /// All entries in the order they were written; a missing journal is empty.
    /// Errors with [`LocalError::JournalEntry`] on a line that does not parse, except a
    /// torn last line (a crash mid-write), which is skipped.
    pub fn entries(&self) -> Result<Vec<Entry>, LocalError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(LocalError::io("read", &self.path, e)),
        };
        let complete = text.ends_with('\n');
        let lines: Vec<&str> = text.lines().collect();
        let mut entries = Vec::with_capacity(lines.len());
        for (index, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(line) {
                Ok(entry) => entries.push(entry),
                Err(_) if !complete && index + 1 == lines.len() => {}
                Err(e) => {
                    return Err(LocalError::JournalEntry {
                        path: self.path.clone(),
                        line: index + 1,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(entries)
    }

    /// Replaces the journal with `entries` (written to a temporary file, then renamed);
    /// an empty list removes the file.
    pub(crate) fn rewrite(&self, entries: &[Entry]) -> Result<(), LocalError> {
        if entries.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(LocalError::io("remove", &self.path, e))
                }
                _ => Ok(()),
            };
        }
        let mut text = String::new();
        for entry in entries {
            let line = serde_json::to_string(entry)
                .map_err(|e| LocalError::io("write", &self.path, std::io::Error::other(e)))?;
            text.push_str(&line);
            text.push('\n');
        }
        let tmp = self.path.with_extension("jsonl.tmp");
        fs::write(&tmp, text).map_err(|e| LocalError::io("write", &tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| LocalError::io("write", &self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("veil-local-journal-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn append_then_read_back_in_order() {
        let dir = temp_dir("order");
        let journal = Journal::open(&dir).unwrap();
        assert!(journal.entries().unwrap().is_empty());
        let a = Entry::Bridge { name: "b0".into() };
        let b = Entry::Process {
            pid: 7,
            pgid: 7,
            start_time: Some(9),
            netns: "n".into(),
            program: "p".into(),
        };
        journal.append(&a).unwrap();
        journal.append(&b).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![a.clone(), b]);
        journal.rewrite(std::slice::from_ref(&a)).unwrap();
        assert_eq!(journal.entries().unwrap(), vec![a]);
        journal.rewrite(&[]).unwrap();
        assert!(!journal.path().exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn torn_last_line_is_skipped_but_bad_middle_line_is_an_error() {
        let dir = temp_dir("torn");
        let journal = Journal::open(&dir).unwrap();
        fs::write(
            journal.path(),
            "{\"kind\":\"netns\",\"name\":\"x\"}\n{\"kind\":\"li",
        )
        .unwrap();
        assert_eq!(
            journal.entries().unwrap(),
            vec![Entry::Netns { name: "x".into() }]
        );
        fs::write(
            journal.path(),
            "garbage\n{\"kind\":\"netns\",\"name\":\"x\"}\n",
        )
        .unwrap();
        let err = journal.entries().unwrap_err().to_string();
        assert!(err.contains(":1: unreadable journal entry"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
