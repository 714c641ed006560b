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
//! Everything that came from the network, and everything the user typed, is
//! stored sanitised ([`crate::proto::sanitize::clean`], tabs turned into
//! spaces), so a renderer can print any stored string as it is.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::client::conn::{Status, Update};
use crate::clock;
use crate::proto::json::{
    ClientMsg, ErrorCode, HistoryEntry, LeaveKind, RoomInfo, ServerMsg, MAX_HISTORY_PAGE,
};
use crate::proto::sanitize;

/// Default number of scrollback lines kept; the oldest go first.
pub const MAX_LINES: usize = 10_000;

/// Where one of my own messages is on its way to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Sent (or queued while disconnected); no acknowledgement yet.
    Pending,
    /// The server acknowledged it.
    Confirmed,
    /// The server refused it; an error line says why.
    Failed,
    /// The room received it, but the server could not store it, so it
    /// will be missing from history; an error line says so.
    NotStored,
}

/// What kind of line this is, which decides how it is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Chat from someone else in a room.
    Chat,
    /// A `/me` action from someone else in a room.
    Action,
    /// A private message to me; `nick` is the sender.
    Private,
    /// A notice from the server.
    Notice,
    /// An error, from the server or local.
    Error,
    /// Someone joined a room (or I did).
    Join,
    /// Someone left a room.
    Leave,
    /// Someone changed nick.
    Nick,
    /// Local information: help, connection events, `/rooms` and `/who`
    /// answers.
    Info,
    /// Something I sent: chat (`action` for `/me`), or a private message
    /// when `to` is set.
    Own {
        action: bool,
        to: Option<String>,
        delivery: Delivery,
    },
}

/// One scrollback line. All strings are sanitised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Milliseconds since the Unix epoch: the server's time when it gave
    /// one, else the local time the line was added.
    pub ts_ms: u64,
    pub kind: Kind,
    /// The room the line belongs to; `None` for lines shown whichever room
    /// is current (private messages, notices, errors, local information).
    pub room: Option<String>,
    /// Who the line is from (chat, actions, private messages, own lines) or
    /// about (join, leave and nick lines); empty otherwise.
    pub nick: String,
    /// The message, or for system lines the whole sentence.
    pub text: String,
    /// The message's place in its room, for room messages and for my own
    /// once acknowledged: history is merged and deduplicated by it.
    pub seq: Option<u64>,
    /// Stored history from another day than the one it was loaded on, so
    /// it is shown with its date.
    pub dated: bool,
    /// The request id of an own line, to match its acknowledgement.
    id: Option<String>,
    /// Unique in this view, so a renderer can keep its place when lines
    /// are inserted above.
    uid: u64,
    /// My message whose connection was lost before its ack: a replayed
    /// message with the same text may be this one.
    in_doubt: bool,
}

impl Line {
    /// Identifies this line for as long as it is in the scrollback.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Whether the line belongs to `room` (ignoring case).
    pub fn in_room(&self, room: &str) -> bool {
        self.room
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(room))
    }
}

/// What is known about a room's stored history, for paging back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomHistory {
    /// The server has sent this room's history, so it keeps some.
    pub known: bool,
    /// The server keeps no history (it answered `no_history`): paging is off.
    pub unavailable: bool,
    /// Every stored message from this `seq` on is held: the `before` of
    /// the next page. `None` while nothing is known.
    pub floor: Option<u64>,
    /// Messages older than `floor` may be stored.
    pub more: bool,
    /// The id of the page request in flight, so it is asked for once.
    pub loading: Option<String>,
    /// The last page was not asked for because it would have pushed itself
    /// out of the bounded scrollback.
    pub full: bool,
}

impl Default for RoomHistory {
    fn default() -> Self {
        RoomHistory {
            known: false,
            unavailable: false,
            floor: None,
            more: true,
            loading: None,
            full: false,
        }
    }
}

/// What to show where the held history of the current room begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryMark {
    /// A page of older messages is on its way.
    Loading,
    /// Older messages are stored; scrolling up loads them.
    Older,
    /// Nothing older is stored.
    Beginning,
    /// Older messages are stored but the scrollback is full.
    Full,
}

/// Why [`ChatView::request_older`] asked for nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoOlder {
    /// There is no current room.
    NoRoom,
    /// A page is already on its way.
    Loading,
    /// Everything stored is held already.
    Beginning,
    /// The server keeps no history.
    Unavailable,
    /// The page would not fit the scrollback.
    Full,
}

