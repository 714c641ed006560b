//! The token each benchmark message carries, and how to find it again in
//! whatever line the server relays.
//!
//! A message is one line: the token `#b:SENDER:SEQ:SENT_NS:` followed by
//! filler up to the configured size. `SENDER` is the sending client's index,
//! `SEQ` counts that sender's messages from 0, and `SENT_NS` is the send time
//! in nanoseconds since the benchmark's own monotonic origin (one
//! [`std::time::Instant`] for the whole process), so latency is simply the
//! receive time minus `SENT_NS`.
//!
//! Receivers look for the token anywhere in a line, because relays decorate
//! lines differently: rchat sends `guest3> #b:...`, `ncat --chat` sends
//! `<user3> #b:...`.

use std::io::Write;

/// Marks the start of a token.
pub const MARKER: &[u8] = b"#b:";

/// Marks a roll-call probe (`#p:ROUND:`), sent before the start to servers
/// that send no greeting, to learn when every client is really in the room.
pub const PROBE_MARKER: &[u8] = b"#p:";

/// Longest token [`Token::write_line`] can produce: the marker, three
/// numbers of at most 20 digits and three colons.
pub const MAX_TOKEN_LEN: usize = MARKER.len() + 3 * 20 + 3;

/// Longest accepted field, in digits (`u64::MAX` has 20).
const MAX_DIGITS: usize = 20;

/// Bytes used to pad a message to its size. Neither `#` nor `:` appears, so
/// filler can never be mistaken for a token.
const FILLER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The identity and send time of one benchmark message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Index of the sending client.
    pub sender: u64,
    /// The sender's message number, from 0.
    pub seq: u64,
    /// When it was sent (or, in open-loop mode, scheduled), in nanoseconds
    /// since the benchmark's origin.
    pub sent_ns: u64,
}

/// What [`parse`] found in one received line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The first well-formed token in the line.
    Token(Token),
    /// The line has no token marker at all (a server notice, say).
    NoToken,
    /// The line has the marker, but no well-formed token follows it.
    Malformed,
}

impl Token {
    /// Appends this token, padded with filler to `size` bytes, and a `\n`.
    /// If the token alone is longer than `size`, the line is just the token.
    pub fn write_line(&self, out: &mut Vec<u8>, size: usize) {
        let begin = out.len();
        // Writing to a Vec cannot fail.
        let _ = write!(out, "#b:{}:{}:{}:", self.sender, self.seq, self.sent_ns);
        let used = out.len() - begin;
        if size > used {
            let pad = size - used;
            let mut left = pad;
            while left > 0 {
                let n = left.min(FILLER.len());
                out.extend_from_slice(&FILLER[..n]);
                left -= n;
            }
        }
        out.push(b'\n');
    }

    /// The line [`Token::write_line`] writes, as a `String` (for tests and
    /// tools).
    pub fn line(&self, size: usize) -> String {
        let mut out = Vec::with_capacity(size + 1);
        self.write_line(&mut out, size);
        String::from_utf8(out).expect("tokens and filler are ASCII")
    }
}

/// Finds the first well-formed token anywhere in `line` (which should not
/// include its line ending, although a trailing `\r` or `\n` does no harm).
pub fn parse(line: &[u8]) -> Parsed {
    let mut from = 0;
    let mut saw_marker = false;
    while let Some(at) = find(&line[from..], MARKER) {
        saw_marker = true;
        let body = &line[from + at + MARKER.len()..];
        if let Some(token) = parse_body(body) {
            return Parsed::Token(token);
        }
        from += at + 1;
    }
    if saw_marker {
        Parsed::Malformed
    } else {
        Parsed::NoToken
    }
}

/// Calls `on` for every well-formed token in `line`, in order, and returns
/// what [`parse`] would: the first token, or why there is none. Relays that
/// pass on byte chunks rather than lines (`ncat --chat`) can splice one
/// sender's chunk into the middle of another sender's line, so one received
/// line may carry several tokens.
pub fn parse_each(line: &[u8], mut on: impl FnMut(Token)) -> Parsed {
    let mut from = 0;
    let mut saw_marker = false;
    let mut first = None;
    while let Some(at) = find(&line[from..], MARKER) {
        saw_marker = true;
        let body = &line[from + at + MARKER.len()..];
        match parse_body(body) {
            Some(token) => {
                first.get_or_insert(token);
                on(token);
                // Skip the token's own fields; filler holds no marker.
                from += at + MARKER.len();
            }
            None => from += at + 1,
        }
    }
    match first {
        Some(t) => Parsed::Token(t),
        None if saw_marker => Parsed::Malformed,
        None => Parsed::NoToken,
    }
}

