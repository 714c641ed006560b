//! `rchat bench --idle C`: holds `C` idle text-protocol connections (over
//! TLS if asked) and reports what they cost the server in resident memory.
//!
//! The run: sample the server's RSS; connect every client, at a pace the
//! server can take, and wait until each is greeted; keep reading and
//! discarding whatever the server sends (the join notices of later
//! clients), so no one is evicted as a slow reader; wait until nothing
//! more arrives and the server's RSS stops moving; report
//! `(RSS now − RSS before) / C`; hold the connections for a while, watching
//! for any the server drops; close everything. Every phase has a deadline,
//! and every socket is closed when [`run`] returns.
//!
//! Memory on this side is kept small too (a 1 KiB read buffer per
//! connection), so that 10,000 connections fit beside the server.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use super::conn::{ConnectFailure, Connector, Reader, TlsTarget};
use super::frame::{Frame, Framer};
use super::process::{Process, Sample, Watch};
use super::progress::Progress;
use super::report::fmt_bytes;
use super::shared::{GREET_RCHAT, GREET_SILENT, GREET_UNKNOWN};
use super::BenchError;

/// Connections (TCP connect plus TLS handshake) in progress at once
/// against a server that greets.
const CONNECT_CONCURRENCY: usize = 64;
/// Without a greeting, a connection counts as ready after this long.
const GREETING_IDLE: Duration = Duration::from_secs(1);
/// Against a server known to send no greeting, how long a new connection
/// holds the one connect slot waiting for the server's first bytes.
const ADMIT_WAIT: Duration = Duration::from_millis(20);
/// Bytes read at a time per connection; idle connections get little.
const READ_BUF: usize = 1024;
/// Longest line looked at while waiting for the greeting.
const MAX_LINE: usize = 4096;
/// How often the server is sampled while waiting for it to settle.
const SETTLE_EVERY: Duration = Duration::from_millis(200);
/// Samples (one second's worth) over which nothing may arrive and RSS may
/// move only a little for the server to count as settled.
const SETTLE_SAMPLES: usize = 5;
/// RSS movement still counted as settled: this much, or
/// [`SETTLE_FRACTION`] of the RSS if more.
const SETTLE_BYTES: u64 = 256 * 1024;
const SETTLE_FRACTION: f64 = 0.005;
/// After the hold, how long the connection tasks get to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept free for everything else.
const SPARE_FDS: u64 = 64;
/// The line rchat sends once a text client is in its room.
const ROOM_CONFIRMATION: &[u8] = b"* you are now in ";

/// What to run. Build one with [`IdleConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsTarget>,
    /// Connections to hold. At least 1.
    pub connections: usize,
    /// The server's process id: its RSS is the point of the exercise.
    pub server_pid: u32,
    /// How long to hold the connections once the server has settled.
    pub hold: Duration,
    /// How long connecting and greeting every client may take in total.
    pub connect_timeout: Duration,
    /// How long to wait for the server's memory to settle.
    pub settle_timeout: Duration,
    pub quiet: bool,
}

impl IdleConfig {
    /// Defaults: hold 10 s, 30 s to connect, 30 s to settle.
    pub fn new(addr: SocketAddr, connections: usize, server_pid: u32) -> IdleConfig {
        IdleConfig {
            addr,
            tls: None,
            connections,
            server_pid,
            hold: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            settle_timeout: Duration::from_secs(30),
            quiet: false,
        }
    }
}

/// What an idle run measured. Serialises to JSON for `--out`.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub addr: SocketAddr,
    pub tls: bool,
    pub connections: usize,
    pub server_pid: u32,
    /// From the first connect until every connection was greeted.
    pub connect_ms: f64,
    /// Connections that saw an rchat greeting.
    pub greeted: usize,
    /// From then until the server settled (or the settle timeout).
    pub settle_ms: f64,
    /// Whether the server's memory settled before the timeout; if not, the
    /// per-connection figure uses the last sample and is less certain.
    pub settled: bool,
    /// Bytes the server sent to all connections (mostly join notices).
    pub bytes_received: u64,
    /// Server RSS before the first connect.
    pub rss_before_bytes: u64,
    /// Server RSS with every connection held, once settled.
    pub rss_held_bytes: u64,
    /// Highest server RSS sampled during the run.
    pub rss_peak_bytes: u64,
    /// Server RSS at the end of the hold.
    pub rss_end_bytes: u64,
    /// `(rss_held − rss_before) / connections`.
    pub rss_per_connection_bytes: f64,
    pub hold_secs: f64,
    /// Connections the server closed while they were held.
    pub dropped: usize,
    /// Connections still open when closing timed out (0 when all closed).
    pub not_closed: usize,
    pub warnings: Vec<String>,
}

