//! One direction of a TCP connection, reassembled in sequence order:
//! retransmitted overlaps are dropped, out-of-order segments wait for the
//! gap to fill, all delivered bytes are counted, the first bytes are kept for
//! classification and an optional needle is searched across segment
//! boundaries with a sliding overlap of `needle.len() - 1` bytes.

use std::collections::BTreeMap;

/// Bytes kept from the start of each direction for classification.
pub(crate) const HEAD_LIMIT: usize = 64 * 1024;
/// Out-of-order bytes held while waiting for a gap to fill; beyond this the
/// gap is given up as lost (bytes).
const PENDING_LIMIT: usize = 4 * 1024 * 1024;

/// Reassembly state of one direction.
#[derive(Debug, Default)]
pub(crate) struct ByteStream {
    /// Sequence number of the next expected byte, once known.
    next_seq: Option<u32>,
    /// Offset (from the first byte) of the next expected byte.
    next: i64,
    /// Out-of-order segments by offset.
    pending: BTreeMap<i64, Vec<u8>>,
    pending_bytes: usize,
    /// The first contiguous bytes captured, at most [`HEAD_LIMIT`]; they end
    /// at the first gap given up as lost.
    pub head: Vec<u8>,
    /// Whether no more bytes go into `head` (a gap was given up after it
    /// started).
    head_closed: bool,
    /// Whether the SYN fixed where the stream's data starts.
    syn_seen: bool,
    /// Whether `head` begins at the stream's first byte; `None` until the
    /// first byte is delivered.
    head_at_start: Option<bool>,
    /// Bytes delivered in order (retransmissions counted once).
    pub total: u64,
    /// Bytes never seen (gaps given up).
    pub lost: u64,
    needle: Vec<u8>,
    /// Last `needle.len() - 1` delivered bytes.
    tail: Vec<u8>,
    /// Whether the needle occurred in the reassembled bytes.
    pub found: bool,
}

