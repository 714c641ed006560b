//! One benchmark client: connects, waits for its greeting, hands its write
//! half to the coordinator, then reads and checks everything it receives
//! until told to stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::conn::{ConnectFailure, Connector, Reader, Writer};
use super::frame::{Arrival, Frame, Framer, OrderTracker};
use super::irc;
use super::notice::{self, Crowd, Notice};
use super::shared::{Shared, Timeline, GREET_RCHAT, GREET_SILENT, GREET_UNKNOWN};
use super::token::{self, Parsed};
use super::BenchError;

/// How long a client waits for any greeting before deciding the server
/// does not send one (as `ncat --chat` does not), unless another client has
/// already seen an rchat greeting.
const GREETING_IDLE: Duration = Duration::from_secs(1);

/// Against a server known to send no greeting, how long a new client holds
/// the one connect slot waiting for the server's first bytes (`ncat --chat`
/// announces every newcomer to everyone, the newcomer included). Letting
/// clients in one at a time keeps the server's accept queue from
/// overflowing, which would leave clients half-open for good.
const ADMIT_WAIT: Duration = Duration::from_millis(20);

/// The line rchat sends once a text client is in its room.
const ROOM_CONFIRMATION: &[u8] = b"* you are now in ";

/// Tracks the join notices a client still expects before the start.
///
/// rchat tells each joining client how many members the room has; every
/// client that joins later produces one `* NICK joined ROOM` line, or is
/// counted in a `* N joined ROOM: ...` summary once the room is big. A
/// client has *settled* once it has read all of them, so that no join
/// notice is still in flight when the measurement starts.
#[derive(Debug, Default)]
struct Settle {
    /// The room whose joins are counted.
    room: Vec<u8>,
    left: usize,
    done: bool,
}

impl Settle {
    /// Counts one pre-start line; returns true when this settles.
    fn line(&mut self, line: &[u8]) -> bool {
        if self.done {
            return false;
        }
        let joined = match notice::classify(line) {
            Some(Notice::Joined(_))
                if line.ends_with(&self.room)
                    && line[..line.len() - self.room.len()].ends_with(b" joined ") =>
            {
                1
            }
            Some(Notice::Crowd {
                change: Crowd::Joined,
                count,
                room,
                ..
            }) if room == self.room.as_slice() => usize::try_from(count).unwrap_or(usize::MAX),
            _ => return false,
        };
        self.left = self.left.saturating_sub(joined);
        self.left == 0
    }
}

/// Parses rchat's `* you are now in ROOM (just you); ...` or
/// `* you are now in ROOM (N members); ...` into the room and `N`.
fn room_confirmation(line: &[u8]) -> Option<(&[u8], usize)> {
    let rest = line.strip_prefix(ROOM_CONFIRMATION)?;
    let paren = rest.iter().position(|&b| b == b'(')?;
    let room = rest[..paren].strip_suffix(b" ")?;
    let inside = &rest[paren + 1..];
    if inside.starts_with(b"just you)") {
        return Some((room, 1));
    }
    let digits = inside.iter().take_while(|b| b.is_ascii_digit()).count();
    if !inside[digits..].starts_with(b" members)") {
        return None;
    }
    let n = std::str::from_utf8(&inside[..digits]).ok()?.parse().ok()?;
    Some((room, n))
}

/// What a client hands the coordinator once it is ready.
pub(crate) struct Ready {
    pub(crate) idx: usize,
    /// Which connection of this client (see [`ClientTask::generation`]).
    pub(crate) generation: u32,
    pub(crate) writer: Writer,
    /// From starting to connect until the connection (and TLS) was up.
    pub(crate) tcp: Duration,
    /// From starting to connect until the greeting was read.
    pub(crate) ready: Duration,
    /// Whether an rchat greeting was seen (otherwise the server sent none).
    pub(crate) greeted: bool,
}

/// A client that failed before it was ready.
pub(crate) struct Failed {
    pub(crate) idx: usize,
    pub(crate) generation: u32,
    pub(crate) error: BenchError,
}

