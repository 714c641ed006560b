//! Neutralising text before it reaches another person's terminal.
//!
//! Anything a peer sends is shown to other people, often in a raw terminal
//! (`nc`, `telnet`). Escape sequences there can move the cursor, rewrite the
//! screen, retitle the window or worse, so every character that a terminal
//! interprets is removed here: C0 controls except TAB, DEL, C1 controls, whole
//! ESC sequences (CSI, OSC, DCS and two-byte forms), and the Unicode bidi
//! overrides that can make displayed text read differently from what was sent.

use std::borrow::Cow;

/// True for characters that must never be forwarded.
fn is_forbidden(c: char) -> bool {
    match c {
        '\t' => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        // Bidi embeddings, overrides and isolates (Trojan Source).
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        // Line and paragraph separators would break the one-line framing of
        // whatever displays the text.
        '\u{2028}' | '\u{2029}' => true,
        _ => false,
    }
}

/// Returns `text` with every escape sequence and control character removed.
/// Borrows when there is nothing to remove, which is the common case.
pub fn clean(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_forbidden) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            skip_escape(&mut chars);
        } else if !is_forbidden(c) {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Consumes the body of an escape sequence whose ESC was just read, so that
/// no half-sequence (`[31m`) is left behind as visible garbage.
fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            // CSI: parameters and intermediates, then one final byte @..~.
            chars.next();
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
        Some(']') | Some('P') | Some('X') | Some('^') | Some('_') => {
            // OSC, DCS, SOS, PM, APC: a string ended by BEL or ESC \.
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        Some(c) if ('\u{20}'..='\u{7e}').contains(c) => {
            // Two-character escapes such as ESC c (reset) or ESC 7.
            chars.next();
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_text_is_borrowed() {
        assert!(matches!(clean("hello, wörld 👋\tx"), Cow::Borrowed(_)));
    }

    #[test]
    fn strips_csi_osc_and_controls() {
        assert_eq!(clean("\x1b[2J\x1b[31mred\x1b[0m"), "red");
        assert_eq!(clean("a\x1b]0;pwned\x07b"), "ab");
        assert_eq!(clean("a\x1b]8;;http://x\x1b\\b"), "ab");
        assert_eq!(
            clean("bell\x07 bs\x08 del\x7f c1\u{9b}31m"),
            "bell bs del c131m"
        );
        assert_eq!(clean("x\x1bcy"), "xy");
        assert_eq!(clean("ab\u{202e}cd"), "abcd");
        assert_eq!(clean("trailing esc\x1b"), "trailing esc");
    }

    proptest! {
        #[test]
        fn output_has_no_forbidden_chars(s in any::<String>()) {
            let out = clean(&s);
            let bad = out.chars().any(|c| c == '\x1b' || is_forbidden(c));
            prop_assert!(!bad);
        }

        #[test]
        fn clean_is_idempotent(s in any::<String>()) {
            let once = clean(&s).into_owned();
            prop_assert_eq!(clean(&once).into_owned(), once.clone());
        }
    }
}
