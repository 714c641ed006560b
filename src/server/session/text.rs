//! The text protocol's side of a session: lines typed by a person become hub
//! calls, and hub answers become `* ` lines.
//!
//! The session owns the translation between wire and hub and nothing else:
//! it keeps the connection's current room (the text protocol has one), and
//! renders hub answers as `* ` lines. Everything it sends goes through the
//! outbox, so replies and room traffic reach the client in one order.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::AsyncWrite;
use tracing::{debug, info};

use super::{io_reason, register, Flow, Frames};
use crate::config::ServerConfig;
use crate::event::{Event, Format, LeaveReason};
use crate::names::{key_of, RoomName};
use crate::proto::json;
use crate::proto::line::Frame;
use crate::proto::sanitize;
use crate::proto::text::{self, Command, Input};
use crate::server::hub::{Hub, HubError, Joined, MemberId};
use crate::server::outbox::{Outbox, Outgoing};

/// Runs a text session after protocol detection. `first` is a frame the
/// detector already read, handled before anything else from the client.
pub(super) async fn serve<W>(
    mut frames: Frames,
    first: Option<Frame>,
    writer: W,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
) where
    W: AsyncWrite + Send + Unpin + 'static,
{
    frames.decoder_mut().set_max_line(config.max_line);
    let welcome = |nick: &crate::names::Nick| {
        Outgoing::Raw(text::notice(&format!(
            "welcome to rchat, {nick}! type /help for commands"
        )))
    };
    let refusal = |e: &HubError| text::error(&e.to_string());
    let Some(member) = register(
        writer,
        &hub,
        &config,
        Format::Text,
        text::render,
        welcome,
        refusal,
    )
    .await
    else {
        return;
    };
    info!(%peer, nick = %member.nick, "connected");
    let mut session = TextSession {
        id: member.id,
        hub,
        outbox: member.outbox,
        room: None,
    };
    session.join(RoomName::lobby().as_str());
    session.read_loop(frames, first, config.max_line).await;
    // The writer ends on its own once the outbox is closed or aborted.
    let _ = member.writer.await;
    debug!(%peer, "connection closed");
}

struct TextSession {
    id: MemberId,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    /// The room chat lines go to; text mode has at most one.
    room: Option<RoomName>,
}

impl TextSession {
    async fn read_loop(&mut self, mut frames: Frames, mut first: Option<Frame>, max_line: usize) {
        let outbox = self.outbox.clone();
        loop {
            if let Some(frame) = first.take() {
                if let Flow::Quit = self.frame(frame, max_line).await {
                    return;
                }
                continue;
            }
            let frame = tokio::select! {
                frame = frames.next() => frame,
                // Closed by the hub (shutdown, eviction) or a failed write.
                _ = outbox.ended() => {
                    self.leave(LeaveReason::Dropped("connection lost".into()));
                    return;
                }
            };
            match frame {
                None => {
                    self.leave(LeaveReason::Dropped("connection closed".into()));
                    return;
                }
                Some(Err(e)) => {
                    self.leave(LeaveReason::Dropped(io_reason(&e).into()));
                    return;
                }
                Some(Ok(frame)) => {
                    if let Flow::Quit = self.frame(frame, max_line).await {
                        return;
                    }
                }
            }
        }
    }

    async fn frame(&mut self, frame: Frame, max_line: usize) -> Flow {
        match frame {
            Frame::TooLong => {
                self.error(&format!(
                    "line too long (the limit is {max_line} bytes); it was not sent"
                ));
                Flow::Continue
            }
            Frame::Line(bytes) if bytes.len() > max_line => {
                // Read while detecting the protocol, under the larger limit.
                self.error(&format!(
                    "line too long (the limit is {max_line} bytes); it was not sent"
                ));
                Flow::Continue
            }
            Frame::Line(bytes) if json::is_hello(&bytes) => {
                self.error("a JSON hello must be the first line, sent as soon as you connect");
                Flow::Continue
            }
            Frame::Line(bytes) => self.handle(&bytes).await,
        }
    }

    async fn handle(&mut self, bytes: &Bytes) -> Flow {
        // Invalid UTF-8 is replaced with U+FFFD rather than rejected: the
        // rest of the line still gets through.
        let decoded = String::from_utf8_lossy(bytes);
        let line = sanitize::clean(&decoded);
        match text::parse(&line) {
            Input::Empty => {}
            Input::Chat(t) => self.say(t, false),
            Input::Command(Command::History(n)) => self.history(n).await,
            Input::Command(cmd) => return self.command(cmd),
        }
        Flow::Continue
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

    fn command(&mut self, cmd: Command<'_>) -> Flow {
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
                return Flow::Quit;
            }
            Command::Usage(usage) => self.error(&format!("usage: {usage}")),
            Command::Unknown(name) => {
                self.error(&format!("unknown command /{name}; /help lists commands"))
            }
        }
        Flow::Continue
    }

    fn say(&mut self, text: &str, action: bool) {
        let Some(room) = &self.room else {
            self.error("you are not in a room; /join ROOM");
            return;
        };
        if let Err(e) = self.hub.say(self.id, room.as_str(), text, action) {
            self.error(&e.to_string());
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
