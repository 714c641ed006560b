//! The full-screen terminal interface of `rchat connect`, on ratatui and
//! crossterm.
//!
//! ```text
//! 12:34 <bob> hello                                       │lobby (2)
//! 12:35 <alice> hi bob, this is a longer line that wraps  │alice
//!               under its text                            │bob
//!  connected │ host:1234 TLS on │ alice │ [lobby] dev(3)          ← status
//! [lobby] what is being typed                                     ← input
//! ```
//!
//! The message pane shows the current room's lines plus private messages,
//! notices and errors, word-wrapped by display width (CJK and emoji take two
//! columns). The status bar shows the connection state (with the reconnect
//! countdown), server, TLS on/off, nick, the rooms (unread counts for the
//! others) and, after a loss, its reason. Timestamps are `HH:MM` UTC.
//!
//! The screen is redrawn from the [`ChatView`] after every event, so
//! incoming messages never disturb what is being typed. [`draw`] is pure
//! (a [`Frame`] in, nothing else touched) and the key handling lives in
//! [`App`], so both are tested without a terminal.
//!
//! Keys: Enter sends; Left/Right (Ctrl-B/F), Home/End (Ctrl-A/E),
//! Ctrl-Left/Right (Alt-B/F) by word, Backspace/Delete, Ctrl-U/K delete to
//! start/end, Ctrl-W (Alt-Backspace) deletes the word before the cursor;
//! Up/Down walk the input history; PgUp/PgDn and the mouse wheel scroll;
//! Ctrl-N/Ctrl-P switch to the next/previous room (as does `/join ROOM` for
//! a room already joined); Ctrl-L redraws; Ctrl-C, Ctrl-D on an empty line,
//! and `/quit` send the quit and leave. Pasted text is inserted with its line
//! breaks turned into spaces. Mouse capture is on for the wheel, so most
//! terminals select text with Shift held.
//!
//! When the connection ends for good (the update channel closes, e.g. with
//! reconnecting off), the status bar says so and the next key press exits.
//! SIGTERM and SIGHUP leave as `/quit` does.
//!
//! The terminal is always restored (raw mode off, alternate screen left,
//! mouse capture and bracketed paste off, cursor shown): by a guard on
//! return or error, and by a panic hook that restores it before the
//! previous hook prints the panic.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use futures::{Stream, StreamExt};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::crossterm::event::{
    DisableBracketedPaste, DisableMouseCapture, EnableBracketedPaste, EnableMouseCapture, Event,
    EventStream, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::{cursor, execute};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::{Frame, Terminal};
use tokio::sync::mpsc;
use unicode_segmentation::UnicodeSegmentation;
use unicode_width::UnicodeWidthStr;

use crate::client::conn::{Closed, Handle, Status, Update};
use crate::client::input::{self, Action};
use crate::client::view::{self, ChatView, Delivery, Kind, Line};
use crate::proto::json::ClientMsg;

/// Longest input line kept, in bytes; the server's own limit is smaller.
const MAX_INPUT: usize = 16 * 1024;
/// Input lines remembered for Up/Down.
const MAX_HISTORY: usize = 500;
/// Rows one mouse wheel step scrolls.
const WHEEL_ROWS: usize = 3;
/// How long to wait, after sending the quit, for the connection to finish.
const QUIT_WAIT: Duration = Duration::from_secs(3);
/// Most updates applied between two redraws.
const MAX_BATCH: usize = 512;

// ---------------------------------------------------------------------------
// Input line
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

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

/// Readable foreground colours for nicks, on dark and light backgrounds.
/// Red (errors) and magenta (private messages) are left out.
const NICK_COLOURS: [Color; 10] = [
    Color::Green,
    Color::Yellow,
    Color::Blue,
    Color::Cyan,
    Color::LightRed,
    Color::LightGreen,
    Color::LightYellow,
    Color::LightBlue,
    Color::LightCyan,
    Color::Indexed(208), // orange
];

/// The colour of a nick: FNV-1a over its case-folded bytes, so the same
/// person always gets the same colour.
pub fn nick_colour(nick: &str) -> Color {
    let mut hash: u32 = 0x811c_9dc5;
    for b in nick.bytes() {
        hash ^= u32::from(b.to_ascii_lowercase());
        hash = hash.wrapping_mul(0x0100_0193);
    }
    NICK_COLOURS[hash as usize % NICK_COLOURS.len()]
}

