//! The load generator behind `rchat bench`.
//!
//! [`run`] connects `clients` plain-text clients to one server, waits until
//! every one of them has been greeted (all are then in `lobby`), and lets the
//! first `senders` of them send numbered, timestamped messages (see
//! [`token`]) for the warm-up plus the measured duration. Every client reads
//! continuously and checks what arrives: the server relays each line to
//! every other member of the room, so each message should reach
//! `clients − 1` receivers, once each and in the order sent. The result is a
//! [`Report`]: deliveries per second, loss, duplicates, order violations,
//! end-to-end latency percentiles and connection set-up times.
//!
//! Pacing:
//!
//! - **Closed loop** (`window > 0`): each sender has at most `window` of its
//!   messages in flight, where a message is in flight until every other
//!   client has received it.
//! - **Open loop** (`rate` is [`Rate::PerSecond`], `window == 0`): senders
//!   together send `rate` messages per second, evenly spread, whatever
//!   happens to deliveries. A message carries its scheduled send time, so a
//!   sender that falls behind shows up as latency rather than hiding it.
//! - Both may be combined (paced, but never more than `window` in flight);
//!   [`Rate::Max`] with `window == 0` sends as fast as the sockets accept.
//!
//! Tokens are found anywhere in a received line, so the generator also works
//! against relays that decorate lines differently, such as `ncat --chat`;
//! against a server that sends no greeting, a client is considered ready
//! after one quiet second, and the run starts only once a roll call (probe
//! lines from two clients) has reached every client, proving that the relay
//! has admitted them all.
//!
//! A run is bounded in time: `connect_timeout`, then `warmup + duration`,
//! then at most `grace` for messages still in flight, plus a moment to
//! collect results. All sockets are closed when [`run`] returns, whether it
//! succeeds or not.
//!
//! Memory grows with `clients × senders × 8` bytes (per-sender order
//! tracking in every receiver) and with `senders × window × 16` bytes.

mod client;
mod frame;
mod report;
mod sender;
mod shared;
pub mod token;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use report::{ConnectStats, LatencyStats, Report, Settings};

use client::{ClientTask, RecvStats};
use sender::SendTask;
use shared::{Shared, Timeline};

/// Smallest message size accepted. Tokens are usually shorter (about 30
/// bytes in a long run); a token that does not fit makes its line longer.
pub const MIN_SIZE: usize = 32;
/// Largest message size accepted (rchat's own `--max-line` ceiling).
pub const MAX_SIZE: usize = 1 << 20;
/// Largest per-sender window accepted.
pub const MAX_WINDOW: usize = 1 << 16;
/// Most clients one run can drive.
pub const MAX_CLIENTS: usize = 1 << 20;

/// TCP connects in progress at once. Greetings are awaited without limit.
const CONNECT_CONCURRENCY: usize = 256;
/// After the grace period, how long receivers get to hand in their counts.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the progress display and the drain check run.
const TICK: Duration = Duration::from_millis(200);
const DRAIN_POLL: Duration = Duration::from_millis(5);
/// How long each roll-call round waits before probing again.
const ROLL_CALL_ROUND: Duration = Duration::from_millis(250);

/// How fast the senders send, in total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages per second over all senders together.
    PerSecond(f64),
    /// As fast as the window (if any) and the sockets allow.
    Max,
}

impl FromStr for Rate {
    type Err = String;

