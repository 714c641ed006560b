//! The client's display model: what the terminal interface shows, kept
//! apart from any terminal so it can be unit-tested. It follows the
//! connection's [`Update`]s (rooms, members, messages, status), holds a
//! bounded scrollback, and shows the user's own messages at once, marked
//! pending until the server acknowledges them.
//!
//! Stored history (the replay on joining a room, and pages asked for with
//! [`ChatView::request_older`]) is merged into the scrollback in `seq`
//! order, each message once: a room message is known by its room and `seq`,
//! my own by the `seq` in its ack. Per room the view remembers how far back
//! it holds everything ([`RoomHistory`]), so paging goes on from there and a
//! renderer can mark the place ([`ChatView::history_mark`]). Asking, and
//! keeping the screen still while a page arrives, is the interface's job.
//!
//! The view is split by job: the scrollback itself ([`scrollback`]), stored
//! history and paging ([`history`]), the connection's status ([`status`]);
//! this file holds the rooms and follows the server's messages. Joins,
//! leaves and nick changes are worded by [`crate::proto::wording`], as in
//! line mode and on the server.
//!
//! Everything that came from the network, and everything the user typed, is
//! stored sanitised ([`crate::proto::sanitize::clean`], tabs turned into
//! spaces), so a renderer can print any stored string as it is.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::client::conn::{Status, Update};
use crate::clock;
use crate::proto::json::{
    ClientMsg, ErrorCode, HistoryEntry, RoomInfo, ServerMsg, MAX_HISTORY_PAGE,
};
use crate::proto::sanitize;
use crate::proto::wording::{self, Crowd};

mod attention;
mod history;
mod scrollback;
mod status;
#[cfg(test)]
mod test_util;

pub use history::{HistoryMark, NoOlder, RoomHistory};
pub use scrollback::{Delivery, Kind, Line};

/// Default number of scrollback lines kept; the oldest go first.
pub const MAX_LINES: usize = 10_000;

/// A room I am in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    /// Members, me included, sorted case-insensitively.
    pub members: Vec<String>,
    /// Lines that arrived while another room was current.
    pub unread: usize,
    /// One of them named me; cleared when the room is visited.
    pub mentioned: bool,
    /// The newest line of the room when I last left it: where the unread
    /// marker goes when I come back.
    pub read_up_to: Option<u64>,
    pub history: RoomHistory,
}

/// The client's display state. See the module documentation.
#[derive(Debug, Clone)]
pub struct ChatView {
    nick: String,
    server: String,
    tls: bool,
    status: Status,
    /// When `status` last changed, by `clock`.
    status_at: u64,
    /// The connection task has ended; nothing more will arrive.
    ended: bool,
    rooms: Vec<Room>,
    current: Option<String>,
    lines: VecDeque<Line>,
    max_lines: usize,
    /// Lines ever added; also the source of line uids.
    pushed: u64,
    /// The `seq`s held per room (lower-cased name): at most one line has
    /// each, which is how history is deduplicated.
    seqs: HashMap<String, BTreeSet<u64>>,
    /// `part` requests waiting for their acknowledgement: id → room.
    parts: HashMap<String, String>,
    /// Something the user must act on, shown apart from the scrollback so
    /// that nothing scrolls it away (the nick asked for was refused).
    alert: Option<String>,
    clock: fn() -> u64,
    /// Mentions, the bell, ignored nicks: see [`attention`].
    attention: attention::Attention,
    /// How timestamps are shown.
    time_format: crate::client::settings::TimeFormat,
}

/// The local time, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sanitises text for display: no control characters or escape sequences,
/// and tabs become spaces so every character has a known width.
pub fn clean(text: &str) -> String {
    sanitize::clean(text).replace('\t', " ")
}

fn sorted(mut members: Vec<String>) -> Vec<String> {
    members.sort_by_key(|m| m.to_ascii_lowercase());
    members.dedup_by(|a, b| a.eq_ignore_ascii_case(b));
    members
}

