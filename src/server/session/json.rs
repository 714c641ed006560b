//! The JSON protocol's side of a session: typed requests become hub calls,
//! every request with an `id` gets an `ack` or an `error` carrying it, and a
//! silent client is pinged and, if it stays silent, dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::io::AsyncWrite;
use tokio::time::Instant;
use tracing::{debug, info};

use super::writer::Encoding;
use super::{io_reason, refuse, register, Flow, Frames};
use crate::config::ServerConfig;
use crate::event::{Format, LeaveReason};
use crate::proto::json::{self as wire, ClientMsg, ErrorCode, HistoryEntry, RoomInfo, ServerMsg};
use crate::proto::line::Frame;
use crate::proto::sanitize;
use crate::server::hub::{Hub, HubError, Joined, MemberId, Posted};
use crate::server::outbox::{Outbox, Outgoing};

fn out(msg: &ServerMsg) -> Outgoing {
    Outgoing::Raw(wire::encode(msg))
}

fn code_of(e: &HubError) -> ErrorCode {
    match e {
        HubError::InvalidName(_) => ErrorCode::InvalidName,
        HubError::NickInUse(_) => ErrorCode::NickInUse,
        HubError::NoSuchNick(_) => ErrorCode::NoSuchNick,
        HubError::NoSuchRoom(_) => ErrorCode::NoSuchRoom,
        HubError::NotInRoom(_) => ErrorCode::NotInRoom,
        HubError::AlreadyInRoom(_) => ErrorCode::AlreadyInRoom,
        HubError::TooManyRooms(_) => ErrorCode::TooManyRooms,
        HubError::NoHistory => ErrorCode::NoHistory,
        HubError::HistoryUnreadable => ErrorCode::Other,
        HubError::ShuttingDown | HubError::Gone => ErrorCode::ShuttingDown,
    }
}

/// Answers that wait for something (a say's durable store, a history
/// read); they are sent in request order as they complete. Beyond this many
/// the session stops reading the client until some complete.
const MAX_PENDING: usize = 1024;

/// `history` reads one session may have going at once; more wait, and the
/// session stops reading the client meanwhile, so one client cannot tie up
/// the blocking threads every session shares.
const MAX_HISTORY_READS: usize = 4;

/// Messages a `history` request gets when it names no `limit`.
const DEFAULT_HISTORY_PAGE: usize = 50;

/// An answer still waiting; `None` when there turns out to be nothing to
/// send (a stored `say` without an `id`).
type Pending = Pin<Box<dyn Future<Output = Option<ServerMsg>> + Send>>;

/// Longest room or nick argument echoed back in an error.
const MAX_NAME_ARG: usize = 64;

/// Sanitises and bounds the names in a request: invalid ones are echoed in
/// error messages, which must be as safe as any other text.
fn names_cleaned(msg: ClientMsg) -> ClientMsg {
    let name = |s: String| truncate(&sanitize::clean(&s), MAX_NAME_ARG).to_string();
    match msg {
        ClientMsg::Say {
            id,
            room,
            text,
            action,
        } => ClientMsg::Say {
            id,
            room: name(room),
            text,
            action,
        },
        ClientMsg::Msg { id, to, text } => ClientMsg::Msg {
            id,
            to: name(to),
            text,
        },
        ClientMsg::Join { id, room } => ClientMsg::Join {
            id,
            room: name(room),
        },
        ClientMsg::Part { id, room } => ClientMsg::Part {
            id,
            room: name(room),
        },
        ClientMsg::Who { id, room } => ClientMsg::Who {
            id,
            room: name(room),
        },
        ClientMsg::Nick { id, nick } => ClientMsg::Nick {
            id,
            nick: name(nick),
        },
        ClientMsg::History {
            id,
            room,
            before,
            limit,
        } => ClientMsg::History {
            id,
            room: name(room),
            before,
            limit,
        },
        other => other,
    }
}

/// The longest prefix of `s` within `max` bytes, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn room_state(joined: &Joined) -> Outgoing {
    out(&ServerMsg::RoomState {
        room: joined.room.to_string(),
        members: joined.members.iter().map(|n| n.to_string()).collect(),
    })
}