/// A room I am in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub name: String,
    /// Members, me included, sorted case-insensitively.
    pub members: Vec<String>,
    /// Lines that arrived while another room was current.
    pub unread: usize,
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
    clock: fn() -> u64,
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
    "keys: PgUp/PgDn or wheel scroll (past the top loads older messages),",
    "      Up/Down input history, Ctrl-N/Ctrl-P next/previous room,",
    "      Ctrl-A/E start/end, Ctrl-U/K/W delete to start/to end/word, Ctrl-L redraw, Ctrl-C quit",
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
    pub fn nick(&self) -> &str {
        &self.nick
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    pub fn tls(&self) -> bool {
        self.tls
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Seconds until the next reconnect attempt, if one is scheduled.
    pub fn retry_in_secs(&self) -> Option<u64> {
        match &self.status {
            Status::Lost {
                retry_in: Some(d), ..
            } => {
                let elapsed = self.now().saturating_sub(self.status_at);
                let left = (d.as_millis() as u64).saturating_sub(elapsed);
                Some(left.div_ceil(1000))
            }
            _ => None,
        }
    }

    /// Whether the connection has ended for good.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Records that the connection task has ended (its update channel
    /// closed): nothing more will arrive.
    pub fn set_ended(&mut self) {
        if !self.ended {
            self.ended = true;
            self.push_local(
                Kind::Error,
                "the connection has ended; press any key to exit",
            );
        }
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
                self.rooms[i].unread = 0;
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

    /// All scrollback lines, oldest first.
    pub fn lines(&self) -> impl DoubleEndedIterator<Item = &Line> + ExactSizeIterator {
        self.lines.iter()
    }

    /// Whether `line` shows while the current room is current: its room is
    /// the current one, or it belongs to no room.
    pub fn shows(&self, line: &Line) -> bool {
        match (&line.room, &self.current) {
            (None, _) => true,
            (Some(r), Some(c)) => r.eq_ignore_ascii_case(c),
            (Some(_), None) => false,
        }
    }

    /// The lines to show for the current room, oldest first.
    pub fn visible_lines(&self) -> impl DoubleEndedIterator<Item = &Line> {
        self.lines.iter().filter(|l| self.shows(l))
    }

    /// How many lines were ever added (not bounded by the scrollback).
    pub fn pushed(&self) -> u64 {
        self.pushed
    }

    /// The last `n` lines added (fewer if the scrollback holds fewer).
    pub fn newest(&self, n: usize) -> impl Iterator<Item = &Line> {
        let skip = self.lines.len().saturating_sub(n);
        self.lines.iter().skip(skip)
    }

    fn trim(&mut self) {
        while self.lines.len() > self.max_lines {
            if let Some(line) = self.lines.pop_front() {
                self.forget(&line);
            }
        }
    }

    /// Bookkeeping for a line pushed out of the scrollback: its `seq` is no
    /// longer held, so its room's history is complete only above it.
    fn forget(&mut self, line: &Line) {
        let (Some(room), Some(seq)) = (&line.room, line.seq) else {
            return;
        };
        let key = room.to_ascii_lowercase();
        if let Some(set) = self.seqs.get_mut(&key) {
            set.remove(&seq);
            if set.is_empty() {
                self.seqs.remove(&key);
            }
        }
        if let Some(i) = self.room_index(room) {
            let h = &mut self.rooms[i].history;
            if h.floor.is_none_or(|f| f <= seq) {
                h.floor = Some(seq.saturating_add(1));
                h.more = true;
            }
        }
    }

    fn next_uid(&mut self) -> u64 {
        self.pushed += 1;
        self.pushed
    }

    /// A new line; `uid` is filled in when it is added.
    fn line(ts_ms: u64, kind: Kind, room: Option<&str>, nick: &str, text: &str) -> Line {
        Line {
            ts_ms,
            kind,
            room: room.map(clean),
            nick: clean(nick),
            text: clean(text),
            seq: None,
            dated: false,
            id: None,
            uid: 0,
            in_doubt: false,
        }
    }

    fn push(&mut self, mut line: Line) {
        if let Some(room) = &line.room {
            if let Some(i) = self.room_index(room) {
                let current = self
                    .current
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(room));
                if !current && matches!(line.kind, Kind::Chat | Kind::Action) {
                    self.rooms[i].unread += 1;
                }
            }
        }
        line.uid = self.next_uid();
        self.lines.push_back(line);
        self.trim();
    }

    fn push_line(&mut self, ts_ms: u64, kind: Kind, room: Option<&str>, nick: &str, text: &str) {
        self.push(Self::line(ts_ms, kind, room, nick, text));
    }

    fn push_local(&mut self, kind: Kind, text: &str) {
        let now = self.now();
        self.push_line(now, kind, None, "", text);
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

    /// Whether a line of `room` holds `seq`.
    pub fn holds(&self, room: &str, seq: u64) -> bool {
        self.seqs
            .get(&room.to_ascii_lowercase())
            .is_some_and(|s| s.contains(&seq))
    }

    /// What to show where the current room's held history begins, and the
    /// `seq` of the message to show it above (`None`: above all the room's
    /// lines). Nothing while the server has not said it keeps history.
    pub fn history_mark(&self) -> Option<(HistoryMark, Option<u64>)> {
        let room = &self.rooms[self.current_index()?];
        let h = &room.history;
        let mark = if h.unavailable {
            return None;
        } else if h.loading.is_some() {
            HistoryMark::Loading
        } else if !h.known {
            return None;
        } else if !h.more {
            HistoryMark::Beginning
        } else if h.full {
            HistoryMark::Full
        } else {
            HistoryMark::Older
        };
        let at = h.floor.filter(|f| self.holds(&room.name, *f));
        Some((mark, at))
    }

    /// A `history` request for up to `limit` messages of the current room
    /// older than those held, with the id `id` makes. It is remembered
    /// until answered, so it is never asked twice at once. `Err` says why
    /// nothing is to be asked.
    pub fn request_older(
        &mut self,
        limit: usize,
        id: impl FnOnce() -> String,
    ) -> Result<ClientMsg, NoOlder> {
        let i = self.current_index().ok_or(NoOlder::NoRoom)?;
        let limit = limit.clamp(1, MAX_HISTORY_PAGE);
        let name = self.rooms[i].name.clone();
        let h = &self.rooms[i].history;
        if h.unavailable {
            return Err(NoOlder::Unavailable);
        }
        if h.loading.is_some() {
            return Err(NoOlder::Loading);
        }
        if h.known && !h.more {
            return Err(NoOlder::Beginning);
        }
        let before = h.floor.or_else(|| {
            self.seqs
                .get(&name.to_ascii_lowercase())
                .and_then(|s| s.first().copied())
        });
        if before == Some(1) {
            // Numbering starts at 1: nothing can be older.
            self.rooms[i].history.more = false;
            return Err(NoOlder::Beginning);
        }
        // The page goes in above the oldest held message; with fewer lines
        // before that than the page pushes out, it would push itself out.
        let at = before.map_or(self.lines.len(), |b| {
            self.lines
                .iter()
                .position(|l| l.in_room(&name) && l.seq.is_some_and(|s| s >= b))
                .unwrap_or(self.lines.len())
        });
        let excess = (self.lines.len() + limit).saturating_sub(self.max_lines);
        let h = &mut self.rooms[i].history;
        if at < excess {
            h.full = true;
            return Err(NoOlder::Full);
        }
        h.full = false;
        let id = id();
        h.loading = Some(id.clone());
        Ok(ClientMsg::History {
            id: Some(id),
            room: name,
            before,
            limit: Some(limit),
        })
    }

    /// Whether a line of `room` holds `seq`, and if so whether it is the
    /// message posted at `ts` (a message keeps its `seq` and `ts` for good,
    /// so the same pair is the same message).
    fn same_message(&self, room: &str, seq: u64, ts: u64) -> Option<bool> {
        if !self.holds(room, seq) {
            return None;
        }
        Some(
            self.lines
                .iter()
                .any(|l| l.seq == Some(seq) && l.ts_ms == ts && l.in_room(room)),
        )
    }

    /// The server numbers `room` afresh (it restarted without keeping
    /// history, or the room was forgotten when it emptied): the held lines
    /// stay on screen but their numbers no longer name messages.
    fn forget_numbering(&mut self, room: &str) {
        for line in self.lines.iter_mut().filter(|l| l.in_room(room)) {
            line.seq = None;
        }
        self.seqs.remove(&room.to_ascii_lowercase());
        if let Some(i) = self.room_index(room) {
            let h = &mut self.rooms[i].history;
            *h = RoomHistory {
                known: h.known,
                loading: h.loading.take(),
                ..RoomHistory::default()
            };
        }
    }

    /// Records that `line` holds its `seq`.
    fn note_seq(&mut self, line: &Line) {
        if let (Some(room), Some(seq)) = (&line.room, line.seq) {
            self.seqs
                .entry(room.to_ascii_lowercase())
                .or_default()
                .insert(seq);
        }
    }

    /// Follows a `history` message: the replay on joining (no `id`) or a
    /// requested page.
    fn apply_history(
        &mut self,
        id: Option<String>,
        room: &str,
        mut entries: Vec<HistoryEntry>,
        mut more: bool,
    ) {
        let room = clean(room);
        entries.sort_by_key(|e| e.seq);
        entries.dedup_by_key(|e| e.seq);
        // More than the scrollback holds could only push itself out.
        if entries.len() > self.max_lines {
            entries.drain(..entries.len() - self.max_lines);
            more = true;
        }
        let replay = id.is_none();
        // The replay ends with the room's newest message. Holding a newer
        // one, or another message under the same number, means the server
        // numbers the room afresh.
        let newest_held = self
            .seqs
            .get(&room.to_ascii_lowercase())
            .and_then(|s| s.last().copied());
        let renumbered = replay
            && (entries
                .last()
                .is_some_and(|e| newest_held.is_some_and(|n| e.seq < n))
                || entries
                    .iter()
                    .any(|e| self.same_message(&room, e.seq, e.ts) == Some(false)));
        if renumbered {
            self.forget_numbering(&room);
        }
        let newest_held = self
            .seqs
            .get(&room.to_ascii_lowercase())
            .and_then(|s| s.last().copied());
        if let Some(i) = self.room_index(&room) {
            let h = &mut self.rooms[i].history;
            h.known = true;
            h.unavailable = false;
            let page = id.is_some() && h.loading == id;
            if page {
                h.loading = None;
            }
            match entries.first() {
                Some(first) => {
                    // A replay starting above what is held (after a long
                    // absence): the messages between were missed, and
                    // paging fills them in from here.
                    let gap =
                        replay && newest_held.is_some_and(|n| first.seq > n.saturating_add(1));
                    if gap || h.floor.is_none_or(|f| first.seq <= f) {
                        h.floor = Some(first.seq);
                        h.more = more;
                    }
                }
                None if page || replay => h.more = false,
                None => {}
            }
        }
        self.merge_history(&room, entries);
    }

    /// Puts stored messages of `room` (sorted by `seq`) into the scrollback
    /// in `seq` order, each before the first held message of the room with
    /// a greater `seq`, or at the end. Messages held already are skipped;
    /// a message of mine whose ack was lost with the connection is
    /// recognised by its text and takes the stored `seq`.
    fn merge_history(&mut self, room: &str, entries: Vec<HistoryEntry>) {
        let now = self.now();
        let mut doubtful: Vec<usize> = self
            .lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.in_doubt && l.seq.is_none() && l.in_room(room))
            .map(|(i, _)| i)
            .collect();
        let mut fresh = Vec::new();
        for e in entries {
            if self.holds(room, e.seq) {
                continue;
            }
            let text = clean(&e.text);
            let from = clean(&e.from);
            let mine = doubtful.iter().position(|&i| {
                let l = &self.lines[i];
                l.text == text
                    && l.nick.eq_ignore_ascii_case(&from)
                    && matches!(l.kind, Kind::Own { action, .. } if action == e.action)
            });
            if let Some(k) = mine {
                let at = doubtful.remove(k);
                let line = &mut self.lines[at];
                line.seq = Some(e.seq);
                line.ts_ms = e.ts;
                line.in_doubt = false;
                if let Kind::Own { delivery, .. } = &mut line.kind {
                    *delivery = Delivery::Confirmed;
                }
                self.seqs
                    .entry(room.to_ascii_lowercase())
                    .or_default()
                    .insert(e.seq);
                continue;
            }
            let kind = if self.is_me(&from) {
                Kind::Own {
                    action: e.action,
                    to: None,
                    delivery: Delivery::Confirmed,
                }
            } else if e.action {
                Kind::Action
            } else {
                Kind::Chat
            };
            let mut line = Self::line(e.ts, kind, Some(room), &from, &text);
            line.seq = Some(e.seq);
            line.dated = !clock::same_day(e.ts, now);
            line.uid = self.next_uid();
            self.note_seq(&line);
            fresh.push(line);
        }
        if fresh.is_empty() {
            return;
        }
        let mut fresh = fresh.into_iter().peekable();
        let old = std::mem::take(&mut self.lines);
        let mut merged = VecDeque::with_capacity(old.len() + fresh.len());
        for line in old {
            if let Some(seq) = line.seq.filter(|_| line.in_room(room)) {
                while let Some(new) = fresh.next_if(|n| n.seq < Some(seq)) {
                    merged.push_back(new);
                }
            }
            merged.push_back(line);
        }
        merged.extend(fresh);
        self.lines = merged;
        self.trim();
    }

    /// Gives my acknowledged line `uid` its `seq`. A copy of the same
    /// message that a history answer brought before the ack is dropped.
    fn place_own(&mut self, uid: u64, room: &str, seq: u64, ts: u64) {
        match self.same_message(room, seq, ts) {
            Some(true) => self
                .lines
                .retain(|l| l.uid == uid || l.seq != Some(seq) || !l.in_room(room)),
            Some(false) => self.forget_numbering(room),
            None => {}
        }
        if let Some(line) = self.lines.iter_mut().find(|l| l.uid == uid) {
            line.seq = Some(seq);
        }
        self.seqs
            .entry(room.to_ascii_lowercase())
            .or_default()
            .insert(seq);
    }

    /// Follows one update from the connection.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Status(status) => self.apply_status(status),
            Update::Msg(msg) => self.apply_msg(msg),
        }
    }

    fn apply_status(&mut self, status: Status) {
        let was_connected = matches!(self.status, Status::Connected { .. });
        match &status {
            Status::Connected { server, tls } => {
                self.server = clean(server);
                self.tls = *tls;
                self.push_local(Kind::Info, &format!("connected to {}", self.server.clone()));
            }
            Status::Lost { reason, retry_in } => {
                if was_connected {
                    self.lost_in_flight();
                }
                // Failed attempts while reconnecting only update the status
                // bar; a lost session, or giving up, gets a line.
                if was_connected || retry_in.is_none() {
                    let mut text = format!("connection lost: {reason}");
                    if let Some(d) = retry_in {
                        text.push_str(&format!(
                            "; reconnecting in {}s",
                            (d.as_millis() as u64).div_ceil(1000)
                        ));
                    }
                    self.push_local(Kind::Error, &text);
                }
            }
            Status::Connecting { .. } => {}
        }
        self.status = match status {
            Status::Connected { server, tls } => Status::Connected {
                server: clean(&server),
                tls,
            },
            Status::Lost { reason, retry_in } => Status::Lost {
                reason: clean(&reason),
                retry_in,
            },
            s => s,
        };
        self.status_at = self.now();
    }

    /// The connection was lost: pages asked for will not be answered, and
    /// my messages still waiting for an ack may or may not have been
    /// posted (the replay after reconnecting will tell).
    fn lost_in_flight(&mut self) {
        for room in &mut self.rooms {
            room.history.loading = None;
        }
        for line in &mut self.lines {
            if line.room.is_some()
                && line.seq.is_none()
                && matches!(
                    line.kind,
                    Kind::Own {
                        delivery: Delivery::Pending,
                        ..
                    }
                )
            {
                line.in_doubt = true;
            }
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
                    &format!("{nick} joined {room}"),
                );
            }
            ServerMsg::Left {
                room,
                nick,
                kind,
                reason,
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
                let text = match (kind, reason) {
                    (LeaveKind::Part, _) => format!("{nick} left {room}"),
                    (LeaveKind::Quit, None) => format!("{nick} quit"),
                    (LeaveKind::Quit, Some(r)) => format!("{nick} quit ({r})"),
                    (LeaveKind::Dropped, None) => format!("{nick} was disconnected"),
                    (LeaveKind::Dropped, Some(r)) => format!("{nick} was disconnected ({r})"),
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
                    self.nick = new.clone();
                    self.push_line(
                        now,
                        Kind::Nick,
                        None,
                        &new,
                        &format!("you are now known as {new}"),
                    );
                } else {
                    let text = format!("{old} is now known as {new}");
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
            ServerMsg::Error { id, code, message } => {
                if code == ErrorCode::NoHistory {
                    for room in &mut self.rooms {
                        room.history.unavailable = true;
                    }
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
    use super::*;
    use std::time::Duration;

    fn clock() -> u64 {
        1_000_000
    }

    fn view() -> ChatView {
        let mut v = ChatView::new("127.0.0.1:1234", false);
        v.set_clock(clock);
        v.apply(Update::Status(Status::Connected {
            server: "127.0.0.1:1234".into(),
            tls: false,
        }));
        v.apply(Update::Msg(ServerMsg::Welcome {
            proto: "rchat".into(),
            version: 1,
            nick: "alice".into(),
            max_text: 1024,
            ping_interval: 30,
        }));
        v.apply(Update::Msg(ServerMsg::RoomState {
            room: "lobby".into(),
            members: vec!["bob".into(), "alice".into()],
        }));
        v
    }

    fn msg(v: &mut ChatView, m: ServerMsg) {
        v.apply(Update::Msg(m));
    }

    fn last(v: &ChatView) -> &Line {
        v.lines().last().unwrap()
    }

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
    fn scrollback_is_bounded_oldest_first_out() {
        let mut v = view();
        v.set_max_lines(5);
        for i in 0..20 {
            msg(
                &mut v,
                ServerMsg::Notice {
                    text: format!("n{i}"),
                },
            );
        }
        let texts: Vec<&str> = v.lines().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["n15", "n16", "n17", "n18", "n19"]);
        assert!(v.pushed() >= 20);

        let mut big = view();
        for i in 0..(MAX_LINES + 50) {
            msg(
                &mut big,
                ServerMsg::Notice {
                    text: format!("n{i}"),
                },
            );
        }
        assert_eq!(big.lines().len(), MAX_LINES);
        assert_eq!(
            big.lines().last().unwrap().text,
            format!("n{}", MAX_LINES + 49)
        );
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

    fn entry(seq: u64, from: &str, text: &str) -> HistoryEntry {
        HistoryEntry {
            seq,
            ts: seq.wrapping_add(1_000),
            from: from.into(),
            text: text.into(),
            action: false,
        }
    }

    fn history(v: &mut ChatView, id: Option<&str>, messages: Vec<HistoryEntry>, more: bool) {
        msg(
            v,
            ServerMsg::History {
                id: id.map(str::to_string),
                room: "lobby".into(),
                messages,
                more,
            },
        );
    }

    fn live(v: &mut ChatView, seq: u64, text: &str) {
        msg(
            v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq,
                ts: seq.wrapping_add(1_000),
                from: "bob".into(),
                text: text.into(),
                action: false,
            },
        );
    }

    /// The lobby's messages in scrollback order: (seq, text).
    fn said(v: &ChatView) -> Vec<(Option<u64>, String)> {
        v.lines()
            .filter(|l| l.in_room("lobby"))
            .filter(|l| matches!(l.kind, Kind::Chat | Kind::Action | Kind::Own { .. }))
            .map(|l| (l.seq, l.text.clone()))
            .collect()
    }

    /// Request ids numbered as the interface numbers them.
    fn next(ids: &mut u64) -> impl FnOnce() -> String + '_ {
        move || {
            *ids += 1;
            format!("c{ids}")
        }
    }

    fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<(Option<u64>, String)> {
        range.map(|i| (Some(i), format!("m{i}"))).collect()
    }

    fn reconnect(v: &mut ChatView) {
        v.apply(Update::Status(Status::Lost {
            reason: "reset".into(),
            retry_in: Some(Duration::from_millis(250)),
        }));
        v.apply(Update::Status(Status::Connected {
            server: "127.0.0.1:1234".into(),
            tls: false,
        }));
        msg(
            v,
            ServerMsg::RoomState {
                room: "lobby".into(),
                members: vec!["alice".into(), "bob".into()],
            },
        );
    }

    #[test]
    fn replay_goes_in_seq_order_with_its_times_and_senders() {
        let mut v = view();
        let joined_at = v.lines().len();
        let mut waves = entry(2, "carol", "waves");
        waves.action = true;
        // Another day than the view's clock: shown with its date.
        waves.ts = 1_000_000 + 86_400_000;
        history(
            &mut v,
            None,
            vec![entry(3, "alice", "mine"), entry(1, "bob", "first"), waves],
            true,
        );
        live(&mut v, 4, "live");
        let got: Vec<_> = v.lines().skip(joined_at).collect();
        assert_eq!(got.len(), 4);
        assert_eq!(
            got.iter().map(|l| l.seq).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!((got[0].nick.as_str(), got[0].ts_ms), ("bob", 1_001));
        assert_eq!(got[0].kind, Kind::Chat);
        assert!(!got[0].dated);
        assert_eq!((got[1].kind.clone(), got[1].dated), (Kind::Action, true));
        assert_eq!(got[1].nick, "carol");
        // My own stored message is drawn as mine.
        assert_eq!(
            got[2].kind,
            Kind::Own {
                action: false,
                to: None,
                delivery: Delivery::Confirmed
            }
        );
        // Replayed messages are old news: no unread count, and the start of
        // what is held is marked.
        assert_eq!(v.rooms()[0].unread, 0);
        assert_eq!(v.rooms()[0].history.floor, Some(1));
        assert_eq!(v.history_mark(), Some((HistoryMark::Older, Some(1))));
    }

    #[test]
    fn reconnect_replay_is_deduplicated_own_messages_included() {
        let mut v = view();
        history(
            &mut v,
            None,
            (1..=3).map(|i| entry(i, "bob", &format!("m{i}"))).collect(),
            false,
        );
        v.local_echo(&ClientMsg::Say {
            id: Some("c1".into()),
            room: "lobby".into(),
            text: "m4".into(),
            action: false,
        });
        msg(
            &mut v,
            ServerMsg::Ack {
                id: "c1".into(),
                room: Some("lobby".into()),
                seq: Some(4),
                ts: Some(1_004),
            },
        );
        live(&mut v, 5, "m5");
        reconnect(&mut v);
        // The server replays its last five: four are held already.
        history(
            &mut v,
            None,
            vec![
                entry(2, "bob", "m2"),
                entry(3, "bob", "m3"),
                entry(4, "alice", "m4"),
                entry(5, "bob", "m5"),
                entry(6, "bob", "m6"),
            ],
            true,
        );
        assert_eq!(said(&v), numbered(1..=6));
        let own = v.lines().find(|l| l.seq == Some(4)).unwrap();
        assert!(matches!(
            own.kind,
            Kind::Own {
                delivery: Delivery::Confirmed,
                ..
            }
        ));
        // No gap: what is held still starts at 1, where nothing is older.
        assert_eq!(v.history_mark(), Some((HistoryMark::Beginning, Some(1))));
        // The message after the replay is the next live one, once.
        live(&mut v, 7, "m7");
        assert_eq!(said(&v), numbered(1..=7));
    }

    #[test]
    fn my_message_whose_ack_was_lost_is_recognised_in_the_replay() {
        let mut v = view();
        history(&mut v, None, vec![entry(1, "bob", "m1")], false);
        v.local_echo(&ClientMsg::Say {
            id: Some("c1".into()),
            room: "lobby".into(),
            text: "did this arrive?".into(),
            action: false,
        });
        reconnect(&mut v);
        let mut mine = entry(2, "alice", "did this arrive?");
        mine.ts = 77;
        history(&mut v, None, vec![entry(1, "bob", "m1"), mine], false);
        let copies: Vec<&Line> = v.lines().filter(|l| l.text == "did this arrive?").collect();
        assert_eq!(copies.len(), 1, "{copies:#?}");
        assert_eq!(copies[0].seq, Some(2));
        assert_eq!(copies[0].ts_ms, 77);
        assert!(matches!(
            copies[0].kind,
            Kind::Own {
                delivery: Delivery::Confirmed,
                ..
            }
        ));
    }

    #[test]
    fn an_ack_after_a_page_holding_the_same_message_keeps_one_line() {
        let mut v = view();
        v.local_echo(&ClientMsg::Say {
            id: Some("c1".into()),
            room: "lobby".into(),
            text: "slow ack".into(),
            action: false,
        });
        // Durable acks may come after the answer to a later request.
        history(
            &mut v,
            Some("c2"),
            vec![entry(9, "alice", "slow ack")],
            false,
        );
        msg(
            &mut v,
            ServerMsg::Ack {
                id: "c1".into(),
                room: Some("lobby".into()),
                seq: Some(9),
                ts: Some(1_009),
            },
        );
        let copies: Vec<&Line> = v.lines().filter(|l| l.text == "slow ack").collect();
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].seq, Some(9));
        assert!(matches!(
            copies[0].kind,
            Kind::Own {
                delivery: Delivery::Confirmed,
                ..
            }
        ));
        // A live copy that a page overtook is not shown twice either.
        history(&mut v, Some("c3"), vec![entry(10, "bob", "m10")], false);
        live(&mut v, 10, "m10");
        assert_eq!(v.lines().filter(|l| l.text == "m10").count(), 1);
    }

    #[test]
    fn paging_back_prepends_in_order_once_at_a_time() {
        let mut v = view();
        history(
            &mut v,
            None,
            (51..=55)
                .map(|i| entry(i, "bob", &format!("m{i}")))
                .collect(),
            true,
        );
        live(&mut v, 56, "m56");
        let mut ids = 0;
        let req = v.request_older(50, next(&mut ids)).unwrap();
        assert_eq!(
            req,
            ClientMsg::History {
                id: Some("c1".into()),
                room: "lobby".into(),
                before: Some(51),
                limit: Some(50),
            }
        );
        assert_eq!(v.history_mark(), Some((HistoryMark::Loading, Some(51))));
        // No second request while one is outstanding.
        assert_eq!(v.request_older(50, next(&mut ids)), Err(NoOlder::Loading));
        assert_eq!(ids, 1);
        history(
            &mut v,
            Some("c1"),
            (2..=50)
                .map(|i| entry(i, "bob", &format!("m{i}")))
                .collect(),
            true,
        );
        assert_eq!(said(&v), numbered(2..=56));
        assert_eq!(v.history_mark(), Some((HistoryMark::Older, Some(2))));
        // Older pages go above everything held, live lines stay last.
        let req = v.request_older(50, next(&mut ids)).unwrap();
        assert!(matches!(
            req,
            ClientMsg::History {
                before: Some(2),
                ..
            }
        ));
        history(&mut v, Some("c2"), vec![entry(1, "bob", "m1")], false);
        assert_eq!(said(&v), numbered(1..=56));
        assert_eq!(v.history_mark(), Some((HistoryMark::Beginning, Some(1))));
        assert_eq!(v.request_older(50, next(&mut ids)), Err(NoOlder::Beginning));
        // An empty answer also means the beginning.
        let mut w = view();
        history(&mut w, None, vec![entry(8, "bob", "m8")], true);
        let _ = w.request_older(50, next(&mut ids)).unwrap();
        history(&mut w, Some(&format!("c{ids}")), vec![], false);
        assert_eq!(w.history_mark(), Some((HistoryMark::Beginning, Some(8))));
    }

    #[test]
    fn a_gap_after_a_long_absence_is_paged_from_the_replay() {
        let mut v = view();
        history(
            &mut v,
            None,
            (1..=3).map(|i| entry(i, "bob", &format!("m{i}"))).collect(),
            false,
        );
        reconnect(&mut v);
        history(
            &mut v,
            None,
            (10..=12)
                .map(|i| entry(i, "bob", &format!("m{i}")))
                .collect(),
            true,
        );
        assert_eq!(v.history_mark(), Some((HistoryMark::Older, Some(10))));
        let mut ids = 0;
        let req = v.request_older(50, next(&mut ids)).unwrap();
        assert!(matches!(
            req,
            ClientMsg::History {
                before: Some(10),
                ..
            }
        ));
        history(
            &mut v,
            Some("c1"),
            (1..=9).map(|i| entry(i, "bob", &format!("m{i}"))).collect(),
            false,
        );
        assert_eq!(said(&v), numbered(1..=12));
        assert_eq!(v.history_mark(), Some((HistoryMark::Beginning, Some(1))));
    }

    #[test]
    fn a_server_numbering_afresh_is_not_taken_for_duplicates() {
        let mut v = view();
        live(&mut v, 1, "before restart");
        live(&mut v, 2, "also before");
        reconnect(&mut v);
        // Same numbers, other messages (other times).
        history(
            &mut v,
            None,
            vec![HistoryEntry {
                ts: 5_000,
                ..entry(1, "carol", "after restart")
            }],
            false,
        );
        for text in ["before restart", "also before", "after restart"] {
            assert_eq!(v.lines().filter(|l| l.text == text).count(), 1, "{text}");
        }
        // Without history, a live message may reuse a number too.
        msg(
            &mut v,
            ServerMsg::Message {
                room: "lobby".into(),
                seq: 1,
                ts: 9_000,
                from: "bob".into(),
                text: "renumbered".into(),
                action: false,
            },
        );
        assert_eq!(v.lines().filter(|l| l.text == "renumbered").count(), 1);
        assert!(v.holds("lobby", 1));
    }

    #[test]
    fn history_errors_stop_paging_and_mark_unstored_messages() {
        let mut v = view();
        let mut ids = 0;
        // No replay came (the server does not replay): the first page is
        // asked for from the newest.
        let req = v.request_older(20, next(&mut ids)).unwrap();
        assert!(matches!(
            req,
            ClientMsg::History {
                before: None,
                limit: Some(20),
                ..
            }
        ));
        msg(
            &mut v,
            ServerMsg::Error {
                id: Some("c1".into()),
                code: ErrorCode::NoHistory,
                message: "this server keeps no history".into(),
            },
        );
        assert_eq!(
            v.request_older(20, next(&mut ids)),
            Err(NoOlder::Unavailable)
        );
        assert_eq!(v.history_mark(), None);
        assert_eq!(last(&v).text, "this server keeps no history");

        v.local_echo(&ClientMsg::Say {
            id: Some("c9".into()),
            room: "lobby".into(),
            text: "unsaved".into(),
            action: false,
        });
        msg(
            &mut v,
            ServerMsg::Error {
                id: Some("c9".into()),
                code: ErrorCode::NotStored,
                message: "your message was delivered but could not be stored: disk full".into(),
            },
        );
        let line = v.lines().find(|l| l.text == "unsaved").unwrap();
        assert!(matches!(
            line.kind,
            Kind::Own {
                delivery: Delivery::NotStored,
                ..
            }
        ));
        assert_eq!(last(&v).kind, Kind::Error);
        assert!(last(&v).text.contains("could not be stored"));
    }

    #[test]
    fn a_lost_connection_forgets_the_page_in_flight() {
        let mut v = view();
        history(&mut v, None, vec![entry(5, "bob", "m5")], true);
        let mut ids = 0;
        v.request_older(50, next(&mut ids)).unwrap();
        assert_eq!(v.request_older(50, next(&mut ids)), Err(NoOlder::Loading));
        reconnect(&mut v);
        history(&mut v, None, vec![entry(5, "bob", "m5")], true);
        assert!(v.request_older(50, next(&mut ids)).is_ok());
        // A failed request frees the room too.
        msg(
            &mut v,
            ServerMsg::Error {
                id: Some(format!("c{ids}")),
                code: ErrorCode::NotInRoom,
                message: "you are not in lobby".into(),
            },
        );
        assert!(v.request_older(50, next(&mut ids)).is_ok());
    }

    #[test]
    fn pages_that_would_push_themselves_out_are_not_asked_for() {
        let mut v = view();
        v.set_max_lines(30);
        history(
            &mut v,
            None,
            (31..=40)
                .map(|i| entry(i, "bob", &format!("m{i}")))
                .collect(),
            true,
        );
        let mut ids = 0;
        assert_eq!(v.request_older(50, next(&mut ids)), Err(NoOlder::Full));
        assert_eq!(v.history_mark(), Some((HistoryMark::Full, Some(31))));
        // A smaller page fits.
        let req = v.request_older(5, next(&mut ids)).unwrap();
        assert!(matches!(
            req,
            ClientMsg::History {
                before: Some(31),
                limit: Some(5),
                ..
            }
        ));
        history(
            &mut v,
            Some("c1"),
            (26..=30)
                .map(|i| entry(i, "bob", &format!("m{i}")))
                .collect(),
            true,
        );
        assert_eq!(said(&v), numbered(26..=40));
        // Lines pushed out of the scrollback are no longer held: paging
        // goes on from above them.
        for i in 41..=70 {
            live(&mut v, i, &format!("m{i}"));
        }
        assert_eq!(v.lines().len(), 30);
        let floor = v.rooms()[0].history.floor.unwrap();
        assert!(!v.holds("lobby", floor - 1));
        assert!(v.holds("lobby", floor), "floor {floor}");
        assert!(v.rooms()[0].history.more);
    }

    #[test]
    fn hostile_history_cannot_panic_or_outgrow_the_scrollback() {
        let mut v = view();
        v.set_max_lines(10);
        let mut junk: Vec<HistoryEntry> = (0..1_000)
            .map(|i| HistoryEntry {
                seq: if i % 2 == 0 { u64::MAX - i } else { i % 7 },
                ts: u64::MAX - i,
                from: "x\x1b[2J".into(),
                text: "\x07boom\x1b]0;t\x07".into(),
                action: i % 3 == 0,
            })
            .collect();
        junk.push(entry(u64::MAX, "bob", "last"));
        history(&mut v, None, junk.clone(), true);
        history(&mut v, Some("c1"), junk, false);
        assert!(v.lines().len() <= 10);
        for i in 0..20 {
            live(&mut v, u64::MAX - i, "live");
        }
        assert!(v.lines().len() <= 10);
        let mut ids = 0;
        let _ = v.request_older(usize::MAX, next(&mut ids));
        for line in v.lines() {
            assert!(!line
                .text
                .chars()
                .chain(line.nick.chars())
                .any(char::is_control));
        }
    }
}
