//! The line being typed: [`InputLine`] with its grapheme-aware cursor,
//! editing commands and Up/Down history, and the window of it that fits
//! the input row.
//!
//! Owns only the text and cursor; which key does what is decided in
//! [`super::app`], and drawing the row is done in [`super::render`].

use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use super::width::display;
use crate::client::view;

/// Longest input line kept, in bytes; the server's own limit is smaller.
const MAX_INPUT: usize = 16 * 1024;
/// Input lines remembered for Up/Down.
const MAX_HISTORY: usize = 500;

/// The line being typed, with a cursor and a history. Cursor movement is by
/// grapheme cluster, so an emoji or an accented letter moves as one.
#[derive(Debug, Clone, Default)]
pub struct InputLine {
    text: String,
    /// Byte offset into `text`, always on a grapheme boundary.
    cursor: usize,
    history: Vec<String>,
    /// Position in `history` while walking it with Up/Down.
    hist_pos: Option<usize>,
    /// What was being typed before walking the history.
    draft: String,
}

impl InputLine {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The cursor as a byte offset into [`Self::text`].
    pub fn cursor(&self) -> usize {
        self.cursor
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The history, oldest first.
    pub fn history(&self) -> &[String] {
        &self.history
    }

    fn prev_boundary(&self, pos: usize) -> usize {
        self.text[..pos]
            .grapheme_indices(true)
            .next_back()
            .map_or(0, |(i, _)| i)
    }

    fn next_boundary(&self, pos: usize) -> usize {
        self.text[pos..]
            .graphemes(true)
            .next()
            .map_or(pos, |g| pos + g.len())
    }

    /// Inserts a typed character at the cursor. Control characters are
    /// ignored; a tab becomes a space.
    pub fn insert(&mut self, c: char) {
        let c = if c == '\t' { ' ' } else { c };
        if c.is_control() || self.text.len() + c.len_utf8() > MAX_INPUT {
            return;
        }
        self.text.insert(self.cursor, c);
        // A combining mark joins the previous grapheme; keep the cursor on
        // a boundary after it.
        self.cursor = self.next_boundary(self.prev_boundary(self.cursor + c.len_utf8()));
    }

    /// Inserts pasted text; line breaks become spaces and other control
    /// characters and escape sequences are dropped.
    pub fn insert_str(&mut self, s: &str) {
        let s = s.replace("\r\n", " ").replace(['\r', '\n'], " ");
        for c in view::clean(&s).chars() {
            self.insert(c);
        }
    }

    /// Replaces the bytes `start..end` (on char boundaries, `end` at most
    /// the length) with `with`, leaving the cursor after it: what a
    /// completion does to the word it completes.
    pub fn replace(&mut self, start: usize, end: usize, with: &str) {
        let end = end.min(self.text.len());
        let start = start.min(end);
        if !self.text.is_char_boundary(start) || !self.text.is_char_boundary(end) {
            return;
        }
        if self.text.len() - (end - start) + with.len() > MAX_INPUT {
            return;
        }
        self.text.replace_range(start..end, with);
        self.cursor = start + with.len();
    }

    pub fn left(&mut self) {
        self.cursor = self.prev_boundary(self.cursor);
    }

    pub fn right(&mut self) {
        self.cursor = self.next_boundary(self.cursor);
    }

    pub fn home(&mut self) {
        self.cursor = 0;
    }

    pub fn end(&mut self) {
        self.cursor = self.text.len();
    }

    /// Start of the word before the cursor (skipping spaces first).
    fn word_start(&self) -> usize {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8())
    }

    /// End of the word after the cursor (skipping spaces first).
    fn word_end(&self) -> usize {
        let after = &self.text[self.cursor..];
        let skipped = after.len() - after.trim_start().len();
        let rest = &after[skipped..];
        let word = rest.find(char::is_whitespace).unwrap_or(rest.len());
        self.cursor + skipped + word
    }

    pub fn word_left(&mut self) {
        self.cursor = self.word_start();
    }

    pub fn word_right(&mut self) {
        self.cursor = self.word_end();
    }