/// What one client counted while receiving.
#[derive(Debug, Default, Clone)]
pub(crate) struct RecvStats {
    /// First arrivals of messages stamped inside the measured window.
    pub(crate) deliveries: u64,
    pub(crate) duplicates: u64,
    pub(crate) order_violations: u64,
    /// Lines received after the start that carried no valid token and were
    /// no membership notice.
    pub(crate) unparsed_lines: u64,
    /// Membership notices received after the start (see `notice`).
    pub(crate) joins_seen: u64,
    pub(crate) leaves_seen: u64,
    pub(crate) disconnects_seen: u64,
    /// Of those, lines with the token marker but no well-formed token.
    pub(crate) malformed_tokens: u64,
    /// Well-formed tokens this run did not send to this client: unknown
    /// sender, a sequence number not yet issued, or its own message.
    pub(crate) unexpected_tokens: u64,
    /// The connection ended before the run did.
    pub(crate) disconnected: bool,
}

pub(crate) struct ClientTask {
    pub(crate) idx: usize,
    /// Counts this client's connections: a client that is connected again
    /// (see `fleet`) gets the next number, and whatever its old connection
    /// still reports is ignored.
    pub(crate) generation: u32,
    pub(crate) connector: Connector,
    pub(crate) shared: Arc<Shared>,
    pub(crate) connect_slots: Arc<Semaphore>,
    pub(crate) ready_tx: mpsc::Sender<Result<Ready, Failed>>,
    pub(crate) cancel: CancellationToken,
}

impl ClientTask {
    pub(crate) async fn run(self) -> RecvStats {
        let ClientTask {
            idx,
            generation,
            connector,
            shared,
            connect_slots,
            ready_tx,
            cancel,
        } = self;
        let fail = |error| Failed {
            idx,
            generation,
            error,
        };
        let permit = connect_slots.acquire_owned().await.ok();
        // Times count from the moment this client may connect, not from
        // when it was queued behind the others.
        let began = Instant::now();
        let (mut reader, mut writer) = match connector.connect().await {
            Ok(halves) => halves,
            Err(e) => {
                let error = match e {
                    ConnectFailure::Tcp(source) => BenchError::Connect {
                        client: idx,
                        addr: connector.addr(),
                        source,
                    },
                    ConnectFailure::Tls(reason) => BenchError::Tls {
                        client: idx,
                        reason,
                    },
                };
                let _ = ready_tx.send(Err(fail(error))).await;
                return RecvStats::default();
            }
        };
        let tcp = began.elapsed();
        let mut rx = Receiver::new(idx, shared.clone());
        let greeted = if shared.irc {
            drop(permit);
            rx.join_irc(&mut reader, &mut writer, generation)
                .await
                .map(|()| true)
        } else if shared.greet_mode.load(Ordering::Relaxed) == GREET_SILENT {
            rx.admit(&mut reader, permit).await.map(|()| false)
        } else {
            drop(permit);
            rx.greet(&mut reader, began + tcp).await
        };
        let greeted = match greeted {
            Ok(g) => g,
            Err(e) => {
                let _ = ready_tx.send(Err(fail(e))).await;
                return RecvStats::default();
            }
        };
        let ready = Ready {
            idx,
            generation,
            writer,
            tcp,
            ready: began.elapsed(),
            greeted,
        };
        if ready_tx.send(Ok(ready)).await.is_err() {
            return RecvStats::default();
        }
        drop(ready_tx);
        rx.receive(&mut reader, &cancel).await;
        rx.stats
    }
}

/// The receiving side of one client.
pub(crate) struct Receiver {
    idx: usize,
    shared: Arc<Shared>,
    framer: Framer,
    order: OrderTracker,
    buf: Vec<u8>,
    stats: RecvStats,
    /// `(sent_ns, latency_ns)` of the current read's deliveries, recorded
    /// in one go.
    samples: Vec<(u64, u64)>,
    /// When the measured window opened, once the timeline is known.
    warm_ns: u64,
    /// First arrivals of the current read, any stamp.
    fresh: u64,
    settle: Settle,
}

impl Receiver {
    pub(crate) fn new(idx: usize, shared: Arc<Shared>) -> Receiver {
        // Big reads when there are few clients (throughput), small buffers
        // when there are many (memory).
        let buf_len = if shared.clients <= 256 {
            32 * 1024
        } else {
            8 * 1024
        };
        let max_line = (shared.size + token::MAX_TOKEN_LEN).max(64 * 1024);
        Receiver {
            idx,
            framer: Framer::new(max_line),
            order: OrderTracker::new(shared.senders),
            buf: vec![0; buf_len],
            stats: RecvStats::default(),
            samples: Vec::new(),
            warm_ns: 0,
            fresh: 0,
            settle: Settle::default(),
            shared,
        }
    }

