//! Drawing the screen: [`draw`] lays out the message pane, the member
//! panel, the status bar and the input line on a [`Frame`] and reports
//! what it found in [`Drawn`]. Pure: a frame in, nothing else touched.
//!
//! Owns only the layout and the widgets; line styles are in
//! [`super::style`], wrapping in [`super::wrap`], and the scroll position
//! and keys in [`super::app`].

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line as TextLine, Span};
use ratatui::widgets::{Block, Borders, Paragraph};
use ratatui::Frame;
use unicode_width::UnicodeWidthStr;

use super::input::InputLine;
use super::style::{nick_style, INFO, STATUS_BAR};
use super::width::display;
use super::wrap::{render_line, wrap};
use crate::client::conn::Status;
use crate::client::view::{ChatView, HistoryMark};

/// What a [`draw`] found out about the screen, for scrolling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drawn {
    /// The scroll offset used, clamped to the scrollback.
    pub scroll: usize,
    /// Rows in the message pane.
    pub page: usize,
    /// Columns in the message pane.
    pub width: usize,
    /// The line on the bottom row, to keep there while lines arrive.
    pub anchor: Option<Anchor>,
    /// The start of what is held of the room (its history mark, or the
    /// oldest row) is on screen: scrolling further up asks for more.
    pub top_in_view: bool,
}

/// A line on the bottom row of the message pane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Anchor {
    /// The line's [`crate::client::view::Line::uid`].
    pub uid: u64,
    /// How many of its rows are below the pane (a wrapped line may be cut).
    pub below: usize,
}

/// One row of the message pane.
struct PaneRow {
    /// The line it shows (the history mark counts as the top row of the
    /// message it sits above); `None` for a mark above everything.
    owner: Option<u64>,
    /// It is the history mark.
    mark: bool,
    text: TextLine<'static>,
}

/// The history mark's row.
fn mark_row(mark: HistoryMark, width: usize) -> TextLine<'static> {
    let text = match mark {
        HistoryMark::Loading => "loading older messages…",
        HistoryMark::Older => "older messages: scroll up to load",
        HistoryMark::Beginning => "beginning of history",
        HistoryMark::Full => "scrollback full: older messages not loaded",
    };
    let style = INFO.add_modifier(Modifier::ITALIC);
    wrap(&[(format!("── {text} ──"), style)], width, 0)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// The unread marker's row: a rule across the pane.
fn unread_row(width: usize) -> TextLine<'static> {
    let label = " new ";
    let side = width.saturating_sub(label.len()) / 2;
    let text = format!(
        "{}{label}{}",
        "─".repeat(side),
        "─".repeat(width.saturating_sub(side + label.len()))
    );
    TextLine::from(Span::styled(
        text,
        Style::new()
            .fg(Color::LightRed)
            .add_modifier(Modifier::BOLD),
    ))
}

/// The current room's rows as the message pane shows them, newest first,
/// with the history mark above the oldest message held without a gap (or
/// above everything). Lazy, so the pane renders only what it shows.
fn pane_rows(view: &ChatView, width: usize) -> impl Iterator<Item = PaneRow> + '_ {
    let mark = view.history_mark();
    let room = view.current_room().unwrap_or("");
    let floor = mark.and_then(|(_, at)| at);
    let unread = view.unread_marker();
    let lines = view.visible_lines().rev().flat_map(move |line| {
        let uid = line.uid();
        // Below the last line read: the unread marker.
        let mut rows: Vec<PaneRow> = (unread == Some(uid))
            .then(|| PaneRow {
                owner: Some(uid),
                mark: false,
                text: unread_row(width),
            })
            .into_iter()
            .collect();
        rows.extend(
            render_line(line, view.nick(), view.time_format(), width)
                .into_iter()
                .rev()
                .map(|text| PaneRow {
                    owner: Some(uid),
                    mark: false,
                    text,
                }),
        );
        if let (Some((m, _)), Some(seq)) = (mark, floor) {
            if line.seq == Some(seq) && line.in_room(room) {
                rows.push(PaneRow {
                    owner: Some(uid),
                    mark: true,
                    text: mark_row(m, width),
                });
            }
        }
        rows
    });
    let top = match mark {
        Some((m, None)) => Some(PaneRow {
            owner: None,
            mark: true,
            text: mark_row(m, width),
        }),
        _ => None,
    };
    lines.chain(top)
}

/// The scroll offset that puts `anchor` back on the bottom row of a pane
/// `width` columns wide, if its line is still there.
pub fn scroll_for(view: &ChatView, width: usize, anchor: Anchor) -> Option<usize> {
    let mut rows = pane_rows(view, width.max(1)).enumerate();
    let (first, _) = rows.find(|(_, r)| r.owner == Some(anchor.uid))?;
    let own = 1 + rows
        .take_while(|(_, r)| r.owner == Some(anchor.uid))
        .count();
    Some(first + anchor.below.min(own - 1))
}

