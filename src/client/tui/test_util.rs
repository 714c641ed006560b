//! Test fixtures shared by the interface's unit tests: a connected view
//! with a clock fixed at [`T`], rendering to a test backend, reading rows
//! back off the buffer, and typed input and key events.
//!
//! Owns no tests itself and is compiled only for tests.

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::Terminal;
use unicode_width::UnicodeWidthStr;

use super::{draw, Drawn, InputLine};
use crate::client::conn::{Status, Update};
use crate::client::view::ChatView;
use crate::proto::json::{HistoryEntry, ServerMsg};

// 2024-01-01 12:34:00 UTC.
pub(super) const T: u64 = 1_704_112_440_000;

pub(super) fn clock() -> u64 {
    T
}

pub(super) fn msg(v: &mut ChatView, m: ServerMsg) {
    v.apply(Update::Msg(m));
}

/// A chat line from `from` in the lobby, numbered after everything so far
/// (the same number and time would make it a copy of an earlier message).
pub(super) fn say(v: &mut ChatView, from: &str, text: &str) {
    let seq = v.pushed() + 1;
    msg(
        v,
        ServerMsg::Message {
            room: "lobby".into(),
            seq,
            ts: T,
            from: from.into(),
            text: text.into(),
            action: false,
        },
    );
}

/// Stored messages `range` from bob, as a `history` answer carries them.
pub(super) fn stored(range: std::ops::RangeInclusive<u64>) -> Vec<HistoryEntry> {
    range
        .map(|i| HistoryEntry {
            seq: i,
            ts: T,
            from: "bob".into(),
            text: format!("line {i}"),
            action: false,
        })
        .collect()
}

/// Joins `dev` (alice alone there), which becomes current.
pub(super) fn join_dev(v: &mut ChatView) {
    msg(
        v,
        ServerMsg::RoomState {
            room: "dev".into(),
            members: vec!["alice".into()],
        },
    );
}

pub(super) fn view() -> ChatView {
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

pub(super) fn render(
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
pub(super) fn row(buf: &Buffer, y: u16) -> String {
    let mut out = String::new();
    let mut x = 0;
    while x < buf.area.width {
        let sym = buf[(x, y)].symbol();
        out.push_str(sym);
        x += sym.width().max(1) as u16;
    }
    out
}

pub(super) fn rows(buf: &Buffer) -> Vec<String> {
    (0..buf.area.height).map(|y| row(buf, y)).collect()
}

/// The (x, y) of the first cell where `text` starts.
pub(super) fn find(buf: &Buffer, text: &str) -> Option<(u16, u16)> {
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

pub(super) fn typed(s: &str) -> InputLine {
    let mut input = InputLine::new();
    for c in s.chars() {
        input.insert(c);
    }
    input
}

pub(super) fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

pub(super) fn ctrl(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
}
