//! Receive-side bookkeeping that needs no sockets: splitting a byte stream
//! into lines, and classifying each sender's sequence numbers as in order,
//! late (an order violation) or duplicated.

use std::collections::HashMap;

/// One framed unit of input.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame<'a> {
    /// A complete line, without its `\n` (or `\r\n`).
    Line(&'a [u8]),
    /// A line longer than the limit; its bytes were discarded.
    TooLong,
}

/// Splits reads into lines. Reads may end anywhere, including in the middle
/// of a line, and may hold many lines; only the unfinished tail is copied.
#[derive(Debug)]
pub(crate) struct Framer {
    carry: Vec<u8>,
    /// Discarding the rest of an over-long line up to its `\n`.
    overflow: bool,
    max_line: usize,
}

impl Framer {
    pub(crate) fn new(max_line: usize) -> Framer {
        Framer {
            carry: Vec::new(),
            overflow: false,
            max_line,
        }
    }

    /// Feeds one read's bytes, calling `on` for each finished frame.
    pub(crate) fn feed(&mut self, data: &[u8], mut on: impl FnMut(Frame<'_>)) {
        let mut rest = data;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            let piece = &rest[..i];
            rest = &rest[i + 1..];
            if self.overflow {
                self.overflow = false;
                on(Frame::TooLong);
            } else if self.carry.is_empty() {
                if piece.len() > self.max_line {
                    on(Frame::TooLong);
                } else {
                    on(Frame::Line(strip_cr(piece)));
                }
            } else if self.carry.len() + piece.len() > self.max_line {
                self.carry.clear();
                on(Frame::TooLong);
            } else {
                self.carry.extend_from_slice(piece);
                on(Frame::Line(strip_cr(&self.carry)));
                self.carry.clear();
            }
        }
        if !rest.is_empty() && !self.overflow {
            if self.carry.len() + rest.len() > self.max_line {
                self.carry = Vec::new();
                self.overflow = true;
            } else {
                self.carry.extend_from_slice(rest);
            }
        }
    }

    /// Whether part of a line is buffered (or being discarded).
    #[cfg(test)]
    pub(crate) fn pending(&self) -> bool {
        self.overflow || !self.carry.is_empty()
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// How one message arrived, relative to earlier ones from the same sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// Its sequence number is above every earlier one (possibly skipping
    /// some, which may still come late or be lost).
    InOrder,
    /// First arrival, but after a higher sequence number: an order
    /// violation.
    Late,
    /// Seen before.
    Duplicate,
}

/// Most gap ranges remembered per sender; beyond this the oldest are
/// forgotten, and their late arrivals count as duplicates.
const MAX_GAPS: usize = 1024;

/// Per-sender sequence state for one receiver: the next expected number for
/// each sender (8 bytes each), plus the numbers skipped over, kept only for
/// senders that have gaps.
#[derive(Debug)]
pub(crate) struct OrderTracker {
    next: Vec<u64>,
    /// Half-open ranges `[lo, hi)` of skipped sequence numbers, by sender.
    gaps: HashMap<usize, Vec<(u64, u64)>>,
}

impl OrderTracker {
    pub(crate) fn new(senders: usize) -> OrderTracker {
        OrderTracker {
            next: vec![0; senders],
            gaps: HashMap::new(),
        }
    }