    /// Reads until the server's greeting is complete. Returns whether an
    /// rchat greeting was seen; `false` means the server sent nothing
    /// within [`GREETING_IDLE`] and no other client has seen a greeting
    /// either. Lines after the greeting in the same read count towards
    /// settling.
    async fn greet(&mut self, reader: &mut Reader, connected: Instant) -> Result<bool, BenchError> {
        let idle_until = tokio::time::Instant::from_std(connected + GREETING_IDLE);
        let shared = self.shared.clone();
        let mode = &shared.greet_mode;
        let mut saw_notice = false;
        loop {
            let read = if saw_notice || mode.load(Ordering::Relaxed) == GREET_RCHAT {
                reader.read(&mut self.buf).await
            } else {
                match tokio::time::timeout_at(idle_until, reader.read(&mut self.buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        let _ = mode.compare_exchange(
                            GREET_UNKNOWN,
                            GREET_SILENT,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                        if mode.load(Ordering::Relaxed) == GREET_RCHAT {
                            continue;
                        }
                        self.settled();
                        return Ok(false);
                    }
                }
            };
            let n = match read {
                Ok(0) => {
                    return Err(BenchError::Closed {
                        client: self.idx,
                        reason: "the server closed the connection".into(),
                    })
                }
                Ok(n) => n,
                Err(e) => {
                    return Err(BenchError::Closed {
                        client: self.idx,
                        reason: e.to_string(),
                    })
                }
            };
            let mut done = false;
            let mut settled = false;
            let mut refused = None;
            let settle = &mut self.settle;
            let joiners = self.shared.joiners;
            self.framer.feed(&self.buf[..n], |frame| {
                let Frame::Line(line) = frame else { return };
                if refused.is_some() {
                    return;
                }
                if done {
                    settled |= settle.line(line);
                } else if line.starts_with(b"* error:") {
                    refused = Some(String::from_utf8_lossy(line).into_owned());
                } else if line.starts_with(ROOM_CONFIRMATION) {
                    done = true;
                    match room_confirmation(line) {
                        Some((room, members)) if members < joiners => {
                            settle.room = room.to_vec();
                            settle.left = joiners - members;
                        }
                        // Nobody is expected to join after this client (or
                        // the line is not quite rchat's).
                        _ => settled = true,
                    }
                } else if line.starts_with(b"* ") {
                    saw_notice = true;
                }
            });
            if settled {
                self.settled();
            }
            if let Some(line) = refused {
                return Err(BenchError::Refused {
                    client: self.idx,
                    line,
                });
            }
            if saw_notice || done {
                mode.store(GREET_RCHAT, Ordering::Relaxed);
            }
            if done {
                return Ok(true);
            }
        }
    }

    /// Registers with an IRC server and, once welcomed, joins
    /// [`irc::CHANNEL`], answering its pings meanwhile; done at the end of the channel's names, when
    /// messages to it reach this client. Nobody waits for others' joins:
    /// IRC tells them before the start like rchat does, and they are
    /// counted as notices if they come later.
    async fn join_irc(
        &mut self,
        reader: &mut Reader,
        writer: &mut Writer,
        generation: u32,
    ) -> Result<(), BenchError> {
        let closed = |idx, reason: String| BenchError::Closed {
            client: idx,
            reason,
        };
        let io = |e: std::io::Error| closed(self.idx, e.to_string());
        writer
            .write_all(&irc::hello(self.idx, generation))
            .await
            .map_err(io)?;
        writer.flush().await.map_err(io)?;
        loop {
            let n = match reader.read(&mut self.buf).await {
                Ok(0) => return Err(closed(self.idx, "the server closed the connection".into())),
                Ok(n) => n,
                Err(e) => return Err(closed(self.idx, e.to_string())),
            };
            let mut joined = false;
            let mut refused = None;
            let mut out = Vec::new();
            self.framer.feed(&self.buf[..n], |frame| {
                let Frame::Line(line) = frame else { return };
                if joined || refused.is_some() {
                    return;
                }
                match irc::reply(line) {
                    irc::Reply::Welcome => out.extend(irc::join()),
                    irc::Reply::Joined => joined = true,
                    irc::Reply::Ping(arg) => out.extend(irc::pong(arg)),
                    irc::Reply::Refused => {
                        refused = Some(String::from_utf8_lossy(line).trim_end().to_string())
                    }
                    irc::Reply::Other => {}
                }
            });
            if let Some(line) = refused {
                return Err(BenchError::Refused {
                    client: self.idx,
                    line,
                });
            }
            if !out.is_empty() {
                writer.write_all(&out).await.map_err(io)?;
                writer.flush().await.map_err(io)?;
            }
            if joined {
                self.settled();
                return Ok(());
            }
        }
    }

    /// Against a server that sends no greeting: waits at most
    /// [`ADMIT_WAIT`] for its first bytes, holding `permit` (the one connect
    /// slot) meanwhile, so the next client connects only once the server
    /// has taken this one in or a moment has passed. Whether it really has
    /// is the roll call's business.
    async fn admit(
        &mut self,
        reader: &mut Reader,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), BenchError> {
        let read = tokio::time::timeout(ADMIT_WAIT, reader.read(&mut self.buf)).await;
        drop(permit);
        let n = match read {
            Err(_) => 0,
            Ok(Ok(0)) => {
                return Err(BenchError::Closed {
                    client: self.idx,
                    reason: "the server closed the connection".into(),
                })
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(BenchError::Closed {
                    client: self.idx,
                    reason: e.to_string(),
                })
            }
        };
        let mut probe = 0;
        self.framer.feed(&self.buf[..n], |frame| {
            if let Frame::Line(line) = frame {
                if let Some(round) = token::probe_round(line) {
                    probe = probe.max(round);
                }
            }
        });
        if probe > 0 {
            self.shared.probe_seen[self.idx].fetch_max(probe, Ordering::Release);
        }
        self.settled();
        Ok(())
    }

    /// Reads and checks lines until cancelled or the connection ends.
    async fn receive(&mut self, reader: &mut Reader, cancel: &CancellationToken) {
        let mut timeline: Option<Timeline> = None;
        loop {
            let read = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                r = reader.read(&mut self.buf) => r,
            };
            let n = match read {
                Ok(0) | Err(_) => {
                    self.stats.disconnected = true;
                    break;
                }
                Ok(n) => n,
            };
            let now_ns = self.shared.now_ns();
            if timeline.is_none() {
                timeline = self.shared.timeline();
                if let Some(tl) = timeline {
                    self.warm_ns = tl.warm_ns;
                }
            }
            let Some(tl) = timeline else {
                // Before the start only join notices and roll-call probes
                // arrive: count them towards settling, nothing else.
                let settle = &mut self.settle;
                let mut settled = false;
                let mut probe = 0;
                self.framer.feed(&self.buf[..n], |frame| {
                    if let Frame::Line(line) = frame {
                        settled |= settle.line(line);
                        if let Some(round) = token::probe_round(line) {
                            probe = probe.max(round);
                        }
                    }
                });
                if probe > 0 {
                    self.shared.probe_seen[self.idx].fetch_max(probe, Ordering::Release);
                }
                if settled {
                    self.settled();
                }
                continue;
            };
            let Receiver {
                framer,
                buf,
                order,
                stats,
                samples,
                fresh,
                shared,
                idx,
                settle: _,
                warm_ns: _,
            } = self;
            framer.feed(&buf[..n], |frame| {
                on_frame(
                    frame, now_ns, &tl, *idx, shared, order, stats, samples, fresh,
                )
            });
            self.flush();
        }
        self.flush();
    }

