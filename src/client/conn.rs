//! The client's connection: connects (TCP or TLS), says hello in the JSON
//! protocol, and then relays requests out and server messages in. When the
//! connection drops it reconnects with backoff and restores the nick and
//! rooms it had. Everything the UI needs arrives as an [`Update`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::proto::json::{self as wire, ClientMsg, ErrorCode, ServerMsg};

/// How to reach the server and who to be there.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port`.
    pub addr: String,
    pub nick: Option<String>,
    /// Room to start in; the server's lobby if absent.
    pub room: Option<String>,
    /// TLS settings; plaintext when absent.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Reconnect after a lost connection.
    pub reconnect: bool,
    /// The server's password, sent in every hello (reconnects too).
    pub password: Option<Password>,
}

/// Passwords typed at the prompt before giving up.
pub const PASSWORD_TRIES: u32 = 3;

/// A password, kept out of `Debug` output and so out of every log.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The connection's state, for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Connecting {
        attempt: u32,
    },
    Connected {
        server: String,
        tls: bool,
    },
    /// The connection is gone; `retry_in` is when the next attempt starts,
    /// or `None` if the client will not retry.
    Lost {
        reason: String,
        retry_in: Option<Duration>,
    },
}

/// Something the UI should show or react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Status(Status),
    Msg(ServerMsg),
}

/// Sends requests to the server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<ClientMsg>,
}

/// The connection task has ended.
#[derive(Debug, thiserror::Error)]
#[error("the connection has closed")]
pub struct Closed;

impl Handle {
    pub async fn send(&self, msg: ClientMsg) -> Result<(), Closed> {
        self.tx.send(msg).await.map_err(|_| Closed)
    }
}

/// Starts the connection task. Updates arrive on the returned receiver until
/// the connection ends for good (quit, or loss without reconnect), then it
/// closes.
pub fn start(opts: Options) -> (Handle, mpsc::Receiver<Update>) {
    let (tx, rx) = mpsc::channel(256);
    let (up_tx, up_rx) = mpsc::channel(1024);
    tokio::spawn(run(opts, rx, up_tx));
    (Handle { tx }, up_rx)
}

/// Why a connection attempt or session failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: std::io::Error },
    #[error("TLS handshake with {addr} failed: {cause}")]
    Tls { addr: String, cause: std::io::Error },
    #[error("{0} is not a valid server name for TLS")]
    ServerName(String),
    #[error("the server did not answer the JSON hello (is it an rchat server?)")]
    NoWelcome,
    #[error("{0} answered with TLS: it is a TLS port; connect with --tls")]
    SpeaksTls(String),
    #[error(
        "{0} closed the connection right after the hello; if it is a TLS port, connect with --tls"
    )]
    ClosedAfterHello(String),
    #[error("{0} does not speak TLS; connect without --tls")]
    NotTls(String),
    #[error("the server refused the connection: {0}")]
    Refused(String),
    /// Trying again with the same password cannot help: never retried.
    #[error("the server did not accept the password: {0}")]
    AuthFailed(String),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0} did not answer in time")]
    Timeout(String),
}

/// Any byte stream: TCP or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Longest line accepted from the server. Generous: room lists and member
/// lists can be long, but a bound keeps a hostile server from exhausting
/// memory.
const MAX_SERVER_LINE: usize = 4 * 1024 * 1024;
/// How long connecting, the TLS handshake and the welcome may take in all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A write that makes no progress for this long means the server is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// A session must last this long before the reconnect delay starts over,
/// so a server that welcomes and then drops us is not hammered.
const STABLE_SESSION: Duration = Duration::from_secs(10);
/// How long to wait for the welcome after the hello.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// Seconds of server silence before the client pings, if the server did not
/// say.
const DEFAULT_PING_INTERVAL: u64 = 30;
/// How long the server has to answer the client's ping.
const PONG_TIMEOUT: Duration = Duration::from_secs(20);
/// Reconnect delays: first, and the most it backs off to.
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Requests typed while disconnected that are kept to send on reconnect.
const MAX_HELD: usize = 256;

/// Who the client was, to be restored after a reconnect.
#[derive(Debug, Clone, Default)]
struct Identity {
    /// The nick to ask for: the user's choice, or the last one we held.
    wanted: Option<String>,
    /// The nick the server says we have now.
    actual: Option<String>,
    rooms: Vec<String>,
}