/// `HH:MM` (UTC) of a time in milliseconds since the epoch.
pub fn hhmm(ts_ms: u64) -> String {
    let minutes = ts_ms / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

const TIME: Style = Style::new().fg(Color::DarkGray);
const PRIVATE: Style = Style::new().fg(Color::LightMagenta);
const NOTICE: Style = Style::new().fg(Color::Yellow);
const ERROR: Style = Style::new().fg(Color::Red);
const JOIN: Style = Style::new().fg(Color::Green);
const LEAVE: Style = Style::new().fg(Color::Gray);
const NICK: Style = Style::new().fg(Color::Cyan);
const INFO: Style = Style::new().fg(Color::Gray);
const PENDING: Style = Style::new().fg(Color::DarkGray);
const FAILED: Style = Style::new()
    .fg(Color::Red)
    .add_modifier(Modifier::CROSSED_OUT);
const STATUS_BAR: Style = Style::new().fg(Color::White).bg(Color::DarkGray);

fn nick_style(nick: &str, me: &str) -> Style {
    let style = Style::new().fg(nick_colour(nick));
    if !me.is_empty() && nick.eq_ignore_ascii_case(me) {
        style.add_modifier(Modifier::BOLD)
    } else {
        style
    }
}

/// The styled pieces of one line: a prefix (time, nick, markers) and the
/// text, which is last.
fn line_parts(line: &Line, me: &str) -> Vec<(String, Style)> {
    let time = (format!("{} ", hhmm(line.ts_ms)), TIME);
    let nick = |n: &str| (n.to_string(), nick_style(n, me));
    let plain = |s: &str| (s.to_string(), Style::new());
    let text = |style: Style| (line.text.clone(), style);
    match &line.kind {
        Kind::Chat => vec![
            time,
            plain("<"),
            nick(&line.nick),
            plain("> "),
            text(Style::new()),
        ],
        Kind::Action => vec![
            time,
            ("* ".into(), Style::new().add_modifier(Modifier::BOLD)),
            nick(&line.nick),
            plain(" "),
            text(Style::new().add_modifier(Modifier::ITALIC)),
        ],
        Kind::Private => vec![
            time,
            ("[pm] ".into(), PRIVATE.add_modifier(Modifier::BOLD)),
            plain("<"),
            nick(&line.nick),
            plain("> "),
            text(PRIVATE),
        ],
        Kind::Own {
            action,
            to,
            delivery,
        } => {
            let style = match delivery {
                Delivery::Pending => PENDING,
                Delivery::Confirmed => Style::new(),
                Delivery::Failed => FAILED,
            };
            let mut parts = vec![time];
            if let Some(to) = to {
                parts.push((
                    format!("[pm → {to}] "),
                    PRIVATE.add_modifier(Modifier::BOLD),
                ));
            }
            let me_nick = if line.nick.is_empty() {
                "me"
            } else {
                &line.nick
            };
            if *action {
                parts.push(("* ".into(), Style::new().add_modifier(Modifier::BOLD)));
                parts.push(nick(me_nick));
                parts.push(plain(" "));
                parts.push(text(style.add_modifier(Modifier::ITALIC)));
            } else {
                parts.push(plain("<"));
                parts.push(nick(me_nick));
                parts.push(plain("> "));
                parts.push(text(if to.is_some() && style == Style::new() {
                    PRIVATE
                } else {
                    style
                }));
            }
            parts
        }
        Kind::Notice => vec![
            time,
            ("-!- ".into(), NOTICE.add_modifier(Modifier::BOLD)),
            text(NOTICE),
        ],
        Kind::Error => vec![
            time,
            ("error: ".into(), ERROR.add_modifier(Modifier::BOLD)),
            text(ERROR),
        ],
        Kind::Join => vec![time, ("--> ".into(), JOIN), text(JOIN)],
        Kind::Leave => vec![time, ("<-- ".into(), LEAVE), text(LEAVE)],
        Kind::Nick => vec![time, ("--- ".into(), NICK), text(NICK)],
        Kind::Info => vec![time, text(INFO)],
    }
}

/// One grapheme cluster with its display width and style.
struct Cell<'a> {
    g: &'a str,
    w: usize,
    style: Style,
}

fn cells_width(cells: &[Cell<'_>]) -> usize {
    cells.iter().map(|c| c.w).sum()
}

/// Word-wraps styled text into rows of at most `width` display columns,
/// breaking after spaces where it can and inside a word where it must.
/// Rows after the first are indented by `indent` columns (which must be
/// less than `width`). Widths are those of [`UnicodeWidthStr`] per grapheme
/// cluster, as ratatui uses, so CJK and emoji take two columns.
fn wrap(parts: &[(String, Style)], width: usize, indent: usize) -> Vec<TextLine<'static>> {
    let width = width.max(1);
    let indent = if indent < width { indent } else { 0 };
    let cont = width - indent;
    let mut rows: Vec<Vec<Cell<'_>>> = Vec::new();
    let mut row: Vec<Cell<'_>> = Vec::new();
    let mut row_w = 0;
    let mut limit = width;
    // Index in `row` just after its last space: where it may break.
    let mut brk: Option<usize> = None;
    let parts: Vec<(Cow<'_, str>, Style)> = parts.iter().map(|(t, s)| (display(t), *s)).collect();
    for (text, style) in &parts {
        for g in text.graphemes(true) {
            if g.chars().any(char::is_control) {
                continue;
            }
            let w = g.width();
            // Zero-width clusters are not drawn by ratatui; a cluster wider
            // than a whole row cannot be drawn at all.
            if w == 0 || w > cont {
                continue;
            }
            if row_w + w > limit {
                if g == " " {
                    rows.push(std::mem::take(&mut row));
                    row_w = 0;
                    limit = cont;
                    brk = None;
                    continue;
                }
                match brk {
                    Some(b) if b > 0 && cells_width(&row[b..]) + w <= cont => {
                        let tail = row.split_off(b);
                        while row.last().is_some_and(|c| c.g == " ") {
                            row.pop();
                        }
                        rows.push(std::mem::replace(&mut row, tail));
                        row_w = cells_width(&row);
                    }
                    _ => {
                        rows.push(std::mem::take(&mut row));
                        row_w = 0;
                    }
                }
                limit = cont;
                brk = None;
            }
            row.push(Cell {
                g,
                w,
                style: *style,
            });
            row_w += w;
            if g == " " {
                brk = Some(row.len());
            }
        }
    }
    if !row.is_empty() || rows.is_empty() {
        rows.push(row);
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, cells)| {
            let mut spans: Vec<Span<'static>> = Vec::new();
            if i > 0 && indent > 0 {
                spans.push(Span::raw(" ".repeat(indent)));
            }
            let mut text = String::new();
            let mut style = None;
            for c in cells {
                if style.is_some_and(|s| s != c.style) {
                    spans.push(Span::styled(
                        std::mem::take(&mut text),
                        style.unwrap_or_default(),
                    ));
                }
                style = Some(c.style);
                text.push_str(c.g);
            }
            if let Some(style) = style {
                spans.push(Span::styled(text, style));
            }
            TextLine::from(spans)
        })
        .collect()
}

/// One scrollback line as screen rows `width` columns wide.
fn render_line(line: &Line, me: &str, width: usize) -> Vec<TextLine<'static>> {
    let parts = line_parts(line, me);
    let prefix: usize = parts[..parts.len() - 1]
        .iter()
        .map(|(s, _)| s.width())
        .sum();
    // Continuation rows line up under the text, unless the prefix takes
    // most of the row; then under the nick.
    let indent = if prefix * 2 <= width {
        prefix
    } else if 12 <= width {
        6
    } else {
        0
    };
    wrap(&parts, width, indent)
}

/// What a [`draw`] found out about the screen, for scrolling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drawn {
    /// The scroll offset used, clamped to the scrollback.
    pub scroll: usize,
    /// Rows in the message pane.
    pub page: usize,
    /// Columns in the message pane.
    pub width: usize,
}

