//! The interface's state and keys: [`App`] holds the view, the input line
//! and the scroll position, turns terminal events into [`Effect`]s for the
//! event loop, and keeps a scrolled-up view in place as lines arrive or
//! older history is put in above.
//!
//! Scrolling up past the start of what is held of the room asks the server
//! for an older page ([`PAGE`] messages), once at a time; `/history [N]`
//! asks for N and scrolls to the first of them.
//!
//! Owns no terminal and no connection: the event loop in [`super`] carries
//! out the effects, and the screen is drawn by [`super::render`].

use ratatui::crossterm::event::{
    Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseEventKind,
};
use ratatui::Frame;

use super::complete::Completion;
use super::input::InputLine;
use super::render::{draw, scroll_for, scroll_to_top_of, Anchor, Drawn};
use crate::client::conn::Update;
use crate::client::input::{self, Action};
use crate::client::view::{ChatView, NoOlder};
use crate::proto::json::{ClientMsg, ServerMsg};

/// Rows one mouse wheel step scrolls.
const WHEEL_ROWS: usize = 3;
/// Messages asked for when scrolling past the top.
pub const PAGE: usize = 50;
/// Messages `/history` asks for without a number.
const HISTORY_DEFAULT: usize = 20;

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

/// Where the next draw should scroll to, decided when an update arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jump {
    /// Bring this line (by uid) to the top of the pane.
    Line(u64),
    /// As far up as the scrollback goes.
    Top,
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
    /// While scrolled up: the line on the bottom row at the last draw,
    /// kept there however many lines arrive or are put in above it.
    anchor: Option<Anchor>,
    /// The id of a `/history` request whose answer should be shown.
    history_id: Option<String>,
    jump: Option<Jump>,
    next_id: u64,
    /// A Tab completion being cycled through.
    completion: Option<Completion>,
    pub options: Options,
}