/// Whether `needle` (non-empty) occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl ByteStream {
    /// A stream that also searches for `needle` (an empty needle searches
    /// nothing).
    pub fn with_needle(needle: &[u8]) -> ByteStream {
        ByteStream {
            needle: needle.to_vec(),
            ..ByteStream::default()
        }
    }

    /// Whether any payload byte has been seen.
    pub fn has_data(&self) -> bool {
        self.total > 0 || !self.pending.is_empty()
    }

    /// Records the SYN's sequence number: data starts at `seq + 1`. Ignored
    /// once data has been seen.
    pub fn syn(&mut self, seq: u32) {
        if !self.has_data() {
            self.next_seq = Some(seq.wrapping_add(1));
            self.syn_seen = true;
        }
    }

    /// Whether [`ByteStream::head`] is known to begin at the stream's first
    /// byte: the SYN was captured and no bytes before the head were lost.
    /// False for a connection the capture joined mid-stream.
    pub fn head_at_start(&self) -> bool {
        self.head_at_start.unwrap_or(self.syn_seen)
    }

    /// Adds a segment's payload starting at sequence number `seq`.
    pub fn push(&mut self, seq: u32, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let next_seq = *self.next_seq.get_or_insert(seq);
        // Signed distance from the next expected byte (handles wraparound).
        let start = self.next + i64::from(seq.wrapping_sub(next_seq) as i32);
        let len = i64::try_from(data.len()).unwrap_or(i64::MAX);
        let end = start.saturating_add(len);
        if end <= self.next {
            return;
        }
        if start <= self.next {
            let skip = usize::try_from(self.next - start).unwrap_or(usize::MAX);
            if let Some(fresh) = data.get(skip..) {
                self.deliver(fresh);
            }
            self.drain();
            return;
        }
        let keep_longer = self
            .pending
            .get(&start)
            .is_some_and(|old| old.len() >= data.len());
        if !keep_longer {
            if let Some(old) = self.pending.insert(start, data.to_vec()) {
                self.pending_bytes -= old.len();
            }
            self.pending_bytes += data.len();
        }
        if self.pending_bytes > PENDING_LIMIT {
            self.skip_gap();
        }
    }

    /// Flushes segments still waiting behind gaps that were never filled.
    pub fn finish(&mut self) {
        let mut rounds = self.pending.len();
        while !self.pending.is_empty() && rounds > 0 {
            self.skip_gap();
            rounds -= 1;
        }
    }

    /// Gives up the gap before the first pending segment and delivers it.
    fn skip_gap(&mut self) {
        let Some(&first) = self.pending.keys().next() else {
            return;
        };
        if first > self.next {
            let gap = first - self.next;
            self.lost += u64::try_from(gap).unwrap_or(0);
            if !self.head.is_empty() {
                self.head_closed = true;
            }
            self.advance(gap);
            self.tail.clear();
        }
        self.drain();
    }

    /// Delivers pending segments that now start at or before `next`.
    fn drain(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            let start = *entry.key();
            if start > self.next {
                break;
            }
            let data = entry.remove();
            self.pending_bytes -= data.len();
            let skip = usize::try_from(self.next - start).unwrap_or(usize::MAX);
            if let Some(fresh) = data.get(skip..) {
                if !fresh.is_empty() {
                    self.deliver(fresh);
                }
            }
        }
    }

    fn advance(&mut self, by: i64) {
        self.next += by;
        if let Some(seq) = self.next_seq.as_mut() {
            // Sequence numbers are modulo 2^32; truncation is intended.
            *seq = seq.wrapping_add(by as u32);
        }
    }

    fn deliver(&mut self, bytes: &[u8]) {
        if self.head_at_start.is_none() {
            self.head_at_start = Some(self.syn_seen && self.next == 0);
        }
        self.total += bytes.len() as u64;
        self.advance(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
        if !self.head_closed && self.head.len() < HEAD_LIMIT {
            let room = HEAD_LIMIT - self.head.len();
            self.head
                .extend_from_slice(bytes.get(..room).unwrap_or(bytes));
        }
        if self.needle.is_empty() {
            return;
        }
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(bytes);
        if contains(&window, &self.needle) {
            self.found = true;
        }
        let keep = self.needle.len() - 1;
        let from = window.len().saturating_sub(keep);
        self.tail = window.split_off(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reorders_drops_overlaps_and_finds_needle_across_boundaries() {
        let mut s = ByteStream::with_needle(b"SECRET");
        s.syn(u32::MAX - 3); // data starts at u32::MAX - 2, wraps after 3 bytes
        let base = u32::MAX - 2;
        s.push(base.wrapping_add(7), b"CRET!");
        s.push(base, b"abcde");
        s.push(base.wrapping_add(2), b"cdeSE"); // overlaps, brings new "SE"
        s.push(base, b"abc"); // pure retransmission
        s.finish();
        assert_eq!(s.head, b"abcdeSECRET!");
        assert!(s.head_at_start());
        assert_eq!(s.total, 12);
        assert_eq!(s.lost, 0);
        assert!(s.found);
    }

    #[test]
    fn gap_is_skipped_and_breaks_the_match() {
        let mut s = ByteStream::with_needle(b"SECRET");
        s.push(100, b"SEC");
        s.push(110, b"RET");
        s.finish();
        assert_eq!(s.total, 6);
        assert_eq!(s.lost, 7);
        assert!(!s.found);
        assert_eq!(s.head, b"SEC", "the head ends at the gap");
        assert!(!s.head_at_start(), "no SYN: joined mid-stream");
    }

    #[test]
    fn lost_first_segment_after_syn_means_mid_stream() {
        let mut s = ByteStream::default();
        s.syn(99);
        s.push(110, b"later");
        s.finish();
        assert_eq!(s.lost, 10);
        assert_eq!(s.head, b"later");
        assert!(!s.head_at_start());
    }
}
