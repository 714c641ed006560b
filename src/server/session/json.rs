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
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::link::Link;
use super::request::{ban_info, Dispatcher, Failure, Outcome, Reply, CLOSED_FOR};
use super::writer::Encoding;
use super::{io_reason, leave_turn, refuse, register, Flow, Frames, Output};
use crate::config::ServerConfig;
use crate::event::{Format, LeaveReason};
use crate::proto::json::{self as wire, ClientMsg, ErrorCode, HistoryEntry, RoomInfo, ServerMsg};
use crate::proto::line::Frame;
use crate::proto::request::Request;
use crate::server::access::Access;
use crate::server::flood::{history_extra, Flood, Verdict};
use crate::server::hub::{Hub, HubError, MemberId, Posted, Seated};
use crate::server::outbox::{Outbox, Outgoing};

fn out(msg: &ServerMsg) -> Outgoing {
    Outgoing::Raw(wire::encode(msg))
}

fn code_of_failure(f: &Failure) -> ErrorCode {
    match f {
        Failure::Hub(e) => code_of(e),
        Failure::EmptyText => ErrorCode::BadRequest,
        Failure::TooLong(_) => ErrorCode::LineTooLong,
        Failure::AuthFailed(_) => ErrorCode::AuthFailed,
        Failure::Invalid(_) => ErrorCode::BadRequest,
        Failure::Unavailable(_) => ErrorCode::Unavailable,
    }
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
        HubError::NotOperator => ErrorCode::NotOperator,
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

/// An answer still waiting; `None` when there turns out to be nothing to
/// send (a stored `say` without an `id`).
type Pending = Pin<Box<dyn Future<Output = Option<ServerMsg>> + Send>>;

/// The message that answers a reply, if any. Posts and quits need the
/// session (acks in order, leaving) and are answered there.
fn answer_of(id: Option<String>, reply: Reply) -> Option<ServerMsg> {
    let ack = |id: Option<String>| {
        id.map(|id| ServerMsg::Ack {
            id,
            room: None,
            seq: None,
            ts: None,
        })
    };
    match reply {
        Reply::Sent | Reply::Joined(_) | Reply::Parted | Reply::Renamed => ack(id),
        Reply::Posted(_) | Reply::Quit(_) | Reply::Going(_) | Reply::Nothing | Reply::Close(_) => {
            None
        }
        // The text is for people; a program gets the ack.
        Reply::Done(_) => ack(id),
        Reply::Bans(bans) => Some(ServerMsg::Bans {
            id,
            bans: bans.iter().map(ban_info).collect(),
        }),
        Reply::Rooms(rooms) => Some(ServerMsg::Rooms {
            id,
            rooms: rooms
                .into_iter()
                .map(|(name, members)| RoomInfo {
                    name: name.to_string(),
                    members,
                })
                .collect(),
        }),
        Reply::Who(room, members) => Some(ServerMsg::Who {
            id,
            room: room.to_string(),
            members: members.iter().map(|n| n.to_string()).collect(),
        }),
        Reply::History(page) => Some(ServerMsg::History {
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
        }),
        Reply::Pong(token) => Some(ServerMsg::Pong { token }),
        Reply::Failed(f) => Some(ServerMsg::Error {
            id,
            code: code_of_failure(&f),
            message: f.to_string(),
            retry_after_ms: None,
        }),
    }
}

/// JSON's confirmation of a join: the room's state.
fn room_state(seated: &Seated<'_>) -> Outgoing {
    out(&ServerMsg::RoomState {
        room: seated.room.to_string(),
        members: seated.members().iter().map(|n| n.to_string()).collect(),
    })
}

/// Runs a JSON session whose hello line has been read.
// The connection's parts, as the detector hands them over.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    frames: Frames,
    hello: Bytes,
    mut writer: Output,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    access: Arc<Access>,
    link: Option<Arc<Link>>,
) {
    let Ok(ClientMsg::Hello {
        version,
        nick: wanted_nick,
        rooms,
        password,
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
            retry_after_ms: None,
        });
        refuse(&mut writer, &err, config.close_timeout()).await;
        return;
    }
    if let Some(secret) = &access.password {
        let message = match password.as_deref() {
            Some(given) if secret.matches(given) => None,
            Some(_) => {
                // The address only: never what was sent.
                warn!(%peer, "wrong password");
                Some("wrong password".to_string())
            }
            None => Some(format!(
                "{}: send it in the hello's \"password\"",
                wire::PASSWORD_NEEDED
            )),
        };
        if let Some(message) = message {
            let err = wire::encode(&ServerMsg::Error {
                id: None,
                code: ErrorCode::AuthFailed,
                message,
                retry_after_ms: None,
            });
            refuse(&mut writer, &err, config.close_timeout()).await;
            return;
        }
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
            retry_after_ms: None,
        })
    };
    let guest = match &link {
        Some(link) => match link.guest().await {
            Ok(nick) => Some(nick),
            Err(message) => {
                let err = wire::encode(&ServerMsg::Error {
                    id: None,
                    code: ErrorCode::Unavailable,
                    message,
                    retry_after_ms: None,
                });
                refuse(&mut writer, &err, config.close_timeout()).await;
                return;
            }
        },
        None => None,
    };
    let member = match register(
        writer,
        peer,
        &hub,
        &config,
        Encoding {
            format: Format::Json,
            encode: wire::render,
        },
        guest.clone(),
        welcome,
        refusal,
    ) {
        Ok(member) => member,
        Err(refused) => {
            if let (Some(link), Some(guest)) = (&link, guest) {
                link.release(guest);
            }
            return Box::pin(refused.send()).await;
        }
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
        flood: None,
        closing: None,
        link,
    };
    // Restore what the client asks for: its nick first, so the rooms see
    // it join under that name.
    if let Some(nick) = wanted_nick {
        session.run(None, Request::Nick { nick }).await;
    }
    let rooms = rooms.unwrap_or_else(|| vec!["lobby".to_string()]);
    for room in rooms {
        let room = wire::name_arg(&room);
        session
            .run(
                None,
                Request::Join {
                    room,
                    leaving: None,
                },
            )
            .await;
    }
    // Counted from here: the hello and what it asked for are not.
    session.flood = Flood::from_config(&session.config, Instant::now());
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
    /// Flood control over every line; `None` when off.
    flood: Option<Flood>,
    /// Set when the session must end for the reason given (a `Close`).
    closing: Option<String>,
    /// The cluster, when this node is part of one.
    link: Option<Arc<Link>>,
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
            let now = Instant::now();
            deadline = now + self.config.ping_interval();
            let verdict = match (&frame, &mut self.flood) {
                (Some(Ok(_)), Some(flood)) => flood.check(now),
                _ => Verdict::Pass,
            };
            if verdict != Verdict::Pass {
                let id = || match &frame {
                    Some(Ok(Frame::Line(line))) => wire::decode_client(line)
                        .ok()
                        .and_then(|m| m.id().map(str::to_string)),
                    _ => None,
                };
                if matches!(self.flood_verdict(verdict, id), Flow::Quit) {
                    return;
                }
                continue;
            }
            match frame {
                None => {
                    Box::pin(leave_turn(&self.hub, &outbox)).await;
                    self.leave(LeaveReason::Dropped("connection closed".into()));
                    return;
                }
                Some(Err(e)) => {
                    Box::pin(leave_turn(&self.hub, &outbox)).await;
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
                        if let Flow::Quit = self.message(msg).await {
                            self.finish_pending().await;
                            if let Some(why) = self.closing.take() {
                                self.send(&ServerMsg::Bye { reason: why });
                                self.leave(LeaveReason::Dropped(CLOSED_FOR.into()));
                                return;
                            }
                            // The goodbye too waits for the turn (see
                            // `leave_turn`).
                            Box::pin(leave_turn(&self.hub, &outbox)).await;
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

    /// A decoded message: a request for the dispatcher, or a hello that
    /// comes too late.
    async fn message(&mut self, msg: ClientMsg) -> Flow {
        match wire::into_request(msg) {
            Some((id, request)) => self.run(id, request).await,
            None => {
                self.error(None, ErrorCode::BadRequest, "already said hello".into());
                Flow::Continue
            }
        }
    }

    /// Tells the client about a flood refusal (with the request's `id`),
    /// or says goodbye on a kick; `Quit` then.
    fn flood_verdict(&mut self, verdict: Verdict, id: impl FnOnce() -> Option<String>) -> Flow {
        match verdict {
            Verdict::Pass => Flow::Continue,
            Verdict::Refuse { retry_after } => {
                let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
                self.send(&ServerMsg::Error {
                    id: id(),
                    code: ErrorCode::RateLimited,
                    message: format!("flood control: you are sending too fast; retry in {ms} ms"),
                    retry_after_ms: Some(ms),
                });
                Flow::Continue
            }
            Verdict::Kick => {
                self.send(&ServerMsg::Bye {
                    reason: "excess flood: too many requests refused".into(),
                });
                self.leave(LeaveReason::Dropped("excess flood".into()));
                Flow::Quit
            }
        }
    }

    /// Runs a request and answers it, with `id` if it has one.
    async fn run(&mut self, id: Option<String>, request: Request) -> Flow {
        if let (Request::History { limit, .. }, Some(flood)) = (&request, &mut self.flood) {
            let verdict = flood.charge(Instant::now(), history_extra(*limit));
            if verdict != Verdict::Pass {
                return self.flood_verdict(verdict, || id);
            }
        }
        let dispatcher = Dispatcher::new(
            self.id,
            &self.hub,
            self.config.max_line,
            room_state,
            self.link.as_ref(),
        );
        match dispatcher.dispatch(request) {
            Outcome::Now(reply) => self.answer(id, reply),
            Outcome::Wait(reply) => {
                let reply = reply.await;
                self.answer(id, reply)
            }
            Outcome::Later(reply) => {
                let reads = self.history_reads.clone();
                reads.fetch_add(1, Ordering::AcqRel);
                self.pending.push_back(Box::pin(async move {
                    let reply = reply.await;
                    reads.fetch_sub(1, Ordering::AcqRel);
                    answer_of(id, reply)
                }));
                Flow::Continue
            }
        }
    }

    /// Sends what a reply tells the client.
    fn answer(&mut self, id: Option<String>, reply: Reply) -> Flow {
        match reply {
            Reply::Posted(posted) => {
                if let Some(posted) = posted.into_iter().next() {
                    self.acknowledge(id, posted);
                }
            }
            Reply::Quit(reason) => {
                self.quit_reason = reason;
                return Flow::Quit;
            }
            Reply::Close(why) => {
                self.send(&ServerMsg::Error {
                    id,
                    code: ErrorCode::AuthFailed,
                    message: why.clone(),
                    retry_after_ms: None,
                });
                self.closing = Some(why);
                return Flow::Quit;
            }
            reply => {
                if let Some(msg) = answer_of(id, reply) {
                    self.send(&msg);
                }
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
                                retry_after_ms: None,
                            })
                        }
                    }
                }));
            }
        }
    }

    fn error(&self, id: Option<String>, code: ErrorCode, message: String) {
        self.send(&ServerMsg::Error {
            id,
            code,
            message,
            retry_after_ms: None,
        });
    }

    fn send(&self, msg: &ServerMsg) {
        self.outbox.push(out(msg));
    }

    fn leave(&mut self, reason: LeaveReason) {
        let nick = self.hub.nick(self.id).ok();
        self.hub.disconnect(self.id, reason);
        if let (Some(link), Some(nick)) = (&self.link, nick) {
            link.release(nick);
        }
    }
}
