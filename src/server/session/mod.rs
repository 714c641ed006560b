//! One connection, from its first byte to its close: protocol detection,
//! then a reader (in the session's own task) and a writer task draining the
//! member's outbox onto the socket.
//!
//! A connection speaks the text protocol unless its first line is a JSON
//! hello. The detector waits briefly for that line before greeting, so a
//! program never sees text-mode output and a person with `nc` is greeted a
//! moment later at most. The protocol-specific halves live in [`text`] and
//! [`json`]; the writer here serves both.

mod json;
mod text;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::task::JoinHandle;
use tokio_util::codec::FramedRead;

use crate::config::ServerConfig;
use crate::event::{Event, Format};
use crate::names::Nick;
use crate::proto::json as wire;
use crate::proto::line::{Frame, LineCodec};
use crate::server::hub::{Hub, HubError, MemberId};
use crate::server::outbox::{Drain, Outbox, Outgoing};

/// Read buffer a connection starts with; it grows only while lines are long.
const INITIAL_READ_BUFFER: usize = 4096;
/// A write buffer larger than this is freed after use, so a burst does not
/// leave an idle connection holding its peak size.
const KEEP_WRITE_BUFFER: usize = 16 * 1024;
/// How long to wait for a JSON hello before greeting in text mode.
pub const DETECT_TIMEOUT: Duration = Duration::from_millis(300);

/// A connection's framed input, boxed so both protocols share one type.
type Frames = FramedRead<ReadHalf<Box<dyn Stream>>, LineCodec>;

/// Whether a session goes on after handling a line.
enum Flow {
    Continue,
    Quit,
}

/// Any byte stream a session can run on: TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Longest JSON line accepted: text of `max_line` bytes may grow when
/// escaped, and the envelope adds field names.
pub fn json_frame_limit(max_line: usize) -> usize {
    max_line * 6 + 1024
}

/// Runs a session on `stream` until the client leaves, is dropped, or the
/// server shuts down.
pub async fn run<S>(stream: S, peer: SocketAddr, hub: Arc<Hub>, config: Arc<ServerConfig>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let boxed: Box<dyn Stream> = Box::new(stream);
    let (reader, writer) = tokio::io::split(boxed);
    let codec = LineCodec::new(json_frame_limit(config.max_line));
    let mut frames = FramedRead::with_capacity(reader, codec, INITIAL_READ_BUFFER);
    let first = match tokio::time::timeout(DETECT_TIMEOUT, frames.next()).await {
        Err(_) => None,
        Ok(Some(Ok(frame))) => Some(frame),
        // Gone or broken before saying anything.
        Ok(Some(Err(_)) | None) => return,
    };
    match first {
        Some(Frame::Line(line)) if wire::is_hello(&line) => {
            json::serve(frames, line, writer, peer, hub, config).await
        }
        first => text::serve(frames, first, writer, peer, hub, config).await,
    }
}

/// A member registered with the hub, its writer task already draining.
struct Registered {
    id: MemberId,
    nick: Nick,
    outbox: Arc<Outbox>,
    writer: JoinHandle<()>,
}

/// Registers the connection with the hub (the hub queues `greet` first) and
/// starts its writer in `format`. If the hub refuses, the client is sent
/// `refusal` of the error and `None` is returned.
async fn register<W>(
    mut writer: W,
    hub: &Hub,
    config: &ServerConfig,
    format: Format,
    encode: fn(&Event) -> Bytes,
    greet: impl FnOnce(&Nick) -> Outgoing,
    refusal: impl FnOnce(&HubError) -> Bytes,
) -> Option<Registered>
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    let outbox = Outbox::new(config.max_sendq);
    match hub.connect(outbox.clone(), greet) {
        Ok((id, nick)) => {
            let writer = tokio::spawn(write_loop(
                writer,
                outbox.clone(),
                format,
                encode,
                config.close_timeout(),
            ));
            Some(Registered {
                id,
                nick,
                outbox,
                writer,
            })
        }
        Err(e) => {
            refuse(&mut writer, &refusal(&e), config.close_timeout()).await;
            None
        }
    }
}

/// Writes one last line to a client that cannot be admitted, and closes.
async fn refuse<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8], within: Duration) {
    let _ = tokio::time::timeout(within, async {
        writer.write_all(line).await?;
        writer.shutdown().await
    })
    .await;
}

pub(crate) fn io_reason(e: &std::io::Error) -> &'static str {
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
            Drain::More => {
                // A write may block on a client that stopped reading. If the
                // session closes meanwhile (quit, ping timeout, shutdown),
                // the write gets `close_timeout` more, then the connection
                // is dropped: nothing waits on a dead reader for ever.
                let write = write_all(&mut writer, &buf);
                tokio::pin!(write);
                let mut give_up: Option<tokio::time::Instant> = None;
                loop {
                    tokio::select! {
                        r = &mut write => break r,
                        _ = outbox.aborted() => return,
                        _ = outbox.ended(), if give_up.is_none() => {
                            give_up = Some(tokio::time::Instant::now() + close_timeout);
                        }
                        _ = sleep_until_opt(give_up) => return,
                    }
                }
            }
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

/// Sleeps until `at`, or for ever when there is no deadline.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, buf: &[u8]) -> std::io::Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    writer.write_all(buf).await?;
    writer.flush().await
}