/// Help shown by `/help`, one entry per line.
const HELP: &[&str] = &[
    "commands:",
    "  TEXT               say TEXT in the current room (//TEXT to start with a slash)",
    "  /me ACTION         say ACTION as an action",
    "  /msg NICK TEXT     send a private message",
    "  /join ROOM         join ROOM (or switch to it if you are already in it)",
    "  /nick NAME         change your nick",
    "  /who               list the members of the current room",
    "  /rooms             list all rooms",
    "  /history [N]       load N (default 20) older messages of this room",
    "  /quit [REASON]     leave",
    "  /oper TOKEN        become an operator; then:",
    "    /kick NICK [REASON], /ban NICK|ADDRESS|CIDR [DURATION] [REASON],",
    "    /unban ADDRESS|CIDR, /bans",
    "  /part [ROOM]       leave the current room (or ROOM)",
    "  /ignore [NICK]     hide NICK's messages everywhere (no NICK: list); /unignore NICK",
    "keys:",
    "  Tab / Shift-Tab    complete a nick (most recent speakers first), /command or room",
    "  Alt-1..9           go to room 1..9 (as numbered in the status bar)",
    "  Alt-Left/Right, Ctrl-P/Ctrl-N   previous/next room",
    "  PgUp/PgDn, wheel   scroll (past the top loads older messages)",
    "  Up/Down            input history",
    "  Ctrl-A/E, Home/End start/end of line; Ctrl-Left/Right, Alt-B/F by word",
    "  Ctrl-U/K/W         delete to start / to end / the word before the cursor",
    "  Ctrl-L             redraw;  Ctrl-C (or Ctrl-D on an empty line) quit",
    "a line naming you is highlighted and rings the bell; a red rule marks",
    "where you left a room; the status bar shows unread counts, ! for a mention",
];

impl ChatView {
    /// A view of a connection to `server` (`host:port`), `tls` if it is
    /// encrypted. The nick is unknown until the server's welcome.
    pub fn new(server: &str, tls: bool) -> Self {
        ChatView {
            nick: String::new(),
            server: clean(server),
            tls,
            status: Status::Connecting { attempt: 1 },
            status_at: now_ms(),
            ended: false,
            rooms: Vec::new(),
            current: None,
            lines: VecDeque::new(),
            max_lines: MAX_LINES,
            pushed: 0,
            seqs: HashMap::new(),
            parts: HashMap::new(),
            alert: None,
            attention: Default::default(),
            time_format: Default::default(),
            clock: now_ms,
        }
    }

    /// Replaces the clock (milliseconds since the epoch) used to stamp local
    /// lines and time the reconnect countdown. For tests.
    pub fn set_clock(&mut self, clock: fn() -> u64) {
        self.clock = clock;
        self.status_at = clock();
    }

    /// Changes how many scrollback lines are kept (at least one).
    pub fn set_max_lines(&mut self, max: usize) {
        self.max_lines = max.max(1);
        self.trim();
    }

    /// The current time by this view's clock.
    pub fn now(&self) -> u64 {
        (self.clock)()
    }

    /// My nick, empty before the welcome.
    /// What the user must act on, if anything.
    pub fn alert(&self) -> Option<&str> {
        self.alert.as_deref()
    }