/// The scroll offset that shows the line `uid` (with the history mark, if
/// it sits above it) at the top of a pane `width` × `height`.
pub fn scroll_to_top_of(view: &ChatView, width: usize, height: usize, uid: u64) -> Option<usize> {
    let mut rows = pane_rows(view, width.max(1)).enumerate();
    let (first, _) = rows.find(|(_, r)| r.owner == Some(uid))?;
    let last = first + rows.take_while(|(_, r)| r.owner == Some(uid)).count();
    Some((last + 1).saturating_sub(height))
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
    let alert_rows = u16::from(view.alert().is_some());
    let [body, alert, status, input_area] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(alert_rows),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    if let Some(text) = view.alert() {
        let style = ratatui::style::Style::new()
            .fg(Color::White)
            .bg(Color::Red)
            .add_modifier(Modifier::BOLD);
        frame.render_widget(
            Paragraph::new(TextLine::from(Span::styled(format!(" ! {text}"), style))).style(style),
            alert,
        );
    }
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
            anchor: None,
            top_in_view: false,
        };
    }
    let need = height.saturating_add(scroll);
    let mut all = pane_rows(view, width);
    // Newest row first.
    let rows: Vec<PaneRow> = all.by_ref().take(need).collect();
    let exhausted = all.next().is_none();
    let scroll = if exhausted {
        scroll.min(rows.len().saturating_sub(height))
    } else {
        scroll
    };
    let anchor = rows.get(scroll).and_then(|r| r.owner).map(|uid| Anchor {
        uid,
        below: rows[..scroll]
            .iter()
            .rev()
            .take_while(|r| r.owner == Some(uid))
            .count(),
    });
    let shown = &rows[scroll.min(rows.len())..];
    let shown = &shown[..shown.len().min(height)];
    let top_in_view =
        shown.iter().any(|r| r.mark) || (exhausted && scroll + shown.len() >= rows.len());
    let mut shown: Vec<TextLine<'static>> = shown.iter().map(|r| r.text.clone()).collect();
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
        anchor,
        top_in_view,
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

/// The rooms in the status bar: every room in order, the current one in
/// brackets, others with their unread count and `!` after a mention.
/// `compact` (a narrow screen): the current room and the rooms with
/// something new only, by their Alt+number, and how many are left out.
fn room_spans(view: &ChatView, compact: bool) -> Vec<Span<'static>> {
    let mut spans = Vec::new();
    if view.rooms().is_empty() {
        spans.push(Span::styled("no room", STATUS_BAR));
        return spans;
    }
    let current = view.current_room().unwrap_or("");
    let mut left_out = 0;
    for (i, room) in view.rooms().iter().enumerate() {
        let is_current = room.name.eq_ignore_ascii_case(current);
        let label = if compact {
            (i + 1).to_string()
        } else {
            display(&room.name).into_owned()
        };
        let span = if is_current {
            let name = if compact {
                let name: String = display(&room.name).chars().take(16).collect();
                format!("[{}:{name}]", i + 1)
            } else {
                format!("[{label}]")
            };
            Span::styled(name, STATUS_BAR.add_modifier(Modifier::BOLD))
        } else if room.mentioned {
            Span::styled(
                format!("{label}({}!)", room.unread),
                STATUS_BAR
                    .fg(Color::LightMagenta)
                    .add_modifier(Modifier::BOLD),
            )
        } else if room.unread > 0 {
            Span::styled(
                format!("{label}({})", room.unread),
                STATUS_BAR.fg(Color::LightCyan),
            )
        } else if compact {
            left_out += 1;
            continue;
        } else {
            Span::styled(label, STATUS_BAR)
        };
        if !spans.is_empty() {
            spans.push(Span::styled(" ", STATUS_BAR));
        }
        spans.push(span);
    }
    if left_out > 0 {
        spans.push(Span::styled(
            format!(" +{left_out}"),
            STATUS_BAR.fg(Color::Gray),
        ));
    }
    spans
}

fn spans_width(spans: &[Span]) -> usize {
    spans.iter().map(|s| s.content.width()).sum()
}

