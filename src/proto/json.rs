//! The structured protocol: JSON objects, one per line, for programs (the
//! `rchat connect` client, later a browser). Every message either side can
//! send is a variant of [`ClientMsg`] or [`ServerMsg`], tagged by `"type"`.
//! Server and client share this module, so they cannot drift apart.
//!
//! A connection selects this protocol by sending a [`ClientMsg::Hello`] as
//! its very first line; see docs/protocol.md. The encoders here are pure:
//! they return bytes with the trailing newline, and decoding never panics on
//! any input.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::request::Request;
use super::sanitize;
use crate::event::{ChatLine, Event, LeaveReason};
use crate::names::Nick;

impl ClientMsg {
    /// The request id, for answering even a request that is refused
    /// unread (flood control).
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientMsg::Say { id, .. }
            | ClientMsg::Msg { id, .. }
            | ClientMsg::Join { id, .. }
            | ClientMsg::Part { id, .. }
            | ClientMsg::Nick { id, .. }
            | ClientMsg::Rooms { id }
            | ClientMsg::Who { id, .. }
            | ClientMsg::History { id, .. }
            | ClientMsg::Oper { id, .. }
            | ClientMsg::Kick { id, .. }
            | ClientMsg::Ban { id, .. }
            | ClientMsg::Unban { id, .. }
            | ClientMsg::Bans { id } => id.as_deref(),
            ClientMsg::Hello { .. }
            | ClientMsg::Ping { .. }
            | ClientMsg::Pong { .. }
            | ClientMsg::Quit { .. } => None,
        }
    }
}

/// Protocol name carried in the hello, so a stray JSON line is not taken as
/// a request to switch protocols.
pub const PROTO_NAME: &str = "rchat";
/// How a server that wants a password says so to a hello without one, so
/// that a client can ask its user.
pub const PASSWORD_NEEDED: &str = "this server needs a password";

/// Protocol version this build speaks.
pub const VERSION: u32 = 1;

/// A request from the client. `id` fields are chosen by the client and
/// echoed in the matching [`ServerMsg::Ack`] or [`ServerMsg::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Unknown fields are ignored, so a newer client's hello still selects JSON
// on this server.
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// First line of a JSON connection.
    Hello {
        proto: String,
        version: u32,
        /// Nick wanted; a guest nick is kept if absent or refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nick: Option<String>,
        /// Rooms to join at once; `["lobby"]` if absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rooms: Option<Vec<String>>,
        /// The server's password, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
    },
    Say {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
        text: String,
        /// A `/me` action rather than a chat line.
        #[serde(default, skip_serializing_if = "is_false")]
        action: bool,
    },
    Msg {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        to: String,
        text: String,
    },
    Join {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
    },
    Part {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
    },
    Nick {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        nick: String,
    },
    Rooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    Who {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
    },
    /// Asks for a room's stored messages older than `before` (or the
    /// newest, without `before`), oldest first in the answer.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
        /// Only messages with a smaller `seq`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<u64>,
        /// Most messages wanted; the server clamps it to [`MAX_HISTORY_PAGE`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Ping {
        token: String,
    },
    Pong {
        token: String,
    },
    Quit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Become an operator with the server's operator token.
    Oper {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        token: String,
    },
    Kick {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        nick: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Ban {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// A nick (its address is banned), an address or a CIDR block.
        target: String,
        /// How long, as `10m`, `2h`, `7d`; absent: until unbanned.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Unban {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        target: String,
    },
    Bans {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Machine-readable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    LineTooLong,
    InvalidName,
    NickInUse,
    NoSuchNick,
    NoSuchRoom,
    NotInRoom,
    AlreadyInRoom,
    TooManyRooms,
    ShuttingDown,
    UnsupportedVersion,
    /// The server keeps no history (`--history off`).
    NoHistory,
    /// A `say` was delivered but could not be stored durably, so it is not
    /// acknowledged.
    NotStored,
    /// Flood control refused the line: send it again after
    /// `retry_after_ms`.
    RateLimited,
    /// The server holds as many connections as it allows.
    ServerFull,
    /// Your address holds as many connections as the server allows one.
    TooManyConnections,
    /// The password (or operator token) is missing or wrong.
    AuthFailed,
    /// Only an operator may do that.
    NotOperator,
    /// Your address is banned: sent instead of a welcome.
    Banned,
    /// The cluster this server is part of could not be reached; the
    /// request had no effect.
    Unavailable,
    #[serde(other)]
    Other,
}

/// Why someone left a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaveKind {
    Part,
    Quit,
    Dropped,
    /// Removed by an operator, named in `by`.
    Kicked,
}