impl IdleReport {
    /// A human-readable summary, one fact per line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| {
            out.push_str(&format!("{k:<16}{v}\n"));
        };
        row(
            "target",
            format!(
                "{}{}, {} idle connections",
                self.addr,
                if self.tls { " (TLS)" } else { "" },
                self.connections
            ),
        );
        row(
            "connect",
            format!(
                "{} connected and greeted in {:.1} ms ({} saw an rchat greeting)",
                self.connections, self.connect_ms, self.greeted
            ),
        );
        row(
            "settle",
            format!(
                "{} after {:.1} ms; {} received in all",
                if self.settled {
                    "server settled"
                } else {
                    "server NOT settled"
                },
                self.settle_ms,
                fmt_bytes(self.bytes_received as f64)
            ),
        );
        row(
            "server RSS",
            format!(
                "pid {}: {} before, {} held, {} peak, {} after a {:.1} s hold",
                self.server_pid,
                fmt_bytes(self.rss_before_bytes as f64),
                fmt_bytes(self.rss_held_bytes as f64),
                fmt_bytes(self.rss_peak_bytes as f64),
                fmt_bytes(self.rss_end_bytes as f64),
                self.hold_secs
            ),
        );
        row(
            "per connection",
            format!(
                "{} of server RSS per idle connection",
                fmt_bytes(self.rss_per_connection_bytes)
            ),
        );
        row("dropped", self.dropped.to_string());
        for w in &self.warnings {
            row("WARNING", w.clone());
        }
        out
    }
}

/// Raises the soft limit on open files as far as allowed; an error if
/// `connections` (plus some to spare) still do not fit.
pub fn ensure_fd_limit(connections: usize) -> Result<(), BenchError> {
    let wanted = connections as u64 + SPARE_FDS;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit >= wanted => Ok(()),
        Ok(limit) => Err(BenchError::FileLimit {
            wanted: connections,
            detail: format!(
                "the open-file limit is {limit}; raise the hard limit (ulimit -Hn) to at least {wanted}"
            ),
        }),
        Err(e) => Err(BenchError::FileLimit {
            wanted: connections,
            detail: format!("cannot raise the open-file limit: {e}"),
        }),
    }
}

/// Counters shared by the connection tasks.
#[derive(Default)]
struct Tally {
    greet_mode: AtomicU8,
    bytes: AtomicU64,
    dropped: AtomicUsize,
}

/// News from a connection task before it is ready.
type News = Result<bool, BenchError>;