    /// Marks this client settled, once.
    fn settled(&mut self) {
        if !std::mem::replace(&mut self.settle.done, true) {
            self.shared.settled.fetch_add(1, Ordering::Release);
        }
    }

    fn flush(&mut self) {
        if self.fresh > 0 {
            self.shared
                .delivered
                .fetch_add(self.fresh, Ordering::Relaxed);
            self.fresh = 0;
        }
        self.shared
            .record_latencies(self.idx, &self.samples, self.warm_ns);
        self.samples.clear();
    }
}

/// Classifies one received line and counts it.
#[allow(clippy::too_many_arguments)]
fn on_frame(
    frame: Frame<'_>,
    now_ns: u64,
    tl: &Timeline,
    me: usize,
    shared: &Shared,
    order: &mut OrderTracker,
    stats: &mut RecvStats,
    samples: &mut Vec<(u64, u64)>,
    fresh: &mut u64,
) {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::TooLong => {
            stats.unparsed_lines += 1;
            return;
        }
    };
    let parsed = token::parse_each(line, |t| {
        on_token(t, now_ns, tl, me, shared, order, stats, samples, fresh)
    });
    match parsed {
        Parsed::Token(_) => {}
        // A late roll-call probe (a round that was sent again): ours, not
        // a server line.
        Parsed::NoToken if token::probe_round(line).is_some() => {}
        // Someone joined or left: the slow clients' evictions and the
        // churn waves are expected.
        Parsed::NoToken => match notice::classify(line).or_else(|| irc::classify(line)) {
            Some(Notice::Joined(_)) => stats.joins_seen += 1,
            Some(Notice::Left(_)) => stats.leaves_seen += 1,
            Some(Notice::Disconnected(nick)) => {
                stats.disconnects_seen += 1;
                shared.disconnected(nick, now_ns);
            }
            Some(Notice::Crowd {
                change,
                count,
                listed,
                ..
            }) => match change {
                Crowd::Joined => stats.joins_seen += count,
                Crowd::Left => stats.leaves_seen += count,
                Crowd::Disconnected => {
                    stats.disconnects_seen += count;
                    for nick in Notice::listed(listed) {
                        shared.disconnected(nick, now_ns);
                    }
                }
            },
            None => stats.unparsed_lines += 1,
        },
        Parsed::Malformed => {
            stats.unparsed_lines += 1;
            stats.malformed_tokens += 1;
        }
    }
}

