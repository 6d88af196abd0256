//! Giving back the pages of the proxy's own binary that only start-up used.
//!
//! Most of an idle sidecar's resident memory is pages of its binary: code
//! and read-only data that ran once, while it fetched its certificate, read
//! its first config and built its TLS settings. They are clean pages of the
//! executable file. `madvise(MADV_DONTNEED)` on those mappings removes them
//! from this process's page tables; the page cache keeps them (shared with
//! every other sidecar started from the same file) and the next touch maps
//! the page again, with the same bytes. What stays resident afterwards is
//! what the proxy touches while it serves.
//!
//! Only mappings that cannot have changed are released: mappings of the
//! executable (matched by device and inode of `/proc/self/exe`), not
//! writable, holding no private copy of a page (`Anonymous: 0 kB`
//! in `/proc/self/smaps`; `Private_Dirty` also counts file pages not yet
//! written back, which are the file's content). Relocated read-only data
//! (RELRO) holds private copies of its pages; dropping them would lose the
//! relocations, so those mappings are skipped. Linux refuses writes to a running executable
//! (`ETXTBSY`), so the file under a released page cannot have changed.

use std::io;
use std::os::unix::fs::MetadataExt;
use thiserror::Error;

/// Why the binary's pages could not be released.
#[derive(Debug, Error)]
pub enum PagesError {
    /// `/proc/self/exe` or `/proc/self/smaps` could not be read.
    #[error("cannot read {path} ({source}); is /proc mounted? The proxy keeps its start-up pages resident (set VEIL_RELEASE_PAGES=0 to skip this step)")]
    Proc {
        /// The file under `/proc`.
        path: &'static str,
        /// The read error.
        source: io::Error,
    },
    /// `madvise` refused a range.
    #[error("madvise(MADV_DONTNEED) on {start:#x}-{end:#x} failed ({source}); the proxy keeps those pages resident (set VEIL_RELEASE_PAGES=0 to skip this step)")]
    Madvise {
        /// First byte of the mapping.
        start: usize,
        /// One past its last byte.
        end: usize,
        /// The kernel's error.
        source: io::Error,
    },
}

/// A mapping of `/proc/self/smaps` this module may release.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    /// Resident size before release, in KiB.
    rss_kib: u64,
}

/// Releases the executable's clean read-only pages (module doc) and returns
/// how many KiB were resident in them before.
///
/// Errors: [`PagesError::Proc`] when `/proc` cannot be read,
/// [`PagesError::Madvise`] when the kernel refuses (ranges before it were
/// released).
pub fn release_binary_pages() -> Result<u64, PagesError> {
    let exe = std::fs::metadata("/proc/self/exe").map_err(|source| PagesError::Proc { path: "/proc/self/exe", source })?;
    let smaps = std::fs::read_to_string("/proc/self/smaps").map_err(|source| PagesError::Proc { path: "/proc/self/smaps", source })?;
    let mut released = 0;
    for mapping in releasable(&smaps, exe.dev(), exe.ino()) {
        // SAFETY: `mapping` is a whole mapping of the executable file that is
        // neither writable nor holds private copies of pages (checked by `releasable`
        // from smaps), so every page in it is the file's own content. Dropping
        // it with MADV_DONTNEED only removes page-table entries: the next
        // access faults the same bytes back from the page cache (the file
        // cannot be written while it runs, ETXTBSY). No memory the program
        // reads changes, and no pointer is invalidated; the call takes no
        // pointer into Rust-owned memory beyond the address range itself.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::madvise(mapping.start as *mut libc::c_void, mapping.end - mapping.start, libc::MADV_DONTNEED) };
        if rc != 0 {
            return Err(PagesError::Madvise { start: mapping.start, end: mapping.end, source: io::Error::last_os_error() });
        }
        released += mapping.rss_kib;
    }
    Ok(released)
}