/// What the user's settings make of the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Ring the terminal bell on a mention or private message.
    pub bell: bool,
    /// Colours on (`false`: attributes such as bold only).
    pub colors: bool,
    /// Where `/ignore` keeps its list; `None`: for this session only.
    pub ignore_file: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            bell: true,
            colors: true,
            ignore_file: None,
        }
    }
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
                anchor: None,
                top_in_view: false,
            },
            anchor: None,
            history_id: None,
            jump: None,
            next_id: 0,
            completion: None,
            options: Options::default(),
        }
    }

    /// Draws the screen and remembers what it showed for scrolling.
    pub fn draw(&mut self, frame: &mut Frame) {
        let width = self.last.width;
        match self.jump.take() {
            Some(Jump::Line(uid)) => {
                if let Some(s) = scroll_to_top_of(&self.view, width, self.last.page, uid) {
                    self.scroll = s;
                }
            }
            Some(Jump::Top) => self.scroll = usize::MAX,
            None => {
                if let Some(s) = self
                    .anchor
                    .filter(|_| self.scroll > 0)
                    .and_then(|a| scroll_for(&self.view, width, a))
                {
                    self.scroll = s;
                }
            }
        }
        self.last = draw(frame, &self.view, &self.input, self.scroll);
        if !self.options.colors {
            // Attributes stay (bold, reversed): they are not colour.
            for cell in frame.buffer_mut().content.iter_mut() {
                cell.fg = ratatui::style::Color::Reset;
                cell.bg = ratatui::style::Color::Reset;
            }
        }
        self.scroll = self.last.scroll;
        self.anchor = self.last.anchor.filter(|_| self.scroll > 0);
    }

    /// Applies an update from the connection. While scrolled up, the line
    /// being read stays put (see [`Self::draw`]); the answer to `/history`
    /// is scrolled to.
    pub fn apply(&mut self, update: Update) {
        let room = self.view.current_room().map(str::to_owned);
        let shown = match &update {
            Update::Msg(ServerMsg::History {
                id: Some(id),
                room,
                messages,
                ..
            }) if self.history_id.as_ref() == Some(id) => {
                Some((room.clone(), messages.iter().map(|m| m.seq).min()))
            }
            _ => None,
        };
        self.view.apply(update);
        if self.view.current_room() != room.as_deref() {
            self.scroll = 0;
            self.anchor = None;
        }
        if let Some((room, first)) = shown {
            self.history_id = None;
            let line = first.and_then(|seq| {
                self.view
                    .lines()
                    .find(|l| l.seq == Some(seq) && l.in_room(&room))
                    .map(|l| l.uid())
            });
            self.jump = Some(line.map_or(Jump::Top, Jump::Line));
        }
    }

    /// Scrolls up; past the start of what is held, asks for older messages.
    fn scroll_up(&mut self, rows: usize) -> Effect {
        let at_top = self.last.top_in_view;
        self.scroll = self.scroll.saturating_add(rows);
        self.anchor = None;
        if !at_top {
            return Effect::None;
        }
        let next_id = &mut self.next_id;
        match self.view.request_older(PAGE, || input::fresh_id(next_id)) {
            Ok(msg) => Effect::Send(msg),
            Err(_) => Effect::None,
        }
    }

    fn scroll_down(&mut self, rows: usize) {
        self.scroll = self.scroll.saturating_sub(rows);
        self.anchor = None;
    }

    fn page(&self) -> usize {
        self.last.page.saturating_sub(1).max(1)
    }

    /// `/history [N]`: asks for N messages older than those held (with the
    /// typed request's `id`), to be scrolled to when they arrive.
    fn history(&mut self, limit: usize, id: Option<String>) -> Effect {
        let next_id = &mut self.next_id;
        let id = || id.unwrap_or_else(|| input::fresh_id(next_id));
        match self.view.request_older(limit, id) {
            Ok(msg) => {
                if let ClientMsg::History { id, .. } = &msg {
                    self.history_id = id.clone();
                }
                Effect::Send(msg)
            }
            Err(why) => {
                let room = self.view.current_room().unwrap_or("").to_string();
                match why {
                    NoOlder::NoRoom => self
                        .view
                        .note_error("you are not in a room; /join ROOM".into()),
                    NoOlder::Loading => self
                        .view
                        .note_info("older messages are on their way".into()),
                    NoOlder::Beginning => {
                        self.view
                            .note_info(format!("no older messages are stored in {room}"));
                        self.jump = Some(Jump::Top);
                        return Effect::None;
                    }
                    NoOlder::Unavailable => {
                        self.view.note_error("this server keeps no history".into())
                    }
                    NoOlder::Full => self
                        .view
                        .note_error("the scrollback is full; older messages are not loaded".into()),
                }
                self.scroll = 0;
                Effect::None
            }
        }
    }

    /// Handles a terminal event.
    pub fn on_event(&mut self, event: Event) -> Effect {
        match event {
            Event::Key(key) if key.kind != KeyEventKind::Release => self.on_key(key),
            Event::Mouse(m) => match m.kind {
                MouseEventKind::ScrollUp => self.scroll_up(WHEEL_ROWS),
                MouseEventKind::ScrollDown => {
                    self.scroll_down(WHEEL_ROWS);
                    Effect::None
                }
                _ => Effect::None,
            },
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
        // Tab cycles a completion; any other key keeps what it shows.
        let completion = self.completion.take();
        match key.code {
            KeyCode::Tab | KeyCode::BackTab => {
                let step = if key.code == KeyCode::Tab { 1 } else { -1 };
                self.completion = match completion {
                    Some(mut c) => {
                        c.cycle(&mut self.input, step);
                        Some(c)
                    }
                    None => Completion::start(&mut self.input, &self.view),
                };
                return Effect::None;
            }
            // Alt+1..9: the room at that place in the status bar.
            KeyCode::Char(c @ '1'..='9') if alt && !ctrl => {
                let at = c as usize - '1' as usize;
                if let Some(name) = self.view.rooms().get(at).map(|r| r.name.clone()) {
                    self.view.switch_room(&name);
                    self.scroll_down(usize::MAX);
                }
                return Effect::None;
            }
            KeyCode::Left | KeyCode::Right if alt && !ctrl => {
                self.view
                    .cycle_room(if key.code == KeyCode::Left { -1 } else { 1 });
                self.scroll_down(usize::MAX);
                return Effect::None;
            }
            _ => {}
        }
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
                self.scroll_down(usize::MAX);
            }
            KeyCode::Char('p') if ctrl => {
                self.view.cycle_room(-1);
                self.scroll_down(usize::MAX);
            }
            KeyCode::Char('b') if alt => input.word_left(),
            KeyCode::Char('f') if alt => input.word_right(),
            // AltGr arrives as Ctrl+Alt on Windows: it types a character.
            KeyCode::Char(c) if ctrl && alt => input.insert(c),
            KeyCode::Char(_) if ctrl || alt => {}
            KeyCode::Char(c) => input.insert(c),
            KeyCode::Backspace if alt => input.kill_word(),
            KeyCode::Backspace => input.backspace(),
            KeyCode::Delete => input.delete(),
            KeyCode::Left if ctrl => input.word_left(),
            KeyCode::Right if ctrl => input.word_right(),
            KeyCode::Left => input.left(),
            KeyCode::Right => input.right(),
            KeyCode::Home => input.home(),
            KeyCode::End => input.end(),
            KeyCode::Up => input.history_prev(),
            KeyCode::Down => input.history_next(),
            KeyCode::PageUp => return self.scroll_up(self.page()),
            KeyCode::PageDown => self.scroll_down(self.page()),
            KeyCode::Enter => return self.submit(),
            _ => {}
        }
        Effect::None
    }

    /// Whether the bell should ring now (a mention or a private message
    /// arrived, and the bell is on).
    pub fn take_bell(&mut self) -> bool {
        self.view.take_bell() && self.options.bell
    }

    /// `/ignore [NICK]` and `/unignore NICK`, which the client keeps to
    /// itself; `None` for any other line.
    fn ignore_command(&mut self, line: &str) -> Option<()> {
        let mut words = line.split_whitespace();
        let command = words.next()?;
        let nick = words.next();
        match (command, nick) {
            ("/ignore", None) => {
                let list: Vec<&str> = self.view.ignored().collect();
                let text = if list.is_empty() {
                    "you ignore no one; /ignore NICK hides someone's messages".to_string()
                } else {
                    format!("ignoring: {}", list.join(", "))
                };
                self.view.note_info(text);
            }
            ("/ignore", Some(nick)) => {
                if self.view.ignored().count() >= crate::client::settings::MAX_IGNORED {
                    self.view.note_error("the ignore list is full".into());
                } else if self.view.ignore(nick) {
                    self.view.note_info(format!(
                        "ignoring {nick}: their messages are hidden in every room (/unignore {nick})"
                    ));
                    self.save_ignored();
                } else {
                    self.view.note_info(format!("you ignore {nick} already"));
                }
            }
            ("/unignore", Some(nick)) => {
                if self.view.unignore(nick) {
                    self.view.note_info(format!("no longer ignoring {nick}"));
                    self.save_ignored();
                } else {
                    self.view.note_error(format!("you do not ignore {nick}"));
                }
            }
            ("/unignore", None) => self.view.note_error("usage: /unignore NICK".into()),
            _ => return None,
        }
        self.scroll = 0;
        Some(())
    }

    fn save_ignored(&mut self) {
        let Some(path) = self.options.ignore_file.clone() else {
            return;
        };
        let list: Vec<String> = self.view.ignored().map(str::to_string).collect();
        if let Err(e) = crate::client::settings::save_ignored(&path, &list) {
            self.view.note_error(format!(
                "cannot save the ignore list to {}: {e}",
                path.display()
            ));
        }
    }

    /// Enter: turns the typed line into an effect.
    fn submit(&mut self) -> Effect {
        let line = self.input.submit();
        if self.ignore_command(&line).is_some() {
            return Effect::None;
        }
        let room = self.view.current_room().map(str::to_owned);
        match input::parse(&line, room.as_deref(), &mut self.next_id) {
            Action::None => Effect::None,
            Action::Send(ClientMsg::Join { room, .. }) if self.view.in_room(&room) => {
                self.view.switch_room(&room);
                self.scroll_down(usize::MAX);
                Effect::None
            }
            Action::Send(ClientMsg::History { id, limit, .. }) => {
                self.history(limit.unwrap_or(HISTORY_DEFAULT), id)
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
    use crate::client::tui::test_util::{ctrl, key, msg, row, rows, say, stored, view, T};
    use crate::client::view::{Delivery, Kind};
    use crate::proto::json::{HistoryEntry, ServerMsg};

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

    fn alt(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::ALT)
    }

    #[test]
    fn room_keys_and_tab_completion() {
        let mut app = App::new(view());
        for room in ["dev", "rust"] {
            msg(
                &mut app.view,
                ServerMsg::RoomState {
                    room: room.into(),
                    members: vec!["alice".into()],
                },
            );
        }
        assert_eq!(app.view.current_room(), Some("rust"));
        app.on_key(alt(KeyCode::Char('1')));
        assert_eq!(app.view.current_room(), Some("lobby"));
        app.on_key(alt(KeyCode::Char('2')));
        assert_eq!(app.view.current_room(), Some("dev"));
        app.on_key(alt(KeyCode::Char('9')));
        assert_eq!(app.view.current_room(), Some("dev"), "no ninth room");
        app.on_key(alt(KeyCode::Right));
        assert_eq!(app.view.current_room(), Some("rust"));
        app.on_key(alt(KeyCode::Right));
        assert_eq!(app.view.current_room(), Some("lobby"));
        app.on_key(alt(KeyCode::Left));
        assert_eq!(app.view.current_room(), Some("rust"));
        app.on_key(alt(KeyCode::Char('1')));
        // Tab completes bob at the start of the line; typing goes on after.
        app.on_key(key(KeyCode::Char('b')));
        app.on_key(key(KeyCode::Tab));
        assert_eq!(app.input.text(), "bob: ");
        for c in "hi".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(app.input.text(), "bob: hi");
        // Shift+Tab on a fresh word cycles backwards from the start.
        app.input.submit();
        for c in "/j".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::BackTab));
        assert_eq!(app.input.text(), "/join ");
    }

    #[test]
    fn colours_off_keeps_attributes_only() {
        let mut app = App::new(view());
        say(&mut app.view, "bob", "alice: hi");
        let mut terminal = Terminal::new(TestBackend::new(60, 8)).unwrap();
        let coloured = |terminal: &Terminal<TestBackend>| {
            terminal.backend().buffer().content.iter().any(|c| {
                c.fg != ratatui::style::Color::Reset || c.bg != ratatui::style::Color::Reset
            })
        };
        terminal.draw(|f| app.draw(f)).unwrap();
        assert!(coloured(&terminal));
        app.options.colors = false;
        terminal.draw(|f| app.draw(f)).unwrap();
        assert!(!coloured(&terminal));
        let bold = terminal
            .backend()
            .buffer()
            .content
            .iter()
            .any(|c| c.modifier.contains(ratatui::style::Modifier::BOLD));
        assert!(bold, "the mention is still bold");
        // The bell follows the option.
        app.view.take_bell();
        say(&mut app.view, "bob", "alice: again");
        app.options.bell = false;
        assert!(!app.take_bell());
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
        terminal.draw(|f| app.draw(f)).unwrap();
        assert_eq!(app.scroll, 6);
        assert_eq!(row(terminal.backend().buffer(), 7), before);
    }

    fn page(id: Option<&str>, messages: Vec<HistoryEntry>, more: bool) -> Update {
        Update::Msg(ServerMsg::History {
            id: id.map(str::to_string),
            room: "lobby".into(),
            messages,
            more,
        })
    }

    #[test]
    fn scrolling_past_the_top_loads_older_messages_once_and_keeps_the_screen_still() {
        let mut app = App::new(view());
        app.apply(page(None, stored(41..=80), true));
        let mut terminal = Terminal::new(TestBackend::new(60, 12)).unwrap();
        terminal.draw(|f| app.draw(f)).unwrap();
        // Scrolling within what is held asks for nothing.
        let mut presses = 0;
        while !rows(terminal.backend().buffer())
            .iter()
            .any(|r| r.contains("older messages: scroll up to load"))
        {
            assert_eq!(app.on_key(key(KeyCode::PageUp)), Effect::None);
            terminal.draw(|f| app.draw(f)).unwrap();
            presses += 1;
            assert!(presses < 10, "the start never came into view");
        }
        assert!(presses > 1);
        // Past the top: one request for the page before the oldest held.
        let effect = app.on_key(key(KeyCode::PageUp));
        assert_eq!(
            effect,
            Effect::Send(ClientMsg::History {
                id: Some("c1".into()),
                room: "lobby".into(),
                before: Some(41),
                limit: Some(PAGE),
            })
        );
        terminal.draw(|f| app.draw(f)).unwrap();
        let before = rows(terminal.backend().buffer());
        let hint = before
            .iter()
            .position(|r| r.contains("── loading older messages… ──"))
            .expect("loading hint");
        assert!(before[hint + 1].contains("<bob> line 41"), "{before:#?}");
        // No second request while it is outstanding.
        assert_eq!(app.on_key(key(KeyCode::PageUp)), Effect::None);
        app.on_event(Event::Mouse(ratatui::crossterm::event::MouseEvent {
            kind: MouseEventKind::ScrollUp,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        }));
        terminal.draw(|f| app.draw(f)).unwrap();
        assert_eq!(rows(terminal.backend().buffer()), before);

        // The page arrives: every line shown stays on its row, and the
        // newest of the page takes the hint's place.
        app.apply(page(Some("c1"), stored(1..=40), false));
        terminal.draw(|f| app.draw(f)).unwrap();
        let after = rows(terminal.backend().buffer());
        assert_eq!(after[hint + 1..10], before[hint + 1..10], "{after:#?}");
        assert!(after[hint].contains("<bob> line 40"), "{after:#?}");
        assert!(after[hint - 1].contains("<bob> line 39"), "{after:#?}");

        // Up to the true beginning, which is marked, and asks for nothing.
        let mut presses = 0;
        loop {
            let screen = rows(terminal.backend().buffer());
            if let Some(at) = screen
                .iter()
                .position(|r| r.contains("── beginning of history ──"))
            {
                assert!(screen[at + 1].contains("<bob> line 1"), "{screen:#?}");
                break;
            }
            assert_eq!(app.on_key(key(KeyCode::PageUp)), Effect::None);
            terminal.draw(|f| app.draw(f)).unwrap();
            presses += 1;
            assert!(presses < 10, "the beginning never came into view");
        }
        assert_eq!(app.on_key(key(KeyCode::PageUp)), Effect::None);
    }

    #[test]
    fn a_short_room_asks_for_older_messages_on_the_first_scroll_up() {
        let mut app = App::new(view());
        app.apply(page(None, stored(8..=10), true));
        let mut terminal = Terminal::new(TestBackend::new(60, 12)).unwrap();
        terminal.draw(|f| app.draw(f)).unwrap();
        let wheel = Event::Mouse(ratatui::crossterm::event::MouseEvent {
            kind: MouseEventKind::ScrollUp,
            column: 0,
            row: 0,
            modifiers: KeyModifiers::NONE,
        });
        assert!(matches!(
            app.on_event(wheel.clone()),
            Effect::Send(ClientMsg::History {
                before: Some(8),
                ..
            })
        ));
        assert_eq!(app.on_event(wheel), Effect::None);
    }

    #[test]
    fn history_command_pages_back_and_scrolls_to_the_page() {
        let mut app = App::new(view());
        app.apply(page(None, stored(41..=60), true));
        let mut terminal = Terminal::new(TestBackend::new(60, 12)).unwrap();
        terminal.draw(|f| app.draw(f)).unwrap();
        assert_eq!(
            type_line(&mut app, "/history 10"),
            Effect::Send(ClientMsg::History {
                id: Some("c1".into()),
                room: "lobby".into(),
                before: Some(41),
                limit: Some(10),
            })
        );
        // Asked once: a second /history waits for the first.
        assert_eq!(type_line(&mut app, "/history"), Effect::None);
        assert!(app
            .view
            .lines()
            .last()
            .unwrap()
            .text
            .contains("on their way"));
        app.apply(page(Some("c1"), stored(31..=40), true));
        terminal.draw(|f| app.draw(f)).unwrap();
        let screen = rows(terminal.backend().buffer());
        assert!(
            screen[0].contains("── older messages: scroll up to load ──"),
            "{screen:#?}"
        );
        assert!(screen[1].contains("<bob> line 31"), "{screen:#?}");
        assert!(screen[9].contains("<bob> line 39"), "{screen:#?}");

        // Nothing older: said so, and the top is shown. (The refused
        // /history above used up c2.)
        assert_eq!(
            type_line(&mut app, "/history 5"),
            Effect::Send(ClientMsg::History {
                id: Some("c3".into()),
                room: "lobby".into(),
                before: Some(31),
                limit: Some(5),
            })
        );
        app.apply(page(Some("c3"), stored(26..=30), false));
        assert_eq!(type_line(&mut app, "/history 5"), Effect::None);
        assert_eq!(
            app.view.lines().last().unwrap().text,
            "no older messages are stored in lobby"
        );
        terminal.draw(|f| app.draw(f)).unwrap();
        let screen = rows(terminal.backend().buffer());
        assert!(screen[0].contains("connected to"), "{screen:#?}");
        let at = screen
            .iter()
            .position(|r| r.contains("── beginning of history ──"))
            .expect("beginning marked");
        assert!(screen[at + 1].contains("<bob> line 26"), "{screen:#?}");
        assert!(matches!(type_line(&mut app, "/history 0"), Effect::None));
        assert_eq!(app.view.lines().last().unwrap().kind, Kind::Error);
    }
}
