//! One connection, from its first byte to its close: protocol detection,
//! then a reader (in the session's own task) and a writer task draining the
//! member's outbox onto the socket.
//!
//! A connection speaks the text protocol unless its first line is a JSON
//! hello. The detector waits briefly for that line before greeting, so a
//! program never sees text-mode output and a person with `nc` is greeted a
//! moment later at most. The protocol-specific halves live in [`text`] and
//! [`json`]; the [`writer`] serves both, and [`lines`] frames the input.

mod json;
pub mod lines;
mod link;
mod login;
mod request;
mod text;
pub mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

use crate::config::ServerConfig;
use crate::names::Nick;
use crate::proto::json as wire;
use crate::proto::line::{Frame, LineCodec};
use crate::proto::text as text_wire;
use crate::server::access::Access;
use crate::server::admission::Refusal;
use crate::server::cluster::Cluster;
use crate::server::hub::{Hub, HubError, MemberId};
use crate::server::outbox::{Direct, Outbox, Outgoing};
use lines::LineReader;
use link::Link;
use writer::{write_loop, Encoding};

/// A connection's framed input, boxed so both protocols share one type.
type Frames = LineReader<ReadHalf<Box<dyn Stream>>>;

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

/// What the listener decided about a connection before its session began.
pub struct Admission {
    /// Why the connection is not admitted: it is told so, in its own
    /// protocol, and closed.
    pub refusal: Option<Refusal>,
    /// When registration (handshake, detection, hello, password) must be
    /// over.
    pub deadline: Instant,
    /// The server's password and operator token.
    pub access: Arc<Access>,
    /// The cluster this node is part of, if any.
    pub cluster: Option<Arc<Cluster>>,
    /// The socket's way in for writes that skip the writer task, if it
    /// has one (plain TCP).
    pub direct: Option<Arc<dyn Direct>>,
}

/// A connection's write side: the half its writer task writes to, and the
/// socket's direct way in, if any, which its outbox is given.
pub(super) struct Output {
    half: WriteHalf<Box<dyn Stream>>,
    direct: Option<Arc<dyn Direct>>,
}

impl AsyncWrite for Output {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.half).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.half).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.half.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.half).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.half).poll_shutdown(cx)
    }
}

