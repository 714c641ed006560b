//! The interface's state and keys: [`App`] holds the view, the input line
//! and the scroll position, turns terminal events into [`Effect`]s for the
//! event loop, and keeps a scrolled-up view in place as lines arrive.
//!
//! Owns no terminal and no connection: the event loop in [`super`] carries
//! out the effects, and the screen is drawn by [`super::render`].

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::Frame;

use super::input::InputLine;
use super::render::{draw, Drawn};
use super::wrap::render_line;
use crate::client::conn::Update;
use crate::client::input::{self, Action};
use crate::client::view::ChatView;
use crate::proto::json::ClientMsg;

/// Rows one mouse wheel step scrolls.
const WHEEL_ROWS: usize = 3;

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

#[cfg(test)]
mod tests {
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    use super::*;
    use crate::client::tui::test_util::{ctrl, key, msg, row, say, view, T};
    use crate::client::view::{Delivery, Kind};
    use crate::proto::json::ServerMsg;

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
}