/// Runs an idle-connection measurement. See the [module documentation](self).
pub async fn run(cfg: &IdleConfig) -> Result<IdleReport, BenchError> {
    if cfg.connections == 0 || cfg.connections > super::MAX_CLIENTS {
        return Err(BenchError::Config(format!(
            "idle connections must be between 1 and {}",
            super::MAX_CLIENTS
        )));
    }
    if cfg.connect_timeout.is_zero() || cfg.settle_timeout.is_zero() {
        return Err(BenchError::Config("timeouts must be more than zero".into()));
    }
    ensure_fd_limit(cfg.connections)?;
    let watch = Watch::start(Process::open(cfg.server_pid)?)?;
    let before = watch.first();
    let progress = Progress::new(cfg.quiet, cfg.connections);
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let connector = Connector::new(cfg.addr, cfg.tls.as_ref());
    let tally = Arc::new(Tally::default());
    let (news_tx, mut news_rx) = mpsc::channel::<News>(1024);
    let mut tasks = JoinSet::new();
    let spawn = |tasks: &mut JoinSet<()>, idx: usize, slots: &Arc<Semaphore>| {
        let conn = Held {
            idx,
            connector: connector.clone(),
            slots: slots.clone(),
            tally: tally.clone(),
            news: news_tx.clone(),
            cancel: cancel.clone(),
        };
        tasks.spawn(conn.run());
    };

    // Connect: the first one alone, to learn whether the server greets.
    let began = Instant::now();
    let deadline = Deadline::from_std(began + cfg.connect_timeout);
    let timed_out = |ready| BenchError::ConnectTimeout {
        ready,
        wanted: cfg.connections,
        timeout: cfg.connect_timeout,
    };
    spawn(&mut tasks, 0, &Arc::new(Semaphore::new(1)));
    let mut ready = 0;
    let mut greeted = 0;
    while ready < cfg.connections {
        let news = match tokio::time::timeout_at(deadline, news_rx.recv()).await {
            Err(_) | Ok(None) => return Err(timed_out(ready)),
            Ok(Some(news)) => news?,
        };
        ready += 1;
        greeted += usize::from(news);
        progress.connecting(ready, cfg.connections);
        if ready == 1 {
            let silent = tally.greet_mode.load(Ordering::Relaxed) == GREET_SILENT;
            let slots = Arc::new(Semaphore::new(if silent { 1 } else { CONNECT_CONCURRENCY }));
            for idx in 1..cfg.connections {
                spawn(&mut tasks, idx, &slots);
            }
        }
    }
    drop(news_rx);
    let connect_ms = began.elapsed().as_secs_f64() * 1e3;

    // Wait until nothing more arrives and the server's memory stays put.
    progress.phase("waiting for the server to settle");
    let settle_began = Instant::now();
    let settle_deadline = Deadline::from_std(settle_began + cfg.settle_timeout);
    let mut history: Vec<(u64, Sample)> = Vec::new();
    let mut tick = tokio::time::interval(SETTLE_EVERY);
    let (settled, held) = loop {
        tick.tick().await;
        let bytes = tally.bytes.load(Ordering::Relaxed);
        let sample = watch.sample().ok_or_else(|| server_gone(cfg.server_pid))?;
        history.push((bytes, sample));
        if let Some(window) = history
            .len()
            .checked_sub(SETTLE_SAMPLES)
            .map(|i| &history[i..])
        {
            if is_settled(window) {
                break (true, sample);
            }
        }
        if Deadline::now() >= settle_deadline {
            break (false, sample);
        }
    };
    let settle_ms = settle_began.elapsed().as_secs_f64() * 1e3;

    // Hold, watching for connections the server drops.
    progress.start(cfg.hold);
    let hold_began = Deadline::now();
    let hold_end = hold_began + cfg.hold;
    let mut tick = tokio::time::interval(SETTLE_EVERY);
    while Deadline::now() < hold_end {
        tokio::select! {
            _ = tokio::time::sleep_until(hold_end) => {}
            _ = tick.tick() => {
                progress.running(
                    hold_began.elapsed(),
                    &format!(
                        "holding {} connections, {} dropped",
                        cfg.connections,
                        tally.dropped.load(Ordering::Relaxed)
                    ),
                );
            }
        }
    }
    let end = watch.sample().ok_or_else(|| server_gone(cfg.server_pid))?;

    // Close everything, and wait until every task has let go of its socket.
    progress.phase("closing");
    cancel.cancel();
    let close_deadline = Deadline::now() + CLOSE_TIMEOUT;
    while let Ok(Some(_)) = tokio::time::timeout_at(close_deadline, tasks.join_next()).await {}
    let not_closed = tasks.len();
    tasks.abort_all();
    progress.finish();

    let dropped = tally.dropped.load(Ordering::Relaxed);
    let mut warnings = Vec::new();
    if !settled {
        warnings.push(format!(
            "the server's memory did not settle within {:.0} s; the per-connection figure \
             uses the last sample",
            cfg.settle_timeout.as_secs_f64()
        ));
    }
    if dropped > 0 {
        warnings.push(format!(
            "the server closed {dropped} connections while they were held"
        ));
    }
    Ok(IdleReport {
        addr: cfg.addr,
        tls: cfg.tls.is_some(),
        connections: cfg.connections,
        server_pid: cfg.server_pid,
        connect_ms,
        greeted,
        settle_ms,
        settled,
        bytes_received: tally.bytes.load(Ordering::Relaxed),
        rss_before_bytes: before.rss_bytes,
        rss_held_bytes: held.rss_bytes,
        rss_peak_bytes: watch.peak_rss(),
        rss_end_bytes: end.rss_bytes,
        rss_per_connection_bytes: (held.rss_bytes as f64 - before.rss_bytes as f64)
            / cfg.connections as f64,
        hold_secs: cfg.hold.as_secs_f64(),
        dropped,
        not_closed,
        warnings,
    })
}

fn server_gone(pid: u32) -> BenchError {
    BenchError::Process(super::process::ProcessError::NotFound {
        pid,
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the server process went away during the run",
        ),
    })
}

/// Whether, over `window` (bytes received so far, server sample), nothing
/// arrived and the server's RSS moved only a little.
fn is_settled(window: &[(u64, Sample)]) -> bool {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return false;
    };
    if first.0 != last.0 {
        return false;
    }
    let rss = window.iter().map(|(_, s)| s.rss_bytes);
    let (lo, hi) = (rss.clone().min().unwrap_or(0), rss.max().unwrap_or(0));
    let allowed = SETTLE_BYTES.max((hi as f64 * SETTLE_FRACTION) as u64);
    hi - lo <= allowed
}