/// Most messages one `history` answer carries, whatever `limit` asks.
pub use super::MAX_HISTORY_PAGE;

/// One stored message in a [`ServerMsg::History`]; the fields mean what they
/// mean in [`ServerMsg::Message`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub seq: u64,
    pub ts: u64,
    pub from: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub action: bool,
}

/// One ban in a [`ServerMsg::Bans`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanInfo {
    /// An address or a CIDR block.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it ends, milliseconds since the Unix epoch; absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// The operator who set it.
    pub by: String,
}

/// One room in a room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomInfo {
    pub name: String,
    pub members: usize,
}

/// A message from the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to the hello: the protocol is now JSON.
    Welcome {
        proto: String,
        version: u32,
        nick: String,
        /// Longest chat text accepted, in bytes.
        max_text: usize,
        /// Seconds of silence after which the server pings.
        ping_interval: u64,
    },
    /// You are now in `room`; `members` includes you.
    RoomState {
        room: String,
        members: Vec<String>,
    },
    Message {
        room: String,
        /// Server-assigned id: the message's position in its room.
        seq: u64,
        /// Server time, milliseconds since the Unix epoch.
        ts: u64,
        from: String,
        text: String,
        #[serde(default, skip_serializing_if = "is_false")]
        action: bool,
    },
    Private {
        from: String,
        to: String,
        ts: u64,
        text: String,
    },
    Joined {
        room: String,
        nick: String,
    },
    Left {
        room: String,
        nick: String,
        kind: LeaveKind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// With `kicked`: the operator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    Renamed {
        old: String,
        new: String,
    },
    /// Several joins and leaves in a big room, told together: how `room`'s
    /// member list changed since the last event about it. Apply `left` and
    /// `disconnected` (removed), then `joined` (added). Someone who came
    /// and went in between is in none of them.
    Crowd {
        room: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        joined: Vec<String>,
        /// Parted or quit.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        left: Vec<String>,
        /// Lost the connection or was cut off by the server.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        disconnected: Vec<String>,
    },
    Notice {
        text: String,
    },
    /// A request succeeded. For `say`, `room`/`seq`/`ts` place the message.
    Ack {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        room: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts: Option<u64>,
    },
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        code: ErrorCode,
        message: String,
        /// With `rate_limited`: milliseconds until the line would pass.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    Rooms {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        rooms: Vec<RoomInfo>,
    },
    Who {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
        members: Vec<String>,
    },
    /// Stored messages of a room, oldest first: sent unasked (no `id`) right
    /// after `room_state` when history is on, and as the answer to a
    /// `history` request. Live messages that follow continue exactly after
    /// the last replayed `seq`.
    History {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        room: String,
        messages: Vec<HistoryEntry>,
        /// Older messages may exist: ask again with `before` set to the first
        /// `seq` here.
        #[serde(default, skip_serializing_if = "is_false")]
        more: bool,
    },
    /// The bans in force (operators only).
    Bans {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        bans: Vec<BanInfo>,
    },
    Ping {
        token: String,
    },
    Pong {
        token: String,
    },
    /// The server is closing this connection; nothing follows.
    Bye {
        reason: String,
    },
}

/// Messages a `history` request gets when it names no `limit`.
pub const DEFAULT_HISTORY_PAGE: usize = 50;

/// Longest room or nick argument kept: a name that is invalid is echoed
/// back in the error, which must stay short.
const MAX_NAME_ARG: usize = 64;

/// A name from a request, made safe to echo: sanitised and bounded.
pub fn name_arg(s: &str) -> String {
    truncate(&sanitize::clean(s), MAX_NAME_ARG).to_string()
}

