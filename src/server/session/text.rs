//! The text protocol's side of a session: lines typed by a person become
//! [`Request`]s for the dispatcher, and its replies become `* ` lines.
//!
//! The session owns the translation between wire and requests and nothing
//! else: it keeps the connection's current room (the text protocol has
//! one), batches chat lines, answers its local commands (`/help`, usage),
//! and renders replies as `* ` lines. Everything it sends goes through the
//! outbox, so replies and room traffic reach the client in one order.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info};

use super::link::Link;
use super::request::{ban_info, Dispatcher, Failure, Outcome, Reply, CLOSED_FOR};
use super::writer::Encoding;
use super::{io_reason, leave_turn, refuse, register, Frames, Output};
use crate::config::ServerConfig;
use crate::event::{ChatLine, Event, Format, LeaveReason};
use crate::names::{key_of, RoomName};
use crate::proto::json;
use crate::proto::line::Frame;
use crate::proto::request::{Request, Token};
use crate::proto::sanitize;
use crate::proto::text::{self, Command, Input};
use crate::proto::wording;
use crate::server::flood::{history_extra, Flood, Verdict};
use crate::server::hub::{Hub, HubError, MemberId, Seated};
use crate::server::outbox::{Outbox, Outgoing};

/// Starts a text session after protocol detection: registers the member
/// and returns the session to run. `first` is a frame the detector already
/// read, handled before anything else from the client.
///
/// Registration is synchronous and the returned future holds only the
/// session itself, so an idle member's task is no larger than its state.
pub(super) fn serve(
    mut frames: Frames,
    first: Option<Frame>,
    mut writer: Output,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    link: Option<Arc<Link>>,
) -> BoxFuture<'static, ()> {
    frames.codec_mut().set_max_line(config.max_line);
    match link {
        None => start(frames, first, writer, peer, hub, config, None),
        // In a cluster the guest nick is claimed in Redis first.
        Some(link) => Box::pin(async move {
            match link.guest().await {
                Ok(nick) => {
                    let cluster = ClusterSide {
                        link,
                        guest: Some(nick),
                        posting: None,
                        in_flight: Arc::default(),
                    };
                    start(
                        frames,
                        first,
                        writer,
                        peer,
                        hub,
                        config,
                        Some(Box::new(cluster)),
                    )
                    .await
                }
                Err(message) => {
                    refuse(&mut writer, &text::error(&message), config.close_timeout()).await
                }
            }
        }),
    }
}

/// Registers the member (under the cluster's guest nick, in a cluster) and
/// returns its session to run.
fn start(
    frames: Frames,
    first: Option<Frame>,
    writer: Output,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    mut cluster: Option<Box<ClusterSide>>,
) -> BoxFuture<'static, ()> {
    let welcome = |nick: &crate::names::Nick| {
        Outgoing::Raw(text::notice(&format!(
            "welcome to rchat, {nick}! type /help for commands"
        )))
    };
    let refusal = |e: &HubError| text::error(&e.to_string());
    let encoding = Encoding {
        format: Format::Text,
        encode: text::render,
    };
    let guest = cluster.as_mut().and_then(|c| c.guest.take());
    let registered = register(
        writer,
        peer,
        &hub,
        &config,
        encoding,
        guest.clone(),
        welcome,
        refusal,
    );
    let member = match registered {
        Ok(member) => member,
        Err(refused) => {
            if let (Some(c), Some(guest)) = (&cluster, guest) {
                c.link.release(guest);
            }
            return Box::pin(refused.send());
        }
    };
    info!(%peer, nick = %member.nick, "connected");
    let session = TextSession {
        id: member.id,
        hub,
        outbox: member.outbox,
        room: None,
        chat: Vec::new(),
        frames,
        max_line: config.max_line,
        guard: Guard::new(&config),
        cluster,
    };
    Box::pin(session.run(first, member.writer, peer))
}

/// Most chat batches of one text connection waiting for the cluster; past
/// this, lines are refused until the cluster catches up.
const MAX_POSTING: usize = 64;

/// A text session's part in a cluster (boxed: only cluster nodes pay for
/// it).
struct ClusterSide {
    link: Arc<Link>,
    /// The guest nick claimed before registration, until it is used.
    guest: Option<crate::names::Nick>,
    /// The last chat batch on its way to the cluster; the next one waits
    /// for it, so a member's lines keep their order.
    posting: Option<JoinHandle<()>>,
    /// Batches on their way.
    in_flight: Arc<AtomicUsize>,
}