/// Width of the member panel, or 0 when the screen is too narrow for it.
fn member_panel_width(view: &ChatView, total: u16) -> u16 {
    if total < 48 {
        return 0;
    }
    let header = view.current_room().map_or(7, |r| {
        r.width() + 3 + view.members().len().to_string().len()
    });
    let longest = view
        .members()
        .iter()
        .map(|m| m.width())
        .max()
        .unwrap_or(0)
        .max(header);
    (longest as u16 + 2).clamp(12, 24)
}

/// Draws the whole screen: messages (scrolled `scroll` rows up from the
/// newest), the member panel, the status bar and the input line.
pub fn draw(frame: &mut Frame, view: &ChatView, input: &InputLine, scroll: usize) -> Drawn {
    let area = frame.area();
    let [body, status, input_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let panel_w = member_panel_width(view, body.width);
    let [messages, panel] =
        Layout::horizontal([Constraint::Min(1), Constraint::Length(panel_w)]).areas(body);
    let drawn = draw_messages(frame, view, messages, scroll);
    if panel_w > 0 {
        draw_members(frame, view, panel);
    }
    draw_status(frame, view, status, drawn.scroll);
    draw_input(frame, view, input, input_area);
    drawn
}

fn draw_messages(frame: &mut Frame, view: &ChatView, area: Rect, scroll: usize) -> Drawn {
    let width = area.width as usize;
    let height = area.height as usize;
    if width == 0 || height == 0 {
        return Drawn {
            scroll: 0,
            page: height,
            width,
        };
    }
    let need = height.saturating_add(scroll);
    // Newest row first.
    let mut rows: Vec<TextLine<'static>> = Vec::new();
    let mut lines = view.visible_lines().rev().peekable();
    while let Some(line) = lines.next() {
        rows.extend(render_line(line, view.nick(), width).into_iter().rev());
        if rows.len() >= need && lines.peek().is_some() {
            break;
        }
    }
    let exhausted = lines.peek().is_none();
    let scroll = if exhausted {
        scroll.min(rows.len().saturating_sub(height))
    } else {
        scroll
    };
    let mut shown: Vec<TextLine<'static>> = rows.into_iter().skip(scroll).take(height).collect();
    shown.reverse();
    // Bottom-aligned, like a terminal.
    let y = area.y + (height - shown.len()) as u16;
    let target = Rect {
        y,
        height: shown.len() as u16,
        ..area
    };
    frame.render_widget(Paragraph::new(shown), target);
    Drawn {
        scroll,
        page: height,
        width,
    }
}

fn draw_members(frame: &mut Frame, view: &ChatView, area: Rect) {
    let block = Block::new()
        .borders(Borders::LEFT)
        .border_style(Style::new().fg(Color::DarkGray));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let members = view.members();
    let header = match view.current_room() {
        Some(room) => format!("{} ({})", display(room), members.len()),
        None => "no room".to_string(),
    };
    let mut lines = vec![TextLine::from(Span::styled(
        header,
        Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED),
    ))];
    let room_for = (inner.height as usize).saturating_sub(1);
    let overflow = members.len() > room_for;
    let take = if overflow {
        room_for.saturating_sub(1)
    } else {
        members.len()
    };
    for m in &members[..take] {
        lines.push(TextLine::from(Span::styled(
            display(m).into_owned(),
            nick_style(m, view.nick()),
        )));
    }
    if overflow && room_for > 0 {
        lines.push(TextLine::from(Span::styled(
            format!("+{} more", members.len() - take),
            INFO,
        )));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

/// The connection state for the status bar, short, and the reason for a
/// lost connection, which goes at the end of the bar.
fn state_spans(view: &ChatView) -> (Span<'static>, Option<String>) {
    let reason = match view.status() {
        Status::Lost { reason, .. } => Some(reason.clone()),
        _ => None,
    };
    let (text, colour) = if view.ended() {
        (
            "disconnected, press a key to exit".to_string(),
            Color::LightRed,
        )
    } else {
        match view.status() {
            Status::Connecting { attempt } if *attempt <= 1 => {
                ("connecting…".to_string(), Color::LightYellow)
            }
            Status::Connecting { attempt } => (
                format!("connecting (attempt {attempt})…"),
                Color::LightYellow,
            ),
            Status::Connected { .. } => ("connected".to_string(), Color::LightGreen),
            Status::Lost {
                retry_in: Some(_), ..
            } => (
                format!("reconnecting in {}s", view.retry_in_secs().unwrap_or(0)),
                Color::LightYellow,
            ),
            Status::Lost { retry_in: None, .. } => ("disconnected".to_string(), Color::LightRed),
        }
    };
    (
        Span::styled(text, STATUS_BAR.fg(colour).add_modifier(Modifier::BOLD)),
        reason,
    )
}

fn draw_status(frame: &mut Frame, view: &ChatView, area: Rect, scroll: usize) {
    let sep = || Span::styled(" │ ", STATUS_BAR.fg(Color::Gray));
    let (state, reason) = state_spans(view);
    let mut spans = vec![Span::styled(" ", STATUS_BAR), state, sep()];
    spans.push(Span::styled(view.server().to_string(), STATUS_BAR));
    spans.push(Span::styled(" ", STATUS_BAR));
    spans.push(if view.tls() {
        Span::styled("TLS on", STATUS_BAR.fg(Color::LightGreen))
    } else {
        Span::styled("TLS off", STATUS_BAR.fg(Color::LightYellow))
    });
    spans.push(sep());
    let nick = if view.nick().is_empty() {
        "-"
    } else {
        view.nick()
    };
    spans.push(Span::styled(
        display(nick).into_owned(),
        STATUS_BAR.add_modifier(Modifier::BOLD),
    ));
    spans.push(sep());
    if view.rooms().is_empty() {
        spans.push(Span::styled("no room", STATUS_BAR));
    }
    let current = view.current_room().unwrap_or("");
    for (i, room) in view.rooms().iter().enumerate() {
        if i > 0 {
            spans.push(Span::styled(" ", STATUS_BAR));
        }
        if room.name.eq_ignore_ascii_case(current) {
            spans.push(Span::styled(
                format!("[{}]", display(&room.name)),
                STATUS_BAR.add_modifier(Modifier::BOLD),
            ));
        } else if room.unread > 0 {
            spans.push(Span::styled(
                format!("{}({})", display(&room.name), room.unread),
                STATUS_BAR.fg(Color::LightCyan),
            ));
        } else {
            spans.push(Span::styled(display(&room.name).into_owned(), STATUS_BAR));
        }
    }
    if let Some(reason) = reason {
        spans.push(sep());
        spans.push(Span::styled(reason, STATUS_BAR.fg(Color::Gray)));
    }
    frame.render_widget(
        Paragraph::new(TextLine::from(spans)).style(STATUS_BAR),
        area,
    );
    if scroll > 0 {
        // Right-aligned so a narrow screen still shows it.
        let more = Span::styled(
            format!(" ↑{scroll} PgDn "),
            STATUS_BAR
                .fg(Color::LightYellow)
                .add_modifier(Modifier::BOLD),
        );
        frame.render_widget(
            Paragraph::new(TextLine::from(more)).alignment(ratatui::layout::Alignment::Right),
            area,
        );
    }
}

fn draw_input(frame: &mut Frame, view: &ChatView, input: &InputLine, area: Rect) {
    if area.width == 0 || area.height == 0 {
        return;
    }
    let mut prompt = match view.current_room() {
        Some(room) => format!("[{}] ", display(room)),
        None => "> ".to_string(),
    };
    if prompt.width() * 2 > area.width as usize {
        prompt = "> ".to_string();
    }
    let prompt_w = prompt.width();
    let avail = (area.width as usize).saturating_sub(prompt_w);
    let (visible, cursor_x) = input.window(avail);
    let line = TextLine::from(vec![
        Span::styled(
            prompt,
            Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Span::raw(visible),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    let x = (area.x as usize + prompt_w + cursor_x).min(area.right().saturating_sub(1) as usize);
    frame.set_cursor_position((x as u16, area.y));
}

// ---------------------------------------------------------------------------
// Application state and keys
// ---------------------------------------------------------------------------

/// What the event loop must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    None,
    /// Send this request to the server.
    Send(ClientMsg),
    /// Send a quit with this reason, then leave.
    Quit(Option<String>),
    /// Leave without sending anything (the connection has ended).
    Exit,
    /// Clear and fully redraw the screen.
    Clear,
}

/// The interface's state: the view, the input line, the scroll position.
#[derive(Debug, Clone)]
pub struct App {
    pub view: ChatView,
    pub input: InputLine,
    /// Rows scrolled up from the newest message.
    pub scroll: usize,
    /// The message pane at the last draw.
    last: Drawn,
    next_id: u64,
}

impl App {
    pub fn new(view: ChatView) -> Self {
        App {
            view,
            input: InputLine::new(),
            scroll: 0,
            last: Drawn {
                scroll: 0,
                page: 20,
                width: 80,
            },
            next_id: 0,
        }
    }

    /// Draws the screen and remembers its size for scrolling.
    pub fn draw(&mut self, frame: &mut Frame) {
        self.last = draw(frame, &self.view, &self.input, self.scroll);
        self.scroll = self.last.scroll;
    }

    /// Applies an update from the connection. While scrolled up, the
    /// scroll offset grows with the new rows so the text being read stays
    /// put.
    pub fn apply(&mut self, update: Update) {
        let before = self.view.pushed();
        let room = self.view.current_room().map(str::to_owned);
        self.view.apply(update);
        if self.view.current_room() != room.as_deref() {
            self.scroll = 0;
        } else if self.scroll > 0 {
            let new = (self.view.pushed() - before) as usize;
            let rows: usize = self
                .view
                .newest(new)
                .filter(|l| self.view.shows(l))
                .map(|l| render_line(l, self.view.nick(), self.last.width).len())
                .sum();
            self.scroll += rows;
        }
    }

    fn scroll_up(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_add(rows);
    }

    fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
    }

    fn page(&self) -> usize {
        self.last.page.saturating_sub(1).max(1)
    }

    /// Handles a terminal event.
    pub fn on_event(&mut self, event: Event) -> Effect {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Event::Mouse(m) => {
                match m.kind {
                    MouseEventKind::ScrollUp => self.scroll_up(WHEEL_ROWS),
                    MouseEventKind::ScrollDown => self.scroll_down(WHEEL_ROWS),
                    _ => {}
                }
                Effect::None
            }
            Event::Paste(text) => {
                self.input.insert_str(&text);
                Effect::None
            }
            _ => Effect::None,
        }
    }

    /// Handles a key press.
    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        if self.view.ended() {
            return Effect::Exit;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let input = &mut self.input;
        match key.code {
            KeyCode::Char('c') if ctrl => return Effect::Quit(None),
            KeyCode::Char('d') if ctrl => {
                if input.is_empty() {
                    return Effect::Quit(None);
                }
                input.delete();
            }
            KeyCode::Char('a') if ctrl => input.home(),
            KeyCode::Char('e') if ctrl => input.end(),
            KeyCode::Char('b') if ctrl => input.left(),
            KeyCode::Char('f') if ctrl => input.right(),
            KeyCode::Char('u') if ctrl => input.kill_to_start(),
            KeyCode::Char('k') if ctrl => input.kill_to_end(),
            KeyCode::Char('w') if ctrl => input.kill_word(),
            KeyCode::Char('h') if ctrl => input.backspace(),
            KeyCode::Char('l') if ctrl => return Effect::Clear,
            KeyCode::Char('n') if ctrl => {
                self.view.cycle_room(1);
                self.scroll = 0;
            }
            KeyCode::Char('p') if ctrl => {
                self.view.cycle_room(-1);
                self.scroll = 0;
            }
            KeyCode::Char('b') if alt => input.word_left(),
            KeyCode::Char('f') if alt => input.word_right(),
            // AltGr arrives as Ctrl+Alt on Windows: it types a character.
            KeyCode::Char(c) if ctrl && alt => input.insert(c),
            KeyCode::Char(_) if ctrl || alt => {}
            KeyCode::Char(c) => input.insert(c),
            KeyCode::Tab => input.insert(' '),
            KeyCode::Backspace if alt => input.kill_word(),
            KeyCode::Backspace => input.backspace(),
            KeyCode::Delete => input.delete(),
            KeyCode::Left if ctrl || alt => input.word_left(),
            KeyCode::Right if ctrl || alt => input.word_right(),
            KeyCode::Left => input.left(),
            KeyCode::Right => input.right(),
            KeyCode::Home => input.home(),
            KeyCode::End => input.end(),
            KeyCode::Up => input.history_prev(),
            KeyCode::Down => input.history_next(),
            KeyCode::PageUp => self.scroll_up(self.page()),
            KeyCode::PageDown => self.scroll_down(self.page()),
            KeyCode::Enter => return self.submit(),
            _ => {}
        }
        Effect::None
    }

    /// Enter: turns the typed line into an effect.
    fn submit(&mut self) -> Effect {
        let line = self.input.submit();
        let room = self.view.current_room().map(str::to_owned);
        match input::parse(&line, room.as_deref(), &mut self.next_id) {
            Action::None => Effect::None,
            Action::Send(ClientMsg::Join { room, .. }) if self.view.in_room(&room) => {
                self.view.switch_room(&room);
                self.scroll = 0;
                Effect::None
            }
            Action::Send(msg) => {
                self.view.local_echo(&msg);
                self.scroll = 0;
                Effect::Send(msg)
            }
            Action::Help => {
                self.view.note_help();
                self.scroll = 0;
                Effect::None
            }
            Action::Error(e) => {
                self.view.note_error(e);
                self.scroll = 0;
                Effect::None
            }
            Action::Quit(reason) => Effect::Quit(reason),
        }
    }
}

// ---------------------------------------------------------------------------
// Terminal and event loop
// ---------------------------------------------------------------------------

/// Whether the terminal is in the interface's mode and needs restoring.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Puts the terminal back as it was. Safe to call any number of times and
/// from the panic hook.
fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(
            io::stdout(),
            DisableBracketedPaste,
            DisableMouseCapture,
            LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// Holds the terminal in raw mode on the alternate screen; restores it when
/// dropped.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<Self> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_terminal();
                previous(info);
            }));
        });
        ACTIVE.store(true, Ordering::SeqCst);
        // From here on, any failure drops the guard, which restores.
        let guard = TerminalGuard;
        enable_raw_mode()?;
        execute!(
            io::stdout(),
            EnterAlternateScreen,
            EnableMouseCapture,
            EnableBracketedPaste
        )?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Where typed requests go: the connection's [`Handle`], or a channel in
