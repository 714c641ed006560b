//! Text as it is put on the screen: [`display`] takes apart the emoji
//! sequences whose width terminals disagree about, so every width the
//! interface computes matches what the terminal shows.
//!
//! Owns only that text transformation; measuring, wrapping and drawing
//! live in [`super::wrap`] and [`super::render`].

use std::borrow::Cow;

/// Whether `c` is in the blocks where emoji live.
fn is_pictographic(c: char) -> bool {
    matches!(c, '\u{2190}'..='\u{2bff}' | '\u{1f000}'..='\u{1faff}')
}

/// Text as it is put on the screen. Terminals disagree about the width of
/// emoji sequences (a skin-tone modifier, a variation selector, emoji joined
/// by ZWJ): one shows `👍🏽` in two columns, another in four. Where they
/// disagree the screen would be corrupted, so those sequences are shown
/// taken apart: variation selectors and skin-tone modifiers are dropped,
/// and a ZWJ between emoji is dropped so each emoji stands alone. What is
/// left has one width every terminal agrees on.
pub fn display(text: &str) -> Cow<'_, str> {
    let glue = |c: char| {
        matches!(
            c,
            '\u{200d}' | '\u{fe0e}' | '\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}'
        )
    };
    if !text.chars().any(glue) {
        return Cow::Borrowed(text);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\u{fe0e}' | '\u{fe0f}' | '\u{1f3fb}'..='\u{1f3ff}' => {}
            '\u{200d}' => {
                let prev = chars[..i].iter().rev().find(|&&p| !glue(p));
                let next = chars.get(i + 1);
                if !(prev.is_some_and(|&p| is_pictographic(p))
                    || next.is_some_and(|&n| is_pictographic(n)))
                {
                    out.push(c);
                }
            }
            _ => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tui::test_util::typed;
    use unicode_width::UnicodeWidthStr;

    #[test]
    fn emoji_sequences_are_shown_with_agreed_widths() {
        assert!(matches!(display("plain 漢字 é"), Cow::Borrowed(_)));
        assert_eq!(display("👍\u{1f3fd}"), "👍");
        assert_eq!(display("❤\u{fe0f}"), "❤");
        assert_eq!(display("👨\u{200d}👩\u{200d}👧"), "👨👩👧");
        // A ZWJ between letters (Indic, Arabic shaping) is left alone.
        assert_eq!(display("क\u{94d}\u{200d}ष"), "क\u{94d}\u{200d}ष");
        for s in [
            "👍\u{1f3fd}",
            "❤\u{fe0f}",
            "👨\u{200d}👩",
            "#\u{fe0f}\u{20e3}",
        ] {
            let shown = display(s);
            let per_char: usize = shown
                .chars()
                .map(|c| unicode_width::UnicodeWidthChar::width(c).unwrap_or(0))
                .sum();
            assert_eq!(shown.width(), per_char, "{s:?}");
        }
        // The input line shows the same and puts the cursor accordingly.
        let input = typed("a👍\u{1f3fd}b");
        assert_eq!(input.window(20), ("a👍b".to_string(), 4));
    }
}
