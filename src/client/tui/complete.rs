//! Tab completion of the word before the cursor, as IRC clients do it:
//! a nick of the current room (those who spoke most recently first, then
//! the rest in order; at the start of the line followed by `: `), a command
//! after `/`, a room after `/join` or `/part`. Tab again cycles through the
//! matches, Shift+Tab goes back; any other key keeps what is there.
//!
//! Owns only the choosing; the candidates come from the view, and the line
//! is edited through [`InputLine::replace`].

use super::input::InputLine;
use crate::client::view::{ChatView, Kind};

/// Commands offered after `/`, in the order they are offered.
pub const COMMANDS: &[&str] = &[
    "ban", "bans", "help", "history", "ignore", "join", "kick", "me", "msg", "nick", "oper",
    "part", "quit", "rooms", "unban", "unignore", "who",
];

/// A completion in progress: where its word starts, what was typed, the
/// matches and which one is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    start: usize,
    /// Byte length of what is in the line now, from `start`.
    shown_len: usize,
    matches: Vec<String>,
    index: usize,
}

impl Completion {
    /// Starts completing the word before the cursor; `None` (and the line
    /// unchanged) if nothing matches.
    pub fn start(input: &mut InputLine, view: &ChatView) -> Option<Completion> {
        let cursor = input.cursor();
        let text = input.text();
        let start = text[..cursor].rfind(' ').map_or(0, |i| i + 1);
        let word = &text[start..cursor];
        let matches = candidates(&text[..start], word, view);
        if matches.is_empty() {
            return None;
        }
        let mut completion = Completion {
            start,
            shown_len: word.len(),
            matches,
            index: 0,
        };
        completion.show(input);
        Some(completion)
    }

    /// Shows the next match (`step` 1) or the previous one (`step` -1).
    pub fn cycle(&mut self, input: &mut InputLine, step: isize) {
        let n = self.matches.len() as isize;
        self.index = (self.index as isize + step).rem_euclid(n) as usize;
        self.show(input);
    }

    fn show(&mut self, input: &mut InputLine) {
        let with = &self.matches[self.index];
        input.replace(self.start, self.start + self.shown_len, with);
        self.shown_len = with.len();
    }
}

/// What `word` may become, given the line before it (`before`), each with
/// what follows it.
fn candidates(before: &str, word: &str, view: &ChatView) -> Vec<String> {
    let starts = |c: &str, w: &str| c.len() >= w.len() && c[..w.len()].eq_ignore_ascii_case(w);
    if before.is_empty() {
        if let Some(cmd) = word.strip_prefix('/') {
            return COMMANDS
                .iter()
                .filter(|c| starts(c, cmd))
                .map(|c| format!("/{c} "))
                .collect();
        }
    }
    let command = before.split(' ').next().unwrap_or("");
    let is_room_arg = matches!(command, "/join" | "/part") && before.trim_end() == command;
    if is_room_arg {
        let bare = word.trim_start_matches('#');
        return view
            .rooms()
            .iter()
            .filter(|r| starts(&r.name, bare))
            .map(|r| format!("{} ", r.name))
            .collect();
    }
    let suffix = if before.is_empty() { ": " } else { " " };
    nicks_by_activity(view)
        .into_iter()
        .filter(|n| starts(n, word))
        .map(|n| format!("{n}{suffix}"))
        .collect()
}

/// The current room's members other than me: those who spoke (or acted,
/// or joined) most recently first, then the rest in the room's order.
pub fn nicks_by_activity(view: &ChatView) -> Vec<String> {
    let me = view.nick().to_ascii_lowercase();
    let room = view.current_room().unwrap_or("");
    let members = view.members();
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    seen.insert(me);
    let recent = view.lines().rev().filter(|l| {
        l.room
            .as_deref()
            .is_some_and(|r| r.eq_ignore_ascii_case(room))
            && matches!(l.kind, Kind::Chat | Kind::Action | Kind::Join | Kind::Nick)
    });
    for line in recent {
        let key = line.nick.to_ascii_lowercase();
        // Only people still here.
        if let Some(member) = members.iter().find(|m| m.to_ascii_lowercase() == key) {
            if seen.insert(key) {
                out.push(member.clone());
            }
        }
    }
    for member in members {
        if seen.insert(member.to_ascii_lowercase()) {
            out.push(member.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tui::test_util::{join_dev, msg, say, view};
    use crate::proto::json::ServerMsg;

    fn typed(s: &str) -> InputLine {
        let mut input = InputLine::new();
        input.insert_str(s);
        input
    }

    fn room_of(v: &mut ChatView, members: &[&str]) {
        msg(
            v,
            ServerMsg::RoomState {
                room: "lobby".into(),
                members: members.iter().map(|m| m.to_string()).collect(),
            },
        );
    }

    #[test]
    fn nicks_complete_most_recent_speaker_first_and_cycle_both_ways() {
        let mut v = view();
        room_of(&mut v, &["alice", "alan", "albert", "alfred", "zed"]);
        say(&mut v, "alfred", "first");
        say(&mut v, "albert", "later");
        let mut input = typed("al");
        let mut c = Completion::start(&mut input, &v).expect("matches");
        assert_eq!(input.text(), "albert: ");
        c.cycle(&mut input, 1);
        assert_eq!(input.text(), "alfred: ");
        c.cycle(&mut input, 1);
        assert_eq!(input.text(), "alan: ");
        c.cycle(&mut input, 1);
        assert_eq!(input.text(), "albert: ");
        c.cycle(&mut input, -1);
        assert_eq!(input.text(), "alan: ");
        // Inside a line: a space after, and the rest of the line kept.
        let mut input = typed("hi ZE");
        Completion::start(&mut input, &v).expect("matches");
        assert_eq!(input.text(), "hi zed ");
        // I am never offered myself.
        let mut input = typed("ali");
        assert!(Completion::start(&mut input, &v).is_none());
        assert_eq!(input.text(), "ali");
    }

    #[test]
    fn commands_after_a_slash_and_rooms_after_join() {
        let mut v = view();
        join_dev(&mut v);
        let mut input = typed("/jo");
        Completion::start(&mut input, &v).expect("matches");
        assert_eq!(input.text(), "/join ");
        let mut input = typed("/join d");
        Completion::start(&mut input, &v).expect("matches");
        assert_eq!(input.text(), "/join dev ");
        let mut input = typed("/h");
        let mut c = Completion::start(&mut input, &v).expect("matches");
        assert_eq!(input.text(), "/help ");
        c.cycle(&mut input, 1);
        assert_eq!(input.text(), "/history ");
    }
}