    /// Deletes the grapheme before the cursor.
    pub fn backspace(&mut self) {
        let start = self.prev_boundary(self.cursor);
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    /// Deletes the grapheme under the cursor.
    pub fn delete(&mut self) {
        let end = self.next_boundary(self.cursor);
        self.text.replace_range(self.cursor..end, "");
    }

    /// Ctrl-U: deletes everything before the cursor.
    pub fn kill_to_start(&mut self) {
        self.text.replace_range(..self.cursor, "");
        self.cursor = 0;
    }

    /// Ctrl-K: deletes everything from the cursor on.
    pub fn kill_to_end(&mut self) {
        self.text.truncate(self.cursor);
    }

    /// Ctrl-W: deletes the word before the cursor.
    pub fn kill_word(&mut self) {
        let start = self.word_start();
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    fn set(&mut self, text: String) {
        self.text = text;
        self.cursor = self.text.len();
    }

    /// Up: the previous history entry (the draft is kept).
    pub fn history_prev(&mut self) {
        let pos = match self.hist_pos {
            None if self.history.is_empty() => return,
            None => {
                self.draft = std::mem::take(&mut self.text);
                self.history.len() - 1
            }
            Some(0) => return,
            Some(i) => i - 1,
        };
        self.hist_pos = Some(pos);
        self.set(self.history[pos].clone());
    }

    /// Down: the next history entry, then back to the draft.
    pub fn history_next(&mut self) {
        let Some(pos) = self.hist_pos else {
            return;
        };
        if pos + 1 < self.history.len() {
            self.hist_pos = Some(pos + 1);
            self.set(self.history[pos + 1].clone());
        } else {
            self.hist_pos = None;
            let draft = std::mem::take(&mut self.draft);
            self.set(draft);
        }
    }

    /// Enter: takes the line, remembering it in the history.
    pub fn submit(&mut self) -> String {
        let line = std::mem::take(&mut self.text);
        self.cursor = 0;
        self.hist_pos = None;
        self.draft.clear();
        if !line.trim().is_empty() && self.history.last() != Some(&line) {
            self.history.push(line.clone());
            if self.history.len() > MAX_HISTORY {
                self.history.remove(0);
            }
        }
        line
    }

    /// The part of the line to show in `width` columns, scrolled so the
    /// cursor is visible, and the cursor's column within it.
    pub fn window(&self, width: usize) -> (String, usize) {
        if width == 0 {
            return (String::new(), 0);
        }
        let before = display(&self.text[..self.cursor]);
        let after = display(&self.text[self.cursor..]);
        let cursor_col: usize = before.graphemes(true).map(|g| g.width()).sum();
        // The cursor needs a cell of its own.
        let start_col = (cursor_col + 1).saturating_sub(width);
        let mut col = 0;
        let mut start = None;
        let mut out = String::new();
        for g in before.graphemes(true).chain(after.graphemes(true)) {
            let w = g.width();
            if col < start_col {
                col += w;
                continue;
            }
            let s = *start.get_or_insert(col);
            if col + w - s > width {
                break;
            }
            out.push_str(g);
            col += w;
        }
        let s = start.unwrap_or(col);
        (out, cursor_col.saturating_sub(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tui::test_util::typed;

    #[test]
    fn input_cursor_editing() {
        let mut input = typed("hello world");
        assert_eq!(input.cursor(), 11);
        input.home();
        input.right();
        input.insert('X');
        assert_eq!(input.text(), "hXello world");
        input.end();
        input.left();
        input.backspace();
        assert_eq!(input.text(), "hXello word");
        input.delete();
        assert_eq!(input.text(), "hXello wor");
        input.delete(); // at the end: nothing
        assert_eq!(input.text(), "hXello wor");
        input.kill_word();
        assert_eq!(input.text(), "hXello ");
        input.kill_word();
        assert_eq!(input.text(), "");

        let mut input = typed("one two three");
        input.word_left();
        assert_eq!(input.cursor(), 8);
        input.word_left();
        input.kill_to_end();
        assert_eq!(input.text(), "one ");
        input.home();
        input.word_right();
        assert_eq!(input.cursor(), 3);
        input.end();
        input.left();
        input.kill_to_start();
        assert_eq!(input.text(), " ");
        assert_eq!(input.cursor(), 0);
    }

    #[test]
    fn input_moves_by_grapheme() {
        let mut input = typed("ae\u{301}👍🏽漢");
        assert_eq!(input.text(), "ae\u{301}👍🏽漢");
        input.left();
        input.left();
        // Before the thumbs-up with its skin tone: one step back over both.
        assert_eq!(&input.text()[input.cursor()..], "👍🏽漢");
        input.backspace();
        assert_eq!(input.text(), "a👍🏽漢");
        input.delete();
        assert_eq!(input.text(), "a漢");
        // Control characters are not inserted; pasted newlines become spaces.
        input.insert('\x1b');
        input.insert_str("x\ny\x1b[2J");
        assert_eq!(input.text(), "ax y漢");
    }

    #[test]
    fn input_history_walks_and_keeps_the_draft() {
        let mut input = InputLine::new();
        for line in ["first", "second", "second", "  "] {
            for c in line.chars() {
                input.insert(c);
            }
            input.submit();
        }
        assert_eq!(input.history(), ["first", "second"]);
        for c in "draft".chars() {
            input.insert(c);
        }
        input.history_prev();
        assert_eq!(input.text(), "second");
        input.history_prev();
        assert_eq!(input.text(), "first");
        input.history_prev();
        assert_eq!(input.text(), "first");
        input.history_next();
        assert_eq!(input.text(), "second");
        input.history_next();
        assert_eq!(input.text(), "draft");
        assert_eq!(input.cursor(), 5);
        input.history_next();
        assert_eq!(input.text(), "draft");
    }

    #[test]
    fn input_window_scrolls_to_keep_the_cursor_visible() {
        let input = typed("abcdefghij");
        assert_eq!(input.window(20), ("abcdefghij".to_string(), 10));
        assert_eq!(input.window(5), ("ghij".to_string(), 4));
        let mut input = typed("漢字漢字漢字");
        assert_eq!(input.window(5), ("漢字".to_string(), 4));
        input.home();
        assert_eq!(input.window(5), ("漢字".to_string(), 0));
    }
}
