//! What of a local mesh still exists, read from the journal (used by `veil status`).

use std::path::Path;

use crate::journal::{Entry, Journal};
use crate::net::{link_exists, netns_exists};
use crate::process::{is_running, is_same_running};
use crate::LocalError;

/// One journaled thing and whether it still exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveItem {
    /// The journal entry.
    pub entry: Entry,
    /// True when it still exists (process running and not a zombie, netns pinned, link
    /// present, directory present, host rule present, forward owner running).
    pub live: bool,
}

/// Every journal entry of `state_dir`, oldest first, with its liveness. Use
/// `.filter(|i| i.live)` for what is still up. Errors when the journal cannot be read.
pub fn list_live(state_dir: &Path) -> Result<Vec<LiveItem>, LocalError> {
    let journal = Journal::open(state_dir)?;
    Ok(journal
        .entries()?
        .into_iter()
        .map(|entry| LiveItem {
            live: is_live(&entry),
            entry,
        })
        .collect())
}

fn is_live(entry: &Entry) -> bool {
    match entry {
        Entry::Process {
            pid, start_time, ..
        } => is_same_running(*pid, *start_time),
        Entry::Netns { name } => netns_exists(name),
        Entry::Link { name } | Entry::Bridge { name } => link_exists(name),
        Entry::EtcNetns { path } => path.is_dir(),
        Entry::HostRule { table, chain, rule } => {
            let mut args: Vec<&str> = vec!["-w", "5", "-t", table, "-C", chain];
            args.extend(rule.iter().map(String::as_str));
            crate::cmd::succeeds("iptables", &args)
        }
        Entry::PortForward { owner_pid, .. } => {
            is_running(i32::try_from(*owner_pid).unwrap_or(i32::MAX))
        }
    }
}
