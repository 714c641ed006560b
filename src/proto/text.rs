//! The human text protocol: what a person types into `nc`, and what they see.
//!
//! Input lines are either chat (anything not starting with `/`, or escaped as
//! `//`) or commands. Output lines are chat as `NICK> TEXT`, private messages
//! as `[private] NICK> TEXT`, and everything from the server itself as
//! `* ...` (`* error: ...` for errors). See docs/protocol.md.

use bytes::Bytes;

use super::json::LeaveKind;
use super::wording;
use crate::event::{Event, LeaveReason};

/// What a line of input asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Nothing to do (blank line).
    Empty,
    /// Chat text for the current room.
    Chat(&'a str),
    Command(Command<'a>),
}

/// A parsed slash command. Arguments are raw; the session validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    Nick(&'a str),
    Join(&'a str),
    /// Leave a room (the current one if none is named).
    Part(Option<&'a str>),
    Rooms,
    Who,
    Msg {
        to: &'a str,
        text: &'a str,
    },
    Me(&'a str),
    /// Show the room's last N messages.
    History(usize),
    Help,
    Quit(Option<&'a str>),
    /// Become an operator.
    Oper(&'a str),
    Kick {
        nick: &'a str,
        reason: Option<&'a str>,
    },
    /// Ban a nick's address, an address or a CIDR block, for a while or
    /// until unbanned.
    Ban {
        target: &'a str,
        duration: Option<std::time::Duration>,
        reason: Option<&'a str>,
    },
    Unban(&'a str),
    Bans,
    /// A known command with missing arguments; carries its usage line.
    Usage(&'static str),
    /// Not a command we know.
    Unknown(&'a str),
}

/// Parses one line that has already been decoded and sanitised.
pub fn parse(line: &str) -> Input<'_> {
    if line.trim().is_empty() {
        return Input::Empty;
    }
    if line == "!quit" {
        return Input::Command(Command::Quit(None));
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Input::Chat(line);
    };
    if rest.starts_with('/') {
        // "//text" sends "/text" literally.
        return Input::Chat(rest);
    }
    let (name, args) = match rest.split_once([' ', '\t']) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let cmd = match name.to_ascii_lowercase().as_str() {
        "nick" => one_word(args).map_or(Command::Usage("/nick NAME"), Command::Nick),
        "join" => one_word(args).map_or(Command::Usage("/join ROOM"), Command::Join),
        "part" | "leave" if args.contains([' ', '\t']) => Command::Usage("/part [ROOM]"),
        "part" | "leave" => Command::Part((!args.is_empty()).then_some(args)),
        "rooms" | "list" => Command::Rooms,
        "who" | "names" => Command::Who,
        "msg" | "query" => match args.split_once([' ', '\t']) {
            Some((to, text)) if !text.trim().is_empty() => Command::Msg {
                to,
                text: text.trim_start(),
            },
            _ => Command::Usage("/msg NICK TEXT"),
        },
        "me" if !args.is_empty() => Command::Me(args),
        "me" => Command::Usage("/me ACTION"),
        "history" if args.is_empty() => Command::History(DEFAULT_HISTORY),
        "history" => match args.parse::<usize>() {
            Ok(n) if (1..=MAX_HISTORY).contains(&n) => Command::History(n),
            _ => Command::Usage("/history [N]"),
        },
        "help" => Command::Help,
        "quit" => Command::Quit((!args.is_empty()).then_some(args)),
        "oper" => one_word(args).map_or(Command::Usage("/oper TOKEN"), Command::Oper),
        "kick" => match split_word(args) {
            Some((nick, reason)) => Command::Kick { nick, reason },
            None => Command::Usage("/kick NICK [REASON]"),
        },
        "ban" => match split_word(args) {
            Some((target, rest)) => {
                // A second word that reads as a duration is one.
                let (duration, reason) = match rest.map(split_word) {
                    Some(Some((word, after))) => match humantime::parse_duration(word) {
                        Ok(d) if !d.is_zero() => (Some(d), after),
                        _ => (None, rest),
                    },
                    _ => (None, None),
                };
                Command::Ban {
                    target,
                    duration,
                    reason,
                }
            }
            None => Command::Usage("/ban NICK|ADDRESS|CIDR [DURATION] [REASON]"),
        },
        "unban" => one_word(args).map_or(Command::Usage("/unban ADDRESS|CIDR"), Command::Unban),
        "bans" => Command::Bans,
        _ => Command::Unknown(name),
    };
    Input::Command(cmd)
}

/// Messages `/history` shows when no number is given.
pub const DEFAULT_HISTORY: usize = 20;
/// Most messages one `/history` shows.
pub const MAX_HISTORY: usize = super::MAX_HISTORY_PAGE;

/// The first word of `args` and the rest, if any.
fn split_word(args: &str) -> Option<(&str, Option<&str>)> {
    if args.is_empty() {
        return None;
    }
    Some(match args.split_once([' ', '\t']) {
        Some((word, rest)) => {
            let rest = rest.trim();
            (word, (!rest.is_empty()).then_some(rest))
        }
        None => (args, None),
    })
}

fn one_word(args: &str) -> Option<&str> {
    (!args.is_empty() && !args.contains([' ', '\t'])).then_some(args)
}

/// The `/help` text, one notice per line.
pub const HELP: &[&str] = &[
    "commands:",
    "  /nick NAME        change your nickname (letters, digits, _ and -, up to 32)",
    "  /join ROOM        leave this room and join ROOM (created if new)",
    "  /rooms            list rooms and how many are in each",
    "  /who              list the members of this room",
    "  /msg NICK TEXT    send TEXT to NICK alone",
    "  /me ACTION        tell the room what you are doing",
    "  /history [N]      show the last N messages of this room",
    "  /quit [REASON]    leave (also !quit)",
    "  /pass PASSWORD    give the server's password, if it asks for one",
    "  /oper TOKEN       become an operator",
    "operators only:",
    "  /kick NICK [REASON]                        disconnect NICK",
    "  /ban NICK|ADDRESS|CIDR [DURATION] [REASON] ban an address (10m, 2h, 7d; none: for good)",
    "  /unban ADDRESS|CIDR                        lift a ban",
    "  /bans                                      list the bans",
    "  //text            send a line that starts with /",
    "anything else is sent to everyone in your room",
];

/// A server notice line: `* TEXT\n`.
pub fn notice(text: &str) -> Bytes {
    Bytes::from(format!("* {text}\n"))
}

/// An error line: `* error: TEXT\n`.
pub fn error(text: &str) -> Bytes {
    Bytes::from(format!("* error: {text}\n"))
}

/// Renders an event as one text line. Used as the text format's encoder, so
/// it runs once per event whatever the number of recipients.
pub fn render(event: &Event) -> Bytes {
    let line = match event {
        Event::Message {
            from,
            text,
            action: false,
            ..
        } => format!("{from}> {text}\n"),
        Event::Message {
            from,
            text,
            action: true,
            ..
        } => format!("* {from} {text}\n"),
        Event::Private { from, text, .. } => format!("[private] {from}> {text}\n"),
        Event::Joined { room, nick } => format!("* {}\n", wording::joined(nick, room)),
        Event::Left { room, nick, reason } => {
            let (kind, why) = match reason {
                LeaveReason::Part => (LeaveKind::Part, None),
                LeaveReason::Quit(why) => (LeaveKind::Quit, why.as_deref()),
                LeaveReason::Dropped(why) => (LeaveKind::Dropped, Some(&**why)),
                LeaveReason::Kicked { by, reason } => {
                    let text = wording::kicked(nick, by, reason.as_deref());
                    return Bytes::from(format!("* {text}\n"));
                }
            };
            format!("* {}\n", wording::left(nick, room, &kind, why))
        }
        Event::Renamed { old, new } => format!("* {}\n", wording::renamed(old, new)),
        Event::Crowd {
            room,
            joined,
            left,
            disconnected,
        } => wording::crowd_lines(room, joined, left, disconnected)
            .map(|(_, line)| format!("* {line}\n"))
            .collect(),
        Event::Notice(text) => format!("* {text}\n"),
        Event::History { room, messages, .. } => return history(room.as_str(), messages),
    };
    Bytes::from(line)
}

/// A room's stored messages as a delimited block, each line with its time
/// (UTC, to the minute) and sender; nothing at all when there are none.
pub fn history(room: &str, messages: &[Event]) -> Bytes {
    let lines: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            Event::Message {
                ts_ms,
                from,
                text,
                action,
                ..
            } => Some(if *action {
                format!("[{}] * {from} {text}\n", crate::clock::date_time(*ts_ms))
            } else {
                format!("[{}] {from}> {text}\n", crate::clock::date_time(*ts_ms))
            }),
            _ => None,
        })
        .collect();
    if lines.is_empty() {
        return Bytes::new();
    }
    let n = lines.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut out = format!("* history of {room}: last {n} message{plural} (times are UTC)\n");
    out.extend(lines);
    out.push_str("* end of history\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Nick, RoomName};

    #[test]
    fn chat_and_escapes() {
        assert_eq!(parse("hello"), Input::Chat("hello"));
        assert_eq!(parse("//etc/passwd"), Input::Chat("/etc/passwd"));
        assert_eq!(parse("   "), Input::Empty);
        assert_eq!(parse("!quit"), Input::Command(Command::Quit(None)));
    }

    #[test]
    fn commands() {
        use Command::*;
        let cases = [
            ("/nick alice", Nick("alice")),
            ("/NICK  alice ", Nick("alice")),
            ("/nick", Usage("/nick NAME")),
            ("/nick a b", Usage("/nick NAME")),
            ("/join #dev", Join("#dev")),
            ("/rooms", Rooms),
            ("/part", Part(None)),
            ("/part dev", Part(Some("dev"))),
            ("/who", Who),
            (
                "/msg bob hi there",
                Msg {
                    to: "bob",
                    text: "hi there",
                },
            ),
            ("/msg bob", Usage("/msg NICK TEXT")),
            ("/me waves", Me("waves")),
            ("/me", Usage("/me ACTION")),
            ("/help", Help),
            ("/quit", Quit(None)),
            ("/quit gone fishing", Quit(Some("gone fishing"))),
            ("/frob x", Unknown("frob")),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line), Input::Command(want), "{line}");
        }
    }

    #[test]
    fn renders_events() {
        let room = RoomName::parse("lobby").unwrap();
        let alice = Nick::parse("alice").unwrap();
        let msg = Event::Message {
            room: room.clone(),
            seq: 1,
            ts_ms: 0,
            from: alice.clone(),
            text: "hi".into(),
            action: false,
        };
        assert_eq!(render(&msg), "alice> hi\n");
        let left = Event::Left {
            room,
            nick: alice,
            reason: LeaveReason::Quit(Some("bye".into())),
        };
        assert_eq!(render(&left), "* alice quit (bye)\n");
    }

    #[test]
    fn history_command() {
        assert_eq!(parse("/history"), Input::Command(Command::History(20)));
        assert_eq!(parse("/HISTORY 5"), Input::Command(Command::History(5)));
        assert_eq!(parse("/history 500"), Input::Command(Command::History(500)));
        for bad in ["/history 0", "/history 501", "/history ten", "/history 5 6"] {
            assert_eq!(
                parse(bad),
                Input::Command(Command::Usage("/history [N]")),
                "{bad}"
            );
        }
    }

    #[test]
    fn renders_history_blocks() {
        let room = RoomName::parse("lobby").unwrap();
        let said = |seq, ts_ms, text: &str, action| Event::Message {
            room: room.clone(),
            seq,
            ts_ms,
            from: Nick::parse("alice").unwrap(),
            text: text.into(),
            action,
        };
        // 2026-11-24 11:02:13.5 UTC
        let t = 1_795_518_133_500;
        let block = history(
            "lobby",
            &[
                said(1, t, "hello", false),
                said(2, t + 60_000, "waves", true),
            ],
        );
        assert_eq!(
            block,
            "* history of lobby: last 2 messages (times are UTC)\n\
             [2026-11-24 11:02] alice> hello\n\
             [2026-11-24 11:03] * alice waves\n\
             * end of history\n"
        );
        assert!(history("lobby", &[]).is_empty());
        let replay = Event::History {
            room: room.clone(),
            messages: vec![said(7, t, "x", false)].into(),
            more: true,
        };
        assert!(render(&replay).starts_with(b"* history of lobby: last 1 message ("));
    }
}
