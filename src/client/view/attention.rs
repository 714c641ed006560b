//! What should catch the user's eye: a line that names them (their nick as
//! a word, or a highlight word from the config) is marked as a mention,
//! marks its room until visited and asks for the terminal bell once; a
//! private message asks for the bell too. Nicks the user ignores have
//! their chat, actions and private messages dropped before they are shown.
//! And the unread marker: where the user left each room.
//!
//! The view only decides; ringing the bell and keeping the ignore list on
//! disk are the interface's business.

use std::collections::BTreeSet;

use super::*;

/// The view's attention settings and state.
#[derive(Debug, Clone, Default)]
pub(super) struct Attention {
    /// Extra words that count as mentions, lower-cased.
    highlights: Vec<String>,
    /// Ignored nicks, lower-cased.
    ignored: BTreeSet<String>,
    /// A mention or private message arrived since the bell was last rung.
    bell: bool,
}

/// Whether `word` occurs in `text` as a whole word, ignoring ASCII case.
/// Nick characters (letters, digits, `_`, `-`) on either side make it part
/// of a longer word.
pub fn names(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let part = |c: char| c.is_alphanumeric() || c == '_' || c == '-';
    let lower = text.to_lowercase();
    let word = word.to_lowercase();
    let mut from = 0;
    while let Some(at) = lower[from..].find(&word) {
        let start = from + at;
        let end = start + word.len();
        let before = lower[..start].chars().next_back();
        let after = lower[end..].chars().next();
        if !before.is_some_and(part) && !after.is_some_and(part) {
            return true;
        }
        from = start + lower[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

impl ChatView {
    /// Extra words that count as mentions (the config's `highlight`).
    pub fn set_highlights(&mut self, words: &[String]) {
        self.attention.highlights = words
            .iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
    }

    /// Whether the bell should ring; asking clears it, so a burst of
    /// mentions rings once per draw.
    pub fn take_bell(&mut self) -> bool {
        std::mem::take(&mut self.attention.bell)
    }

    /// Ignores `nick`'s chat, actions and private messages from now on;
    /// `false` if it was ignored already.
    pub fn ignore(&mut self, nick: &str) -> bool {
        self.attention.ignored.insert(nick.to_lowercase())
    }

    /// Stops ignoring `nick`; `false` if it was not ignored.
    pub fn unignore(&mut self, nick: &str) -> bool {
        self.attention.ignored.remove(&nick.to_lowercase())
    }

    /// The ignored nicks, lower-cased, sorted.
    pub fn ignored(&self) -> impl Iterator<Item = &str> {
        self.attention.ignored.iter().map(String::as_str)
    }

    /// Whether `line` is from someone ignored and not to be shown.
    pub(super) fn is_ignored(&self, line: &Line) -> bool {
        matches!(line.kind, Kind::Chat | Kind::Action | Kind::Private)
            && self.attention.ignored.contains(&line.nick.to_lowercase())
    }

    /// Marks `line` as a mention if it names me or a highlight word (chat
    /// and actions of others), and asks for the bell for a mention or a
    /// private message.
    pub(super) fn notice_mention(&mut self, line: &mut Line) {
        match line.kind {
            Kind::Chat | Kind::Action if !self.is_me(&line.nick) => {
                let me = self.nick.clone();
                line.mention = names(&line.text, &me)
                    || self
                        .attention
                        .highlights
                        .iter()
                        .any(|w| names(&line.text, w));
            }
            Kind::Private => line.mention = true,
            _ => {}
        }
        if line.mention {
            self.attention.bell = true;
        }
    }

    /// Remembers the newest line of the current room, as I leave it.
    pub(super) fn mark_read_up_to(&mut self) {
        let Some(i) = self.current_index() else {
            return;
        };
        let name = self.rooms[i].name.clone();
        let newest = self.lines.iter().rev().find(|l| l.in_room(&name));
        self.rooms[i].read_up_to = newest.map(Line::uid);
    }

    /// The line the unread marker goes below in the current room: the
    /// newest one when I last left it, if anything came after it.
    pub fn unread_marker(&self) -> Option<u64> {
        let room = &self.rooms[self.current_index()?];
        let mark = room.read_up_to?;
        let newer = self
            .lines
            .iter()
            .rev()
            .take_while(|l| l.uid() > mark)
            .any(|l| l.in_room(&room.name) && matches!(l.kind, Kind::Chat | Kind::Action));
        newer.then_some(mark)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::view::test_util::*;

    /// The test view (I am alice, in the lobby) also in `dev`, current.
    fn joined() -> ChatView {
        let mut v = view();
        msg(
            &mut v,
            ServerMsg::RoomState {
                room: "dev".into(),
                members: vec!["alice".into()],
            },
        );
        v
    }

    #[test]
    fn whole_words_ignoring_case() {
        assert!(names("hi Alice!", "alice"));
        assert!(names("alice: look", "ALICE"));
        assert!(names("ping @alice", "alice"));
        assert!(!names("malice aforethought", "alice"));
        assert!(!names("alice_bot says hi", "alice"));
        assert!(!names("alice-2 is here", "alice"));
        assert!(names("deploy, alice, now", "alice"));
        assert!(!names("anything", ""));
    }

    fn say_in(v: &mut ChatView, room: &str, seq: u64, from: &str, text: &str) {
        v.apply(Update::Msg(ServerMsg::Message {
            room: room.into(),
            seq,
            ts: 1,
            from: from.into(),
            text: text.into(),
            action: false,
        }));
    }

    #[test]
    fn mentions_mark_the_line_and_the_room_and_ring_once() {
        let mut v = joined();
        v.set_highlights(&["Deploy".into()]);
        assert!(!v.take_bell());
        say_in(&mut v, "lobby", 1, "bob", "hello Alice");
        assert!(v.lines().last().unwrap().mention, "my nick");
        assert!(v.take_bell());
        assert!(!v.take_bell(), "rung once");
        say_in(&mut v, "lobby", 2, "bob", "the deploy is done");
        assert!(v.lines().last().unwrap().mention);
        say_in(&mut v, "lobby", 3, "bob", "nothing for you");
        assert!(!v.lines().last().unwrap().mention);
        let lobby = v.rooms().iter().find(|r| r.name == "lobby").unwrap();
        assert!(lobby.mentioned && lobby.unread == 3);
        v.switch_room("lobby");
        let lobby = v.rooms().iter().find(|r| r.name == "lobby").unwrap();
        assert!(!lobby.mentioned && lobby.unread == 0);
    }

    #[test]
    fn ignored_nicks_are_not_shown_and_the_marker_sits_where_i_left() {
        let mut v = joined();
        v.switch_room("lobby");
        say_in(&mut v, "lobby", 1, "bob", "seen");
        let seen = v.lines().last().unwrap().uid();
        v.switch_room("dev");
        assert!(v.ignore("Troll"));
        assert!(!v.ignore("troll"));
        say_in(&mut v, "lobby", 2, "troll", "spam");
        say_in(&mut v, "lobby", 3, "bob", "new");
        assert!(v.lines().all(|l| l.nick != "troll"));
        v.switch_room("lobby");
        assert_eq!(v.unread_marker(), Some(seen));
        assert_eq!(v.ignored().collect::<Vec<_>>(), ["troll"]);
        assert!(v.unignore("TROLL"));
        say_in(&mut v, "lobby", 4, "troll", "back");
        assert_eq!(v.lines().last().unwrap().nick, "troll");
    }
}