    pub fn nick(&self) -> &str {
        &self.nick
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    /// Shows timestamps this way from now on.
    pub fn set_time_format(&mut self, format: crate::client::settings::TimeFormat) {
        self.time_format = format;
    }

    pub fn time_format(&self) -> &crate::client::settings::TimeFormat {
        &self.time_format
    }

    /// The room chat goes to.
    pub fn current_room(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// The rooms I am in, in the order I joined them.
    pub fn rooms(&self) -> &[Room] {
        &self.rooms
    }

    fn room_index(&self, name: &str) -> Option<usize> {
        self.rooms
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
    }

    /// Whether I am in `room` (case-insensitive, `#` optional).
    pub fn in_room(&self, room: &str) -> bool {
        self.room_index(room.trim_start_matches('#')).is_some()
    }

    /// Members of the current room.
    pub fn members(&self) -> &[String] {
        self.current
            .as_deref()
            .and_then(|c| self.room_index(c))
            .map_or(&[], |i| &self.rooms[i].members)
    }

    /// Makes `room` current if I am in it; returns whether I am.
    pub fn switch_room(&mut self, room: &str) -> bool {
        match self.room_index(room.trim_start_matches('#')) {
            Some(i) => {
                if self.current_index() != Some(i) {
                    self.mark_read_up_to();
                }
                self.rooms[i].unread = 0;
                self.rooms[i].mentioned = false;
                self.current = Some(self.rooms[i].name.clone());
                true
            }
            None => false,
        }
    }

    /// Cycles the current room by `step` (1 for next, -1 for previous).
    pub fn cycle_room(&mut self, step: isize) {
        if self.rooms.is_empty() {
            return;
        }
        let n = self.rooms.len() as isize;
        let at = self
            .current
            .as_deref()
            .and_then(|c| self.room_index(c))
            .map_or(0, |i| i as isize);
        let next = (at + step).rem_euclid(n) as usize;
        let name = self.rooms[next].name.clone();
        self.switch_room(&name);
    }

    fn is_me(&self, nick: &str) -> bool {
        !self.nick.is_empty() && self.nick.eq_ignore_ascii_case(&clean(nick))
    }

    /// Shows a local error (a mistyped command, a failed send).
    pub fn note_error(&mut self, message: String) {
        self.push_local(Kind::Error, &message);
    }

    /// Shows local information.
    pub fn note_info(&mut self, message: String) {
        self.push_local(Kind::Info, &message);
    }

    /// Shows the command and key help.
    pub fn note_help(&mut self) {
        for line in HELP {
            self.push_local(Kind::Info, line);
        }
    }

    /// Shows a request I just sent: a `say` or `msg` appears at once as a
    /// pending own line (confirmed by its ack). A `part` is remembered so its
    /// ack can drop the room. Other requests show nothing.
    pub fn local_echo(&mut self, msg: &ClientMsg) {
        let now = self.now();
        match msg {
            ClientMsg::Say {
                id,
                room,
                text,
                action,
            } => {
                let kind = Kind::Own {
                    action: *action,
                    to: None,
                    delivery: if id.is_some() {
                        Delivery::Pending
                    } else {
                        Delivery::Confirmed
                    },
                };
                let mut line = Self::line(now, kind, Some(room), &self.nick, text);
                line.id = id.clone();
                self.push(line);
            }
            ClientMsg::Msg { id, to, text } => {
                let kind = Kind::Own {
                    action: false,
                    to: Some(clean(to)),
                    delivery: if id.is_some() {
                        Delivery::Pending
                    } else {
                        Delivery::Confirmed
                    },
                };
                let mut line = Self::line(now, kind, None, &self.nick, text);
                line.id = id.clone();
                self.push(line);
            }
            ClientMsg::Part { id: Some(id), room } => {
                self.parts.insert(id.clone(), room.clone());
            }
            _ => {}
        }
    }

    /// The own line sent with request `id`, newest first.
    fn own_line(&mut self, id: &str) -> Option<&mut Line> {
        self.lines
            .iter_mut()
            .rev()
            .find(|l| l.id.as_deref() == Some(id))
    }

    fn remove_room(&mut self, room: &str) {
        if let Some(i) = self.room_index(room) {
            let removed = self.rooms.remove(i);
            let was_current = self
                .current
                .as_deref()
                .is_some_and(|c| c.eq_ignore_ascii_case(&removed.name));
            if was_current {
                self.current = self.rooms.first().map(|r| r.name.clone());
                if let Some(r) = self.rooms.first_mut() {
                    r.unread = 0;
                }
            }
        }
    }

    fn current_index(&self) -> Option<usize> {
        self.current.as_deref().and_then(|c| self.room_index(c))
    }

    /// Follows one update from the connection.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Status(status) => self.apply_status(status),
            Update::Msg(msg) => self.apply_msg(msg),
        }
    }