/// The longest prefix of `s` within `max` bytes, cut at a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The [`Request`] a client message asks for, with the id its answer must
/// carry. `None` for a hello, which is only valid as the first line. Names
/// are sanitised and bounded here; chat text is left for the server to
/// check, as it is for the text protocol.
pub fn into_request(msg: ClientMsg) -> Option<(Option<String>, Request)> {
    let request = match msg {
        ClientMsg::Hello { .. } => return None,
        ClientMsg::Say {
            id,
            room,
            text,
            action,
        } => (
            id,
            Request::Say {
                room: name_arg(&room),
                lines: vec![ChatLine {
                    text: text.into(),
                    action,
                }],
            },
        ),
        ClientMsg::Msg { id, to, text } => (
            id,
            Request::Msg {
                to: name_arg(&to),
                text,
            },
        ),
        ClientMsg::Join { id, room } => (
            id,
            Request::Join {
                room: name_arg(&room),
                leaving: None,
            },
        ),
        ClientMsg::Part { id, room } => (
            id,
            Request::Part {
                room: name_arg(&room),
            },
        ),
        ClientMsg::Nick { id, nick } => (
            id,
            Request::Nick {
                nick: name_arg(&nick),
            },
        ),
        ClientMsg::Rooms { id } => (id, Request::Rooms),
        ClientMsg::Who { id, room } => (
            id,
            Request::Who {
                room: name_arg(&room),
            },
        ),
        ClientMsg::History {
            id,
            room,
            before,
            limit,
        } => (
            id,
            Request::History {
                room: name_arg(&room),
                before,
                limit: limit.unwrap_or(DEFAULT_HISTORY_PAGE).min(MAX_HISTORY_PAGE),
            },
        ),
        ClientMsg::Ping { token } => (None, Request::Ping { token }),
        ClientMsg::Pong { .. } => (None, Request::Pong),
        ClientMsg::Quit { reason } => (None, Request::Quit { reason }),
        ClientMsg::Oper { id, token } => (
            id,
            Request::Oper {
                token: super::request::Token(token),
            },
        ),
        ClientMsg::Kick { id, nick, reason } => (
            id,
            Request::Kick {
                nick: name_arg(&nick),
                reason,
            },
        ),
        ClientMsg::Ban {
            id,
            target,
            duration,
            reason,
        } => {
            let duration = match duration.as_deref().map(humantime::parse_duration) {
                None => None,
                Some(Ok(d)) if !d.is_zero() => Some(d),
                // Unreadable: zero, which the server refuses with an error.
                Some(_) => Some(std::time::Duration::ZERO),
            };
            (
                id,
                Request::Ban {
                    target: name_arg(&target),
                    duration,
                    reason,
                },
            )
        }
        ClientMsg::Unban { id, target } => (
            id,
            Request::Unban {
                target: name_arg(&target),
            },
        ),
        ClientMsg::Bans { id } => (id, Request::Bans),
    };
    Some(request)
}

/// Why a line could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("not a valid message: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

/// Encodes any message as one JSON line ending in `\n`.
pub fn encode<T: Serialize>(msg: &T) -> Bytes {
    // Serialising these plain enums cannot fail: no maps with non-string
    // keys, no custom serialisers.
    let mut out = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    out.push(b'\n');
    Bytes::from(out)
}

pub fn decode_client(line: &[u8]) -> Result<ClientMsg, DecodeError> {
    Ok(serde_json::from_slice(line)?)
}

pub fn decode_server(line: &[u8]) -> Result<ServerMsg, DecodeError> {
    Ok(serde_json::from_slice(line)?)
}

/// Whether `line` is a hello selecting this protocol. Cheap to call on every
/// first line: a text user's line almost never starts with `{`.
pub fn is_hello(line: &[u8]) -> bool {
    line.first() == Some(&b'{')
        && matches!(decode_client(line), Ok(ClientMsg::Hello { ref proto, .. }) if proto == PROTO_NAME)
}