    /// Records that message `seq` from `sender` (which must be below the
    /// sender count) arrived.
    pub(crate) fn observe(&mut self, sender: usize, seq: u64) -> Arrival {
        let next = &mut self.next[sender];
        if seq == *next {
            *next += 1;
            return Arrival::InOrder;
        }
        if seq > *next {
            let gaps = self.gaps.entry(sender).or_default();
            if gaps.len() == MAX_GAPS {
                gaps.remove(0);
            }
            gaps.push((*next, seq));
            *next = seq + 1;
            return Arrival::InOrder;
        }
        let Some(gaps) = self.gaps.get_mut(&sender) else {
            return Arrival::Duplicate;
        };
        let Some(i) = gaps.iter().position(|&(lo, hi)| lo <= seq && seq < hi) else {
            return Arrival::Duplicate;
        };
        let (lo, hi) = gaps[i];
        match (seq == lo, seq + 1 == hi) {
            (true, true) => {
                gaps.remove(i);
            }
            (true, false) => gaps[i].0 = seq + 1,
            (false, true) => gaps[i].1 = seq,
            (false, false) => {
                gaps[i].1 = seq;
                gaps.insert(i + 1, (seq + 1, hi));
            }
        }
        if gaps.is_empty() {
            self.gaps.remove(&sender);
        }
        Arrival::Late
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(framer: &mut Framer, data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        framer.feed(data, |f| {
            out.push(match f {
                Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                Frame::TooLong => "<too long>".to_string(),
            })
        });
        out
    }

    #[test]
    fn many_lines_per_read_and_lines_split_across_reads() {
        let mut f = Framer::new(100);
        assert_eq!(frames(&mut f, b"a\nbb\r\nc"), ["a", "bb"]);
        assert!(f.pending());
        assert_eq!(frames(&mut f, b"cc"), Vec::<String>::new());
        assert_eq!(frames(&mut f, b"c\n\nd"), ["cccc", ""]);
        assert_eq!(frames(&mut f, b"\n"), ["d"]);
        assert!(!f.pending());
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let data = b"alice> #b:0:1:2:xx\n* notice\r\nbob> #b:1:0:5:yy\n";
        let whole = frames(&mut Framer::new(100), data);
        for cut in 0..=data.len() {
            let mut f = Framer::new(100);
            let mut got = frames(&mut f, &data[..cut]);
            got.extend(frames(&mut f, &data[cut..]));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn over_long_lines_are_reported_once_and_skipped() {
        let mut f = Framer::new(4);
        assert_eq!(frames(&mut f, b"12345\nok\n"), ["<too long>", "ok"]);
        assert_eq!(frames(&mut f, b"123"), Vec::<String>::new());
        assert_eq!(frames(&mut f, b"45"), Vec::<String>::new());
        assert_eq!(frames(&mut f, b"678"), Vec::<String>::new());
        assert_eq!(frames(&mut f, b"9\nfine\n"), ["<too long>", "fine"]);
        assert_eq!(frames(&mut f, b"12"), Vec::<String>::new());
        assert_eq!(frames(&mut f, b"345\n"), ["<too long>"]);
        assert_eq!(frames(&mut f, b"1234\n"), ["1234"]);
    }

    #[test]
    fn order_tracker_classifies_arrivals() {
        use Arrival::*;
        let mut t = OrderTracker::new(2);
        assert_eq!(t.observe(0, 0), InOrder);
        assert_eq!(t.observe(0, 1), InOrder);
        assert_eq!(t.observe(0, 1), Duplicate);
        assert_eq!(t.observe(0, 5), InOrder); // skips 2, 3, 4
        assert_eq!(t.observe(0, 3), Late);
        assert_eq!(t.observe(0, 3), Duplicate);
        assert_eq!(t.observe(0, 2), Late);
        assert_eq!(t.observe(0, 4), Late);
        assert!(t.gaps.is_empty());
        assert_eq!(t.observe(0, 4), Duplicate);
        assert_eq!(t.observe(0, 6), InOrder);
        // Senders are independent.
        assert_eq!(t.observe(1, 0), InOrder);
        assert_eq!(t.observe(1, 0), Duplicate);
    }

    #[test]
    fn gap_in_the_middle_splits() {
        let mut t = OrderTracker::new(1);
        t.observe(0, 10);
        assert_eq!(t.observe(0, 5), Arrival::Late);
        assert_eq!(t.gaps[&0], vec![(0, 5), (6, 10)]);
        assert_eq!(t.observe(0, 0), Arrival::Late);
        assert_eq!(t.observe(0, 9), Arrival::Late);
        assert_eq!(t.gaps[&0], vec![(1, 5), (6, 9)]);
    }
}