    /// Several joins and leaves at once: the member list follows them all,
    /// and the scrollback gets a line per kind of change, not per person.
    fn apply_crowd(
        &mut self,
        now: u64,
        room: &str,
        joined: Vec<String>,
        left: Vec<String>,
        disconnected: Vec<String>,
    ) {
        let room = clean(room);
        let clean_all =
            |nicks: Vec<String>| -> Vec<String> { nicks.iter().map(|n| clean(n)).collect() };
        let (joined, left, disconnected) =
            (clean_all(joined), clean_all(left), clean_all(disconnected));
        if let Some(i) = self.room_index(&room) {
            let gone: std::collections::HashSet<String> = left
                .iter()
                .chain(&disconnected)
                .map(|n| n.to_ascii_lowercase())
                .collect();
            let mut members = std::mem::take(&mut self.rooms[i].members);
            members.retain(|m| !gone.contains(&m.to_ascii_lowercase()));
            members.extend(joined.iter().cloned());
            self.rooms[i].members = sorted(members);
        }
        let lines: Vec<(Crowd, String)> =
            wording::crowd_lines(room.as_str(), &joined, &left, &disconnected).collect();
        for (change, text) in lines {
            let kind = match change {
                Crowd::Joined => Kind::Join,
                Crowd::Left | Crowd::Disconnected => Kind::Leave,
            };
            self.push_line(now, kind, Some(&room), "", &text);
        }
    }

