//! One text-protocol connection: a reader that turns lines into hub calls,
//! and a writer task that drains the member's outbox onto the socket.
//!
//! The session owns the translation between wire and hub and nothing else:
//! it keeps the connection's current room (the text protocol has one), and
//! renders hub answers as `* ` lines. Everything it sends goes through the
//! outbox, so replies and room traffic reach the client in one order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::FramedRead;
use tracing::{debug, info};

use crate::config::ServerConfig;
use crate::event::{Event, Format, LeaveReason};
use crate::names::{key_of, RoomName};
use crate::proto::line::{Frame, LineCodec};
use crate::proto::sanitize;
use crate::proto::text::{self, Command, Input};
use crate::server::hub::{Hub, HubError, Joined, MemberId};
use crate::server::outbox::{Drain, Outbox, Outgoing};

/// Read buffer a connection starts with; it grows only while lines are long.
const INITIAL_READ_BUFFER: usize = 4096;
/// A write buffer larger than this is freed after use, so a burst does not
/// leave an idle connection holding its peak size.
const KEEP_WRITE_BUFFER: usize = 16 * 1024;

/// Runs a text session on `stream` until the client leaves, is dropped, or
/// the server shuts down.
pub async fn run<S>(stream: S, peer: SocketAddr, hub: Arc<Hub>, config: Arc<ServerConfig>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, mut writer) = tokio::io::split(stream);
    let outbox = Outbox::new(config.max_sendq);
    let welcome = |nick: &crate::names::Nick| {
        Outgoing::Raw(text::notice(&format!(
            "welcome to rchat, {nick}! type /help for commands"
        )))
    };
    let (id, nick) = match hub.connect(outbox.clone(), welcome) {
        Ok(registered) => registered,
        Err(e) => {
            let line = text::error(&e.to_string());
            let _ = tokio::time::timeout(config.close_timeout(), async {
                writer.write_all(&line).await?;
                writer.shutdown().await
            })
            .await;
            return;
        }
    };
    info!(%peer, nick = %nick, "connected");
    let write_task = tokio::spawn(write_loop(
        writer,
        outbox.clone(),
        Format::Text,
        text::render,
        config.close_timeout(),
    ));

    let mut session = TextSession {
        id,
        hub,
        outbox,
        room: None,
    };
    session.join(RoomName::lobby().as_str());
    session.read_loop(reader, config.max_line).await;
    // The writer ends on its own once the outbox is closed or aborted.
    let _ = write_task.await;
    debug!(%peer, "connection closed");
}

struct TextSession {
    id: MemberId,
    hub: Arc<Hub>,
    outbox: Arc<Outbox>,
    /// The room chat lines go to; text mode has at most one.
    room: Option<RoomName>,
}

enum Flow {
    Continue,
    Quit,
}

impl TextSession {
    async fn read_loop<R: AsyncRead>(&mut self, reader: R, max_line: usize) {
        let frames =
            FramedRead::with_capacity(reader, LineCodec::new(max_line), INITIAL_READ_BUFFER);
        futures::pin_mut!(frames);
        let outbox = self.outbox.clone();
        loop {
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
                Some(Ok(Frame::TooLong)) => self.error(&format!(
                    "line too long (the limit is {max_line} bytes); it was not sent"
                )),
                Some(Ok(Frame::Line(bytes))) => {
                    if let Flow::Quit = self.handle(&bytes) {
                        return;
                    }
                }
            }
        }
    }

    fn handle(&mut self, bytes: &Bytes) -> Flow {
        // Invalid UTF-8 is replaced with U+FFFD rather than rejected: the
        // rest of the line still gets through.
        let decoded = String::from_utf8_lossy(bytes);
        let line = sanitize::clean(&decoded);
        match text::parse(&line) {
            Input::Empty => {}
            Input::Chat(t) => self.say(t, false),
            Input::Command(cmd) => return self.command(cmd),
        }
        Flow::Continue
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

fn io_reason(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => "connection reset",
        TimedOut => "connection timed out",
        _ => "connection error",
    }
}

/// Drains an outbox onto a socket: each batch is copied into one buffer and
/// written with one call, so a busy member costs one syscall per batch, not
/// per message. Ends when the outbox is aborted (at once) or closed (after a
/// flush bounded by `close_timeout`).
pub async fn write_loop<W>(
    mut writer: W,
    outbox: Arc<Outbox>,
    format: Format,
    encode: fn(&Event) -> Bytes,
    close_timeout: Duration,
) where
    W: AsyncWrite + Unpin,
{
    let mut batch = Vec::new();
    let mut buf = BytesMut::new();
    loop {
        let drain = outbox.drain(&mut batch).await;
        if drain == Drain::Abort {
            return;
        }
        let mut cost = 0;
        for item in batch.drain(..) {
            cost += item.cost();
            buf.extend_from_slice(&item.bytes(format, encode));
        }
        let written = match drain {
            Drain::More => tokio::select! {
                r = write_all(&mut writer, &buf) => r,
                _ = outbox.aborted() => return,
            },
            _ => {
                let _ = tokio::time::timeout(close_timeout, async {
                    write_all(&mut writer, &buf).await?;
                    writer.shutdown().await
                })
                .await;
                return;
            }
        };
        outbox.release(cost);
        if buf.capacity() > KEEP_WRITE_BUFFER {
            buf = BytesMut::new();
        } else {
            buf.clear();
        }
        if written.is_err() {
            // The reader sees the outbox end and reports the member gone.
            outbox.abort();
            return;
        }
    }
}

async fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, buf: &[u8]) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    writer.write_all(buf).await?;
    writer.flush().await
}