/// Runs a JSON session whose hello line has been read.
pub(super) async fn serve<W>(
    frames: Frames,
    hello: Bytes,
    mut writer: W,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
) where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let Ok(ClientMsg::Hello {
        version,
        nick: wanted_nick,
        rooms,
        ..
    }) = wire::decode_client(&hello)
    else {
        return;
    };
    if version != wire::VERSION {
        let err = wire::encode(&ServerMsg::Error {
            id: None,
            code: ErrorCode::UnsupportedVersion,
            message: format!(
                "this server speaks version {} of the JSON protocol, not {version}",
                wire::VERSION
            ),
        });
        refuse(&mut writer, &err, config.close_timeout()).await;
        return;
    }
    let max_text = config.max_line;
    let ping_interval = config.ping_interval_secs;
    let welcome = |nick: &crate::names::Nick| {
        out(&ServerMsg::Welcome {
            proto: wire::PROTO_NAME.to_string(),
            version: wire::VERSION,
            nick: nick.to_string(),
            max_text,
            ping_interval,
        })
    };
    let refusal = |e: &HubError| {
        wire::encode(&ServerMsg::Error {
            id: None,
            code: code_of(e),
            message: e.to_string(),
        })
    };
    let member = match register(
        writer,
        &hub,
        &config,
        Encoding {
            format: Format::Json,
            encode: wire::render,
        },
        welcome,
        refusal,
    ) {
        Ok(member) => member,
        Err(refused) => return Box::pin(refused.send()).await,
    };
    info!(%peer, nick = %member.nick, proto = "json", "connected");
    let write_task = member.writer;
    let mut session = JsonSession {
        id: member.id,
        hub,
        outbox: member.outbox,
        config,
        pending: FuturesOrdered::new(),
        quit_reason: None,
        history_reads: Arc::default(),
    };
    // Restore what the client asks for: its nick first, so the rooms see
    // it join under that name.
    if let Some(n) = wanted_nick {
        session.nick(None, &n);
    }
    let rooms = rooms.unwrap_or_else(|| vec!["lobby".to_string()]);
    for room in rooms {
        session.join(None, &room);
    }
    session.read_loop(frames).await;
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}

struct JsonSession {
    id: MemberId,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    config: Arc<ServerConfig>,
    pending: FuturesOrdered<Pending>,
    /// Set by a `quit` request, for the leave notice.
    quit_reason: Option<Arc<str>>,
    /// `history` reads under way.
    history_reads: Arc<AtomicUsize>,
}

impl JsonSession {
    async fn read_loop(&mut self, mut frames: Frames) {
        // The frame limit is already the JSON one: detection read under it.
        let outbox = self.outbox.clone();
        let mut deadline = Instant::now() + self.config.ping_interval();
        let mut awaiting_pong = false;
        let mut pings = 0u64;
        loop {
            let reading = self.pending.len() < MAX_PENDING
                && self.history_reads.load(Ordering::Acquire) < MAX_HISTORY_READS;
            let frame = tokio::select! {
                frame = frames.next(), if reading => frame,
                Some(answer) = self.pending.next(), if !self.pending.is_empty() => {
                    if let Some(answer) = answer {
                        self.send(&answer);
                    }
                    continue;
                }
                _ = outbox.ended() => {
                    self.leave(LeaveReason::Dropped("connection lost".into()));
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if awaiting_pong {
                        self.send(&ServerMsg::Bye { reason: "ping timeout".into() });
                        self.leave(LeaveReason::Dropped("ping timeout".into()));
                        return;
                    }
                    pings += 1;
                    self.send(&ServerMsg::Ping { token: format!("s{pings}") });
                    awaiting_pong = true;
                    deadline = Instant::now() + self.config.ping_timeout();
                    continue;
                }
            };
            // Any input proves the client is alive.
            awaiting_pong = false;
            deadline = Instant::now() + self.config.ping_interval();
            match frame {
                None => {
                    self.leave(LeaveReason::Dropped("connection closed".into()));
                    return;
                }
                Some(Err(e)) => {
                    self.leave(LeaveReason::Dropped(io_reason(&e).into()));
                    return;
                }
                Some(Ok(Frame::TooLong)) => self.error(
                    None,
                    ErrorCode::LineTooLong,
                    "message too long; it was discarded".into(),
                ),
                Some(Ok(Frame::Line(line))) => match wire::decode_client(&line) {
                    Ok(msg) => {
                        if let Flow::Quit = self.request(msg) {
                            self.finish_pending().await;
                            self.send(&ServerMsg::Bye {
                                reason: "goodbye".into(),
                            });
                            let reason = self.quit_reason.take();
                            self.leave(LeaveReason::Quit(reason));
                            return;
                        }
                    }
                    Err(e) => self.error(None, ErrorCode::BadRequest, e.to_string()),
                },
            }
        }
    }