    fn apply_msg(&mut self, msg: ServerMsg) {
        let now = self.now();
        match msg {
            ServerMsg::Welcome { nick, .. } => {
                self.nick = clean(&nick);
                let text = format!("welcome, you are {}", self.nick);
                self.push_local(Kind::Info, &text);
            }
            ServerMsg::RoomState { room, members } => {
                let room = clean(&room);
                let members = sorted(members.iter().map(|m| clean(m)).collect());
                let count = members.len();
                match self.room_index(&room) {
                    // Known already: a reconnect restoring it. Refresh only.
                    Some(i) => {
                        self.rooms[i].name = room.clone();
                        self.rooms[i].members = members;
                        if self.current.is_none() {
                            self.switch_room(&room);
                        }
                    }
                    // A room just joined becomes current.
                    None => {
                        self.rooms.push(Room {
                            name: room.clone(),
                            members,
                            unread: 0,
                            mentioned: false,
                            read_up_to: None,
                            history: RoomHistory::default(),
                        });
                        self.switch_room(&room);
                    }
                }
                let s = if count == 1 { "" } else { "s" };
                self.push_line(
                    now,
                    Kind::Join,
                    Some(&room),
                    &self.nick.clone(),
                    &format!("you are in {room} ({count} member{s})"),
                );
            }
            ServerMsg::Message {
                room,
                seq,
                ts,
                from,
                text,
                action,
            } => {
                let room = clean(&room);
                match self.same_message(&room, seq, ts) {
                    // A history answer overtook it: shown already.
                    Some(true) => return,
                    Some(false) => self.forget_numbering(&room),
                    None => {}
                }
                let kind = if action { Kind::Action } else { Kind::Chat };
                let mut line = Self::line(ts, kind, Some(&room), &from, &text);
                line.seq = Some(seq);
                self.note_seq(&line);
                self.push(line);
            }
            ServerMsg::History {
                id,
                room,
                messages,
                more,
            } => self.apply_history(id, &room, messages, more),
            ServerMsg::Private { from, to, ts, text } => {
                // A message to myself is already shown by its local echo.
                if self.is_me(&from) && self.is_me(&to) {
                    return;
                }
                self.push_line(ts, Kind::Private, None, &from, &text);
            }
            ServerMsg::Joined { room, nick } => {
                let nick = clean(&nick);
                if let Some(i) = self.room_index(&clean(&room)) {
                    let mut members = std::mem::take(&mut self.rooms[i].members);
                    members.push(nick.clone());
                    self.rooms[i].members = sorted(members);
                }
                let room = clean(&room);
                self.push_line(
                    now,
                    Kind::Join,
                    Some(&room),
                    &nick,
                    &wording::joined(&nick, &room),
                );
            }
            ServerMsg::Crowd {
                room,
                joined,
                left,
                disconnected,
            } => self.apply_crowd(now, &room, joined, left, disconnected),
            ServerMsg::Left {
                room,
                nick,
                kind,
                reason,
                by,
            } => {
                let room = clean(&room);
                let nick = clean(&nick);
                if self.is_me(&nick) {
                    self.remove_room(&room);
                } else if let Some(i) = self.room_index(&room) {
                    self.rooms[i]
                        .members
                        .retain(|m| !m.eq_ignore_ascii_case(&nick));
                }
                let reason = reason.map(|r| clean(&r)).filter(|r| !r.trim().is_empty());
                let text = match by {
                    Some(by) => wording::kicked(&nick, clean(&by), reason.as_deref()),
                    None => wording::left(&nick, &room, &kind, reason.as_deref()),
                };
                self.push_line(now, Kind::Leave, Some(&room), &nick, &text);
            }
            ServerMsg::Renamed { old, new } => {
                let old = clean(&old);
                let new = clean(&new);
                let mine = self.is_me(&old);
                let mut shared = Vec::new();
                for room in &mut self.rooms {
                    let mut found = false;
                    for m in &mut room.members {
                        if m.eq_ignore_ascii_case(&old) {
                            *m = new.clone();
                            found = true;
                        }
                    }
                    if found {
                        room.members = sorted(std::mem::take(&mut room.members));
                        shared.push(room.name.clone());
                    }
                }
                if mine {
                    self.alert = None;
                    self.nick = new.clone();
                    self.push_line(
                        now,
                        Kind::Nick,
                        None,
                        &new,
                        &format!("you are now known as {new}"),
                    );
                } else {
                    let text = wording::renamed(&old, &new);
                    if shared.is_empty() {
                        self.push_line(now, Kind::Nick, None, &new, &text);
                    }
                    for room in shared {
                        self.push_line(now, Kind::Nick, Some(&room), &new, &text);
                    }
                }
            }
            ServerMsg::Notice { text } => self.push_line(now, Kind::Notice, None, "", &text),
            ServerMsg::Ack { id, room, seq, ts } => {
                if let Some(room) = self.parts.remove(&id) {
                    self.remove_room(&room);
                    self.push_line(now, Kind::Leave, None, "", &format!("you left {room}"));
                }
                let Some(line) = self.own_line(&id) else {
                    return;
                };
                if let Kind::Own { delivery, .. } = &mut line.kind {
                    *delivery = Delivery::Confirmed;
                }
                line.in_doubt = false;
                if let Some(ts) = ts {
                    line.ts_ms = ts;
                }
                if let Some(room) = room.filter(|_| line.room.is_some()) {
                    line.room = Some(clean(&room));
                }
                let (uid, ts) = (line.uid, line.ts_ms);
                if let (Some(room), Some(seq)) = (line.room.clone(), seq) {
                    self.place_own(uid, &room, seq, ts);
                }
            }
            ServerMsg::Error {
                id, code, message, ..
            } => {
                if code == ErrorCode::NoHistory {
                    for room in &mut self.rooms {
                        room.history.unavailable = true;
                    }
                }
                // The nick of the hello refused: the user is a guest now
                // and must know it before saying anything.
                if id.is_none() && matches!(code, ErrorCode::NickInUse | ErrorCode::InvalidName) {
                    self.alert = Some(format!(
                        "{} - you are {} for now; choose a nick with /nick NAME",
                        clean(&message),
                        self.nick
                    ));
                }
                if let Some(id) = &id {
                    self.parts.remove(id);
                    for room in &mut self.rooms {
                        if room.history.loading.as_ref() == Some(id) {
                            room.history.loading = None;
                        }
                    }
                    if let Some(line) = self.own_line(id) {
                        if let Kind::Own { delivery, .. } = &mut line.kind {
                            *delivery = if code == ErrorCode::NotStored {
                                Delivery::NotStored
                            } else {
                                Delivery::Failed
                            };
                        }
                        line.in_doubt = false;
                    }
                }
                self.push_line(now, Kind::Error, None, "", &message);
            }
            ServerMsg::Rooms { rooms, .. } => {
                let list: Vec<String> = rooms
                    .iter()
                    .map(|RoomInfo { name, members }| format!("{} ({members})", clean(name)))
                    .collect();
                let text = if list.is_empty() {
                    "no rooms".to_string()
                } else {
                    format!("rooms: {}", list.join(", "))
                };
                self.push_line(now, Kind::Info, None, "", &text);
            }
            ServerMsg::Who { room, members, .. } => {
                let room = clean(&room);
                let members = sorted(members.iter().map(|m| clean(m)).collect());
                let text = format!("{room} ({}): {}", members.len(), members.join(", "));
                if let Some(i) = self.room_index(&room) {
                    self.rooms[i].members = members;
                }
                self.push_line(now, Kind::Info, None, "", &text);
            }
            ServerMsg::Bans { bans, .. } => {
                if bans.is_empty() {
                    self.push_line(now, Kind::Info, None, "", "no bans");
                }
                for ban in &bans {
                    let text = format!("ban: {}", clean(&wording::ban(ban)));
                    self.push_line(now, Kind::Info, None, "", &text);
                }
            }
            ServerMsg::Ping { .. } | ServerMsg::Pong { .. } => {}
            ServerMsg::Bye { reason } => {
                let text = format!("the server closed the connection: {}", clean(&reason));
                self.push_line(now, Kind::Notice, None, "", &text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{last, msg, view};
    use super::*;
    use crate::proto::json::LeaveKind;
    use std::time::Duration;

    #[test]
    fn welcome_and_room_state_set_nick_and_room() {
        let v = view();
        assert_eq!(v.nick(), "alice");
        assert_eq!(v.current_room(), Some("lobby"));
        assert_eq!(v.members(), ["alice", "bob"]);
        assert_eq!(last(&v).kind, Kind::Join);
        assert_eq!(last(&v).text, "you are in lobby (2 members)");
    }

    #[test]
    fn members_follow_join_leave_and_rename() {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::Joined {
                room: "lobby".into(),
                nick: "Carol".into(),
            },
        );
        assert_eq!(v.members(), ["alice", "bob", "Carol"]);
        assert_eq!(last(&v).text, "Carol joined lobby");
        assert_eq!(last(&v).room.as_deref(), Some("lobby"));

        msg(
            &mut v,
            ServerMsg::Renamed {
                old: "bob".into(),
                new: "zed".into(),
            },
        );
        assert_eq!(v.members(), ["alice", "Carol", "zed"]);
        assert_eq!(last(&v).kind, Kind::Nick);
        assert_eq!(last(&v).text, "bob is now known as zed");

        msg(
            &mut v,
            ServerMsg::Left {
                room: "LOBBY".into(),
                nick: "carol".into(),
                kind: LeaveKind::Quit,
                reason: Some("bye".into()),
                by: None,
            },
        );
        assert_eq!(v.members(), ["alice", "zed"]);
        assert_eq!(last(&v).kind, Kind::Leave);
        assert_eq!(last(&v).text, "carol quit (bye)");

        // My own rename changes my nick and the member list.
        msg(
            &mut v,
            ServerMsg::Renamed {
                old: "alice".into(),
                new: "ally".into(),
            },
        );
        assert_eq!(v.nick(), "ally");
        assert_eq!(v.members(), ["ally", "zed"]);
        assert_eq!(last(&v).text, "you are now known as ally");
        assert_eq!(last(&v).room, None);
    }

    #[test]
    fn a_crowd_updates_the_members_and_reads_as_one_line_per_kind() {
        let mut v = view();
        let lines_before = v.lines().count();
        msg(
            &mut v,
            ServerMsg::Crowd {
                room: "lobby".into(),
                joined: vec!["Carol".into(), "dan".into()],
                left: vec!["BOB".into()],
                disconnected: vec![],
            },
        );
        assert_eq!(v.members(), ["alice", "Carol", "dan"]);
        let new: Vec<(Kind, String)> = v
            .lines()
            .skip(lines_before)
            .map(|l| (l.kind.clone(), l.text.clone()))
            .collect();
        assert_eq!(
            new,
            [
                (Kind::Join, "2 joined lobby: Carol, dan".to_string()),
                (Kind::Leave, "1 left lobby: BOB".to_string()),
            ]
        );
    }

    #[test]
    fn joining_switches_room_and_filters_lines() {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq: 1,
                ts: 5,
                from: "bob".into(),
                text: "in lobby".into(),
                action: false,
            },
        );
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "dev".into(),
                members: vec!["alice".into()],
            },
        );
        assert_eq!(v.current_room(), Some("dev"));
        assert_eq!(v.members(), ["alice"]);
        assert!(!v.visible_lines().any(|l| l.text == "in lobby"));
        msg(
            &mut v,
            ServerMsg::Notice {
                text: "server notice".into(),
            },
        );
        assert!(v.visible_lines().any(|l| l.text == "server notice"));