impl Identity {
    /// Follows the server's view of our nick and rooms.
    fn track(&mut self, msg: &ServerMsg) {
        match msg {
            ServerMsg::Welcome { nick, .. } => self.actual = Some(nick.clone()),
            ServerMsg::Renamed { old, new } if self.actual.as_deref() == Some(old.as_str()) => {
                self.actual = Some(new.clone());
                self.wanted = Some(new.clone());
            }
            ServerMsg::RoomState { room, .. }
                if !self.rooms.iter().any(|r| r.eq_ignore_ascii_case(room)) =>
            {
                self.rooms.push(room.clone());
            }
            _ => {}
        }
    }

    fn track_request(&mut self, msg: &ClientMsg) {
        if let ClientMsg::Part { room, .. } = msg {
            self.rooms.retain(|r| !r.eq_ignore_ascii_case(room));
        }
    }
}

/// How a session ended.
enum End {
    /// The user quit, or the UI went away.
    Quit,
    Lost(String),
}

type Lines = FramedRead<ReadHalf<Box<dyn Stream>>, LinesCodec>;
type Writer = WriteHalf<Box<dyn Stream>>;

async fn run(
    opts: Options,
    mut requests: mpsc::Receiver<ClientMsg>,
    updates: mpsc::Sender<Update>,
) {
    let mut me = Identity {
        wanted: opts.nick.clone(),
        actual: None,
        rooms: opts.room.iter().cloned().collect(),
    };
    let mut held: VecDeque<ClientMsg> = VecDeque::new();
    let mut attempt = 0u32;
    let mut backoff = BACKOFF_FIRST;
    loop {
        attempt += 1;
        let _ = updates
            .send(Update::Status(Status::Connecting { attempt }))
            .await;
        let reason = match connect(&opts, &me).await {
            Ok((lines, writer, welcome)) => {
                attempt = 0;
                let since = Instant::now();
                let _ = updates
                    .send(Update::Status(Status::Connected {
                        server: opts.addr.clone(),
                        tls: opts.tls.is_some(),
                    }))
                    .await;
                let end = session(
                    lines,
                    writer,
                    welcome,
                    &mut requests,
                    &updates,
                    &mut me,
                    &mut held,
                )
                .await;
                if since.elapsed() >= STABLE_SESSION {
                    backoff = BACKOFF_FIRST;
                }
                match end {
                    End::Quit => return,
                    End::Lost(reason) => reason,
                }
            }
            Err(
                e @ (ConnError::AuthFailed(_) | ConnError::SpeaksTls(_) | ConnError::NotTls(_)),
            ) => {
                // Not a reconnect loop: the same password (or the same
                // mistake about TLS) fails again.
                let _ = updates
                    .send(Update::Status(Status::Lost {
                        reason: e.to_string(),
                        retry_in: None,
                    }))
                    .await;
                return;
            }
            Err(e) => e.to_string(),
        };
        if !opts.reconnect || updates.is_closed() {
            let _ = updates
                .send(Update::Status(Status::Lost {
                    reason,
                    retry_in: None,
                }))
                .await;
            return;
        }
        let _ = updates
            .send(Update::Status(Status::Lost {
                reason,
                retry_in: Some(backoff),
            }))
            .await;
        // Wait out the backoff, but let the user quit meanwhile and keep
        // what they type for when the connection is back.
        let wake = Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => break,
                req = requests.recv() => match req {
                    None | Some(ClientMsg::Quit { .. }) => return,
                    Some(msg) => {
                        me.track_request(&msg);
                        if held.len() < MAX_HELD {
                            held.push_back(msg);
                        }
                    }
                }
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Connects, says hello and waits for the welcome.
async fn connect(opts: &Options, me: &Identity) -> Result<(Lines, Writer, ServerMsg), ConnError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(opts, me))
        .await
        .map_err(|_| ConnError::Timeout(opts.addr.clone()))?
}