/// The round of the first roll-call probe in `line`, if any.
pub fn probe_round(line: &[u8]) -> Option<u64> {
    let at = find(line, PROBE_MARKER)?;
    number(&line[at + PROBE_MARKER.len()..]).map(|(round, _)| round)
}

/// Appends the roll-call probe line for `round`.
pub fn write_probe(out: &mut Vec<u8>, round: u64) {
    let _ = writeln!(out, "#p:{round}:");
}

/// Parses `SENDER:SEQ:SENT_NS:` at the start of `body`.
fn parse_body(body: &[u8]) -> Option<Token> {
    let (sender, rest) = number(body)?;
    let (seq, rest) = number(rest)?;
    let (sent_ns, _) = number(rest)?;
    Some(Token {
        sender,
        seq,
        sent_ns,
    })
}

/// Parses decimal digits ended by `:`, returning the value and what follows
/// the colon.
fn number(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > MAX_DIGITS || s.get(digits) != Some(&b':') {
        return None;
    }
    let mut value: u64 = 0;
    for &d in &s[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some((value, &s[digits + 1..]))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while let Some(i) = haystack[from..].iter().position(|&b| b == first) {
        let at = from + i;
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_exact_size_and_round_trips() {
        let t = Token {
            sender: 7,
            seq: 123,
            sent_ns: 987_654_321,
        };
        let token_len = "#b:7:123:987654321:".len();
        for size in [1, 10, 18, 19, 20, 64, 1000] {
            let line = t.line(size);
            let body = line.strip_suffix('\n').unwrap();
            assert_eq!(body.len(), size.max(token_len), "size {size}");
            assert!(!body.contains('\n'));
            assert_eq!(parse(body.as_bytes()), Parsed::Token(t));
        }
    }

    #[test]
    fn extreme_values_round_trip() {
        let t = Token {
            sender: u64::MAX,
            seq: u64::MAX,
            sent_ns: u64::MAX,
        };
        let line = t.line(0);
        assert_eq!(line.len(), MAX_TOKEN_LEN + 1);
        assert_eq!(parse(line.as_bytes()), Parsed::Token(t));
    }

    #[test]
    fn overflow_is_malformed() {
        assert_eq!(parse(b"#b:18446744073709551616:1:1:"), Parsed::Malformed);
        assert_eq!(parse(b"#b:000000000000000000001:1:1:"), Parsed::Malformed);
    }

    #[test]
    fn finds_every_token_of_a_spliced_line() {
        let a = Token {
            sender: 0,
            seq: 5,
            sent_ns: 10,
        };
        let b = Token {
            sender: 1,
            seq: 7,
            sent_ns: 20,
        };
        let line = b"<user4> #b:0:5:10:abc<user5> #b:1:7:20:xyz";
        let mut got = Vec::new();
        assert_eq!(parse_each(line, |t| got.push(t)), Parsed::Token(a));
        assert_eq!(got, [a, b]);
        // A token cut by a splice is lost, the other one still counts.
        let mut got = Vec::new();
        let line = b"<user4> #b:0:5:1<user5> #b:1:7:20:xyz";
        assert_eq!(parse_each(line, |t| got.push(t)), Parsed::Token(b));
        assert_eq!(got, [b]);
    }

    #[test]
    fn probes_round_trip() {
        let mut out = Vec::new();
        write_probe(&mut out, 42);
        assert_eq!(out, b"#p:42:\n");
        assert_eq!(probe_round(b"<user3> #p:42:"), Some(42));
        assert_eq!(probe_round(b"#p:x:"), None);
        assert_eq!(parse(b"#p:42:"), Parsed::NoToken);
    }

    #[test]
    fn skips_broken_marker_before_good_one() {
        let t = Token {
            sender: 1,
            seq: 2,
            sent_ns: 3,
        };
        assert_eq!(parse(b"x #b:1:2 #b:#b:1:2:3:pad"), Parsed::Token(t));
        assert_eq!(parse(b"##b:1:2:3:"), Parsed::Token(t));
    }
}
