//! Undoing a local mesh: [`teardown`] replays the journal backwards, [`sweep`] removes
//! leftovers by name when the journal is lost.

use std::fmt;
use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::cmd::{self, HINT_IP, HINT_IPTABLES};
use crate::journal::{Entry, Journal};
use crate::net::{link_exists, netns_exists, ETC_NETNS, RULE_COMMENT};
use crate::process::{kill_netns_pids, stop_group};
use crate::LocalError;

/// Grace between SIGTERM and SIGKILL used by [`teardown`], in seconds.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3);

/// What [`teardown`] did, entry by entry (in the order it undid them).
#[derive(Debug, Default)]
pub struct TeardownReport {
    /// Things that existed and were removed.
    pub removed: Vec<Entry>,
    /// Things that were already gone.
    pub already_gone: Vec<Entry>,
    /// Things that could not be removed, with why; they stay in the journal for a retry.
    pub failed: Vec<(Entry, String)>,
}

impl fmt::Display for TeardownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for entry in &self.removed {
            writeln!(f, "removed {entry}")?;
        }
        for (entry, why) in &self.failed {
            writeln!(f, "FAILED {entry}: {why}")?;
        }
        write!(
            f,
            "{} removed, {} already gone, {} failed",
            self.removed.len(),
            self.already_gone.len(),
            self.failed.len()
        )
    }
}

/// Undoes everything journaled in `state_dir`, newest first, with [`DEFAULT_GRACE`].
/// Things already gone are fine. Entries that fail stay in the journal; the rest of it is
/// removed. Errors only when the journal cannot be read or rewritten.
pub fn teardown(state_dir: &Path) -> Result<TeardownReport, LocalError> {
    teardown_with_grace(state_dir, DEFAULT_GRACE)
}

/// [`teardown`] with an explicit SIGTERM→SIGKILL grace for processes.
pub fn teardown_with_grace(
    state_dir: &Path,
    grace: Duration,
) -> Result<TeardownReport, LocalError> {
    let journal = Journal::open(state_dir)?;
    let entries = journal.entries()?;
    let mut report = TeardownReport::default();
    for entry in entries.iter().rev() {
        match undo(entry, grace) {
            Ok(true) => report.removed.push(entry.clone()),
            Ok(false) => report.already_gone.push(entry.clone()),
            Err(e) => {
                tracing::warn!(%entry, error = %e, "could not undo");
                report.failed.push((entry.clone(), e.to_string()));
            }
        }
    }
    let keep: Vec<Entry> = entries
        .iter()
        .filter(|e| report.failed.iter().any(|(f, _)| f == *e))
        .cloned()
        .collect();
    journal.rewrite(&keep)?;
    Ok(report)
}

/// Undoes one entry; `Ok(false)` when it was already gone.
fn undo(entry: &Entry, grace: Duration) -> Result<bool, LocalError> {
    match entry {
        Entry::Process {
            pid,
            pgid,
            start_time,
            ..
        } => stop_group(*pid, *pgid, *start_time, grace),
        Entry::PortForward { owner_pid, .. } => undo_forward(*owner_pid),
        Entry::EtcNetns { path } => match fs::remove_dir_all(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(LocalError::io("remove", path, e)),
        },
        Entry::Link { name } | Entry::Bridge { name } => delete_link(name),
        Entry::Netns { name } => delete_netns(name, grace),
        Entry::HostRule { table, chain, rule } => delete_host_rule(table, chain, rule),
    }
}

/// A relay ends with its owner: ours is ended by dropping its handle; another live owner
/// must be stopped first.
fn undo_forward(owner_pid: u32) -> Result<bool, LocalError> {
    if owner_pid == std::process::id() {
        return Ok(true);
    }
    let pid = i32::try_from(owner_pid).unwrap_or(i32::MAX);
    if crate::process::is_running(pid) {
        return Err(LocalError::Owned {
            what: "port forward".into(),
            pid: owner_pid,
        });
    }
    Ok(false)
}