/// Runs a session on `stream` until the client leaves, is dropped, or the
/// server shuts down.
///
/// Each phase (detection, then the protocol's session) is boxed, so that
/// the connection's task stays the size of the phase it is in: an idle
/// member's task is not sized for the detector's timer or for the session
/// of the other protocol.
// An `async move` block rather than an `async fn`, which would keep second
// copies of the arguments in the task for the connection's whole life.
#[allow(clippy::manual_async_fn)]
pub fn run(
    stream: Box<dyn Stream>,
    peer: SocketAddr,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    admission: Admission,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let (reader, half) = tokio::io::split(stream);
        let mut writer = Output {
            half,
            direct: admission.direct,
        };
        let codec = LineCodec::new(json_frame_limit(config.max_line));
        let mut frames = LineReader::new(reader, codec);
        let remaining = admission.deadline.saturating_duration_since(Instant::now());
        let wait = config.hello_wait().min(remaining);
        let first = Box::pin(tokio::time::timeout(wait, frames.next())).await;
        let first = match first {
            // Out of time to register: closed without a greeting.
            Err(_) if Instant::now() >= admission.deadline => {
                debug!(%peer, "closed: not registered within the register timeout");
                return;
            }
            Err(_) => None,
            Ok(Some(Ok(frame))) => Some(frame),
            // Gone or broken before saying anything.
            Ok(Some(Err(_)) | None) => return,
        };
        let json = matches!(&first, Some(Frame::Line(line)) if wire::is_hello(line));
        if let Some(refusal) = admission.refusal {
            let line = if json {
                wire::encode(&wire::ServerMsg::Error {
                    id: None,
                    code: refusal.code(),
                    message: refusal.message(),
                    retry_after_ms: None,
                })
            } else {
                text_wire::error(&refusal.message())
            };
            Box::pin(refuse(&mut writer, &line, config.close_timeout())).await;
            return;
        }
        let link = admission.cluster.map(Link::new);
        match first {
            Some(Frame::Line(line)) if json => {
                let access = admission.access;
                Box::pin(json::serve(
                    frames, line, writer, peer, hub, config, access, link,
                ))
                .await
            }
            first => match &admission.access.password {
                None => text::serve(frames, first, writer, peer, hub, config, link).await,
                Some(secret) => {
                    let deadline = admission.deadline;
                    let login = login::password(
                        &mut frames,
                        first,
                        &mut writer,
                        secret,
                        peer,
                        &config,
                        deadline,
                    );
                    if Box::pin(login).await {
                        text::serve(frames, None, writer, peer, hub, config, link).await
                    }
                }
            },
        }
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
/// starts its writer with `encoding`. If the hub refuses, what to tell the
/// client is returned instead: send it with [`Refused::send`].
// Each argument is one independent part of registering; a struct to carry
// them would be built at both call sites and taken apart here.
#[allow(clippy::too_many_arguments)]
fn register(
    writer: Output,
    peer: SocketAddr,
    hub: &Hub,
    config: &ServerConfig,
    encoding: Encoding,
    nick: Option<Nick>,
    greet: impl FnOnce(&Nick) -> Outgoing,
    refusal: impl FnOnce(&HubError) -> Bytes,
) -> Result<Registered, Refused<Output>> {
    let Output { half, direct } = writer;
    let outbox = match direct {
        Some(socket) => Outbox::with_direct(config.max_sendq, socket, encoding),
        None => Outbox::new(config.max_sendq),
    };
    let connected = match nick {
        Some(nick) => hub.connect_as(outbox.clone(), Some(peer.ip()), nick, greet),
        None => hub.connect_from(outbox.clone(), Some(peer.ip()), greet),
    };
    match connected {
        Ok((id, nick)) => {
            let writer = tokio::spawn(write_loop(
                half,
                outbox.clone(),
                encoding,
                config.close_timeout(),
            ));
            Ok(Registered {
                id,
                nick,
                outbox,
                writer,
            })
        }
        Err(e) => Err(Refused {
            writer: Output { half, direct: None },
            line: refusal(&e),
            within: config.close_timeout(),
        }),
    }
}

/// A client that cannot be admitted, and the last line it is to be sent.
struct Refused<W> {
    writer: W,
    line: Bytes,
    within: Duration,
}

impl<W: AsyncWrite + Unpin> Refused<W> {
    async fn send(mut self) {
        refuse(&mut self.writer, &self.line, self.within).await;
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

/// Waits for this session's turn to leave the hub (its pace of leaves),
/// unless the hub lets it go first (a shutdown, an eviction): a session
/// that ends of its own accord calls this before leaving. Callers box it,
/// so that its timer sizes no connection's task.
async fn leave_turn(hub: &Hub, outbox: &Outbox) {
    tokio::select! {
        _ = hub.leave_turn() => {}
        _ = outbox.ended() => {}
    }
}

pub(crate) fn io_reason(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | ConnectionAborted | BrokenPipe => "connection reset",
        TimedOut => "connection timed out",
        _ => "connection error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection keeps a session task and a writer task for its
    /// whole life, each sized for its largest state: the large states
    /// (detection, TLS handshake, a batch being written) are boxed so they
    /// cost heap only while they last. A regression here costs memory on
    /// every idle connection.
    #[tokio::test]
    async fn connection_tasks_stay_small() {
        let hub = Arc::new(Hub::default());
        let config = Arc::new(ServerConfig::default());
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let admission = Admission {
            refusal: None,
            deadline: Instant::now(),
            access: Arc::default(),
            cluster: None,
            direct: None,
        };
        let session = run(Box::new(tokio::io::empty()), peer, hub, config, admission);
        assert!(std::mem::size_of_val(&session) <= 512);
        let (_, w) = tokio::io::split(Box::new(tokio::io::empty()) as Box<dyn Stream>);
        let encoding = Encoding {
            format: crate::event::Format::Text,
            encode: crate::proto::text::render,
        };
        let writer = write_loop(w, Outbox::new(100), encoding, Duration::from_secs(1));
        assert!(std::mem::size_of_val(&writer) <= 256);
    }
}