    fn request(&mut self, msg: ClientMsg) -> Flow {
        let msg = names_cleaned(msg);
        match msg {
            ClientMsg::Hello { .. } => {
                self.error(None, ErrorCode::BadRequest, "already said hello".into())
            }
            ClientMsg::Say {
                id,
                room,
                text,
                action,
            } => {
                let Some(text) = self.clean_text(&id, &text) else {
                    return Flow::Continue;
                };
                match self.hub.say(self.id, &room, &text, action) {
                    Ok(posted) => self.acknowledge(id, posted),
                    Err(e) => self.hub_error(id, &e),
                }
            }
            ClientMsg::Msg { id, to, text } => {
                let Some(text) = self.clean_text(&id, &text) else {
                    return Flow::Continue;
                };
                let result = self.hub.private(self.id, &to, &text).map(|_| ());
                self.reply(id, result);
            }
            ClientMsg::History {
                id,
                room,
                before,
                limit,
            } => self.history(id, room, before, limit),
            ClientMsg::Join { id, room } => self.join(id, &room),
            ClientMsg::Part { id, room } => {
                let result = self.hub.part(self.id, &room);
                self.reply(id, result);
            }
            ClientMsg::Nick { id, nick } => self.nick(id, &nick),
            ClientMsg::Rooms { id } => {
                let rooms = self
                    .hub
                    .rooms()
                    .into_iter()
                    .map(|(name, members)| RoomInfo {
                        name: name.to_string(),
                        members,
                    })
                    .collect();
                self.send(&ServerMsg::Rooms { id, rooms });
            }
            ClientMsg::Who { id, room } => match self.hub.who(&room) {
                Ok((room, members)) => self.send(&ServerMsg::Who {
                    id,
                    room: room.to_string(),
                    members: members.iter().map(|n| n.to_string()).collect(),
                }),
                Err(e) => self.hub_error(id, &e),
            },
            ClientMsg::Ping { token } => self.send(&ServerMsg::Pong { token }),
            ClientMsg::Pong { .. } => {}
            ClientMsg::Quit { reason } => {
                let max = self.config.max_line;
                let reason = reason
                    .map(|r| truncate(&sanitize::clean(&r), max).to_string())
                    .filter(|r| !r.trim().is_empty());
                self.quit_reason = reason.map(Into::into);
                return Flow::Quit;
            }
        }
        Flow::Continue
    }

    /// Sends the answers still waiting, so a client that quits right after
    /// posting still learns which of its messages were stored. Bounded by
    /// the close timeout.
    async fn finish_pending(&mut self) {
        let within = self.config.close_timeout();
        let _ = tokio::time::timeout(within, async {
            while let Some(answer) = self.pending.next().await {
                if let Some(answer) = answer {
                    self.send(&answer);
                }
            }
        })
        .await;
    }

