//! Resource figures of proxy processes, read from `/proc`: CPU time
//! (user + system, all threads, plus that of exited children the process
//! waited for) and resident memory, summed over a process and all its
//! descendants (so that a wrapper shell or forked workers count).

use std::collections::BTreeMap;
use std::time::Duration;

/// A process tree to measure, by the pid of its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// What the report calls it (e.g. `veil client sidecar`).
    pub label: String,
    pub pid: u32,
}

/// One reading of a process tree.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// CPU seconds (user + system, with waited-for children) used so far by the live processes.
    pub cpu_s: f64,
    /// Resident memory now, KiB.
    pub rss_kib: u64,
    /// Number of processes in the tree.
    pub processes: u32,
}

fn ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// `(ppid, utime + stime + cutime + cstime ticks)` from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses the fields after the command name (which may hold spaces and ')').
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); ppid is field 4, utime..cstime 14..=17.
    let ppid = fields.get(1)?.parse().ok()?;
    let mut ticks = 0u64;
    for i in 11..=14 {
        ticks += fields.get(i)?.parse::<u64>().ok()?;
    }
    Some((ppid, ticks))
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&text, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status`.
pub fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

/// `root` and every descendant alive now.
pub fn tree(root: u32) -> Vec<u32> {
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            if let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) {
                if let Some((ppid, _)) = stat(pid) {
                    parent.insert(pid, ppid);
                }
            }
        }
    }
    let mut out = vec![root];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        out.extend(parent.iter().filter(|(_, pp)| **pp == p).map(|(c, _)| *c));
        i += 1;
        if i > 10_000 {
            break;
        }
    }
    out.retain(|p| parent.contains_key(p));
    out
}

/// Reads the tree of `root` now.
pub fn usage(root: u32) -> Usage {
    let hz = ticks_per_second();
    let mut u = Usage::default();
    for pid in tree(root) {
        if let Some((_, ticks)) = stat(pid) {
            u.cpu_s += ticks as f64 / hz;
            u.rss_kib += rss_kib(pid).unwrap_or(0);
            u.processes += 1;
        }
    }
    u
}

/// Samples the resident memory of several trees every `every` while a
/// workload runs; keeps the peak of each.
///
/// The trees are resolved once, when the sampler is made: finding a tree's
/// descendants reads `/proc/<pid>/stat` of every process on the machine,
/// and doing that every [`SAMPLE_EVERY`] during a load took enough CPU on a
/// 2-core machine to triple the proxies' p99 at 1000 rps (the `direct` path,
/// with no proxy to sample, did not pay it). A sample reads only
/// `/proc/<pid>/status` of the processes found then.
#[derive(Debug)]
pub struct PeakRss {
    trees: Vec<Vec<u32>>,
    pub peak_kib: Vec<u64>,
}

impl PeakRss {
    /// Resolves the tree of each root in `roots` now.
    pub fn new(roots: &[u32]) -> Self {
        PeakRss { trees: roots.iter().map(|r| tree(*r)).collect(), peak_kib: vec![0; roots.len()] }
    }

    /// Takes one sample of each tree (in the order of the roots given to [`PeakRss::new`]).
    pub fn sample(&mut self) {
        for (peak, pids) in self.peak_kib.iter_mut().zip(&self.trees) {
            let rss: u64 = pids.iter().filter_map(|p| rss_kib(*p)).sum();
            *peak = (*peak).max(rss);
        }
    }
}

/// The sampling period of [`PeakRss`] during loads.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_command_name_holding_spaces_and_parens() {
        let line = "123 (a b) c) S 77 1 1 0 -1 4194560 1 0 0 0 250 50 7 3 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(line), Some((77, 310)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let me = std::process::id();
        let mut spin = 0u64;
        for i in 0..5_000_000u64 {
            spin = spin.wrapping_add(i * i);
        }
        assert!(spin > 0);
        let u = usage(me);
        assert!(u.processes >= 1);
        assert!(u.rss_kib > 100, "{u:?}");
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        assert!(parse_status_kib(&status, "VmHWM:").is_some());
        assert!(tree(me).contains(&me));
        assert!(tree(u32::MAX).is_empty());
    }

    #[test]
    fn peak_rss_counts_the_child_that_existed_when_made() {
        let me = std::process::id();
        let mut alone = PeakRss::new(&[me]);
        alone.sample();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("spawn sleep");
        let mut with_child = PeakRss::new(&[me, u32::MAX]);
        with_child.sample();
        let _ = child.kill();
        let _ = child.wait();
        assert!(alone.peak_kib[0] > 100, "{:?}", alone.peak_kib);
        assert!(with_child.peak_kib[0] > alone.peak_kib[0], "{:?} vs {:?}", with_child.peak_kib, alone.peak_kib);
        assert_eq!(with_child.peak_kib[1], 0, "no process, no memory");
        // The peak is kept: a later sample without the child does not lower it.
        let before = with_child.peak_kib[0];
        with_child.sample();
        assert!(with_child.peak_kib[0] >= before);
    }
}
