//! What the user typed, turned into a request for the server. Shared by the
//! TUI and plain mode so both understand the same commands as the text
//! protocol (`/nick`, `/join`, `/msg`, `/me`, `/quit`, `//text`, ...).

use crate::proto::json::ClientMsg;
use crate::proto::text::{self, Command, Input};

/// What to do with one typed line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing (blank line).
    None,
    /// Send this to the server.
    Send(ClientMsg),
    /// Show the command help locally.
    Help,
    /// Leave: send the quit and exit.
    Quit(Option<String>),
    /// Tell the user something is wrong with what they typed.
    Error(String),
}

/// The next request id, `c1`, `c2`, ...: one counter numbers typed
/// requests and those the interface makes itself (history pages).
pub fn fresh_id(next_id: &mut u64) -> String {
    *next_id += 1;
    format!("c{next_id}")
}

/// Translates a typed line. `room` is the room chat goes to; `next_id`
/// numbers requests so acknowledgements can be matched.
pub fn parse(line: &str, room: Option<&str>, next_id: &mut u64) -> Action {
    let mut id = || Some(fresh_id(next_id));
    let in_room = |f: &dyn Fn(String) -> ClientMsg| match room {
        Some(r) => Action::Send(f(r.to_string())),
        None => Action::Error("you are not in a room; /join ROOM".into()),
    };
    match text::parse(line) {
        Input::Empty => Action::None,
        Input::Chat(t) => {
            let id = id();
            in_room(&|room| ClientMsg::Say {
                id: id.clone(),
                room,
                text: t.to_string(),
                action: false,
            })
        }
        Input::Command(cmd) => match cmd {
            Command::Me(t) => {
                let id = id();
                in_room(&|room| ClientMsg::Say {
                    id: id.clone(),
                    room,
                    text: t.to_string(),
                    action: true,
                })
            }
            Command::Nick(nick) => Action::Send(ClientMsg::Nick {
                id: id(),
                nick: nick.to_string(),
            }),
            Command::Join(r) => Action::Send(ClientMsg::Join {
                id: id(),
                room: r.to_string(),
            }),
            Command::Part(r) => match r.map(str::to_string).or(room.map(str::to_string)) {
                Some(room) => Action::Send(ClientMsg::Part { id: id(), room }),
                None => Action::Error("you are not in a room".into()),
            },
            Command::Rooms => Action::Send(ClientMsg::Rooms { id: id() }),
            Command::Who => {
                let id = id();
                in_room(&|room| ClientMsg::Who {
                    id: id.clone(),
                    room,
                })
            }
            Command::Msg { to, text } => Action::Send(ClientMsg::Msg {
                id: id(),
                to: to.to_string(),
                text: text.to_string(),
            }),
            Command::History(n) => {
                let id = id();
                in_room(&|room| ClientMsg::History {
                    id: id.clone(),
                    room,
                    before: None,
                    limit: Some(n),
                })
            }
            Command::Oper(token) => Action::Send(ClientMsg::Oper {
                id: id(),
                token: token.to_string(),
            }),
            Command::Kick { nick, reason } => Action::Send(ClientMsg::Kick {
                id: id(),
                nick: nick.to_string(),
                reason: reason.map(str::to_string),
            }),
            Command::Ban {
                target,
                duration,
                reason,
            } => Action::Send(ClientMsg::Ban {
                id: id(),
                target: target.to_string(),
                duration: duration.map(|d| humantime::format_duration(d).to_string()),
                reason: reason.map(str::to_string),
            }),
            Command::Unban(target) => Action::Send(ClientMsg::Unban {
                id: id(),
                target: target.to_string(),
            }),
            Command::Bans => Action::Send(ClientMsg::Bans { id: id() }),
            Command::Help => Action::Help,
            Command::Quit(reason) => Action::Quit(reason.map(str::to_string)),
            Command::Usage(u) => Action::Error(format!("usage: {u}")),
            Command::Unknown(name) => {
                Action::Error(format!("unknown command /{name}; /help lists commands"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_goes_to_current_room_with_fresh_ids() {
        let mut n = 0;
        let a = parse("hi", Some("lobby"), &mut n);
        let b = parse("/me waves", Some("lobby"), &mut n);
        assert_eq!(
            a,
            Action::Send(ClientMsg::Say {
                id: Some("c1".into()),
                room: "lobby".into(),
                text: "hi".into(),
                action: false
            })
        );
        assert!(
            matches!(b, Action::Send(ClientMsg::Say { id: Some(ref i), action: true, .. }) if i == "c2")
        );
    }

    #[test]
    fn commands_and_errors() {
        let mut n = 0;
        assert_eq!(parse("", Some("r"), &mut n), Action::None);
        assert_eq!(
            parse("hi", None, &mut n),
            Action::Error("you are not in a room; /join ROOM".into())
        );
        assert_eq!(
            parse("/quit bye", None, &mut n),
            Action::Quit(Some("bye".into()))
        );
        assert_eq!(parse("/help", None, &mut n), Action::Help);
        assert!(matches!(
            parse("/join dev", None, &mut n),
            Action::Send(ClientMsg::Join { .. })
        ));
        assert!(matches!(parse("/bogus", None, &mut n), Action::Error(_)));
    }
}