/// The JSON form of a hub event.
pub fn from_event(event: &Event) -> ServerMsg {
    match event {
        Event::Message {
            room,
            seq,
            ts_ms,
            from,
            text,
            action,
        } => ServerMsg::Message {
            room: room.to_string(),
            seq: *seq,
            ts: *ts_ms,
            from: from.to_string(),
            text: text.to_string(),
            action: *action,
        },
        Event::Private {
            from,
            to,
            ts_ms,
            text,
        } => ServerMsg::Private {
            from: from.to_string(),
            to: to.to_string(),
            ts: *ts_ms,
            text: text.to_string(),
        },
        Event::Joined { room, nick } => ServerMsg::Joined {
            room: room.to_string(),
            nick: nick.to_string(),
        },
        Event::Left { room, nick, reason } => {
            let (kind, reason, by) = match reason {
                LeaveReason::Part => (LeaveKind::Part, None, None),
                LeaveReason::Quit(r) => (LeaveKind::Quit, r.as_ref().map(|r| r.to_string()), None),
                LeaveReason::Dropped(r) => (LeaveKind::Dropped, Some(r.to_string()), None),
                LeaveReason::Kicked { by, reason } => (
                    LeaveKind::Kicked,
                    reason.as_ref().map(|r| r.to_string()),
                    Some(by.to_string()),
                ),
            };
            ServerMsg::Left {
                room: room.to_string(),
                nick: nick.to_string(),
                kind,
                reason,
                by,
            }
        }
        Event::Renamed { old, new } => ServerMsg::Renamed {
            old: old.to_string(),
            new: new.to_string(),
        },
        Event::Crowd {
            room,
            joined,
            left,
            disconnected,
        } => {
            let names = |nicks: &[Nick]| nicks.iter().map(Nick::to_string).collect();
            ServerMsg::Crowd {
                room: room.to_string(),
                joined: names(joined),
                left: names(left),
                disconnected: names(disconnected),
            }
        }
        Event::Notice(text) => ServerMsg::Notice {
            text: text.to_string(),
        },
        Event::History {
            room,
            messages,
            more,
        } => ServerMsg::History {
            id: None,
            room: room.to_string(),
            messages: messages.iter().filter_map(history_entry).collect(),
            more: *more,
        },
    }
}

/// A room message as a [`HistoryEntry`]; `None` for any other event.
pub fn history_entry(event: &Event) -> Option<HistoryEntry> {
    match event {
        Event::Message {
            seq,
            ts_ms,
            from,
            text,
            action,
            ..
        } => Some(HistoryEntry {
            seq: *seq,
            ts: *ts_ms,
            from: from.to_string(),
            text: text.to_string(),
            action: *action,
        }),
        _ => None,
    }
}

