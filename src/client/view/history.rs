//! Stored history in the view: what is known of each room's history, the
//! merge of replays and requested pages into the scrollback in `seq` order
//! (each message once), and asking for the page before the oldest held.

use super::*;

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

impl ChatView {
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
    pub(super) fn same_message(&self, room: &str, seq: u64, ts: u64) -> Option<bool> {
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
    pub(super) fn forget_numbering(&mut self, room: &str) {
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
    pub(super) fn note_seq(&mut self, line: &Line) {
        if let (Some(room), Some(seq)) = (&line.room, line.seq) {
            self.seqs
                .entry(room.to_ascii_lowercase())
                .or_default()
                .insert(seq);
        }
    }

    /// Follows a `history` message: the replay on joining (no `id`) or a
    /// requested page.
    pub(super) fn apply_history(
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
    pub(super) fn merge_history(&mut self, room: &str, entries: Vec<HistoryEntry>) {
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
    pub(super) fn place_own(&mut self, uid: u64, room: &str, seq: u64, ts: u64) {
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
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{last, msg, view};
    use super::*;
    use crate::client::conn::{Status, Update};
    use std::time::Duration;

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
    pub(super) fn replay_goes_in_seq_order_with_its_times_and_senders() {
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
    pub(super) fn reconnect_replay_is_deduplicated_own_messages_included() {
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
    pub(super) fn my_message_whose_ack_was_lost_is_recognised_in_the_replay() {
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
    pub(super) fn an_ack_after_a_page_holding_the_same_message_keeps_one_line() {
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
    pub(super) fn paging_back_prepends_in_order_once_at_a_time() {
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
    pub(super) fn a_gap_after_a_long_absence_is_paged_from_the_replay() {
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
    pub(super) fn a_server_numbering_afresh_is_not_taken_for_duplicates() {
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
    pub(super) fn history_errors_stop_paging_and_mark_unstored_messages() {
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
                retry_after_ms: None,
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
                retry_after_ms: None,
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
    pub(super) fn a_lost_connection_forgets_the_page_in_flight() {
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
                retry_after_ms: None,
            },
        );
        assert!(v.request_older(50, next(&mut ids)).is_ok());
    }

    #[test]
    pub(super) fn pages_that_would_push_themselves_out_are_not_asked_for() {
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
    pub(super) fn hostile_history_cannot_panic_or_outgrow_the_scrollback() {
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