    /// Acks a posted message once it is durably stored (at once without
    /// history), in order with the acks before it.
    fn acknowledge(&mut self, id: Option<String>, posted: Posted) {
        let ack = |id| ServerMsg::Ack {
            id,
            room: Some(posted.room.to_string()),
            seq: Some(posted.seq),
            ts: Some(posted.ts_ms),
        };
        match posted.stored {
            None if self.pending.is_empty() => {
                if let Some(id) = id {
                    self.send(&ack(id));
                }
            }
            None => self
                .pending
                .push_back(Box::pin(std::future::ready(id.map(ack)))),
            Some(receipt) => {
                let (room, seq) = (posted.room.clone(), posted.seq);
                let ack = id.clone().map(ack);
                self.pending.push_back(Box::pin(async move {
                    match receipt.await {
                        Ok(()) => ack,
                        Err(e) => {
                            tracing::warn!(%room, seq, error = %e, "message delivered but not stored");
                            Some(ServerMsg::Error {
                                id,
                                code: ErrorCode::NotStored,
                                message: format!(
                                    "your message was delivered but could not be stored: {e}"
                                ),
                            })
                        }
                    }
                }));
            }
        }
    }

    /// Answers a `history` request from the store, read on a blocking
    /// thread; the answer takes its place among the pending ones.
    fn history(
        &mut self,
        id: Option<String>,
        room: String,
        before: Option<u64>,
        limit: Option<usize>,
    ) {
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY_PAGE)
            .min(wire::MAX_HISTORY_PAGE);
        let hub = self.hub.clone();
        let member = self.id;
        let reads = self.history_reads.clone();
        reads.fetch_add(1, Ordering::AcqRel);
        self.pending.push_back(Box::pin(async move {
            let page =
                tokio::task::spawn_blocking(move || hub.history(member, &room, before, limit))
                    .await
                    .unwrap_or(Err(HubError::HistoryUnreadable));
            reads.fetch_sub(1, Ordering::AcqRel);
            Some(match page {
                Ok(page) => ServerMsg::History {
                    id,
                    room: page.room.to_string(),
                    messages: page
                        .messages
                        .into_iter()
                        .map(|m| HistoryEntry {
                            seq: m.seq,
                            ts: m.ts_ms,
                            from: m.nick,
                            text: m.text,
                            action: m.action,
                        })
                        .collect(),
                    more: page.more,
                },
                Err(e) => ServerMsg::Error {
                    id,
                    code: code_of(&e),
                    message: e.to_string(),
                },
            })
        }));
    }

    fn join(&mut self, id: Option<String>, room: &str) {
        let result = self.hub.join(self.id, room, room_state).map(|_| ());
        self.reply(id, result);
    }

    fn nick(&mut self, id: Option<String>, nick: &str) {
        let result = self.hub.rename(self.id, nick).map(|_| ());
        self.reply(id, result);
    }

    /// Sanitises chat text and enforces the length limit, answering with an
    /// error when the text cannot be sent.
    fn clean_text(&self, id: &Option<String>, text: &str) -> Option<String> {
        let text = sanitize::clean(text);
        if text.trim().is_empty() {
            self.error(id.clone(), ErrorCode::BadRequest, "empty message".into());
            return None;
        }
        if text.len() > self.config.max_line {
            self.error(
                id.clone(),
                ErrorCode::LineTooLong,
                format!("message longer than {} bytes", self.config.max_line),
            );
            return None;
        }
        Some(text.into_owned())
    }

    fn reply(&self, id: Option<String>, result: Result<(), HubError>) {
        match result {
            Ok(()) => {
                if let Some(id) = id {
                    self.send(&ServerMsg::Ack {
                        id,
                        room: None,
                        seq: None,
                        ts: None,
                    });
                }
            }
            Err(e) => self.hub_error(id, &e),
        }
    }

    fn hub_error(&self, id: Option<String>, e: &HubError) {
        self.error(id, code_of(e), e.to_string());
    }

    fn error(&self, id: Option<String>, code: ErrorCode, message: String) {
        self.send(&ServerMsg::Error { id, code, message });
    }

    fn send(&self, msg: &ServerMsg) {
        self.outbox.push(out(msg));
    }

    fn leave(&mut self, reason: LeaveReason) {
        self.hub.disconnect(self.id, reason);
    }
}
