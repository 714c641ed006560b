//! Clients beside the measured ones (`--slow`, `--churn`): connecting one
//! and reading through its greeting, so that when [`join`] returns it is a
//! member of the room.
//!
//! Extra clients send nothing and are not counted; what each does once in
//! the room is the business of [`super::slow`] and [`super::churn`]. By the
//! time they connect, the measured clients have already told whether the
//! server greets (rchat) or not (`ncat --chat`), so no guessing is needed
//! here.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::time::Instant as Deadline;

use super::conn::{ConnectFailure, Connector, Reader, Writer};
use super::frame::{Frame, Framer};

/// Connections in progress at once against a server that greets; the
/// greeting itself is awaited without limit.
pub(crate) const CONNECT_CONCURRENCY: usize = 256;
/// Against a server that sends no greeting, how long a new client holds
/// the one connect slot waiting for the server's first bytes (see
/// `client::ADMIT_WAIT`).
const ADMIT_WAIT: Duration = Duration::from_millis(20);
/// Bytes read at a time while waiting for the greeting.
const READ_BUF: usize = 4096;
/// Longest greeting line looked at.
const MAX_LINE: usize = 4096;

const WELCOME: &[u8] = b"* welcome to rchat, ";
const ROOM_CONFIRMATION: &[u8] = b"* you are now in ";

/// An extra client in the room.
pub(crate) struct Joined {
    /// The nick rchat gave it (from its welcome line); `None` against a
    /// server that sends no greeting.
    pub(crate) nick: Option<Vec<u8>>,
    pub(crate) reader: Reader,
    pub(crate) writer: Writer,
}

/// How to connect extra clients.
pub(crate) struct Joiner {
    pub(crate) connector: Connector,
    /// The server sends no greeting: let clients in one at a time.
    pub(crate) silent: bool,
    /// Fix the receive buffer at this many bytes.
    pub(crate) recv_buffer: Option<u32>,
    /// Move on from the room every client starts in to this one
    /// (`/join`), before counting as joined.
    pub(crate) room: Option<String>,
}

impl Joiner {
    /// The connect slots for a wave of clients joined through this joiner.
    pub(crate) fn slots(&self) -> Semaphore {
        Semaphore::new(if self.silent { 1 } else { CONNECT_CONCURRENCY })
    }

    /// Connects one client (waiting for one of `slots` first) and reads
    /// through its greeting, all before `deadline`. The error says why,
    /// in words.
    pub(crate) async fn join(
        &self,
        slots: &Semaphore,
        deadline: Deadline,
    ) -> Result<Joined, String> {
        let attempt = async {
            let permit = slots.acquire().await.ok();
            let (mut reader, mut writer) = self
                .connector
                .connect_with(self.recv_buffer)
                .await
                .map_err(|e| match e {
                    ConnectFailure::Tcp(e) => format!("cannot connect: {e}"),
                    ConnectFailure::Tls(why) => format!("TLS handshake failed: {why}"),
                })?;
            let nick = if self.silent {
                // Its first bytes (or a moment) mean the server let it in.
                let mut buf = [0u8; READ_BUF];
                match tokio::time::timeout(ADMIT_WAIT, reader.read(&mut buf)).await {
                    Ok(Ok(0)) => return Err("the server closed the connection".to_string()),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Ok(Ok(_)) | Err(_) => {}
                }
                drop(permit);
                None
            } else {
                drop(permit);
                let nick = greeting(&mut reader).await?;
                if let Some(room) = &self.room {
                    let join = format!("/join {room}\n");
                    writer
                        .write_all(join.as_bytes())
                        .await
                        .map_err(|e| format!("cannot join {room}: {e}"))?;
                    greeting(&mut reader).await?;
                }
                nick
            };
            Ok(Joined {
                nick,
                reader,
                writer,
            })
        };
        match tokio::time::timeout_at(deadline, attempt).await {
            Ok(r) => r,
            Err(_) => Err("not in the room in time".to_string()),
        }
    }
}

/// Reads rchat's greeting up to the room confirmation; returns the nick of
/// the welcome line.
async fn greeting(reader: &mut Reader) -> Result<Option<Vec<u8>>, String> {
    let mut framer = Framer::new(MAX_LINE);
    let mut buf = [0u8; READ_BUF];
    let mut nick = None;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => return Err("the server closed the connection".to_string()),
            Ok(n) => n,
            Err(e) => return Err(e.to_string()),
        };
        let mut done = false;
        let mut refused = None;
        framer.feed(&buf[..n], |frame| {
            let Frame::Line(line) = frame else { return };
            if done || refused.is_some() {
                return;
            }
            if line.starts_with(b"* error:") {
                refused = Some(String::from_utf8_lossy(line).into_owned());
            } else if let Some(rest) = line.strip_prefix(WELCOME) {
                nick = welcome_nick(rest).map(<[u8]>::to_vec);
            } else if line.starts_with(ROOM_CONFIRMATION) {
                done = true;
            }
        });
        if let Some(line) = refused {
            return Err(format!("refused: {line}"));
        }
        if done {
            return Ok(nick);
        }
    }
}

/// The nick in the rest of `* welcome to rchat, NICK! type /help ...`.
fn welcome_nick(rest: &[u8]) -> Option<&[u8]> {
    let end = rest.iter().position(|&b| b == b'!')?;
    let nick = &rest[..end];
    (!nick.is_empty() && !nick.contains(&b' ')).then_some(nick)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_nick_in_the_welcome() {
        assert_eq!(
            welcome_nick(b"guest12! type /help for commands"),
            Some(&b"guest12"[..])
        );
        assert_eq!(welcome_nick(b"no exclamation"), None);
        assert_eq!(welcome_nick(b"two words! x"), None);
        assert_eq!(welcome_nick(b"! x"), None);
    }
}