struct TextSession {
    id: MemberId,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    /// The room chat lines go to; text mode has at most one.
    room: Option<RoomName>,
    /// Chat lines of the current read, not yet posted.
    chat: Vec<ChatLine>,
    frames: Frames,
    max_line: usize,
    /// Flood control and the idle timeout; `None` when both are off, so
    /// that they cost an idle connection nothing then.
    guard: Option<Box<Guard>>,
    /// The cluster, when this node is part of one.
    cluster: Option<Box<ClusterSide>>,
}

/// Limits on a text connection's input over time.
struct Guard {
    flood: Option<Flood>,
    /// Silence after which the connection is closed.
    idle: Option<Duration>,
    /// When the last read brought input: the time every line of that
    /// read is counted at.
    read_at: Instant,
    /// Fires `idle` after the last input; reset by every read. Boxed and
    /// kept here, so the timer sizes no task and is made once.
    idle_timer: Option<Pin<Box<Sleep>>>,
}

impl Guard {
    fn new(config: &ServerConfig) -> Option<Box<Guard>> {
        let now = Instant::now();
        let idle = config.idle_timeout();
        let guard = Guard {
            flood: Flood::from_config(config, now),
            idle,
            read_at: now,
            idle_timer: idle.map(|d| Box::pin(tokio::time::sleep_until(now + d))),
        };
        (guard.flood.is_some() || guard.idle.is_some()).then(|| Box::new(guard))
    }
}