/// The mappings of `smaps` backed by file (`dev`, `ino`), not writable, with
/// no private copy of a page.
fn releasable(smaps: &str, dev: u64, ino: u64) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    for line in smaps.lines() {
        if let Some(header) = parse_header(line) {
            if let Some((mapping, true)) = current.take() {
                out.push(mapping);
            }
            current = header.filter(|h| h.dev == dev && h.ino == ino && !h.writable).map(|h| {
                (Mapping { start: h.start, end: h.end, rss_kib: 0 }, true)
            });
            continue;
        }
        let Some((mapping, clean)) = current.as_mut() else { continue };
        let mut fields = line.split_whitespace();
        let (Some(key), Some(value)) = (fields.next(), fields.next()) else { continue };
        let kib = value.parse::<u64>().unwrap_or(u64::MAX);
        match key {
            "Rss:" => mapping.rss_kib = kib,
            "Anonymous:" if kib != 0 => *clean = false,
            _ => {}
        }
    }
    if let Some((mapping, true)) = current {
        out.push(mapping);
    }
    out
}

/// A mapping's header line: `start-end perms offset major:minor inode path`.
struct Header {
    start: usize,
    end: usize,
    writable: bool,
    dev: u64,
    ino: u64,
}

/// `None` when `line` is not a header (a `Key: value` line); `Some(None)`
/// when it is one this module cannot read, which is never released.
fn parse_header(line: &str) -> Option<Option<Header>> {
    let mut fields = line.split_whitespace();
    let range = fields.next()?;
    let (start, end) = range.split_once('-')?;
    let parsed = (|| {
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        let writable = fields.next()?.as_bytes().get(1) == Some(&b'w');
        let _offset = fields.next()?;
        let (major, minor) = fields.next()?.split_once(':')?;
        let dev = libc::makedev(u32::from_str_radix(major, 16).ok()?, u32::from_str_radix(minor, 16).ok()?);
        let ino = fields.next()?.parse().ok()?;
        Some(Header { start, end, writable, dev, ino })
    })();
    Some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0100000 r--p 00000000 fd:01 4242 /usr/bin/veil-sidecar
Rss:                 600 kB
Anonymous:             0 kB
Private_Dirty:         0 kB
55d0a0100000-55d0a0400000 r-xp 00100000 fd:01 4242 /usr/bin/veil-sidecar
Rss:                2900 kB
Anonymous:             0 kB
55d0a0400000-55d0a0480000 r--p 00400000 fd:01 4242 /usr/bin/veil-sidecar
Rss:                 512 kB
Anonymous:           512 kB
55d0a0480000-55d0a0490000 rw-p 00480000 fd:01 4242 /usr/bin/veil-sidecar
Rss:                  64 kB
Anonymous:            64 kB
7f0000000000-7f0000100000 r-xp 00000000 fd:01 99 /usr/lib/other.so
Rss:                 100 kB
Anonymous:             0 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
";

    #[test]
    fn only_clean_read_only_mappings_of_the_executable() {
        let dev = libc::makedev(0xfd, 0x01);
        let got = releasable(SMAPS, dev, 4242);
        assert_eq!(
            got,
            vec![
                Mapping { start: 0x55d0a0000000, end: 0x55d0a0100000, rss_kib: 600 },
                Mapping { start: 0x55d0a0100000, end: 0x55d0a0400000, rss_kib: 2900 },
            ]
        );
        assert!(releasable(SMAPS, dev, 1).is_empty(), "another inode releases nothing");
    }

    #[test]
    fn unreadable_header_is_never_released() {
        let smaps = "zz-55d0a0100000 r-xp 00100000 fd:01 4242 /x\nRss: 4 kB\n";
        assert!(releasable(smaps, libc::makedev(0xfd, 0x01), 4242).is_empty());
    }

    /// Releases this test binary's pages for real and checks it still runs
    /// code and reads constants from them afterwards.
    #[test]
    fn release_keeps_the_program_working() {
        let before = release_binary_pages().expect("release");
        assert!(before > 0, "a running test binary has resident code");
        let again = release_binary_pages().expect("second release");
        assert!(again < before, "only pages touched since the first release are resident ({again} KiB, was {before} KiB)");
        let text: &'static str = "constant read after release";
        assert_eq!(text.len(), 27);
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