    /// Parses `max` or a positive number of messages per second.
    fn from_str(s: &str) -> Result<Rate, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(format!(
                "invalid rate '{s}': expected 'max' or a positive number of messages per second"
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::PerSecond(r) => write!(f, "{r}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// What to run. Build one with [`BenchConfig::new`] and adjust the fields.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The server, speaking the plain-text protocol (no TLS).
    pub addr: SocketAddr,
    /// Clients to connect; all of them receive. At least 2.
    pub clients: usize,
    /// How many of the clients also send (the first ones). 1 to `clients`.
    pub senders: usize,
    /// Total send rate over all senders.
    pub rate: Rate,
    /// Messages per sender not yet received by every other client; 0 means
    /// unbounded (open loop).
    pub window: usize,
    /// Bytes per message line, token included, line ending excluded.
    pub size: usize,
    /// How long to measure, after the warm-up.
    pub duration: Duration,
    /// How long to send before measuring; those messages are not counted.
    pub warmup: Duration,
    /// After the end, how long to wait for messages still in flight.
    pub grace: Duration,
    /// How long connecting and greeting every client may take in total.
    pub connect_timeout: Duration,
    /// No progress display on stderr.
    pub quiet: bool,
}

impl BenchConfig {
    /// Defaults: 100 clients of which 10 send, closed loop with window 16,
    /// 128-byte messages, 10 s after a 1 s warm-up, 2 s grace, 10 s to
    /// connect.
    pub fn new(addr: SocketAddr) -> BenchConfig {
        BenchConfig {
            addr,
            clients: 100,
            senders: 10,
            rate: Rate::Max,
            window: 16,
            size: 128,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            quiet: false,
        }
    }

    /// Checks the settings; [`run`] does this first.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |msg: String| Err(BenchError::Config(msg));
        if self.clients < 2 || self.clients > MAX_CLIENTS {
            return bad(format!(
                "clients must be between 2 and {MAX_CLIENTS} (each message needs a receiver)"
            ));
        }
        if self.senders == 0 || self.senders > self.clients {
            return bad(format!(
                "senders must be between 1 and the number of clients ({})",
                self.clients
            ));
        }
        if let Rate::PerSecond(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return bad("rate must be a positive number of messages per second".into());
            }
        }
        if self.window > MAX_WINDOW {
            return bad(format!("window must be at most {MAX_WINDOW}"));
        }
        if !(MIN_SIZE..=MAX_SIZE).contains(&self.size) {
            return bad(format!(
                "size must be between {MIN_SIZE} and {MAX_SIZE} bytes"
            ));
        }
        if self.duration.is_zero() {
            return bad("duration must be more than zero".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("connect timeout must be more than zero".into());
        }
        Ok(())
    }
}

/// Why a run could not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid benchmark settings: {0}")]
    Config(String),
    #[error("client {client} cannot connect to {addr}: {source}")]
    Connect {
        client: usize,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("client {client} was refused: {line}")]
    Refused { client: usize, line: String },
    #[error("client {client} lost its connection before it was greeted: {reason}")]
    Closed { client: usize, reason: String },
    #[error("only {ready} of {wanted} clients were connected and greeted within {timeout:?}")]
    ConnectTimeout {
        ready: usize,
        wanted: usize,
        timeout: Duration,
    },
}

/// Runs one benchmark. See the [module documentation](self).
pub async fn run(cfg: &BenchConfig) -> Result<Report, BenchError> {
    cfg.validate()?;
    let origin = Instant::now();
    let shared = Arc::new(Shared::new(cfg, origin));
    let progress = Progress::new(cfg);
    // Whatever happens, the receivers stop when this function returns, and
    // dropping `tasks` aborts anything left, closing every socket.
    let cancel = CancellationToken::new();
    let _stop_receivers = cancel.clone().drop_guard();
    let mut tasks = JoinSet::new();

    // Connect and greet everyone.
    let (ready_tx, mut ready_rx) = mpsc::channel(cfg.clients.min(1024));
    let connect_slots = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    for idx in 0..cfg.clients {
        let task = ClientTask {
            idx,
            addr: cfg.addr,
            shared: shared.clone(),
            connect_slots: connect_slots.clone(),
            ready_tx: ready_tx.clone(),
            cancel: cancel.clone(),
        };
        tasks.spawn(async move { (idx, task.run().await) });
    }
    drop(ready_tx);
    let connect_deadline = tokio::time::Instant::from_std(origin + cfg.connect_timeout);
    let mut writers: Vec<Option<_>> = (0..cfg.clients).map(|_| None).collect();
    let mut tcp_times = Vec::with_capacity(cfg.clients);
    let mut ready_times = Vec::with_capacity(cfg.clients);
    let mut greeted = 0;
    let mut ready = 0;
    while ready < cfg.clients {
        let timed_out = || BenchError::ConnectTimeout {
            ready,
            wanted: cfg.clients,
            timeout: cfg.connect_timeout,
        };
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Err(_) | Ok(None) => return Err(timed_out()),
            Ok(Some(Err(e))) => return Err(e),
            Ok(Some(Ok(r))) => {
                writers[r.idx] = Some(r.writer);
                tcp_times.push(r.tcp);
                ready_times.push(r.ready);
                greeted += usize::from(r.greeted);
                ready += 1;
                progress.connecting(ready, cfg.clients);
            }
        }
    }
    drop(ready_rx);
    let all_ready = Instant::now();
    let mut connect = ConnectStats::new(all_ready - origin, &mut tcp_times, &mut ready_times);
    connect.greeted = greeted;
    // Let the join notices of the connect phase drain, so that they neither
    // count as unparsed lines nor delay the first messages. Not fatal if the
    // connect deadline passes first: any stragglers are then counted.
    while shared.settled.load(Ordering::Acquire) < cfg.clients
        && tokio::time::Instant::now() < connect_deadline
    {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // A server that sends no greeting gives no sign that it has taken a
    // client into the room: a completed TCP connect only means the kernel
    // queued it, and `ncat --chat` admits its queue one by one, seconds
    // later with 100 clients. Messages sent before then miss the clients
    // not yet admitted, and in a closed loop those messages hold their
    // window slots for good. So hold a roll call first.
    if greeted < cfg.clients {
        let (rounds, complete) = roll_call(&shared, &mut writers, connect_deadline).await;
        connect.roll_call_rounds = rounds;
        connect.roll_call_complete = complete;
    }
    connect.settle_ms = all_ready.elapsed().as_secs_f64() * 1e3;

    // Send for warm-up plus duration.
    let start_ns = shared.now_ns();
    let warm_ns = start_ns + cfg.warmup.as_nanos() as u64;
    let timeline = Timeline {
        start_ns,
        warm_ns,
        end_ns: warm_ns + cfg.duration.as_nanos() as u64,
    };
    shared.set_timeline(timeline);
    let start = tokio::time::Instant::from_std(shared.instant(timeline.start_ns));
    let end = tokio::time::Instant::from_std(shared.instant(timeline.end_ns));
    let hard_deadline = end + cfg.grace;
    let rate = match cfg.rate {
        Rate::PerSecond(r) => Some(r / cfg.senders as f64),
        Rate::Max => None,
    };
    let mut senders = JoinSet::new();
    for (idx, writer) in writers.iter_mut().enumerate().take(cfg.senders) {
        let writer = writer.take().expect("every client is ready");
        let task = SendTask {
            idx,
            shared: shared.clone(),
            writer,
            timeline,
            rate,
            hard_deadline,
        };
        senders.spawn(task.run());
    }
    progress.start(cfg.warmup + cfg.duration);
    let mut tick = tokio::time::interval_at(start + TICK, TICK);
    let mut last = (start, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            now = tick.tick() => {
                let delivered = shared.delivered.load(Ordering::Relaxed);
                let per_sec = (delivered - last.1) as f64
                    / now.duration_since(last.0).as_secs_f64().max(1e-9);
                last = (now, delivered);
                let phase = if now < start + cfg.warmup { "warm-up" } else { "measuring" };
                progress.running(now.duration_since(start), per_sec, phase);
            }
        }
    }