/// Checks and counts one token found in a received line.
#[allow(clippy::too_many_arguments)]
fn on_token(
    t: token::Token,
    now_ns: u64,
    tl: &Timeline,
    me: usize,
    shared: &Shared,
    order: &mut OrderTracker,
    stats: &mut RecvStats,
    samples: &mut Vec<(u64, u64)>,
    fresh: &mut u64,
) {
    let sender = match usize::try_from(t.sender) {
        Ok(s) if s < shared.senders && s != me => s,
        _ => {
            stats.unexpected_tokens += 1;
            return;
        }
    };
    let st = &shared.per_sender[sender];
    if t.seq >= st.issued.load(Ordering::Acquire) {
        stats.unexpected_tokens += 1;
        return;
    }
    match order.observe(sender, t.seq) {
        Arrival::Duplicate => {
            stats.duplicates += 1;
            return;
        }
        Arrival::Late => stats.order_violations += 1,
        Arrival::InOrder => {}
    }
    *fresh += 1;
    st.arrived(t.seq, shared.receivers);
    if tl.measured(t.sent_ns) {
        stats.deliveries += 1;
        samples.push((t.sent_ns, now_ns.saturating_sub(t.sent_ns)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rchat_room_confirmations() {
        assert_eq!(
            room_confirmation(b"* you are now in lobby (just you); /who lists them"),
            Some((&b"lobby"[..], 1))
        );
        assert_eq!(
            room_confirmation(b"* you are now in Dev-2 (17 members); /who lists them"),
            Some((&b"Dev-2"[..], 17))
        );
        assert_eq!(room_confirmation(b"* you are now in lobby"), None);
        assert_eq!(room_confirmation(b"* you are now in lobby (many)"), None);
        assert_eq!(room_confirmation(b"* welcome to rchat"), None);
    }

    #[test]
    fn settles_after_the_expected_join_notices() {
        let mut s = Settle {
            room: b"lobby".to_vec(),
            left: 2,
            done: false,
        };
        assert!(!s.line(b"* guest3 joined lobby"));
        assert!(!s.line(b"guest3> * x joined lobby"));
        assert!(!s.line(b"* guest4 joined xlobby"));
        assert!(!s.line(b"* guest4 quit"));
        assert!(s.line(b"* guest4 joined lobby"));
        // A big room's summaries count every join they name.
        let mut s = Settle {
            room: b"lobby".to_vec(),
            left: 40,
            done: false,
        };
        assert!(!s.line(b"* 30 joined lobby: a, b, c, d, e, f, g, h and 22 more"));
        assert!(!s.line(b"* 9 joined other: a, b, c, d, e, f, g, h and 1 more"));
        assert!(!s.line(b"* 9 left lobby: a, b, c, d, e, f, g, h and 1 more"));
        assert!(s.line(b"* 10 joined lobby: a, b, c, d, e, f, g, h and 2 more"));
    }
}
