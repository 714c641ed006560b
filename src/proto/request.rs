//! The one request type both protocols parse into.
//!
//! A text line (`/join dev`, `hello`) and a JSON message (`{"type":"join",
//! ...}`) that ask for the same thing become the same [`Request`]; the
//! server runs it in one place (`server::session::request`) and each
//! protocol only encodes the answer. Adding a command is one variant here,
//! one parse arm per wire format ([`super::text`], [`super::json`]), one
//! dispatch arm and one hub method.
//!
//! What is not here: the text protocol's local commands (`/help`, usage
//! errors), which the text session answers itself, and JSON's request ids,
//! which travel beside the request.

use std::time::Duration;

use crate::event::ChatLine;

/// What a client asks the server to do. Names are as the client wrote
/// them (sanitised); the hub validates them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Post chat lines (or `/me` actions) to a room, in order.
    Say {
        room: String,
        lines: Vec<ChatLine>,
    },
    /// A private message to one nick.
    Msg {
        to: String,
        text: String,
    },
    /// Join a room; with `leaving`, leave that one in the same step (the
    /// text protocol's `/join`, which moves its one room).
    Join {
        room: String,
        leaving: Option<String>,
    },
    Part {
        room: String,
    },
    Nick {
        nick: String,
    },
    /// Every room with its member count.
    Rooms,
    /// The members of a room.
    Who {
        room: String,
    },
    /// Up to `limit` stored messages of a room, older than `before`.
    History {
        room: String,
        before: Option<u64>,
        limit: usize,
    },
    /// Answer with the same token.
    Ping {
        token: String,
    },
    /// The client's answer to a ping; nothing to do but note it is alive.
    Pong,
    /// Leave, with a reason for the rooms.
    Quit {
        reason: Option<String>,
    },
    /// Become an operator.
    Oper {
        token: Token,
    },
    /// Disconnect a nick (operators only).
    Kick {
        nick: String,
        reason: Option<String>,
    },
    /// Ban a nick's address, an address or a CIDR block (operators only);
    /// for `duration`, or until unbanned.
    Ban {
        target: String,
        duration: Option<Duration>,
        reason: Option<String>,
    },
    Unban {
        target: String,
    },
    Bans,
}

/// An operator token as typed, kept out of `Debug` output and so out of
/// every log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Request {
    /// The request's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Say { .. } => "say",
            Request::Msg { .. } => "msg",
            Request::Join { .. } => "join",
            Request::Part { .. } => "part",
            Request::Nick { .. } => "nick",
            Request::Rooms => "rooms",
            Request::Who { .. } => "who",
            Request::History { .. } => "history",
            Request::Ping { .. } => "ping",
            Request::Pong => "pong",
            Request::Quit { .. } => "quit",
            Request::Oper { .. } => "oper",
            Request::Kick { .. } => "kick",
            Request::Ban { .. } => "ban",
            Request::Unban { .. } => "unban",
            Request::Bans => "bans",
        }
    }
}
