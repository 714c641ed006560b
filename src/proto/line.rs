//! Line framing: splits a byte stream into lines ending in LF or CRLF, each at
//! most `max_line` bytes long (terminator excluded).
//!
//! Unlike `tokio_util::codec::LinesCodec`, an oversize line is not a stream
//! error: the decoder yields [`Frame::TooLong`] once, silently discards the
//! rest of that line up to its newline, and then carries on. A chat client that
//! pastes too much should get an error line, not lose its connection. Bytes are
//! returned raw; turning them into text (and what to do with invalid UTF-8) is
//! the caller's decision.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// One framed unit read from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its `\n` or `\r\n`.
    Line(Bytes),
    /// A line exceeded the limit; the decoder is discarding it up to the next
    /// newline. Yielded once per oversize line.
    TooLong,
}

/// Decoder for newline-delimited frames with a hard length bound, so a peer
/// that never sends a newline can make the server buffer at most `max_line`
/// (+2) bytes.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_line: usize,
    /// Bytes at the front of the buffer already scanned for a newline.
    scanned: usize,
    /// True while skipping the tail of an oversize line.
    discarding: bool,
}

impl LineCodec {
    pub fn new(max_line: usize) -> Self {
        LineCodec {
            max_line,
            scanned: 0,
            discarding: false,
        }
    }

    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Changes the bound for lines not yet started, once the protocol (and
    /// with it the right limit) is known.
    pub fn set_max_line(&mut self, max_line: usize) {
        self.max_line = max_line;
        // Rescan any partial line under the new bound.
        self.scanned = 0;
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        loop {
            if self.discarding {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            // A valid line is at most max_line bytes plus "\r\n".
            let limit = buf.len().min(self.max_line + 2);
            let found = buf[self.scanned..limit].iter().position(|&b| b == b'\n');
            match found {
                Some(offset) => {
                    let end = self.scanned + offset;
                    self.scanned = 0;
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.max_line {
                        return Ok(Some(Frame::TooLong));
                    }
                    return Ok(Some(Frame::Line(line.freeze())));
                }
                None if buf.len() > self.max_line + 1 => {
                    // No newline within max_line + "\r": whatever follows, this
                    // line is too long. Drop its head; skip the rest later.
                    self.scanned = 0;
                    self.discarding = true;
                    buf.advance(limit);
                    return Ok(Some(Frame::TooLong));
                }
                None => {
                    self.scanned = limit;
                    return Ok(None);
                }
            }
        }
    }

    /// At end of stream an unterminated final line is still delivered, as a
    /// shell user piping `printf 'hi'` into `nc` would expect.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Self::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.discarding || buf.is_empty() {
            buf.clear();
            return Ok(None);
        }
        self.scanned = 0;
        let mut line = buf.split();
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.max_line {
            return Ok(Some(Frame::TooLong));
        }
        Ok(Some(Frame::Line(line.freeze())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut LineCodec, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn splits_lf_and_crlf() {
        let mut c = LineCodec::new(16);
        let frames = decode_all(&mut c, &[b"a\nbb\r\n", b"c", b"c\n"]);
        assert_eq!(frames, vec![line("a"), line("bb"), line("cc")]);
    }

    #[test]
    fn exact_limit_is_accepted_with_crlf() {
        let mut c = LineCodec::new(4);
        let frames = decode_all(&mut c, &[b"abcd\r", b"\nabcd\n"]);
        assert_eq!(frames, vec![line("abcd"), line("abcd")]);
    }

    #[test]
    fn oversize_line_reports_once_and_recovers() {
        let mut c = LineCodec::new(4);
        let frames = decode_all(&mut c, &[b"abcdefgh", b"ijkl", b"mn\nok\n"]);
        assert_eq!(frames, vec![Frame::TooLong, line("ok")]);
    }

    #[test]
    fn oversize_line_within_one_chunk() {
        let mut c = LineCodec::new(4);
        let frames = decode_all(&mut c, &[b"abcde\nok\n"]);
        assert_eq!(frames, vec![Frame::TooLong, line("ok")]);
    }

    #[test]
    fn oversize_line_followed_by_lines_in_same_chunk() {
        let mut c = LineCodec::new(4);
        let frames = decode_all(
            &mut c,
            &[b"abcdefghijkl
ok
fine
"],
        );
        assert_eq!(frames, vec![Frame::TooLong, line("ok"), line("fine")]);
    }

    #[test]
    fn unterminated_tail_is_delivered_at_eof() {
        let mut c = LineCodec::new(8);
        assert_eq!(
            decode_all(&mut c, &[b"one\ntwo"]),
            vec![line("one"), line("two")]
        );
    }

    proptest! {
        /// However the stream is chunked, framing gives the same answer, and
        /// the buffer never holds more than the bound.
        #[test]
        fn chunking_does_not_change_frames(data in proptest::collection::vec(any::<u8>(), 0..400),
                                           cuts in proptest::collection::vec(0usize..400, 0..8)) {
            let mut whole = LineCodec::new(16);
            let expected = decode_all(&mut whole, &[&data]);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= data.len()).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for c in cuts { pieces.push(&data[last..c]); last = c; }
            pieces.push(&data[last..]);
            let mut chunked = LineCodec::new(16);
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for p in &pieces {
                buf.extend_from_slice(p);
                while let Some(f) = chunked.decode(&mut buf).unwrap() { got.push(f); }
                prop_assert!(buf.len() <= 18);
            }
            while let Some(f) = chunked.decode_eof(&mut buf).unwrap() { got.push(f); }
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn lines_never_exceed_limit(data in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut c = LineCodec::new(10);
            for f in decode_all(&mut c, &[&data]) {
                if let Frame::Line(l) = f {
                    prop_assert!(l.len() <= 10);
                    prop_assert!(!l.contains(&b'\n'));
                }
            }
        }
    }
}
