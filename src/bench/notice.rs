//! Recognising the server's notices that someone joined or left the room,
//! in the forms rchat and `ncat --chat` send them.
//!
//! Once a run has started, the only lines a measured client expects besides
//! messages are these: the slow clients' evictions (`--slow`) and the join
//! and leave waves (`--churn`). Counting them apart keeps them out of the
//! unparsed lines, and the nick in an eviction notice tells the run when
//! the server dropped a slow client. What to do with a notice is the
//! receiver's business, not this module's.

/// A membership notice, with the nick it is about (for `ncat --chat`, its
/// `<userN>` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice<'a> {
    /// rchat `* NICK joined ROOM`; ncat `<announce> ADDR is connected as <userN>.`
    Joined(&'a [u8]),
    /// rchat `* NICK left ROOM`, `* NICK quit`, `* NICK quit (WHY)`.
    Left(&'a [u8]),
    /// rchat `* NICK was disconnected (WHY)`, which is how an eviction
    /// reads (and a connection closed without `/quit`); ncat
    /// `<announce> <userN> is disconnected.`
    Disconnected(&'a [u8]),
    /// rchat's summary of several joins or leaves in a big room: `* 212
    /// joined ROOM: a, b and 210 more`, `* 3 left ROOM: …`, `* 2 were
    /// disconnected from ROOM: …`, with how many and the names it lists.
    Crowd {
        change: Crowd,
        count: u64,
        room: &'a [u8],
        listed: &'a [u8],
    },
}

/// What happened to everyone a [`Notice::Crowd`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crowd {
    Joined,
    Left,
    Disconnected,
}

impl<'a> Notice<'a> {
    /// The nicks a crowd notice names (the first few of its count).
    pub(crate) fn listed(listed: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        let names = match listed.windows(5).rposition(|w| w == b" and ") {
            Some(at) if listed.ends_with(b" more") => &listed[..at],
            _ => listed,
        };
        names
            .split(|&b| b == b',')
            .map(|n| n.trim_ascii())
            .filter(|n| !n.is_empty())
    }
}

const RCHAT: &[u8] = b"* ";
const NCAT: &[u8] = b"<announce> ";

/// Classifies one received line (without its line ending).
pub(crate) fn classify(line: &[u8]) -> Option<Notice<'_>> {
    if let Some(rest) = line.strip_prefix(RCHAT) {
        return rchat(rest);
    }
    ncat(line.strip_prefix(NCAT)?)
}

/// `NICK joined ROOM` and the rest, with NICK and ROOM single words.
fn rchat(rest: &[u8]) -> Option<Notice<'_>> {
    if let Some(crowd) = crowd(rest) {
        return Some(crowd);
    }
    let space = rest.iter().position(|&b| b == b' ')?;
    let (nick, tail) = (&rest[..space], &rest[space + 1..]);
    if nick.is_empty() {
        return None;
    }
    if let Some(room) = tail.strip_prefix(b"joined ") {
        return one_word(room).then_some(Notice::Joined(nick));
    }
    if let Some(room) = tail.strip_prefix(b"left ") {
        return one_word(room).then_some(Notice::Left(nick));
    }
    if tail == b"quit" || (tail.starts_with(b"quit (") && tail.ends_with(b")")) {
        return Some(Notice::Left(nick));
    }
    if tail.starts_with(b"was disconnected (") && tail.ends_with(b")") {
        return Some(Notice::Disconnected(nick));
    }
    None
}

/// `COUNT joined ROOM: LIST` and its kin, with ROOM a single word.
fn crowd(rest: &[u8]) -> Option<Notice<'_>> {
    let space = rest.iter().position(|&b| b == b' ')?;
    let count: u64 = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
    let tail = &rest[space + 1..];
    let (change, tail) = [
        (Crowd::Joined, &b"joined "[..]),
        (Crowd::Left, b"left "),
        (Crowd::Disconnected, b"were disconnected from "),
        (Crowd::Disconnected, b"was disconnected from "),
    ]
    .into_iter()
    .find_map(|(change, verb)| tail.strip_prefix(verb).map(|t| (change, t)))?;
    let colon = tail.windows(2).position(|w| w == b": ")?;
    let room = &tail[..colon];
    if !one_word(room) {
        return None;
    }
    Some(Notice::Crowd {
        change,
        count,
        room,
        listed: &tail[colon + 2..],
    })
}