async fn connect_inner(
    opts: &Options,
    me: &Identity,
) -> Result<(Lines, Writer, ServerMsg), ConnError> {
    let tcp = TcpStream::connect(&opts.addr)
        .await
        .map_err(|cause| ConnError::Connect {
            addr: opts.addr.clone(),
            cause,
        })?;
    let _ = tcp.set_nodelay(true);
    let hello = wire::encode(&ClientMsg::Hello {
        proto: wire::PROTO_NAME.to_string(),
        version: wire::VERSION,
        nick: me.wanted.clone(),
        rooms: (!me.rooms.is_empty()).then(|| me.rooms.clone()),
        password: opts.password.as_ref().map(|p| p.0.clone()),
    });
    let stream: Box<dyn Stream> = match &opts.tls {
        None => {
            let mut tcp = tcp;
            tcp.write_all(&hello).await?;
            tcp.flush().await?;
            // A TLS port answers a plaintext hello with a TLS record (or
            // just closes): say so rather than "no welcome".
            let mut first = [0u8; 1];
            match tokio::time::timeout(WELCOME_TIMEOUT, tcp.peek(&mut first)).await {
                Ok(Ok(0)) => return Err(ConnError::ClosedAfterHello(opts.addr.clone())),
                Ok(Ok(_)) if is_tls_record(first[0]) => {
                    return Err(ConnError::SpeaksTls(opts.addr.clone()))
                }
                _ => {}
            }
            Box::new(tcp)
        }
        Some(config) => {
            let name = server_name(&opts.addr)?;
            let mut tls = TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|cause| {
                    if is_not_tls(&cause) {
                        ConnError::NotTls(opts.addr.clone())
                    } else {
                        ConnError::Tls {
                            addr: opts.addr.clone(),
                            cause,
                        }
                    }
                })?;
            tls.write_all(&hello).await?;
            tls.flush().await?;
            Box::new(tls)
        }
    };
    let (reader, writer) = tokio::io::split(stream);
    let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_SERVER_LINE));
    let first = tokio::time::timeout(WELCOME_TIMEOUT, lines.next())
        .await
        .map_err(|_| ConnError::NoWelcome)?;
    match first {
        Some(Ok(line)) => match wire::decode_server(line.as_bytes()) {
            Ok(welcome @ ServerMsg::Welcome { .. }) => Ok((lines, writer, welcome)),
            Ok(ServerMsg::Error {
                code: ErrorCode::AuthFailed,
                message,
                ..
            }) if message.starts_with(wire::PASSWORD_NEEDED) => {
                Err(ConnError::AuthFailed(format!(
                    "{}; give it with --password-file FILE, or run in a terminal to be asked",
                    wire::PASSWORD_NEEDED
                )))
            }
            Ok(ServerMsg::Error {
                code: ErrorCode::AuthFailed,
                message,
                ..
            }) => Err(ConnError::AuthFailed(
                crate::proto::sanitize::clean(&message).into_owned(),
            )),
            Ok(ServerMsg::Error { message, .. }) => Err(ConnError::Refused(message)),
            // Refusals made before the protocol is known are text lines.
            _ => match line.strip_prefix("* error: ") {
                Some(why) => Err(ConnError::Refused(
                    crate::proto::sanitize::clean(why).into_owned(),
                )),
                None => Err(ConnError::NoWelcome),
            },
        },
        Some(Err(_)) | None => Err(ConnError::NoWelcome),
    }
}

/// Whether a byte starts a TLS record (alert or handshake): what a TLS
/// server sends to a client that spoke plaintext to it.
fn is_tls_record(first: u8) -> bool {
    first == 0x15 || first == 0x16
}

/// Whether a failed TLS handshake means the server does not speak TLS at
/// all (it answered with something that is no TLS record).
fn is_not_tls(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("InvalidContentType") || text.contains("corrupt message")
}

/// The TLS server name for `host:port` (`[v6]:port` too).
fn server_name(addr: &str) -> Result<ServerName<'static>, ConnError> {
    let host = match addr.rsplit_once(':') {
        Some((host, _port)) => host,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| ConnError::ServerName(host.to_string()))
}

/// Writes one message, giving up if the server stops reading.
async fn send_line(writer: &mut Writer, msg: &ClientMsg) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&wire::encode(msg))).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the server stopped reading",
        )),
    }
}

