//! The text protocol's side of a session: lines typed by a person become hub
//! calls, and hub answers become `* ` lines.
//!
//! The session owns the translation between wire and hub and nothing else:
//! it keeps the connection's current room (the text protocol has one), and
//! renders hub answers as `* ` lines. Everything it sends goes through the
//! outbox, so replies and room traffic reach the client in one order.

use std::net::SocketAddr;
use std::sync::Arc;

use std::future::Future;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::io::WriteHalf;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use super::writer::Encoding;
use super::{io_reason, register, Frames, Stream};
use crate::config::ServerConfig;
use crate::event::{Event, Format, LeaveReason};
use crate::names::{key_of, RoomName};
use crate::proto::json;
use crate::proto::line::Frame;
use crate::proto::sanitize;
use crate::proto::text::{self, Command, Input};
use crate::server::hub::{ChatLine, Hub, HubError, Joined, MemberId};
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
    writer: WriteHalf<Box<dyn Stream>>,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
) -> BoxFuture<'static, ()> {
    frames.codec_mut().set_max_line(config.max_line);
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
    let member = match register(writer, &hub, &config, encoding, welcome, refusal) {
        Ok(member) => member,
        Err(refused) => return Box::pin(refused.send()),
    };
    info!(%peer, nick = %member.nick, "connected");
    let mut session = TextSession {
        id: member.id,
        hub,
        outbox: member.outbox,
        room: None,
        chat: Vec::new(),
        frames,
        max_line: config.max_line,
    };
    session.join(RoomName::lobby().as_str());
    Box::pin(session.run(first, member.writer, peer))
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
}