/// Encoder for [`crate::event::Envelope::encoded`] in the JSON format.
pub fn render(event: &Event) -> Bytes {
    encode(&from_event(event))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opt_id() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(".{0,12}")
    }

    fn client_msg() -> impl Strategy<Value = ClientMsg> {
        prop_oneof![
            (
                ".*",
                any::<u32>(),
                proptest::option::of(".*"),
                proptest::option::of(proptest::collection::vec(".*", 0..3))
            )
                .prop_map(|(proto, version, nick, rooms)| ClientMsg::Hello {
                    proto,
                    version,
                    nick,
                    rooms,
                    password: None,
                }),
            (opt_id(), ".*", ".*", any::<bool>()).prop_map(|(id, room, text, action)| {
                ClientMsg::Say {
                    id,
                    room,
                    text,
                    action,
                }
            }),
            (opt_id(), ".*", ".*").prop_map(|(id, to, text)| ClientMsg::Msg { id, to, text }),
            (opt_id(), ".*").prop_map(|(id, room)| ClientMsg::Join { id, room }),
            (opt_id(), ".*").prop_map(|(id, room)| ClientMsg::Part { id, room }),
            (opt_id(), ".*").prop_map(|(id, nick)| ClientMsg::Nick { id, nick }),
            opt_id().prop_map(|id| ClientMsg::Rooms { id }),
            (opt_id(), ".*").prop_map(|(id, room)| ClientMsg::Who { id, room }),
            (
                opt_id(),
                ".*",
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<usize>())
            )
                .prop_map(|(id, room, before, limit)| ClientMsg::History {
                    id,
                    room,
                    before,
                    limit
                }),
            ".*".prop_map(|token| ClientMsg::Ping { token }),
            ".*".prop_map(|token| ClientMsg::Pong { token }),
            proptest::option::of(".*").prop_map(|reason| ClientMsg::Quit { reason }),
        ]
    }

    fn code() -> impl Strategy<Value = ErrorCode> {
        prop_oneof![
            Just(ErrorCode::BadRequest),
            Just(ErrorCode::LineTooLong),
            Just(ErrorCode::InvalidName),
            Just(ErrorCode::NickInUse),
            Just(ErrorCode::NoSuchNick),
            Just(ErrorCode::NoSuchRoom),
            Just(ErrorCode::NotInRoom),
            Just(ErrorCode::AlreadyInRoom),
            Just(ErrorCode::TooManyRooms),
            Just(ErrorCode::ShuttingDown),
            Just(ErrorCode::UnsupportedVersion),
            Just(ErrorCode::NoHistory),
            Just(ErrorCode::NotStored),
            Just(ErrorCode::RateLimited),
            Just(ErrorCode::ServerFull),
            Just(ErrorCode::TooManyConnections),
            Just(ErrorCode::AuthFailed),
            Just(ErrorCode::NotOperator),
            Just(ErrorCode::Banned),
            Just(ErrorCode::Other),
        ]
    }

    fn server_msg() -> impl Strategy<Value = ServerMsg> {
        let kind = prop_oneof![
            Just(LeaveKind::Part),
            Just(LeaveKind::Quit),
            Just(LeaveKind::Dropped),
            Just(LeaveKind::Kicked)
        ];
        let names = proptest::collection::vec(".*", 0..4);
        prop_oneof![
            (".*", any::<u32>(), ".*", any::<usize>(), any::<u64>()).prop_map(
                |(proto, version, nick, max_text, ping_interval)| ServerMsg::Welcome {
                    proto,
                    version,
                    nick,
                    max_text,
                    ping_interval
                }
            ),
            (".*", proptest::collection::vec(".*", 0..4))
                .prop_map(|(room, members)| ServerMsg::RoomState { room, members }),
            (".*", any::<u64>(), any::<u64>(), ".*", ".*", any::<bool>()).prop_map(
                |(room, seq, ts, from, text, action)| ServerMsg::Message {
                    room,
                    seq,
                    ts,
                    from,
                    text,
                    action
                }
            ),
            (".*", ".*", any::<u64>(), ".*").prop_map(|(from, to, ts, text)| ServerMsg::Private {
                from,
                to,
                ts,
                text
            }),
            (".*", ".*").prop_map(|(room, nick)| ServerMsg::Joined { room, nick }),
            (
                ".*",
                ".*",
                kind,
                proptest::option::of(".*"),
                proptest::option::of(".*")
            )
                .prop_map(|(room, nick, kind, reason, by)| ServerMsg::Left {
                    room,
                    nick,
                    kind,
                    reason,
                    by
                }),
            (".*", ".*").prop_map(|(old, new)| ServerMsg::Renamed { old, new }),
            (".*", names.clone(), names.clone(), names).prop_map(
                |(room, joined, left, disconnected)| ServerMsg::Crowd {
                    room,
                    joined,
                    left,
                    disconnected
                }
            ),
            ".*".prop_map(|text| ServerMsg::Notice { text }),
            (
                ".*",
                proptest::option::of(".*"),
                proptest::option::of(any::<u64>()),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(id, room, seq, ts)| ServerMsg::Ack { id, room, seq, ts }),
            (opt_id(), code(), ".*", proptest::option::of(any::<u64>())).prop_map(
                |(id, code, message, retry_after_ms)| ServerMsg::Error {
                    id,
                    code,
                    message,
                    retry_after_ms
                }
            ),
            (
                opt_id(),
                proptest::collection::vec((".*", any::<usize>()), 0..3)
            )
                .prop_map(|(id, rooms)| {
                    ServerMsg::Rooms {
                        id,
                        rooms: rooms
                            .into_iter()
                            .map(|(name, members)| RoomInfo { name, members })
                            .collect(),
                    }
                }),
            (opt_id(), ".*", proptest::collection::vec(".*", 0..3))
                .prop_map(|(id, room, members)| ServerMsg::Who { id, room, members }),
            (
                opt_id(),
                ".*",
                proptest::collection::vec(
                    (any::<u64>(), any::<u64>(), ".*", ".*", any::<bool>()),
                    0..3
                ),
                any::<bool>()
            )
                .prop_map(|(id, room, entries, more)| ServerMsg::History {
                    id,
                    room,
                    messages: entries
                        .into_iter()
                        .map(|(seq, ts, from, text, action)| HistoryEntry {
                            seq,
                            ts,
                            from,
                            text,
                            action
                        })
                        .collect(),
                    more
                }),
            ".*".prop_map(|token| ServerMsg::Ping { token }),
            ".*".prop_map(|token| ServerMsg::Pong { token }),
            ".*".prop_map(|reason| ServerMsg::Bye { reason }),
        ]
    }

    proptest! {
        #[test]
        fn client_messages_round_trip(msg in client_msg()) {
            let line = encode(&msg);
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert_eq!(decode_client(&line[..line.len() - 1]).unwrap(), msg);
        }

        #[test]
        fn server_messages_round_trip(msg in server_msg()) {
            let line = encode(&msg);
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert_eq!(decode_server(&line[..line.len() - 1]).unwrap(), msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_client(&bytes);
            let _ = decode_server(&bytes);
            let _ = is_hello(&bytes);
        }

        #[test]
        fn json_shaped_garbage_never_panics(s in r#"\{"type":"[a-z_]{0,8}"(,"[a-z]{1,6}":("[^"]{0,5}"|[0-9]{1,25}|null|true|\[\]|\{\}))*\}"#) {
            let _ = decode_client(s.as_bytes());
            let _ = decode_server(s.as_bytes());
        }
    }

    #[test]
    fn messages_become_requests_with_names_made_safe() {
        let (id, req) = into_request(ClientMsg::Join {
            id: Some("j1".into()),
            room: format!("\u{1b}[2J{}", "x".repeat(100)),
        })
        .unwrap();
        assert_eq!(id.as_deref(), Some("j1"));
        match req {
            Request::Join { room, leaving } => {
                assert!(!room.contains('\u{1b}'), "{room:?}");
                assert!(room.len() <= MAX_NAME_ARG);
                assert_eq!(leaving, None);
            }
            other => panic!("{other:?}"),
        }
        let (_, req) = into_request(ClientMsg::History {
            id: None,
            room: "lobby".into(),
            before: Some(9),
            limit: Some(100_000),
        })
        .unwrap();
        assert_eq!(
            req,
            Request::History {
                room: "lobby".into(),
                before: Some(9),
                limit: MAX_HISTORY_PAGE
            }
        );
        let (_, req) = into_request(ClientMsg::History {
            id: None,
            room: "lobby".into(),
            before: None,
            limit: None,
        })
        .unwrap();
        assert!(matches!(
            req,
            Request::History {
                limit: DEFAULT_HISTORY_PAGE,
                ..
            }
        ));
        assert!(into_request(ClientMsg::Hello {
            proto: PROTO_NAME.into(),
            version: VERSION,
            nick: None,
            rooms: None,
            password: None,
        })
        .is_none());
    }

    #[test]
    fn hello_detection() {
        assert!(is_hello(br#"{"type":"hello","proto":"rchat","version":1}"#));
        assert!(!is_hello(
            br#"{"type":"hello","proto":"other","version":1}"#
        ));
        assert!(!is_hello(b"hello"));
        assert!(!is_hello(br#"{"type":"say","room":"x","text":"y"}"#));
        // A newer client's extra fields do not turn it into a text client.
        assert!(is_hello(
            br#"{"type":"hello","proto":"rchat","version":1,"caps":["x"]}"#
        ));
    }

    #[test]
    fn wire_shape_is_stable() {
        let line = encode(&ClientMsg::Say {
            id: Some("c1".into()),
            room: "lobby".into(),
            text: "hi".into(),
            action: false,
        });
        assert_eq!(
            &line[..],
            b"{\"type\":\"say\",\"id\":\"c1\",\"room\":\"lobby\",\"text\":\"hi\"}\n"
        );
        let err =
            decode_server(br#"{"type":"error","code":"something_new","message":"m"}"#).unwrap();
        assert_eq!(
            err,
            ServerMsg::Error {
                id: None,
                code: ErrorCode::Other,
                message: "m".into(),
                retry_after_ms: None
            }
        );
    }
}