/// Relays requests and server messages until the connection ends.
async fn session(
    mut lines: Lines,
    mut writer: Writer,
    welcome: ServerMsg,
    requests: &mut mpsc::Receiver<ClientMsg>,
    updates: &mpsc::Sender<Update>,
    me: &mut Identity,
    held: &mut VecDeque<ClientMsg>,
) -> End {
    // Whatever was typed while we were away goes out first.
    while let Some(msg) = held.pop_front() {
        if send_line(&mut writer, &msg).await.is_err() {
            return End::Lost("write failed".into());
        }
    }
    // The server's word, clamped: a hostile value must not overflow the
    // clock or switch keepalive off.
    let ping_interval = match &welcome {
        ServerMsg::Welcome { ping_interval, .. } if *ping_interval > 0 => {
            Duration::from_secs((*ping_interval).clamp(1, 3600))
        }
        _ => Duration::from_secs(DEFAULT_PING_INTERVAL),
    };
    me.track(&welcome);
    if updates.send(Update::Msg(welcome)).await.is_err() {
        return End::Quit;
    }
    let mut deadline = Instant::now() + ping_interval;
    let mut awaiting_pong = false;
    let mut pings = 0u64;
    loop {
        tokio::select! {
            req = requests.recv() => {
                let Some(msg) = req else {
                    // The UI is gone: leave politely.
                    let quit = ClientMsg::Quit { reason: None };
                    let _ = send_line(&mut writer, &quit).await;
                    let _ = writer.shutdown().await;
                    return End::Quit;
                };
                me.track_request(&msg);
                let quitting = matches!(msg, ClientMsg::Quit { .. });
                if let Err(e) = send_line(&mut writer, &msg).await {
                    return End::Lost(e.to_string());
                }
                if quitting {
                    let _ = writer.flush().await;
                    // Wait briefly for the goodbye so nothing in flight is lost.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(line)) = lines.next().await {
                            if let Ok(msg) = wire::decode_server(line.as_bytes()) {
                                let bye = matches!(msg, ServerMsg::Bye { .. });
                                let _ = updates.send(Update::Msg(msg)).await;
                                if bye {
                                    break;
                                }
                            }
                        }
                    })
                    .await;
                    return End::Quit;
                }
            }
            line = lines.next() => {
                let line = match line {
                    None => return End::Lost("the server closed the connection".into()),
                    Some(Err(e)) => return End::Lost(e.to_string()),
                    Some(Ok(line)) => line,
                };
                awaiting_pong = false;
                deadline = Instant::now() + ping_interval;
                let Ok(msg) = wire::decode_server(line.as_bytes()) else {
                    continue;
                };
                match &msg {
                    ServerMsg::Ping { token } => {
                        let pong = ClientMsg::Pong { token: token.clone() };
                        if send_line(&mut writer, &pong).await.is_err() {
                            return End::Lost("write failed".into());
                        }
                        continue;
                    }
                    ServerMsg::Pong { .. } => continue,
                    _ => {}
                }
                me.track(&msg);
                if updates.send(Update::Msg(msg)).await.is_err() {
                    return End::Quit;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                if awaiting_pong {
                    return End::Lost("the server stopped responding".into());
                }
                pings += 1;
                let ping = ClientMsg::Ping { token: format!("c{pings}") };
                if send_line(&mut writer, &ping).await.is_err() {
                    return End::Lost("write failed".into());
                }
                awaiting_pong = true;
                deadline = Instant::now() + PONG_TIMEOUT;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(server_name("localhost:1234").is_ok());
        assert!(server_name("127.0.0.1:1234").is_ok());
        assert!(server_name("[::1]:1234").is_ok());
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn identity_follows_renames_and_rooms() {
        let mut me = Identity::default();
        me.track(&ServerMsg::Welcome {
            proto: "rchat".into(),
            version: 1,
            nick: "guest1".into(),
            max_text: 1024,
            ping_interval: 30,
        });
        me.track(&ServerMsg::Renamed {
            old: "guest1".into(),
            new: "alice".into(),
        });
        me.track(&ServerMsg::Renamed {
            old: "bob".into(),
            new: "carol".into(),
        });
        me.track(&ServerMsg::RoomState {
            room: "dev".into(),
            members: vec![],
        });
        me.track_request(&ClientMsg::Part {
            id: None,
            room: "DEV".into(),
        });
        assert_eq!(me.wanted.as_deref(), Some("alice"));
        assert_eq!(me.actual.as_deref(), Some("alice"));
        assert!(me.rooms.is_empty());
    }
}