/// What to do after a frame.
enum Step {
    Continue,
    Quit,
    /// Show the history (which waits for the store), then go on.
    History(usize),
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
        first: Option<Frame>,
        writer: JoinHandle<()>,
        peer: SocketAddr,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            let outbox = self.outbox.clone();
            let mut next = first;
            'session: loop {
                while let Some(frame) = next.take() {
                    match self.frame(frame) {
                        Step::Continue => {}
                        Step::Quit => break 'session,
                        // Boxed: rare, and its state would size every task.
                        Step::History(n) => Box::pin(self.history(n)).await,
                    }
                    next = self.frames.next_buffered();
                }
                self.flush_chat();
                let frame = tokio::select! {
                    frame = self.frames.next() => frame,
                    // Closed by the hub (shutdown, eviction) or a failed write.
                    _ = outbox.ended() => {
                        self.leave(LeaveReason::Dropped("connection lost".into()));
                        break;
                    }
                };
                match frame {
                    None => {
                        self.leave(LeaveReason::Dropped("connection closed".into()));
                        break;
                    }
                    Some(Err(e)) => {
                        self.leave(LeaveReason::Dropped(io_reason(&e).into()));
                        break;
                    }
                    Some(Ok(frame)) => next = Some(frame),
                }
            }
            // The writer ends on its own once the outbox is closed or aborted.
            let _ = writer.await;
            debug!(%peer, "connection closed");
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
            Input::Empty => {}
            Input::Chat(t) => self.say(t, false),
            Input::Command(cmd) => {
                // What was said before a command happens before it.
                self.flush_chat();
                match cmd {
                    Command::History(n) => return Step::History(n),
                    cmd => return self.command(cmd),
                }
            }
        }
        Step::Continue
    }

    /// Shows the room's last `n` messages. The store is read on a blocking
    /// thread; meanwhile this client's input waits, its output does not.
    async fn history(&mut self, n: usize) {
        let Some(room) = self.room.clone() else {
            self.error("you are not in a room; /join ROOM");
            return;
        };
        let hub = self.hub.clone();
        let id = self.id;
        let key = room.key();
        let page = tokio::task::spawn_blocking(move || hub.history(id, &key, None, n)).await;
        match page {
            Ok(Ok(page)) if page.messages.is_empty() => {
                self.notice(&format!("no history in {} yet", page.room));
            }
            Ok(Ok(page)) => {
                let messages: Vec<Event> =
                    page.messages.iter().filter_map(|m| m.to_event()).collect();
                self.outbox
                    .push(Outgoing::Raw(text::history(page.room.as_str(), &messages)));
            }
            Ok(Err(e)) => self.error(&e.to_string()),
            Err(_) => self.error(&HubError::HistoryUnreadable.to_string()),
        }
    }

    fn command(&mut self, cmd: Command<'_>) -> Step {
        match cmd {
            Command::Nick(name) => {
                // Success is announced by the hub's rename event.
                if let Err(e) = self.hub.rename(self.id, name) {
                    self.error(&e.to_string());
                }
            }
            Command::Join(room) => {
                if self.room.as_ref().is_some_and(|r| r.key() == key_of(room)) {
                    self.error(&format!("you are already in {room}"));
                } else {
                    self.join(room);
                }
            }
            Command::Part(_) => self
                .error("here you are always in exactly one room; /join another to leave this one"),
            Command::Rooms => {
                let rooms = self.hub.rooms();
                let list: Vec<String> = rooms.iter().map(|(n, c)| format!("{n} ({c})")).collect();
                self.notice(&format!("rooms: {}", list.join(", ")));
            }
            Command::Who => match &self.room {
                Some(room) => match self.hub.who(room.as_str()) {
                    Ok((name, nicks)) => {
                        let list: Vec<&str> = nicks.iter().map(|n| n.as_str()).collect();
                        self.notice(&format!("{name} ({}): {}", nicks.len(), list.join(", ")));
                    }
                    Err(e) => self.error(&e.to_string()),
                },
                None => self.error("you are not in a room; /join ROOM"),
            },
            Command::Msg { to, text } => {
                if let Err(e) = self.hub.private(self.id, to, text) {
                    self.error(&e.to_string());
                }
            }
            Command::Me(action) => self.say(action, true),
            // Handled before, as it waits for the store.
            Command::History(_) => {}
            Command::Help => {
                for line in text::HELP {
                    self.notice(line);
                }
            }
            Command::Quit(reason) => {
                self.notice("goodbye");
                self.leave(LeaveReason::Quit(reason.map(Into::into)));
                return Step::Quit;
            }
            Command::Usage(usage) => self.error(&format!("usage: {usage}")),
            Command::Unknown(name) => {
                self.error(&format!("unknown command /{name}; /help lists commands"))
            }
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
        let Some(room) = &self.room else {
            for _ in &lines {
                self.error("you are not in a room; /join ROOM");
            }
            return;
        };
        if let Err(e) = self.hub.say_many(self.id, room.as_str(), &lines) {
            let e = e.to_string();
            for _ in &lines {
                self.error(&e);
            }
        }
    }

    /// Joins `room` and leaves the previous one; a failed join leaves the
    /// user where they were.
    fn join(&mut self, room: &str) {
        let confirm = |joined: &Joined| {
            let n = joined.members.len();
            let others = if n == 1 {
                "just you".to_string()
            } else {
                format!("{n} members")
            };
            Outgoing::Raw(text::notice(&format!(
                "you are now in {} ({others}); /who lists them",
                joined.room
            )))
        };
        let joined = match &self.room {
            Some(old) => self.hub.switch(self.id, old.as_str(), room, confirm),
            None => self.hub.join(self.id, room, confirm),
        };
        match joined {
            Ok(joined) => self.room = Some(joined.room),
            Err(HubError::ShuttingDown | HubError::Gone) => {}
            Err(e) => self.error(&e.to_string()),
        }
    }

    fn leave(&mut self, reason: LeaveReason) {
        self.hub.disconnect(self.id, reason);
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
        let (reader, _) = tokio::io::split(Box::new(tokio::io::empty()) as Box<dyn Stream>);
        let session = TextSession {
            id,
            hub,
            outbox,
            room: None,
            chat: Vec::new(),
            frames: LineReader::new(reader, LineCodec::new(64)),
            max_line: 64,
        };
        let run = session.run(None, tokio::spawn(async {}), "127.0.0.1:1".parse().unwrap());
        assert!(std::mem::size_of_val(&run) <= 512);
    }
}