/// One held connection.
struct Held {
    idx: usize,
    connector: Connector,
    slots: Arc<Semaphore>,
    tally: Arc<Tally>,
    news: mpsc::Sender<News>,
    cancel: CancellationToken,
}

impl Held {
    async fn run(self) {
        let permit = self.slots.clone().acquire_owned().await.ok();
        // The write half stays open as long as the connection: a shut-down
        // write side would read as a quit to the server.
        let (mut reader, _writer) = match self.connector.connect().await {
            Ok(halves) => halves,
            Err(e) => {
                let error = match e {
                    ConnectFailure::Tcp(source) => BenchError::Connect {
                        client: self.idx,
                        addr: self.connector.addr(),
                        source,
                    },
                    ConnectFailure::Tls(reason) => BenchError::Tls {
                        client: self.idx,
                        reason,
                    },
                };
                let _ = self.news.send(Err(error)).await;
                return;
            }
        };
        let greeted = self.greet(&mut reader, permit).await;
        let failed = greeted.is_err();
        if self.news.send(greeted).await.is_err() || failed {
            return;
        }
        drop(self.news);
        let mut buf = [0u8; READ_BUF];
        loop {
            let read = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => return,
                r = reader.read(&mut buf) => r,
            };
            match read {
                Ok(0) | Err(_) => {
                    self.tally.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(n) => {
                    self.tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Reads until greeted: rchat's room confirmation, or against a server
    /// that sends no greeting, a quiet second (the first connection) or the
    /// first bytes (the rest, one at a time while holding `permit`).
    /// Returns whether an rchat greeting was seen.
    async fn greet(
        &self,
        reader: &mut Reader,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<bool, BenchError> {
        let mode = &self.tally.greet_mode;
        let silent = mode.load(Ordering::Relaxed) == GREET_SILENT;
        let mut permit = permit;
        if !silent {
            permit = None;
        }
        let quiet_until = Deadline::now() + if silent { ADMIT_WAIT } else { GREETING_IDLE };
        let mut framer = Framer::new(MAX_LINE);
        let mut buf = [0u8; READ_BUF];
        let closed = |reason: String| BenchError::Closed {
            client: self.idx,
            reason,
        };
        loop {
            let waiting_for_rchat = mode.load(Ordering::Relaxed) == GREET_RCHAT;
            let read = if waiting_for_rchat {
                Ok(reader.read(&mut buf).await)
            } else {
                tokio::time::timeout_at(quiet_until, reader.read(&mut buf)).await
            };
            let n = match read {
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
                    return Ok(false);
                }
                Ok(Ok(0)) => return Err(closed("the server closed the connection".into())),
                Ok(Err(e)) => return Err(closed(e.to_string())),
                Ok(Ok(n)) => n,
            };
            self.tally.bytes.fetch_add(n as u64, Ordering::Relaxed);
            if permit.take().is_some() {
                // Known silent server: its first bytes mean it let us in.
                return Ok(false);
            }
            let mut confirmed = false;
            let mut rchat = false;
            let mut refused = None;
            framer.feed(&buf[..n], |frame| {
                let Frame::Line(line) = frame else { return };
                if line.starts_with(b"* error:") && refused.is_none() {
                    refused = Some(String::from_utf8_lossy(line).into_owned());
                } else if line.starts_with(ROOM_CONFIRMATION) {
                    confirmed = true;
                } else if line.starts_with(b"* ") {
                    rchat = true;
                }
            });
            if let Some(line) = refused {
                return Err(BenchError::Refused {
                    client: self.idx,
                    line,
                });
            }
            if rchat || confirmed {
                mode.store(GREET_RCHAT, Ordering::Relaxed);
            }
            if confirmed {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u64, bytes: u64, rss: u64) -> (u64, Sample) {
        (
            bytes,
            Sample {
                at: Instant::now() + Duration::from_millis(200 * i),
                cpu_secs: 0.0,
                rss_bytes: rss,
            },
        )
    }

    #[test]
    fn settled_means_quiet_and_steady() {
        let mib = 1 << 20;
        let steady: Vec<_> = (0..5).map(|i| at(i, 100, 40 * mib + i * 1000)).collect();
        assert!(is_settled(&steady));
        let busy: Vec<_> = (0..5).map(|i| at(i, 100 + i, 40 * mib)).collect();
        assert!(!is_settled(&busy));
        let growing: Vec<_> = (0..5).map(|i| at(i, 100, 40 * mib + i * mib)).collect();
        assert!(!is_settled(&growing));
        assert!(!is_settled(&[]));
    }
}