/// Completes when a text connection has been silent too long; never
/// without an idle timeout.
async fn idle_expired(guard: &mut Option<Box<Guard>>) {
    match guard.as_mut().and_then(|g| g.idle_timer.as_mut()) {
        Some(timer) => timer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// What to do after a frame.
enum Step {
    Continue,
    Quit,
    /// Wait for a reply (a history read, a join that reads the store),
    /// then go on.
    Await(BoxFuture<'static, Reply>),
}

/// Text mode's confirmation of a join.
fn confirm(seated: &Seated<'_>) -> Outgoing {
    let n = seated.count();
    let others = if n == 1 {
        "just you".to_string()
    } else {
        format!("{n} members")
    };
    Outgoing::Raw(text::notice(&format!(
        "you are now in {} ({others}); /who lists them",
        seated.room
    )))
}

impl TextSession {
    /// Reads and handles the client's lines until it leaves or the hub lets
    /// it go, then waits for its writer to finish.
    ///
    /// All the frames one read brought are handled before the next read;
    /// the chat lines among them go to the room together, one batch per run
    /// of lines between commands, so a client that sends quickly costs each
    /// listener one write per read rather than one per line.
    // An `async move` block rather than an `async fn`, which would keep a
    // second copy of `self` in the task for its whole life.
    #[allow(clippy::manual_async_fn)]
    fn run(
        mut self,
        mut next: Option<Frame>,
        writer: JoinHandle<()>,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let outbox = self.outbox.clone();
            // Everyone starts in the lobby.
            let mut step = self.request(Request::Join {
                room: RoomName::lobby().as_str().to_string(),
                leaving: None,
            });
            'session: loop {
                loop {
                    match step {
                        Step::Continue => {}
                        Step::Quit => break 'session,
                        // Boxed: rare, and its state would size every task.
                        Step::Await(reply) => {
                            step = self.reply(reply.await);
                            continue;
                        }
                    }
                    let Some(frame) = next.take() else { break };
                    step = match self.flood_check() {
                        None => self.frame(frame),
                        Some(refused) => refused,
                    };
                    next = self.frames.next_buffered();
                }
                self.flush_chat();
                let idle = self.guard.as_ref().is_some_and(|g| g.idle.is_some());
                let frame = tokio::select! {
                    frame = self.frames.next() => frame,
                    // Closed by the hub (shutdown, eviction) or a failed write.
                    _ = outbox.ended() => {
                        self.leave(LeaveReason::Dropped("connection lost".into()));
                        break;
                    }
                    _ = idle_expired(&mut self.guard), if idle => {
                        let secs = self.guard.as_ref().and_then(|g| g.idle).map_or(0, |d| d.as_secs());
                        self.error(&format!("no input for {secs} s; disconnected (idle timeout)"));
                        self.leave(LeaveReason::Dropped("idle timeout".into()));
                        break;
                    }
                };
                if let Some(guard) = &mut self.guard {
                    guard.read_at = Instant::now();
                    if let (Some(timer), Some(idle)) = (&mut guard.idle_timer, guard.idle) {
                        timer.as_mut().reset(guard.read_at + idle);
                    }
                }
                match frame {
                    // Gone of its own accord: it leaves in its turn.
                    None => {
                        step = self.leave_in_turn(LeaveReason::Dropped("connection closed".into()));
                        continue;
                    }
                    Some(Err(e)) => {
                        step = self.leave_in_turn(LeaveReason::Dropped(io_reason(&e).into()));
                        continue;
                    }
                    Some(Ok(frame)) => next = Some(frame),
                }
                step = Step::Continue;
            }
            // The writer ends on its own once the outbox is closed or aborted.
            let _ = writer.await;
            debug!(%peer, "connection closed");
        }
    }

    /// Counts one line against flood control: `None` to handle it, or
    /// what to do instead (it was refused, or the connection is kicked).
    fn flood_check(&mut self) -> Option<Step> {
        let guard = self.guard.as_mut()?;
        let at = guard.read_at;
        let verdict = guard.flood.as_mut()?.check(at);
        self.flood_verdict(verdict)
    }

    /// Charges a request that costs more than its line (a big history
    /// page): `None` to handle it, or what to do instead.
    fn flood_charge(&mut self, extra: u32) -> Option<Step> {
        let guard = self.guard.as_mut()?;
        let at = guard.read_at;
        let verdict = guard.flood.as_mut()?.charge(at, extra);
        self.flood_verdict(verdict)
    }

    fn flood_verdict(&mut self, verdict: Verdict) -> Option<Step> {
        match verdict {
            Verdict::Pass => None,
            Verdict::Refuse { retry_after } => {
                // What came before is still said, in order.
                self.flush_chat();
                self.error(&format!(
                    "flood control: you are sending too fast; that line was not sent \
                     (retry in {} ms)",
                    retry_after.as_millis()
                ));
                Some(Step::Continue)
            }
            Verdict::Kick => {
                self.flush_chat();
                self.error("excess flood: too many lines refused; disconnected");
                self.leave(LeaveReason::Dropped("excess flood".into()));
                Some(Step::Quit)
            }
        }
    }

    fn frame(&mut self, frame: Frame) -> Step {
        let max_line = self.max_line;
        match frame {
            Frame::TooLong => {
                // Replies come after what the client said before.
                self.flush_chat();
                self.error(&format!(
                    "line too long (the limit is {max_line} bytes); it was not sent"
                ));
                Step::Continue
            }
            Frame::Line(bytes) if bytes.len() > max_line => {
                // Read while detecting the protocol, under the larger limit.
                self.flush_chat();
                self.error(&format!(
                    "line too long (the limit is {max_line} bytes); it was not sent"
                ));
                Step::Continue
            }
            Frame::Line(bytes) if json::is_hello(&bytes) => {
                self.flush_chat();
                self.error("a JSON hello must be the first line, sent as soon as you connect");
                Step::Continue
            }
            Frame::Line(bytes) => self.handle(&bytes),
        }
    }

    fn handle(&mut self, bytes: &Bytes) -> Step {
        // Invalid UTF-8 is replaced with U+FFFD rather than rejected: the
        // rest of the line still gets through.
        let decoded = String::from_utf8_lossy(bytes);
        let line = sanitize::clean(&decoded);
        match text::parse(&line) {
            Input::Empty => Step::Continue,
            Input::Chat(t) => {
                self.say(t, false);
                Step::Continue
            }
            Input::Command(cmd) => {
                // What was said before a command happens before it.
                self.flush_chat();
                self.command(cmd)
            }
        }
    }

    /// A typed command: local ones are answered here, the rest become a
    /// [`Request`] for the dispatcher.
    fn command(&mut self, cmd: Command<'_>) -> Step {
        let request = match cmd {
            Command::Nick(name) => Request::Nick {
                nick: name.to_string(),
            },
            Command::Join(room) => {
                if self.room.as_ref().is_some_and(|r| r.key() == key_of(room)) {
                    self.error(&format!("you are already in {room}"));
                    return Step::Continue;
                }
                Request::Join {
                    room: room.to_string(),
                    leaving: self.room.as_ref().map(|r| r.as_str().to_string()),
                }
            }
            Command::Part(_) => {
                self.error(
                    "here you are always in exactly one room; /join another to leave this one",
                );
                return Step::Continue;
            }
            Command::Rooms => Request::Rooms,
            Command::Who => match &self.room {
                Some(room) => Request::Who {
                    room: room.as_str().to_string(),
                },
                None => return self.no_room(),
            },
            Command::Msg { to, text } => Request::Msg {
                to: to.to_string(),
                text: text.to_string(),
            },
            Command::Me(action) => {
                self.say(action, true);
                return Step::Continue;
            }
            Command::History(n) => match &self.room {
                Some(room) => Request::History {
                    room: room.as_str().to_string(),
                    before: None,
                    limit: n,
                },
                None => return self.no_room(),
            },
            Command::Help => {
                for line in text::HELP {
                    self.notice(line);
                }
                return Step::Continue;
            }
            Command::Quit(reason) => Request::Quit {
                reason: reason.map(Into::into),
            },
            Command::Oper(token) => Request::Oper {
                token: Token(token.to_string()),
            },
            Command::Kick { nick, reason } => Request::Kick {
                nick: nick.to_string(),
                reason: reason.map(Into::into),
            },
            Command::Ban {
                target,
                duration,
                reason,
            } => Request::Ban {
                target: target.to_string(),
                duration,
                reason: reason.map(Into::into),
            },
            Command::Unban(target) => Request::Unban {
                target: target.to_string(),
            },
            Command::Bans => Request::Bans,
            Command::Usage(usage) => {
                self.error(&format!("usage: {usage}"));
                return Step::Continue;
            }
            Command::Unknown(name) => {
                self.error(&format!("unknown command /{name}; /help lists commands"));
                return Step::Continue;
            }
        };
        self.request(request)
    }

    fn no_room(&self) -> Step {
        self.error("you are not in a room; /join ROOM");
        Step::Continue
    }

    fn dispatcher(&self) -> Dispatcher<'_> {
        // Framing bounds the raw line; decoding invalid bytes as U+FFFD may
        // make it up to three times longer, and that is still accepted.
        Dispatcher::new(
            self.id,
            &self.hub,
            self.max_line * 3,
            confirm,
            self.cluster.as_ref().map(|c| &c.link),
        )
    }

    fn request(&mut self, request: Request) -> Step {
        if let Request::History { limit, .. } = &request {
            if let Some(refused) = self.flood_charge(history_extra(*limit)) {
                return refused;
            }
        }
        match self.dispatcher().dispatch(request) {
            Outcome::Now(reply) => self.reply(reply),
            Outcome::Wait(reply) | Outcome::Later(reply) => Step::Await(reply),
        }
    }

    /// Shows a reply as `* ` lines.
    fn reply(&mut self, reply: Reply) -> Step {
        match reply {
            // Success is announced by the hub's events.
            Reply::Posted(_)
            | Reply::Sent
            | Reply::Parted
            | Reply::Renamed
            | Reply::Pong(_)
            | Reply::Nothing => {}
            Reply::Joined(joined) => self.room = Some(joined.room),
            Reply::Rooms(rooms) => {
                let list: Vec<String> = rooms.iter().map(|(n, c)| format!("{n} ({c})")).collect();
                self.notice(&format!("rooms: {}", list.join(", ")));
            }
            Reply::Who(name, nicks) => {
                let list: Vec<&str> = nicks.iter().map(|n| n.as_str()).collect();
                self.notice(&format!("{name} ({}): {}", nicks.len(), list.join(", ")));
            }
            Reply::History(page) if page.messages.is_empty() => {
                self.notice(&format!("no history in {} yet", page.room));
            }
            Reply::History(page) => {
                let messages: Vec<Event> =
                    page.messages.iter().filter_map(|m| m.to_event()).collect();
                self.outbox
                    .push(Outgoing::Raw(text::history(page.room.as_str(), &messages)));
            }
            // Even the goodbye waits for the turn: ten thousand of them at
            // once would be the burst the pace is there to spread.
            Reply::Quit(reason) => return self.leave_in_turn(LeaveReason::Quit(reason)),
            Reply::Going(reason) => {
                if matches!(reason, LeaveReason::Quit(_)) {
                    self.notice("goodbye");
                }
                self.leave(reason);
                return Step::Quit;
            }
            Reply::Done(text) => self.notice(&text),
            Reply::Bans(bans) if bans.is_empty() => self.notice("no bans"),
            Reply::Bans(bans) => {
                for ban in &bans {
                    self.notice(&format!("ban: {}", wording::ban(&ban_info(ban))));
                }
            }
            Reply::Close(why) => {
                self.error(&why);
                self.leave(LeaveReason::Dropped(CLOSED_FOR.into()));
                return Step::Quit;
            }
            // Going away anyway; nothing to add.
            Reply::Failed(Failure::Hub(HubError::ShuttingDown | HubError::Gone)) => {}
            Reply::Failed(e) => self.error(&e.to_string()),
        }
        Step::Continue
    }

    /// Queues a chat line for the room; [`TextSession::flush_chat`] posts it.
    fn say(&mut self, text: &str, action: bool) {
        self.chat.push(ChatLine {
            text: text.into(),
            action,
        });
    }

    /// Posts the chat lines queued by [`TextSession::say`], in one batch.
    fn flush_chat(&mut self) {
        if self.chat.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.chat);
        let n = lines.len();
        let Some(room) = &self.room else {
            for _ in 0..n {
                self.error("you are not in a room; /join ROOM");
            }
            return;
        };
        let request = Request::Say {
            room: room.as_str().to_string(),
            lines,
        };
        match self.dispatcher().dispatch(request) {
            Outcome::Now(Reply::Failed(e)) => {
                let e = e.to_string();
                for _ in 0..n {
                    self.error(&e);
                }
            }
            Outcome::Now(_) => {}
            // In a cluster: posted in the background, in order.
            Outcome::Wait(posting) | Outcome::Later(posting) => self.post_in_order(posting, n),
        }
    }

    /// Lets a cluster post a chat batch while the session reads on, after
    /// the batches before it; a failure is told to the member once per
    /// line.
    fn post_in_order(&mut self, posting: BoxFuture<'static, Reply>, lines: usize) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        if cluster.in_flight.load(Ordering::Acquire) >= MAX_POSTING {
            for _ in 0..lines {
                self.error("the cluster is slow; that line was not sent");
            }
            return;
        }
        let before = cluster.posting.take();
        let in_flight = cluster.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        let outbox = self.outbox.clone();
        cluster.posting = Some(tokio::spawn(async move {
            if let Some(before) = before {
                let _ = before.await;
            }
            if let Reply::Failed(e) = posting.await {
                let line = text::error(&e.to_string());
                for _ in 0..lines {
                    outbox.push(Outgoing::Raw(line.clone()));
                }
            }
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }));
    }

    /// Waits for this session's turn to leave (see [`leave_turn`]) as a
    /// reply would be waited for, then leaves: the wait adds nothing to an
    /// idle connection's task.
    fn leave_in_turn(&self, reason: LeaveReason) -> Step {
        let (hub, outbox) = (self.hub.clone(), self.outbox.clone());
        Step::Await(Box::pin(async move {
            leave_turn(&hub, &outbox).await;
            Reply::Going(reason)
        }))
    }

    fn leave(&mut self, reason: LeaveReason) {
        let nick = self.hub.nick(self.id).ok();
        self.hub.disconnect(self.id, reason);
        if let (Some(cluster), Some(nick)) = (&self.cluster, nick) {
            cluster.link.release(nick);
        }
    }

    fn notice(&self, text: &str) {
        self.outbox.push(Outgoing::Raw(text::notice(text)));
    }

    fn error(&self, text: &str) {
        self.outbox.push(Outgoing::Raw(text::error(text)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::line::LineCodec;
    use crate::server::session::lines::LineReader;

    /// The session's future is what an idle text member keeps for its
    /// whole life; its rare large states (a history read) are boxed.
    #[tokio::test]
    async fn an_idle_session_is_small() {
        let hub = Arc::new(Hub::default());
        let outbox = Outbox::new(1024);
        let (id, _) = hub
            .connect(outbox.clone(), |_| Outgoing::Raw(Bytes::new()))
            .unwrap();
        let (reader, _) = tokio::io::split(
            Box::new(tokio::io::empty()) as Box<dyn crate::server::session::Stream>
        );
        let session = TextSession {
            id,
            hub,
            outbox,
            room: None,
            chat: Vec::new(),
            frames: LineReader::new(reader, LineCodec::new(64)),
            max_line: 64,
            guard: Guard::new(&ServerConfig::default()),
            cluster: None,
        };
        let run = session.run(None, tokio::spawn(async {}), "127.0.0.1:1".parse().unwrap());
        assert!(std::mem::size_of_val(&run) <= 512);
    }
}
