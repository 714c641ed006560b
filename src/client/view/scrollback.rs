//! The scrollback: one [`Line`] per thing shown, bounded to the newest
//! `max_lines` (the oldest go first), each with a uid a renderer can keep
//! its place by. What a line means is decided by the rest of the view;
//! this file only keeps them.

use super::*;

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
    pub(super) id: Option<String>,
    /// Unique in this view, so a renderer can keep its place when lines
    /// are inserted above.
    pub(super) uid: u64,
    /// My message whose connection was lost before its ack: a replayed
    /// message with the same text may be this one.
    pub(super) in_doubt: bool,
    /// It names me (or a highlight word): drawn to stand out.
    pub mention: bool,
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

impl ChatView {
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

    pub(super) fn trim(&mut self) {
        while self.lines.len() > self.max_lines {
            if let Some(line) = self.lines.pop_front() {
                self.forget(&line);
            }
        }
    }

    /// Bookkeeping for a line pushed out of the scrollback: its `seq` is no
    /// longer held, so its room's history is complete only above it.
    pub(super) fn forget(&mut self, line: &Line) {
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

    pub(super) fn next_uid(&mut self) -> u64 {
        self.pushed += 1;
        self.pushed
    }

    /// A new line; `uid` is filled in when it is added.
    pub(super) fn line(ts_ms: u64, kind: Kind, room: Option<&str>, nick: &str, text: &str) -> Line {
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
            mention: false,
        }
    }

    pub(super) fn push(&mut self, mut line: Line) {
        if self.is_ignored(&line) {
            return;
        }
        self.notice_mention(&mut line);
        if let Some(room) = &line.room {
            if let Some(i) = self.room_index(room) {
                let current = self
                    .current
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(room));
                if !current && matches!(line.kind, Kind::Chat | Kind::Action) {
                    self.rooms[i].unread += 1;
                    self.rooms[i].mentioned |= line.mention;
                }
            }
        }
        line.uid = self.next_uid();
        self.lines.push_back(line);
        self.trim();
    }

    pub(super) fn push_line(
        &mut self,
        ts_ms: u64,
        kind: Kind,
        room: Option<&str>,
        nick: &str,
        text: &str,
    ) {
        self.push(Self::line(ts_ms, kind, room, nick, text));
    }

    pub(super) fn push_local(&mut self, kind: Kind, text: &str) {
        let now = self.now();
        self.push_line(now, kind, None, "", text);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{msg, view};
    use super::*;

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
}
