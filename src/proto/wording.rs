//! How membership events read, in one place: the server's text protocol,
//! the client's full-screen view and its line mode all word a join, a leave
//! and a nick change the same way.
//!
//! Callers pass the names already made safe (and, in line mode, coloured);
//! these functions only arrange them, without the `* ` a notice line starts
//! with.

use std::fmt::Display;

use super::json::LeaveKind;

/// `alice joined lobby`
pub fn joined(nick: impl Display, room: impl Display) -> String {
    format!("{nick} joined {room}")
}

/// `alice left lobby`, `alice quit (bye)`, `alice was disconnected (ping
/// timeout)`: the reason, when there is one, in parentheses.
pub fn left(
    nick: impl Display,
    room: impl Display,
    kind: &LeaveKind,
    reason: Option<&str>,
) -> String {
    let why = reason.map(|r| format!(" ({r})")).unwrap_or_default();
    match kind {
        LeaveKind::Part => format!("{nick} left {room}{why}"),
        LeaveKind::Quit => format!("{nick} quit{why}"),
        LeaveKind::Dropped => format!("{nick} was disconnected{why}"),
        LeaveKind::Kicked => format!("{nick} was kicked{why}"),
    }
}

/// `alice was kicked by root: spamming`: an operator removed someone.
pub fn kicked(nick: impl Display, by: impl Display, reason: Option<&str>) -> String {
    match reason {
        Some(why) => format!("{nick} was kicked by {by}: {why}"),
        None => format!("{nick} was kicked by {by}"),
    }
}

/// One ban as `/bans` lists it: `10.0.0.0/8 by root until 2026-12-08 09:00
/// UTC: spamming`.
pub fn ban(info: &super::json::BanInfo) -> String {
    let until = match info.until {
        Some(ms) => format!("until {} UTC", crate::clock::date_time(ms)),
        None => "until unbanned".to_string(),
    };
    let mut text = format!("{} by {} {until}", info.target, info.by);
    if let Some(reason) = &info.reason {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}

/// How many names a summary of joins or leaves lists before `and N more`.
pub const CROWD_LISTED: usize = 8;

/// What happened to everyone a crowd line names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowd {
    Joined,
    Left,
    Disconnected,
}

/// `212 joined lobby: ann, bob, … and 204 more`: several joins or leaves in
/// a big room, the first [`CROWD_LISTED`] by name. `None` for no names.
pub fn crowd<D: Display>(change: Crowd, room: impl Display, nicks: &[D]) -> Option<String> {
    if nicks.is_empty() {
        return None;
    }
    let n = nicks.len();
    let shown: Vec<String> = nicks
        .iter()
        .take(CROWD_LISTED)
        .map(|n| n.to_string())
        .collect();
    let mut list = shown.join(", ");
    if n > CROWD_LISTED {
        list.push_str(&format!(" and {} more", n - CROWD_LISTED));
    }
    Some(match change {
        Crowd::Joined => format!("{n} joined {room}: {list}"),
        Crowd::Left => format!("{n} left {room}: {list}"),
        Crowd::Disconnected if n == 1 => format!("1 was disconnected from {room}: {list}"),
        Crowd::Disconnected => format!("{n} were disconnected from {room}: {list}"),
    })
}

/// A summary's lines, one per kind of change that has names, in the order
/// every client shows them: joined, left, disconnected.
pub fn crowd_lines<'a, D: Display>(
    room: &'a (impl Display + ?Sized),
    joined: &'a [D],
    left: &'a [D],
    disconnected: &'a [D],
) -> impl Iterator<Item = (Crowd, String)> + 'a {
    [
        (Crowd::Joined, joined),
        (Crowd::Left, left),
        (Crowd::Disconnected, disconnected),
    ]
    .into_iter()
    .filter_map(move |(change, nicks)| crowd(change, room, nicks).map(|line| (change, line)))
}

/// `alice is now known as bob`
pub fn renamed(old: impl Display, new: impl Display) -> String {
    format!("{old} is now known as {new}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_read_as_sentences() {
        assert_eq!(joined("alice", "lobby"), "alice joined lobby");
        assert_eq!(crowd::<&str>(Crowd::Joined, "lobby", &[]), None);
        assert_eq!(
            crowd(Crowd::Left, "lobby", &["ann", "bob"]).as_deref(),
            Some("2 left lobby: ann, bob")
        );
        let many: Vec<String> = (0..11).map(|i| format!("n{i}")).collect();
        assert_eq!(
            crowd(Crowd::Disconnected, "dev", &many).as_deref(),
            Some("11 were disconnected from dev: n0, n1, n2, n3, n4, n5, n6, n7 and 3 more")
        );
        let lines: Vec<(Crowd, String)> =
            crowd_lines("dev", &["ann"], &[], &["bob", "cy"]).collect();
        assert_eq!(
            lines,
            [
                (Crowd::Joined, "1 joined dev: ann".to_string()),
                (
                    Crowd::Disconnected,
                    "2 were disconnected from dev: bob, cy".to_string()
                ),
            ]
        );
        assert_eq!(
            left("alice", "dev", &LeaveKind::Part, None),
            "alice left dev"
        );
        assert_eq!(
            left("a", "dev", &LeaveKind::Quit, Some("bye")),
            "a quit (bye)"
        );
        assert_eq!(left("a", "dev", &LeaveKind::Quit, None), "a quit");
        assert_eq!(
            left("a", "dev", &LeaveKind::Dropped, Some("ping timeout")),
            "a was disconnected (ping timeout)"
        );
        assert_eq!(renamed("a", "b"), "a is now known as b");
        assert_eq!(
            kicked("a", "root", Some("spam")),
            "a was kicked by root: spam"
        );
        assert_eq!(kicked("a", "root", None), "a was kicked by root");
    }
}