/// `ADDR is connected as <userN>.` and `<userN> is disconnected.`
fn ncat(rest: &[u8]) -> Option<Notice<'_>> {
    if let Some(user) = rest.strip_suffix(b" is disconnected.") {
        return label(user).map(Notice::Disconnected);
    }
    let body = rest.strip_suffix(b".")?;
    let at = body.windows(16).position(|w| w == b" is connected as")?;
    let user = body[at + 16..].strip_prefix(b" ")?;
    label(user).map(Notice::Joined)
}

fn label(user: &[u8]) -> Option<&[u8]> {
    (user.starts_with(b"<") && user.ends_with(b">") && one_word(user)).then_some(user)
}

fn one_word(s: &[u8]) -> bool {
    !s.is_empty() && !s.contains(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rchats_membership_notices() {
        assert_eq!(
            classify(b"* guest7 joined lobby"),
            Some(Notice::Joined(&b"guest7"[..]))
        );
        assert_eq!(classify(b"* bob left dev"), Some(Notice::Left(&b"bob"[..])));
        assert_eq!(classify(b"* bob quit"), Some(Notice::Left(&b"bob"[..])));
        assert_eq!(
            classify(b"* bob quit (gone fishing)"),
            Some(Notice::Left(&b"bob"[..]))
        );
        assert_eq!(
            classify(b"* guest3 was disconnected (send queue full: client too slow)"),
            Some(Notice::Disconnected(&b"guest3"[..]))
        );
    }

    #[test]
    fn reads_rchats_summaries_of_crowds() {
        assert_eq!(
            classify(b"* 212 joined lobby: ann, bob and 210 more"),
            Some(Notice::Crowd {
                change: Crowd::Joined,
                count: 212,
                room: &b"lobby"[..],
                listed: &b"ann, bob and 210 more"[..]
            })
        );
        assert_eq!(
            classify(b"* 2 were disconnected from dev: slow1, slow2"),
            Some(Notice::Crowd {
                change: Crowd::Disconnected,
                count: 2,
                room: &b"dev"[..],
                listed: &b"slow1, slow2"[..]
            })
        );
        assert!(matches!(
            classify(b"* 1 was disconnected from dev: slow1"),
            Some(Notice::Crowd {
                change: Crowd::Disconnected,
                count: 1,
                ..
            })
        ));
        assert!(matches!(
            classify(b"* 3 left lobby: a, b, c"),
            Some(Notice::Crowd {
                change: Crowd::Left,
                count: 3,
                ..
            })
        ));
        let names: Vec<&[u8]> = Notice::listed(b"ann, bob and 210 more").collect();
        assert_eq!(names, [&b"ann"[..], b"bob"]);
        let names: Vec<&[u8]> = Notice::listed(b"slow1, slow2").collect();
        assert_eq!(names, [&b"slow1"[..], b"slow2"]);
        // A nick that is a number still joins alone.
        assert_eq!(
            classify(b"* 42 joined lobby"),
            Some(Notice::Joined(&b"42"[..]))
        );
    }

    #[test]
    fn reads_ncats_announcements() {
        assert_eq!(
            classify(b"<announce> 127.0.0.1 is connected as <user12>."),
            Some(Notice::Joined(&b"<user12>"[..]))
        );
        assert_eq!(
            classify(b"<announce> <user12> is disconnected."),
            Some(Notice::Disconnected(&b"<user12>"[..]))
        );
    }

    #[test]
    fn other_lines_are_no_notice() {
        for line in [
            &b"* welcome to rchat, guest1! type /help for commands"[..],
            b"* you are now in lobby (3 members); /who lists them",
            b"* alice joined the fun today",
            b"* 3 joined the fun: a, b, c",
            b"* 3 jumped lobby: a, b, c",
            b"* alice waves",
            b"* quit",
            b"guest3> * bob joined lobby",
            b"guest3> #b:1:2:3:abc",
            b"<announce> already connected: nobody.",
            b"<user3> <announce> <user4> is disconnected.",
            b"",
        ] {
            assert_eq!(classify(line), None, "{}", String::from_utf8_lossy(line));
        }
    }
}