        // Traffic in the other room counts as unread there.
        msg(
            &mut v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq: 2,
                ts: 6,
                from: "bob".into(),
                text: "again".into(),
                action: false,
            },
        );
        assert_eq!(v.rooms()[0].unread, 1);
        assert!(v.switch_room("#Lobby"));
        assert_eq!(v.rooms()[0].unread, 0);
        assert!(v.visible_lines().any(|l| l.text == "in lobby"));
        v.cycle_room(1);
        assert_eq!(v.current_room(), Some("dev"));
        v.cycle_room(-1);
        assert_eq!(v.current_room(), Some("lobby"));
    }

    #[test]
    fn reconnect_room_state_does_not_steal_focus() {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "dev".into(),
                members: vec![],
            },
        );
        v.switch_room("lobby");
        // After a reconnect the server restores both rooms.
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "lobby".into(),
                members: vec!["alice".into()],
            },
        );
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "dev".into(),
                members: vec!["alice".into()],
            },
        );
        assert_eq!(v.current_room(), Some("lobby"));
        assert_eq!(v.rooms().len(), 2);
        assert_eq!(v.members(), ["alice"]);
    }

    #[test]
    fn ack_confirms_own_message_and_error_fails_it() {
        let mut v = view();
        v.local_echo(&ClientMsg::Say {
            id: Some("c1".into()),
            room: "lobby".into(),
            text: "hello".into(),
            action: false,
        });
        v.local_echo(&ClientMsg::Msg {
            id: Some("c2".into()),
            to: "bob".into(),
            text: "psst".into(),
        });
        let own = |v: &ChatView, text: &str| {
            v.lines()
                .find(|l| l.text == text)
                .map(|l| l.kind.clone())
                .unwrap()
        };
        assert_eq!(
            own(&v, "hello"),
            Kind::Own {
                action: false,
                to: None,
                delivery: Delivery::Pending
            }
        );
        assert_eq!(last(&v).nick, "alice");
        assert_eq!(last(&v).room, None);

        msg(
            &mut v,
            ServerMsg::Ack {
                id: "c1".into(),
                room: Some("lobby".into()),
                seq: Some(9),
                ts: Some(42),
            },
        );
        assert_eq!(
            own(&v, "hello"),
            Kind::Own {
                action: false,
                to: None,
                delivery: Delivery::Confirmed
            }
        );
        assert_eq!(v.lines().find(|l| l.text == "hello").unwrap().ts_ms, 42);
        // An ack for another id changes nothing.
        msg(
            &mut v,
            ServerMsg::Ack {
                id: "c9".into(),
                room: None,
                seq: None,
                ts: None,
            },
        );
        assert_eq!(
            own(&v, "psst"),
            Kind::Own {
                action: false,
                to: Some("bob".into()),
                delivery: Delivery::Pending
            }
        );
        msg(
            &mut v,
            ServerMsg::Error {
                id: Some("c2".into()),
                code: crate::proto::json::ErrorCode::NoSuchNick,
                message: "no such nick: bob".into(),
                retry_after_ms: None,
            },
        );
        assert_eq!(
            own(&v, "psst"),
            Kind::Own {
                action: false,
                to: Some("bob".into()),
                delivery: Delivery::Failed
            }
        );
        assert_eq!(last(&v).kind, Kind::Error);
        assert_eq!(last(&v).text, "no such nick: bob");
    }

    #[test]
    fn part_ack_drops_the_room() {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "dev".into(),
                members: vec![],
            },
        );
        v.local_echo(&ClientMsg::Part {
            id: Some("c5".into()),
            room: "dev".into(),
        });
        assert!(v.in_room("dev"));
        msg(
            &mut v,
            ServerMsg::Ack {
                id: "c5".into(),
                room: None,
                seq: None,
                ts: None,
            },
        );
        assert!(!v.in_room("dev"));
        assert_eq!(v.current_room(), Some("lobby"));
    }

    #[test]
    fn hostile_text_is_sanitised_everywhere() {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq: 1,
                ts: 1,
                from: "ev\x1b]0;x\x07il".into(),
                text: "\x1b[2Jgotcha\x1b[31m\tred\u{202e}".into(),
                action: false,
            },
        );
        let l = last(&v);
        assert_eq!(l.text, "gotcha red");
        assert_eq!(l.nick, "evil");
        msg(
            &mut v,
            ServerMsg::Notice {
                text: "\x07beep\x1bc".into(),
            },
        );
        assert_eq!(last(&v).text, "beep");
        msg(
            &mut v,
            ServerMsg::Joined {
                room: "lobby".into(),
                nick: "x\x1b[1my".into(),
            },
        );
        assert!(v.members().iter().any(|m| m == "xy"));
        v.local_echo(&ClientMsg::Say {
            id: None,
            room: "lobby".into(),
            text: "a\x1b[2Jb".into(),
            action: false,
        });
        assert_eq!(last(&v).text, "ab");
        v.note_error("bad\x1b[Kthing".into());
        assert_eq!(last(&v).text, "badthing");
        for line in v.lines() {
            assert!(!line
                .text
                .chars()
                .chain(line.nick.chars())
                .any(char::is_control));
        }
    }

    #[test]
    fn status_changes_and_countdown() {
        let mut v = view();
        let before = v.lines().len();
        v.apply(Update::Status(Status::Lost {
            reason: "reset".into(),
            retry_in: Some(Duration::from_millis(2500)),
        }));
        assert_eq!(v.retry_in_secs(), Some(3));
        assert_eq!(v.lines().len(), before + 1);
        assert_eq!(last(&v).text, "connection lost: reset; reconnecting in 3s");
        // A failed reconnect attempt only changes the status.
        v.apply(Update::Status(Status::Connecting { attempt: 2 }));
        v.apply(Update::Status(Status::Lost {
            reason: "refused".into(),
            retry_in: Some(Duration::from_secs(1)),
        }));
        assert_eq!(v.lines().len(), before + 1);
        v.set_ended();
        assert!(v.ended());
        assert_eq!(last(&v).kind, Kind::Error);
    }

    #[test]
    fn help_and_errors_are_local_lines() {
        let mut v = view();
        v.note_help();
        assert!(v
            .lines()
            .any(|l| l.kind == Kind::Info && l.text.contains("/msg NICK TEXT")));
        v.note_error("unknown command /x".into());
        assert_eq!(last(&v).kind, Kind::Error);
        assert_eq!(last(&v).room, None);
    }

    #[test]
    fn private_and_actions() {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::Private {
                from: "bob".into(),
                to: "alice".into(),
                ts: 7,
                text: "hi".into(),
            },
        );
        assert_eq!(last(&v).kind, Kind::Private);
        assert_eq!(last(&v).nick, "bob");
        assert_eq!(last(&v).ts_ms, 7);
        let n = v.lines().len();
        msg(
            &mut v,
            ServerMsg::Private {
                from: "alice".into(),
                to: "alice".into(),
                ts: 7,
                text: "me".into(),
            },
        );
        assert_eq!(v.lines().len(), n);
        msg(
            &mut v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq: 3,
                ts: 8,
                from: "bob".into(),
                text: "waves".into(),
                action: true,
            },
        );
        assert_eq!(last(&v).kind, Kind::Action);
    }
}