/// tests.
trait Outbound {
    async fn send(&self, msg: ClientMsg) -> Result<(), Closed>;
}

impl Outbound for Handle {
    async fn send(&self, msg: ClientMsg) -> Result<(), Closed> {
        Handle::send(self, msg).await
    }
}

impl Outbound for mpsc::Sender<ClientMsg> {
    async fn send(&self, msg: ClientMsg) -> Result<(), Closed> {
        mpsc::Sender::send(self, msg).await.map_err(|_| Closed)
    }
}

/// Resolves on SIGTERM or SIGHUP, so the terminal is restored and the quit
/// sent when the window is closed or the process is told to stop.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            tokio::select! {
                _ = term.recv() => return,
                _ = hup.recv() => return,
            }
        }
    }
    std::future::pending::<()>().await
}

/// Runs the interface until the user quits (or the connection has ended
/// and a key is pressed). Takes over the terminal and always gives it back.
pub async fn run(
    handle: Handle,
    mut updates: mpsc::Receiver<Update>,
    view: ChatView,
) -> io::Result<()> {
    let guard = TerminalGuard::enter()?;
    let result = async {
        let mut terminal = Terminal::new(CrosstermBackend::new(io::stdout()))?;
        terminal.clear()?;
        let mut app = App::new(view);
        event_loop(
            &mut terminal,
            &mut app,
            &handle,
            &mut updates,
            EventStream::new(),
            stop_signal(),
        )
        .await
    }
    .await;
    drop(guard);
    result
}