    // Let the senders finish their last writes, then wait for whatever is
    // still in flight.
    progress.draining();
    while let Ok(Some(joined)) = tokio::time::timeout_at(hard_deadline, senders.join_next()).await {
        if let Ok((idx, writer)) = joined {
            writers[idx] = Some(writer);
        }
    }
    let written = || -> u64 {
        shared
            .per_sender
            .iter()
            .map(|s| s.written.load(Ordering::Acquire))
            .sum()
    };
    let drained = loop {
        let expected = written() * shared.receivers;
        if shared.delivered.load(Ordering::Relaxed) >= expected {
            break true;
        }
        if tokio::time::Instant::now() >= hard_deadline {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    };

    // Stop everyone and collect their counts.
    cancel.cancel();
    senders.abort_all();
    let mut stats: Vec<RecvStats> = vec![RecvStats::default(); cfg.clients];
    let collect_deadline = tokio::time::Instant::now() + COLLECT_TIMEOUT;
    while let Ok(Some(joined)) = tokio::time::timeout_at(collect_deadline, tasks.join_next()).await
    {
        if let Ok((idx, s)) = joined {
            stats[idx] = s;
        }
    }
    tasks.abort_all();
    drop(writers);
    progress.finish();

    Ok(build_report(cfg, &shared, connect, &stats, drained))
}

/// Has clients 0 and 1 send probe lines, round after round, until every
/// client has received a probe of the latest round: a relay passes a line
/// on only to the clients it has admitted, so then everyone is admitted
/// (and has read the announcements the relay sent before). Clients that
/// missed a round nudge the server with a line of their own. Returns the
/// rounds sent and whether the roll call completed before `deadline`; if it
/// did not, the run goes ahead and any clients still outside show up as
/// loss.
async fn roll_call(
    shared: &Shared,
    writers: &mut [Option<tokio::net::tcp::OwnedWriteHalf>],
    deadline: tokio::time::Instant,
) -> (u32, bool) {
    use tokio::io::AsyncWriteExt;
    let mut round: u64 = 0;
    loop {
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return (round as u32, false);
        }
        // Clients that missed the whole last round may not be admitted at
        // all: when the server's accept queue overflows, Linux drops the
        // client's final handshake ACK, and a client that only listens
        // stays half-open for good. Any data it sends completes the
        // handshake, so such clients send a probe of round 0 (which counts
        // for nothing).
        let mut nudge = Vec::new();
        token::write_probe(&mut nudge, 0);
        for (idx, writer) in writers.iter_mut().enumerate().skip(2) {
            if round > 0 && shared.probe_seen[idx].load(Ordering::Acquire) < round {
                if let Some(writer) = writer {
                    // A failed write surfaces later as a disconnect or loss.
                    let _ = tokio::time::timeout_at(deadline, writer.write_all(&nudge)).await;
                }
            }
        }
        round += 1;
        let mut line = Vec::new();
        token::write_probe(&mut line, round);
        for writer in writers.iter_mut().take(2).flatten() {
            let _ = tokio::time::timeout_at(deadline, writer.write_all(&line)).await;
        }
        let round_end = (now + ROLL_CALL_ROUND).min(deadline);
        loop {
            if shared
                .probe_seen
                .iter()
                .all(|seen| seen.load(Ordering::Acquire) >= round)
            {
                return (round as u32, true);
            }
            if tokio::time::Instant::now() >= round_end {
                break;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

fn build_report(
    cfg: &BenchConfig,
    shared: &Shared,
    connect: ConnectStats,
    stats: &[RecvStats],
    drained: bool,
) -> Report {
    let secs = cfg.duration.as_secs_f64();
    let messages_sent: u64 = shared
        .per_sender
        .iter()
        .map(|s| s.window_sent.load(Ordering::Relaxed))
        .sum();
    let written: u64 = shared
        .per_sender
        .iter()
        .map(|s| s.written.load(Ordering::Relaxed))
        .sum();
    let sum = |f: fn(&RecvStats) -> u64| stats.iter().map(f).sum::<u64>();
    let deliveries = sum(|s| s.deliveries);
    let expected_deliveries = messages_sent * shared.receivers;
    let loss = expected_deliveries.saturating_sub(deliveries);
    let disconnects = stats
        .iter()
        .enumerate()
        .filter(|(i, s)| {
            s.disconnected
                || shared
                    .per_sender
                    .get(*i)
                    .is_some_and(|p| p.failed.load(Ordering::Relaxed))
        })
        .count() as u64;
    Report {
        settings: Settings {
            addr: cfg.addr,
            clients: cfg.clients,
            senders: cfg.senders,
            rate: match cfg.rate {
                Rate::PerSecond(r) => Some(r),
                Rate::Max => None,
            },
            window: cfg.window,
            size: cfg.size,
            duration_secs: secs,
            warmup_secs: cfg.warmup.as_secs_f64(),
            grace_secs: cfg.grace.as_secs_f64(),
        },
        connect,
        messages_sent,
        messages_per_sec: messages_sent as f64 / secs,
        warmup_messages: written.saturating_sub(messages_sent),
        expected_deliveries,
        deliveries,
        deliveries_per_sec: deliveries as f64 / secs,
        loss,
        loss_ratio: if expected_deliveries == 0 {
            0.0
        } else {
            loss as f64 / expected_deliveries as f64
        },
        duplicates: sum(|s| s.duplicates),
        order_violations: sum(|s| s.order_violations),
        unparsed_lines: sum(|s| s.unparsed_lines),
        malformed_tokens: sum(|s| s.malformed_tokens),
        unexpected_tokens: sum(|s| s.unexpected_tokens),
        disconnects,
        drained,
        latency: LatencyStats::from_histogram(&shared.latency()),
    }
}

/// The progress bar on stderr, or nothing when quiet.
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new(cfg: &BenchConfig) -> Progress {
        if cfg.quiet {
            return Progress { bar: None };
        }
        let bar =
            ProgressBar::with_draw_target(Some(cfg.clients as u64), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template("{bar:32.cyan/blue} {msg}") {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(format!("connecting 0/{}", cfg.clients));
        Progress { bar: Some(bar) }
    }

    fn connecting(&self, ready: usize, total: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(ready as u64);
            bar.set_message(format!("connecting {ready}/{total}"));
        }
    }

    fn start(&self, total: Duration) {
        if let Some(bar) = &self.bar {
            bar.set_length(total.as_millis().max(1) as u64);
            bar.set_position(0);
            bar.set_message(format!("0.0/{:.1} s", total.as_secs_f64()));
        }
    }

    fn running(&self, elapsed: Duration, per_sec: f64, phase: &str) {
        if let Some(bar) = &self.bar {
            let total = bar.length().unwrap_or(0) as f64 / 1e3;
            bar.set_position(elapsed.as_millis() as u64);
            bar.set_message(format!(
                "{:.1}/{total:.1} s  {per_sec:.0} deliveries/s  {phase}",
                elapsed.as_secs_f64()
            ));
        }
    }

    fn draining(&self) {
        if let Some(bar) = &self.bar {
            if let Some(len) = bar.length() {
                bar.set_position(len);
            }
            bar.set_message("waiting for messages in flight");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