/// The status bar: the connection's state, the server and TLS, my nick,
/// the rooms, and why the connection was lost. On a narrow screen the
/// server goes first, then the reason, then the rooms are abbreviated; the
/// current room is always there.
fn draw_status(frame: &mut Frame, view: &ChatView, area: Rect, scroll: usize) {
    let sep = || Span::styled(" │ ", STATUS_BAR.fg(Color::Gray));
    let (state, reason) = state_spans(view);
    let server = [
        Span::styled(view.server().to_string(), STATUS_BAR),
        Span::styled(" ", STATUS_BAR),
        if view.tls() {
            Span::styled("TLS on", STATUS_BAR.fg(Color::LightGreen))
        } else {
            Span::styled("TLS off", STATUS_BAR.fg(Color::LightYellow))
        },
    ];
    let nick = if view.nick().is_empty() {
        "-"
    } else {
        view.nick()
    };
    let nick = Span::styled(
        display(nick).into_owned(),
        STATUS_BAR.add_modifier(Modifier::BOLD),
    );
    let compose = |with_server: bool, with_reason: bool, compact: bool| {
        let mut spans = vec![Span::styled(" ", STATUS_BAR), state.clone(), sep()];
        if with_server {
            spans.extend(server.iter().cloned());
            spans.push(sep());
        }
        spans.push(nick.clone());
        spans.push(sep());
        spans.extend(room_spans(view, compact));
        if let (Some(reason), true) = (&reason, with_reason) {
            spans.push(sep());
            spans.push(Span::styled(reason.clone(), STATUS_BAR.fg(Color::Gray)));
        }
        spans
    };
    let width = area.width as usize;
    let spans = [
        (true, true, false),
        (false, true, false),
        (false, false, false),
    ]
    .into_iter()
    .map(|(s, r, c)| compose(s, r, c))
    .find(|spans| spans_width(spans) <= width)
    .unwrap_or_else(|| compose(false, false, true));
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::client::conn::Update;
    use crate::client::tui::style::nick_colour;
    use crate::client::tui::test_util::{find, join_dev, msg, render, row, rows, say, view, T};
    use crate::client::tui::wrap::wrap;
    use crate::proto::json::{ClientMsg, HistoryEntry, ServerMsg};

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
    fn unread_marker_mentions_and_a_narrow_status_bar() {
        let mut v = view();
        say(&mut v, "bob", "read this");
        join_dev(&mut v);
        say(&mut v, "bob", "new one");
        say(&mut v, "bob", "alice: look");
        let (buf, _) = render(&v, &InputLine::new(), 0, 80, 8);
        let status = row(&buf, 6);
        assert!(status.contains("[dev]"), "{status:?}");
        assert!(status.contains("lobby(2!)"), "{status:?}");
        let (x, y) = find(&buf, "lobby(2!)").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::LightMagenta);
        // Back in the lobby: a marker below what was read, the mention in
        // bold yellow.
        v.switch_room("lobby");
        let (buf, _) = render(&v, &InputLine::new(), 0, 80, 8);
        let text = rows(&buf);
        let read = text.iter().position(|r| r.contains("read this")).unwrap();
        assert!(text[read + 1].contains("─ new ─"), "{text:#?}");
        assert!(text[read + 2].contains("new one"), "{text:#?}");
        let (x, y) = find(&buf, "look").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::LightYellow);
        assert!(buf[(x, y)].modifier.contains(Modifier::BOLD));
        // Narrow: the server goes, rooms by number, the current one named.
        for room in ["rust", "ops", "music"] {
            msg(
                &mut v,
                ServerMsg::RoomState {
                    room: room.into(),
                    members: vec!["alice".into()],
                },
            );
        }
        v.switch_room("dev");
        say(&mut v, "bob", "in lobby again");
        let (buf, _) = render(&v, &InputLine::new(), 0, 36, 6);
        let status = row(&buf, 4);
        assert!(!status.contains("127.0.0.1"), "{status:?}");
        assert!(status.contains("[2:dev]"), "{status:?}");
        assert!(status.contains("1(1)"), "{status:?}");
        assert!(status.contains("+3"), "{status:?}");
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
    fn stored_history_shows_its_date_and_where_it_begins() {
        let mut v = view();
        let entry = |seq, ts, text: &str| HistoryEntry {
            seq,
            ts,
            from: "bob".into(),
            text: text.into(),
            action: false,
        };
        msg(
            &mut v,
            ServerMsg::History {
                id: None,
                room: "lobby".into(),
                messages: vec![entry(7, T - 86_400_000, "yesterday"), entry(8, T, "today")],
                more: false,
            },
        );
        let (buf, _) = render(&v, &InputLine::new(), 0, 60, 12);
        let text = rows(&buf);
        let at = text
            .iter()
            .position(|r| r.contains("── beginning of history ──"))
            .expect("mark");
        assert!(
            text[at + 1].starts_with("2023-12-31 12:34 <bob> yesterday"),
            "{text:#?}"
        );
        assert!(text[at + 2].starts_with("12:34 <bob> today"), "{text:#?}");
        // Before the server says it keeps history, nothing is marked.
        let (buf, _) = render(&view(), &InputLine::new(), 0, 60, 12);
        assert!(!rows(&buf).iter().any(|r| r.contains("──")));
    }
}