fn delete_link(name: &str) -> Result<bool, LocalError> {
    if !link_exists(name) {
        return Ok(false);
    }
    match cmd::run("ip", &["link", "del", name], HINT_IP) {
        Ok(_) => Ok(true),
        Err(e) if cmd::is_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn delete_netns(name: &str, grace: Duration) -> Result<bool, LocalError> {
    if !netns_exists(name) {
        return Ok(false);
    }
    kill_netns_pids(name, grace)?;
    match cmd::run("ip", &["netns", "del", name], HINT_IP) {
        Ok(_) => Ok(true),
        Err(e) if cmd::is_gone(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

fn delete_host_rule(table: &str, chain: &str, rule: &[String]) -> Result<bool, LocalError> {
    let mut check: Vec<&str> = vec!["-w", "5", "-t", table, "-C", chain];
    check.extend(rule.iter().map(String::as_str));
    if !cmd::succeeds("iptables", &check) {
        return Ok(false);
    }
    let mut delete: Vec<&str> = vec!["-w", "5", "-t", table, "-D", chain];
    delete.extend(rule.iter().map(String::as_str));
    cmd::run("iptables", &delete, HINT_IPTABLES).map(|_| true)
}

/// Removes leftovers without a journal: every netns named `<prefix>-*` (killing what runs
/// in it, and its `/etc/netns` directory), every host link whose name starts with
/// `prefix`, and every host `FORWARD` rule tagged `veil` whose `-i` starts with `prefix`.
/// Returns a line per removed thing. `prefix` must be at least 2 bytes of `[A-Za-z0-9._-]`;
/// veth names keep only the first 10 bytes of their netns name, so a longer prefix misses them.
pub fn sweep(prefix: &str) -> Result<Vec<String>, LocalError> {
    crate::net::check_netns_name(prefix)?;
    if prefix.len() < 2 {
        return Err(LocalError::Name {
            name: prefix.into(),
            reason: "a sweep prefix needs at least 2 bytes",
        });
    }
    let mut removed = Vec::new();
    let netns_list = cmd::run("ip", &["netns", "list"], HINT_IP)?;
    let ns_prefix = format!("{prefix}-");
    for name in netns_list
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if name.starts_with(&ns_prefix) && delete_netns(name, DEFAULT_GRACE)? {
            removed.push(format!("netns {name}"));
        }
        let dir = Path::new(ETC_NETNS).join(name);
        if name.starts_with(&ns_prefix) && dir.is_dir() {
            fs::remove_dir_all(&dir).map_err(|e| LocalError::io("remove", &dir, e))?;
            removed.push(format!("dir {}", dir.display()));
        }
    }
    let links = cmd::run("ip", &["-o", "link", "show"], HINT_IP)?;
    for name in links.lines().filter_map(link_name_of) {
        if name.starts_with(prefix) && delete_link(name)? {
            removed.push(format!("link {name}"));
        }
    }
    let rules = cmd::run(
        "iptables",
        &["-w", "5", "-t", "filter", "-S", "FORWARD"],
        HINT_IPTABLES,
    )?;
    for line in rules.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let tagged = words.windows(2).any(|w| w == ["--comment", RULE_COMMENT]);
        let ours = words
            .windows(2)
            .any(|w| w.first() == Some(&"-i") && w.get(1).is_some_and(|i| i.starts_with(prefix)));
        if let (true, true, Some((&"-A", rest))) = (tagged, ours, words.split_first()) {
            let mut args = vec!["-w", "5", "-t", "filter", "-D"];
            args.extend_from_slice(rest);
            cmd::run("iptables", &args, HINT_IPTABLES)?;
            removed.push(format!("iptables {line}"));
        }
    }
    Ok(removed)
}

/// The interface name in one line of `ip -o link show` (`3: name@peer: <…>`).
fn link_name_of(line: &str) -> Option<&str> {
    let after_index = line.split_once(": ")?.1;
    let name = after_index.split([':', ' ']).next()?;
    Some(name.split('@').next().unwrap_or(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_parsed_from_ip_output() {
        assert_eq!(
            link_name_of("5: vtl12-ab12h@if2: <BROADCAST> mtu 1500"),
            Some("vtl12-ab12h")
        );
        assert_eq!(link_name_of("1: lo: <LOOPBACK,UP> mtu 65536"), Some("lo"));
    }

    #[test]
    fn sweep_refuses_short_or_odd_prefixes() {
        assert!(sweep("v").is_err());
        assert!(sweep("a b").is_err());
    }
}