/// Sends the quit and gives the connection a moment to deliver it (it
/// closes the update channel when done).
async fn quit<O: Outbound>(out: &O, updates: &mut mpsc::Receiver<Update>, reason: Option<String>) {
    if out.send(ClientMsg::Quit { reason }).await.is_ok() {
        let _ = tokio::time::timeout(QUIT_WAIT, async { while updates.recv().await.is_some() {} })
            .await;
    }
}

async fn event_loop<B, E, O>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    out: &O,
    updates: &mut mpsc::Receiver<Update>,
    mut events: E,
    stop: impl Future<Output = ()>,
) -> io::Result<()>
where
    B: Backend,
    E: Stream<Item = io::Result<Event>> + Unpin,
    O: Outbound,
{
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut updates_open = true;
    tokio::pin!(stop);
    loop {
        terminal.draw(|frame| app.draw(frame))?;
        tokio::select! {
            event = events.next() => {
                // No more terminal input: leave as if the user quit.
                let Some(event) = event else {
                    if updates_open {
                        quit(out, updates, None).await;
                    }
                    return Ok(());
                };
                match app.on_event(event?) {
                    Effect::None => {}
                    Effect::Clear => terminal.clear()?,
                    Effect::Send(msg) => {
                        if out.send(msg).await.is_err() {
                            app.view.note_error("not sent: the connection has ended".into());
                        }
                    }
                    Effect::Quit(reason) => {
                        quit(out, updates, reason).await;
                        return Ok(());
                    }
                    Effect::Exit => return Ok(()),
                }
            }
            update = updates.recv(), if updates_open => match update {
                Some(update) => {
                    app.apply(update);
                    for _ in 1..MAX_BATCH {
                        match updates.try_recv() {
                            Ok(update) => app.apply(update),
                            Err(_) => break,
                        }
                    }
                }
                None => {
                    updates_open = false;
                    app.view.set_ended();
                }
            },
            _ = tick.tick() => {}
            () = &mut stop => {
                if updates_open {
                    quit(out, updates, None).await;
                }
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::json::ServerMsg;
    use ratatui::backend::TestBackend;
    use ratatui::buffer::Buffer;

    // 2024-01-01 12:34:00 UTC.
    const T: u64 = 1_704_112_440_000;

    fn clock() -> u64 {
        T
    }

    fn msg(v: &mut ChatView, m: ServerMsg) {
        v.apply(Update::Msg(m));
    }

    fn say(v: &mut ChatView, from: &str, text: &str) {
        msg(
            v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq: 1,
                ts: T,
                from: from.into(),
                text: text.into(),
                action: false,
            },
        );
    }

    fn view() -> ChatView {
        let mut v = ChatView::new("127.0.0.1:1234", false);
        v.set_clock(clock);
        v.apply(Update::Status(Status::Connected {
            server: "127.0.0.1:1234".into(),
            tls: false,
        }));
        msg(
            &mut v,
            ServerMsg::Welcome {
                proto: "rchat".into(),
                version: 1,
                nick: "alice".into(),
                max_text: 1024,
                ping_interval: 30,
            },
        );
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "lobby".into(),
                members: vec!["alice".into(), "bob".into()],
            },
        );
        v
    }

    fn render(
        view: &ChatView,
        input: &InputLine,
        scroll: usize,
        w: u16,
        h: u16,
    ) -> (Buffer, Drawn) {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        let mut drawn = Drawn::default();
        terminal
            .draw(|f| drawn = draw(f, view, input, scroll))
            .unwrap();
        (terminal.backend().buffer().clone(), drawn)
    }

    /// Row `y` as text, a wide character counted once.
    fn row(buf: &Buffer, y: u16) -> String {
        let mut out = String::new();
        let mut x = 0;
        while x < buf.area.width {
            let sym = buf[(x, y)].symbol();
            out.push_str(sym);
            x += sym.width().max(1) as u16;
        }
        out
    }

    fn rows(buf: &Buffer) -> Vec<String> {
        (0..buf.area.height).map(|y| row(buf, y)).collect()
    }

    /// The (x, y) of the first cell where `text` starts.
    fn find(buf: &Buffer, text: &str) -> Option<(u16, u16)> {
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                let mut s = String::new();
                let mut cx = x;
                while cx < buf.area.width && s.len() < text.len() {
                    let sym = buf[(cx, y)].symbol();
                    s.push_str(sym);
                    cx += sym.width().max(1) as u16;
                }
                if s.starts_with(text) {
                    return Some((x, y));
                }
            }
        }
        None
    }

    #[test]
    fn layout_has_messages_members_status_and_input() {
        let mut v = view();
        say(&mut v, "bob", "hello there");
        let mut input = InputLine::new();
        for c in "typing".chars() {
            input.insert(c);
        }
        let (buf, drawn) = render(&v, &input, 0, 60, 10);
        let text = rows(&buf);
        // Message pane: newest line just above the status bar.
        assert!(text[7].starts_with("12:34 <bob> hello there"), "{text:#?}");
        assert_eq!(drawn.page, 8);
        // Member panel on the right with a border.
        let (hx, hy) = find(&buf, "lobby (2)").expect("member header");
        assert_eq!(hy, 0);
        assert!(hx > 40);
        assert_eq!(buf[(hx - 1, 3)].symbol(), "│");
        assert_eq!(find(&buf, "alice").map(|p| p.1), Some(1));
        assert_eq!(find(&buf, "bob").map(|p| (p.0, p.1)), Some((hx, 2)));
        // Status bar.
        let status = &text[8];
        for part in ["connected", "127.0.0.1:1234", "TLS off", "alice", "[lobby]"] {
            assert!(status.contains(part), "{status:?} lacks {part}");
        }
        assert_eq!(buf[(0, 8)].bg, Color::DarkGray);
        // Input line with the cursor after the text.
        assert!(text[9].starts_with("[lobby] typing"), "{:?}", text[9]);
    }

    #[test]
    fn cursor_sits_in_the_input_line() {
        let v = view();
        let mut input = InputLine::new();
        for c in "abc".chars() {
            input.insert(c);
        }
        input.left();
        let mut terminal = Terminal::new(TestBackend::new(40, 6)).unwrap();
        terminal
            .draw(|f| {
                draw(f, &v, &input, 0);
            })
            .unwrap();
        // "[lobby] " is 8 columns; the cursor is on the 'c'.
        terminal.backend_mut().assert_cursor_position((10, 5));
    }

    #[test]
    fn status_shows_reconnect_countdown_and_tls() {
        static NOW: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(T);
        fn moving() -> u64 {
            NOW.load(Ordering::SeqCst)
        }
        let mut v = ChatView::new("chat.example:1234", true);
        v.set_clock(moving);
        v.apply(Update::Status(Status::Lost {
            reason: "reset".into(),
            retry_in: Some(Duration::from_secs(4)),
        }));
        let (buf, _) = render(&v, &InputLine::new(), 0, 80, 5);
        let status = row(&buf, 3);
        assert!(status.contains("reconnecting in 4s"), "{status:?}");
        assert!(status.contains("TLS on"), "{status:?}");
        assert!(status.contains("chat.example:1234"));
        assert!(status.trim_end().ends_with("│ reset"), "{status:?}");
        // The countdown follows the clock.
        NOW.fetch_add(1_500, Ordering::SeqCst);
        let (buf, _) = render(&v, &InputLine::new(), 0, 80, 5);
        assert!(
            row(&buf, 3).contains("reconnecting in 3s"),
            "{:?}",
            row(&buf, 3)
        );
        v.set_ended();
        let (buf, _) = render(&v, &InputLine::new(), 0, 80, 5);
        assert!(
            row(&buf, 3).starts_with(" disconnected, press a key to exit │ "),
            "{:?}",
            row(&buf, 3)
        );
    }

    #[test]
    fn long_messages_wrap_at_word_boundaries_with_indent() {
        let mut v = view();
        let words: Vec<String> = (0..30).map(|i| format!("word{i}")).collect();
        let text = words.join(" ");
        say(&mut v, "bob", &text);
        // 40 columns: too narrow for the member panel, so the whole width.
        let (buf, _) = render(&v, &InputLine::new(), 0, 40, 20);
        let all = rows(&buf);
        let start = all
            .iter()
            .position(|r| r.starts_with("12:34 <bob> word0 "))
            .expect("first row");
        let mut got = Vec::new();
        for r in &all[start..18] {
            assert!(r.width() <= 40);
            got.extend(r.split_whitespace().map(str::to_string));
            if r.contains("word29") {
                break;
            }
        }
        // Continuation rows are indented under the text.
        assert!(
            all[start + 1].starts_with("            word"),
            "{:?}",
            all[start + 1]
        );
        assert!(all.iter().any(|r| r.contains("word29")));
        let got: Vec<&str> = got.iter().map(String::as_str).skip(2).collect();
        assert_eq!(got, words.iter().map(String::as_str).collect::<Vec<_>>());
        // No word was split across rows.
        for r in &all[start..start + 3] {
            assert!(r
                .trim_end()
                .split(' ')
                .next_back()
                .unwrap()
                .starts_with("word"));
        }
    }

    #[test]
    fn an_unbreakable_word_is_cut_to_fit() {
        let parts = vec![("x".repeat(25), Style::new())];
        let rows = wrap(&parts, 10, 0);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].width(), 10);
        assert_eq!(rows[2].width(), 5);
    }

    #[test]
    fn wide_characters_wrap_by_display_width_without_breaking_layout() {
        let mut v = view();
        let cjk = "漢字テスト混在😀表示幅の確認👍🏽です。".repeat(3);
        say(&mut v, "bob", &cjk);
        say(&mut v, "bob", "end");
        let (buf, _) = render(&v, &InputLine::new(), 0, 60, 12);
        // The member panel border stays in the same column on every body row.
        let (hx, _) = find(&buf, "lobby (2)").unwrap();
        for y in 0..10 {
            assert_eq!(
                buf[(hx - 1, y)].symbol(),
                "│",
                "row {y}: {:?}",
                row(&buf, y)
            );
        }
        // Every message row fits left of the border, and the text survives.
        let mut joined = String::new();
        let mut inside = false;
        for y in 0..10 {
            let mut line = String::new();
            let mut x = 0;
            while x < hx - 1 {
                let sym = buf[(x, y)].symbol();
                line.push_str(sym);
                x += sym.width().max(1) as u16;
            }
            assert!(x < hx, "row {y} overflows: {line:?}");
            if let Some(rest) = line.strip_prefix("12:34 <bob> ") {
                inside = rest.starts_with('漢');
                line = rest.to_string();
            }
            if inside {
                joined.push_str(line.trim());
            }
        }
        // Shown with the skin-tone modifier taken off (see `display`).
        assert_eq!(joined, cjk.replace('\u{1f3fd}', ""));
        // A two-column character on the last column is moved to the next row.
        let rows = wrap(&[("abc漢".to_string(), Style::new())], 4, 0);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].to_string(), "漢");
    }

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

    #[test]
    fn line_kinds_are_styled_distinctly() {
        let mut v = view();
        v.note_error("boom".into());
        msg(
            &mut v,
            ServerMsg::Private {
                from: "bob".into(),
                to: "alice".into(),
                ts: T,
                text: "secret".into(),
            },
        );
        msg(
            &mut v,
            ServerMsg::Notice {
                text: "maintenance".into(),
            },
        );
        v.local_echo(&ClientMsg::Say {
            id: Some("c1".into()),
            room: "lobby".into(),
            text: "mine".into(),
            action: false,
        });
        let (buf, _) = render(&v, &InputLine::new(), 0, 60, 12);
        let (x, y) = find(&buf, "boom").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Red);
        assert!(row(&buf, y).contains("error: boom"));
        let (x, y) = find(&buf, "secret").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::LightMagenta);
        assert!(row(&buf, y).contains("[pm] <bob> secret"));
        let (x, y) = find(&buf, "maintenance").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Yellow);
        let (x, y) = find(&buf, "mine").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::DarkGray, "pending own line is dim");
        // Own nick bold, in its stable colour.
        let (nx, ny) = find(&buf, "alice> mine").unwrap();
        assert_eq!(buf[(nx, ny)].fg, nick_colour("alice"));
        assert!(buf[(nx, ny)].modifier.contains(Modifier::BOLD));

        msg(
            &mut v,
            ServerMsg::Ack {
                id: "c1".into(),
                room: Some("lobby".into()),
                seq: Some(1),
                ts: Some(T),
            },
        );
        let (buf, _) = render(&v, &InputLine::new(), 0, 60, 12);
        let (x, y) = find(&buf, "mine").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Reset, "confirmed own line is normal");
    }

    #[test]
    fn hostile_text_never_reaches_the_screen() {
        let mut v = view();
        say(&mut v, "bob", "\x1b[2J\x1b[31mred\x07");
        let (buf, _) = render(&v, &InputLine::new(), 0, 60, 6);
        for cell in buf.content() {
            assert!(!cell.symbol().chars().any(char::is_control));
        }
        assert!(find(&buf, "<bob> red").is_some());
    }

    #[test]
    fn scrolling_shows_older_lines_and_is_clamped() {
        let mut v = view();
        for i in 0..50 {
            say(&mut v, "bob", &format!("line {i}"));
        }
        let (buf, drawn) = render(&v, &InputLine::new(), 0, 60, 12);
        assert_eq!(drawn.scroll, 0);
        assert!(row(&buf, 9).contains("line 49"));
        let (buf, drawn) = render(&v, &InputLine::new(), 10, 60, 12);
        assert_eq!(drawn.scroll, 10);
        assert!(row(&buf, 9).contains("line 39"), "{:?}", rows(&buf));
        assert!(row(&buf, 10).ends_with(" ↑10 PgDn "), "{:?}", row(&buf, 10));
        // Far past the top: clamped so the oldest line is on the first row.
        let (buf, drawn) = render(&v, &InputLine::new(), 10_000, 60, 12);
        let total = v.visible_lines().count();
        assert_eq!(drawn.scroll, total - 10);
        assert!(row(&buf, 0).contains("welcome") || row(&buf, 0).contains("connected"));
    }

    #[test]
    fn nick_colours_are_stable_and_varied() {
        assert_eq!(nick_colour("alice"), nick_colour("alice"));
        assert_eq!(nick_colour("Alice"), nick_colour("alice"));
        let colours: std::collections::HashSet<String> =
            ["alice", "bob", "carol", "dave", "erin", "frank"]
                .iter()
                .map(|n| format!("{:?}", nick_colour(n)))
                .collect();
        assert!(colours.len() >= 3, "{colours:?}");
        assert!(!NICK_COLOURS.contains(&Color::Red));
    }

    #[test]
    fn timestamps_format_as_hh_mm() {
        assert_eq!(hhmm(0), "00:00");
        assert_eq!(hhmm(T), "12:34");
        assert_eq!(hhmm(T + 59_999), "12:34");
        assert_eq!(hhmm(T + 60_000), "12:35");
        assert_eq!(hhmm(T + 12 * 3_600_000), "00:34");
    }

    fn typed(s: &str) -> InputLine {
        let mut input = InputLine::new();
        for c in s.chars() {
            input.insert(c);
        }
        input
    }

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

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn ctrl(c: char) -> KeyEvent {
        KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
    }

    fn type_line(app: &mut App, s: &str) -> Effect {
        for c in s.chars() {
            assert_eq!(app.on_key(key(KeyCode::Char(c))), Effect::None);
        }
        app.on_key(key(KeyCode::Enter))
    }

    #[test]
    fn keys_send_chat_with_local_echo() {
        let mut app = App::new(view());
        let effect = type_line(&mut app, "hi all");
        assert_eq!(
            effect,
            Effect::Send(ClientMsg::Say {
                id: Some("c1".into()),
                room: "lobby".into(),
                text: "hi all".into(),
                action: false,
            })
        );
        let last = app.view.lines().last().unwrap();
        assert_eq!(last.text, "hi all");
        assert!(matches!(
            last.kind,
            Kind::Own {
                delivery: Delivery::Pending,
                ..
            }
        ));
        assert!(app.input.is_empty());
        assert_eq!(app.input.history(), ["hi all"]);
    }

    #[test]
    fn keys_for_commands_rooms_and_quitting() {
        let mut app = App::new(view());
        assert_eq!(type_line(&mut app, "/help"), Effect::None);
        assert!(app.view.lines().any(|l| l.text.contains("/msg NICK TEXT")));
        assert_eq!(type_line(&mut app, "/bogus"), Effect::None);
        assert_eq!(app.view.lines().last().unwrap().kind, Kind::Error);
        // Joining a room I am in only switches to it.
        msg(
            &mut app.view,
            ServerMsg::RoomState {
                room: "dev".into(),
                members: vec![],
            },
        );
        assert_eq!(app.view.current_room(), Some("dev"));
        assert_eq!(type_line(&mut app, "/join lobby"), Effect::None);
        assert_eq!(app.view.current_room(), Some("lobby"));
        assert!(matches!(
            type_line(&mut app, "/join rust"),
            Effect::Send(ClientMsg::Join { .. })
        ));
        app.on_key(ctrl('n'));
        assert_eq!(app.view.current_room(), Some("dev"));
        app.on_key(ctrl('p'));
        assert_eq!(app.view.current_room(), Some("lobby"));
        // Ctrl-D deletes while there is text, quits on an empty line.
        app.on_key(key(KeyCode::Char('x')));
        app.on_key(key(KeyCode::Home));
        assert_eq!(app.on_key(ctrl('d')), Effect::None);
        assert!(app.input.is_empty());
        assert_eq!(app.on_key(ctrl('d')), Effect::Quit(None));
        assert_eq!(app.on_key(ctrl('c')), Effect::Quit(None));
        assert_eq!(
            type_line(&mut app, "/quit bye"),
            Effect::Quit(Some("bye".into()))
        );
        // Scrolling by page and wheel.
        app.on_key(key(KeyCode::PageUp));
        assert!(app.scroll > 0);
        app.on_key(key(KeyCode::PageDown));
        assert_eq!(app.scroll, 0);
        // Once the connection has ended, any key exits.
        app.view.set_ended();
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Effect::Exit);
    }

    #[test]
    fn new_lines_keep_a_scrolled_view_in_place() {
        let mut app = App::new(view());
        for i in 0..40 {
            say(&mut app.view, "bob", &format!("old {i}"));
        }
        let mut terminal = Terminal::new(TestBackend::new(60, 10)).unwrap();
        app.scroll = 5;
        terminal.draw(|f| app.draw(f)).unwrap();
        let before = row(terminal.backend().buffer(), 7);
        app.apply(Update::Msg(ServerMsg::Message {
            room: "lobby".into(),
            seq: 99,
            ts: T,
            from: "bob".into(),
            text: "new".into(),
            action: false,
        }));
        assert_eq!(app.scroll, 6);
        terminal.draw(|f| app.draw(f)).unwrap();
        assert_eq!(row(terminal.backend().buffer(), 7), before);
    }

    #[tokio::test(start_paused = true)]
    async fn event_loop_sends_echoes_and_quits() {
        let mut app = App::new(view());
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let (up_tx, mut up_rx) = mpsc::channel(16);
        let mut terminal = Terminal::new(TestBackend::new(60, 10)).unwrap();
        // The update for bob's line arrives before any key.
        up_tx
            .send(Update::Msg(ServerMsg::Message {
                room: "lobby".into(),
                seq: 1,
                ts: T,
                from: "bob".into(),
                text: "ping".into(),
                action: false,
            }))
            .await
            .unwrap();
        let mut keys: Vec<io::Result<Event>> = "pong"
            .chars()
            .map(|c| Ok(Event::Key(key(KeyCode::Char(c)))))
            .collect();
        keys.push(Ok(Event::Key(key(KeyCode::Enter))));
        // Give the update a chance before the keys arrive.
        let events = futures::stream::once(async {
            tokio::task::yield_now().await;
            Ok(Event::Resize(60, 10))
        })
        .chain(futures::stream::iter(keys))
        .chain(futures::stream::pending());
        let stop = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        event_loop(
            &mut terminal,
            &mut app,
            &out_tx,
            &mut up_rx,
            Box::pin(events),
            stop,
        )
        .await
        .unwrap();
        assert!(
            matches!(out_rx.recv().await, Some(ClientMsg::Say { ref text, .. }) if text == "pong")
        );
        // The stop signal made it leave politely.
        assert_eq!(out_rx.recv().await, Some(ClientMsg::Quit { reason: None }));
        let screen = rows(terminal.backend().buffer()).join("\n");
        assert!(screen.contains("<bob> ping"), "{screen}");
        assert!(screen.contains("<alice> pong"), "{screen}");
        drop(up_tx);
    }
}
