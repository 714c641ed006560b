//! The load generator behind `rchat bench`.
//!
//! [`run`] connects `clients` text-protocol clients to one server (over TLS
//! if asked), waits until every one of them has been greeted (all are then
//! in `lobby`), and lets the first `senders` of them send numbered,
//! timestamped messages (see [`token`]) for the warm-up plus the measured
//! duration. Every client reads continuously and checks what arrives: the
//! server relays each line to every other member of the room, so each
//! message should reach `clients − 1` receivers, once each and in the order
//! sent. The result is a [`Report`]: deliveries per second, loss,
//! duplicates, order violations, end-to-end latency percentiles and
//! connection set-up times, plus the server's CPU and memory when its pid
//! is given.
//!
//! Pacing:
//!
//! - **Closed loop** (`window > 0`): each sender has at most `window` of its
//!   messages in flight, where a message is in flight until every other
//!   client has received it.
//! - **Open loop** (`rate` is [`Rate::PerSecond`], `window == 0`): senders
//!   together send `rate` messages per second, evenly spread, whatever
//!   happens to deliveries. A message carries its scheduled send time, so a
//!   sender that falls behind shows up as latency rather than hiding it;
//!   only a wake-up up to 2 ms late, which the timer's resolution alone
//!   causes, is stamped with the actual send time instead.
//! - Both may be combined (paced, but never more than `window` in flight);
//!   [`Rate::Max`] with `window == 0` sends as fast as the sockets accept.
//!
//! Tokens are found anywhere in a received line, so the generator also works
//! against relays that decorate lines differently, such as `ncat --chat`.
//! Against a server that sends no greeting, clients are let in one at a
//! time, and the run starts only once a roll call has reached every client
//! (see [`fleet`]).
//!
//! Besides the measured clients, a run may have two kinds of extra clients
//! that send nothing and are not counted: slow ones ([`slow`], `--slow`),
//! which join before the start and then do not read, so that the server
//! must evict them; and a churn wave ([`churn`], `--churn`) that joins at
//! once during the measured window, stays, and quits at once. With either,
//! the latency of the measured messages is also kept by send time
//! ([`series`]), so that a moment of stalled delivery shows, and the
//! notices of their joins and leaves are counted apart ([`notice`]).
//!
//! Other modes built on the same parts: [`idle`] holds many idle
//! connections and reports the server's memory per connection; [`sweep`]
//! repeats a run for several client counts; [`plot`] draws the results.
//!
//! A run is bounded in time: `connect_timeout`, then `warmup + duration`,
//! then at most `grace` for messages still in flight (and for the churn
//! wave to finish), plus a moment to collect results. All sockets are
//! closed when [`run`] returns, whether it succeeds or not. A run that
//! measured nothing says so ([`Report::measured`], [`Report::warnings`]).
//!
//! Memory grows with `clients × senders × 8` bytes (per-sender order
//! tracking in every receiver) and with `senders × window × 16` bytes.

mod churn;
pub mod cli;
mod client;
mod conn;
mod extra;
mod fleet;
mod frame;
pub mod idle;
mod irc;
mod notice;
pub mod plot;
pub mod process;
mod progress;
mod report;
mod sender;
mod series;
mod shared;
mod slow;
pub mod soak;
pub mod sweep;
pub mod token;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use conn::TlsTarget;
pub use report::{
    CdfPoint, ChurnStats, ConnectStats, LatencySeries, LatencyStats, NoticeStats, Report,
    ServerStats, Settings, SlowStats, WindowLatency,
};

use churn::{Churn, ChurnOutcome};
use client::RecvStats;
use conn::Connector;
use extra::Joiner;
use fleet::Fleet;
use process::{Process, ProcessError, Watch};
use progress::Progress;
use sender::SendTask;
use shared::{Shared, Timeline, GREET_SILENT};
use slow::{SlowClients, SlowOutcome};

/// Smallest message size accepted. Tokens are usually shorter (about 30
/// bytes in a long run); a token that does not fit makes its line longer.
pub const MIN_SIZE: usize = 32;
/// Largest message size accepted (rchat's own `--max-line` ceiling).
pub const MAX_SIZE: usize = 1 << 20;
/// Longest line an IRC server takes, line ending included (RFC 1459).
const IRC_LINE_MAX: usize = 512;
/// Largest per-sender window accepted.
pub const MAX_WINDOW: usize = 1 << 16;
/// Most clients one run can drive.
pub const MAX_CLIENTS: usize = 1 << 20;

/// After the grace period, how long receivers get to hand in their counts.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the progress display and the drain check run.
const TICK: Duration = Duration::from_millis(200);
const DRAIN_POLL: Duration = Duration::from_millis(5);

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
    /// The server, speaking the text protocol.
    pub addr: SocketAddr,
    /// Speak TLS to it, with these settings.
    pub tls: Option<TlsTarget>,
    /// The server's process id, to report its CPU and memory (Linux).
    pub server_pid: Option<u32>,
    /// More servers, the other nodes of a cluster: clients are spread over
    /// `addr` and these in turn.
    pub other_addrs: Vec<SocketAddr>,
    /// More processes to report on (a cluster's other nodes, its Redis).
    pub other_pids: Vec<u32>,
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
    /// Extra clients that join before the start and then do not read
    /// (see [`slow`]); not measured.
    pub slow: usize,
    /// Bytes per second each slow client reads; `None` for none at all.
    pub slow_rate: Option<u64>,
    /// Extra clients that join at once during the measured window, stay
    /// for `churn_hold`, then quit at once (see [`churn`]); not measured.
    pub churn: usize,
    /// When the churn wave starts, after the measured window opened;
    /// `None` for a quarter of `duration`.
    pub churn_at: Option<Duration>,
    /// How long the churn wave stays once all of it is in the room; `None`
    /// for a quarter of `duration`.
    pub churn_hold: Option<Duration>,
    /// The room the churn wave joins; `None` for the measured clients' own.
    pub churn_room: Option<String>,
    /// Speak IRC to an IRC server (see [`irc`]) instead of rchat's text
    /// protocol, for side-by-side comparisons with the same load.
    pub irc: bool,
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
            tls: None,
            server_pid: None,
            other_addrs: Vec::new(),
            other_pids: Vec::new(),
            clients: 100,
            senders: 10,
            rate: Rate::Max,
            window: 16,
            size: 128,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            grace: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(10),
            slow: 0,
            slow_rate: None,
            churn: 0,
            churn_at: None,
            churn_hold: None,
            churn_room: None,
            irc: false,
            quiet: false,
        }
    }

    /// When the churn wave starts, after the measured window opened.
    pub fn churn_at(&self) -> Duration {
        self.churn_at.unwrap_or(self.duration / 4)
    }

    /// How long the churn wave stays.
    pub fn churn_hold(&self) -> Duration {
        self.churn_hold.unwrap_or(self.duration / 4)
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
        let total = (self.clients.checked_add(self.slow)).and_then(|n| n.checked_add(self.churn));
        if total.is_none_or(|n| n > MAX_CLIENTS) {
            return bad(format!(
                "clients, slow clients and churn clients together must be at most {MAX_CLIENTS}"
            ));
        }
        if self.irc {
            if self.slow > 0 || self.churn > 0 {
                return bad(
                    "--slow and --churn speak rchat's text protocol; leave them out with --irc"
                        .into(),
                );
            }
            let most = IRC_LINE_MAX - irc::PRIVMSG.len() - 2;
            if self.size > most {
                return bad(format!(
                    "size must be at most {most} bytes with --irc (IRC lines end at {IRC_LINE_MAX})"
                ));
            }
        }
        if self.slow_rate == Some(0) {
            return bad("a slow client's read rate must be more than zero bytes per second".into());
        }
        if self.churn > 0 && self.churn_at() >= self.duration {
            return bad("the churn wave must start inside the measured window".into());
        }
        if let Some(room) = &self.churn_room {
            if let Err(e) = crate::names::RoomName::parse(room) {
                return bad(format!("--churn-room {room}: {e}"));
            }
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
    #[error("client {client} cannot finish the TLS handshake: {reason}")]
    Tls { client: usize, reason: String },
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot hold {wanted} connections: {detail}")]
    FileLimit { wanted: usize, detail: String },
    #[error("client {client} was refused: {line}")]
    Refused { client: usize, line: String },
    #[error("client {client} lost its connection before it was greeted: {reason}")]
    Closed { client: usize, reason: String },
    #[error("slow client {client} could not join: {reason}")]
    Slow { client: usize, reason: String },
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
    let watch = match cfg.server_pid {
        Some(pid) => Some(Watch::start(Process::open(pid)?)?),
        None => None,
    };
    let mut others = Vec::new();
    for &pid in &cfg.other_pids {
        others.push(Watch::start(Process::open(pid)?)?);
    }
    let mut others_from = Vec::new();
    let origin = Instant::now();
    let shared = Arc::new(Shared::new(cfg, origin));
    let progress = Progress::new(cfg.quiet, cfg.clients);
    // Whatever happens, the receivers stop when this function returns, and
    // dropping the fleet aborts anything left, closing every socket.
    let cancel = CancellationToken::new();
    let _stop_receivers = cancel.clone().drop_guard();
    let connector = Connector::new(cfg.addr, cfg.tls.as_ref()).spread_over(&cfg.other_addrs);
    let mut fleet = Fleet::new(
        connector.clone(),
        shared.clone(),
        cancel.clone(),
        cfg.clients,
    );

    // Connect and greet everyone.
    let connect_deadline = tokio::time::Instant::from_std(origin + cfg.connect_timeout);
    fleet
        .connect_all(connect_deadline, cfg.connect_timeout, &progress)
        .await?;
    let all_ready = Instant::now();
    let mut connect = fleet.connect_stats(all_ready - origin);
    let joiner = |recv_buffer| Joiner {
        connector: connector.clone(),
        silent: shared.greet_mode.load(Ordering::Relaxed) == GREET_SILENT,
        recv_buffer,
        room: None,
    };
    let slow = if cfg.slow > 0 {
        progress.phase(format!("connecting {} slow clients", cfg.slow));
        let slow = SlowClients::join(
            joiner(Some(slow::RECV_BUFFER)),
            cfg.slow,
            cfg.slow_rate,
            shared.clone(),
            cancel.clone(),
            connect_deadline,
        )
        .await?;
        Some(slow)
    } else {
        None
    };
    // Let the join notices of the connect phase drain, so that they neither
    // count as unparsed lines nor delay the first messages. Not fatal if the
    // connect deadline passes first: any stragglers are then counted.
    progress.phase("reading join notices");
    while shared.settled.load(Ordering::Acquire) < cfg.clients
        && tokio::time::Instant::now() < connect_deadline
    {
        tokio::time::sleep(DRAIN_POLL).await;
    }
    // A server that sends no greeting gives no sign that it has taken a
    // client into the room: a completed TCP connect only means the kernel
    // queued it, and `ncat --chat` admits its queue one by one. Messages
    // sent before then miss the clients not yet admitted, and in a closed
    // loop those messages hold their window slots for good. So hold a roll
    // call first.
    if !fleet.all_greeted() {
        progress.phase("roll call");
        let (rounds, complete, reconnects) = fleet.roll_call(connect_deadline).await;
        connect.roll_call_rounds = rounds;
        connect.roll_call_complete = complete;
        connect.reconnects = reconnects;
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
    let warm = tokio::time::Instant::from_std(shared.instant(timeline.warm_ns));
    let end = tokio::time::Instant::from_std(shared.instant(timeline.end_ns));
    let hard_deadline = end + cfg.grace;
    let rate = match cfg.rate {
        Rate::PerSecond(r) => Some(r / cfg.senders as f64),
        Rate::Max => None,
    };
    let churn = (cfg.churn > 0).then(|| {
        let wave = Churn {
            joiner: Joiner {
                room: cfg.churn_room.clone(),
                ..joiner(None)
            },
            clients: cfg.churn,
            at: warm + cfg.churn_at(),
            hold: cfg.churn_hold(),
            deadline: hard_deadline,
            shared: shared.clone(),
            cancel: cancel.clone(),
        };
        tokio::spawn(wave.run())
    });
    let mut senders = JoinSet::new();
    for idx in 0..cfg.senders {
        // A client the roll call gave up on has no writer; it sends nothing
        // and its silence shows up as loss.
        let Some(writer) = fleet.take_writer(idx) else {
            continue;
        };
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
    // The server's CPU time is read when the measured window opens.
    let mut cpu_from = None;
    let mut cpu_marked = watch.is_none();
    if cfg.warmup.is_zero() && !cpu_marked {
        cpu_from = watch.as_ref().and_then(Watch::sample);
        others_from = others.iter().map(Watch::sample).collect();
        cpu_marked = true;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep_until(warm), if !cpu_marked => {
                cpu_from = watch.as_ref().and_then(Watch::sample);
                others_from = others.iter().map(Watch::sample).collect();
                cpu_marked = true;
            }
            now = tick.tick() => {
                let delivered = shared.delivered.load(Ordering::Relaxed);
                let per_sec = (delivered - last.1) as f64
                    / now.duration_since(last.0).as_secs_f64().max(1e-9);
                last = (now, delivered);
                let phase = if now < warm { "warm-up" } else { "measuring" };
                progress.running(
                    now.duration_since(start),
                    &format!("{per_sec:.0} deliveries/s  {phase}"),
                );
            }
        }
    }
    let server_end = watch.as_ref().and_then(Watch::sample);
    let others_end: Vec<_> = others.iter().map(Watch::sample).collect();

    // Let the senders finish their last writes, then wait for whatever is
    // still in flight.
    progress.draining();
    while let Ok(Some(joined)) = tokio::time::timeout_at(hard_deadline, senders.join_next()).await {
        if let Ok((idx, writer)) = joined {
            fleet.put_writer(idx, writer);
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

    // The churn wave ends by the hard deadline, measured clients still
    // reading its notices meanwhile.
    let churned = match churn {
        Some(mut wave) => {
            progress.phase("waiting for the churn wave to leave");
            let until = hard_deadline + COLLECT_TIMEOUT;
            let outcome = match tokio::time::timeout_at(until, &mut wave).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) | Err(_) => {
                    wave.abort();
                    ChurnOutcome::default()
                }
            };
            Some(outcome)
        }
        None => None,
    };

    // Stop everyone and collect their counts.
    cancel.cancel();
    senders.abort_all();
    let stats = fleet.collect(COLLECT_TIMEOUT).await;
    let slowed = match slow {
        Some(slow) => Some(slow.collect(COLLECT_TIMEOUT).await),
        None => None,
    };
    progress.finish();

    let server = watch.map(|w| server_stats(&w, cpu_from, server_end));
    let mut report = build_report(cfg, &shared, connect, &stats, drained);
    report.server = server;
    report.others = others
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let from = others_from.get(i).copied().flatten();
            server_stats(w, from, others_end.get(i).copied().flatten())
        })
        .collect();
    report.slow = slowed.map(|s| slow_stats(cfg, &shared, timeline, &s));
    report.churn = churned.map(|c| churn_stats(cfg, &shared, timeline, &c));
    report.latency_series = shared.with_series(|s| s.report());
    report.check();
    Ok(report)
}

/// Seconds from the opening of the measured window to `ns`.
fn since_warm(timeline: Timeline, ns: u64) -> f64 {
    (ns as f64 - timeline.warm_ns as f64) / 1e9
}

/// The slow clients' figures: evictions as the measured clients read them,
/// or as a reading slow client saw its connection end.
fn slow_stats(
    cfg: &BenchConfig,
    shared: &Shared,
    timeline: Timeline,
    outcomes: &[SlowOutcome],
) -> SlowStats {
    let mut evicted_at: Vec<f64> = shared
        .slow_evictions()
        .into_iter()
        .zip(outcomes)
        .filter_map(|(seen, o)| match (seen, o.closed_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
        .map(|ns| since_warm(timeline, ns))
        .collect();
    evicted_at.sort_by(f64::total_cmp);
    SlowStats {
        clients: cfg.slow,
        read_rate: cfg.slow_rate,
        evicted: evicted_at.len(),
        evicted_at_secs: evicted_at,
        bytes_read: outcomes.iter().map(|o| o.bytes_read).sum(),
    }
}

/// The churn wave's figures, with the measured clients' latency during its
/// joins, during its leaves, and otherwise.
fn churn_stats(
    cfg: &BenchConfig,
    shared: &Shared,
    timeline: Timeline,
    c: &ChurnOutcome,
) -> ChurnStats {
    let offset = |ns: u64| Duration::from_nanos(ns.saturating_sub(timeline.warm_ns));
    let joins = (offset(c.join_from_ns), offset(c.join_to_ns));
    let leaves = (offset(c.leave_from_ns), offset(c.leave_to_ns));
    let windows = shared.with_series(|s| {
        (
            s.window(joins.0, joins.1),
            s.window(leaves.0, leaves.1),
            s.outside(&[joins, leaves]),
        )
    });
    let empty = WindowLatency {
        from_secs: 0.0,
        to_secs: 0.0,
        samples: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        p999_ms: 0.0,
        max_ms: 0.0,
    };
    let (during_joins, during_leaves, outside) = match (c.started, windows) {
        (true, Some(w)) => w,
        _ => (empty.clone(), empty.clone(), empty),
    };
    // A wave that never began has no times.
    let secs = |ns| {
        if c.started {
            since_warm(timeline, ns)
        } else {
            0.0
        }
    };
    ChurnStats {
        clients: cfg.churn,
        room: cfg.churn_room.clone(),
        started: c.started,
        join_from_secs: secs(c.join_from_ns),
        join_to_secs: secs(c.join_to_ns),
        joined: c.joined,
        leave_from_secs: secs(c.leave_from_ns),
        leave_to_secs: secs(c.leave_to_ns),
        left: c.left,
        failed: c.failed,
        first_error: c.first_error.clone(),
        during_joins,
        during_leaves,
        outside,
    }
}

/// The server's figures for the measured window, from the samples taken
/// at its start and end (the last good sample if the process was lost).
pub(crate) fn server_stats(
    watch: &Watch,
    from: Option<process::Sample>,
    to: Option<process::Sample>,
) -> ServerStats {
    let first = watch.first();
    let from = from.unwrap_or(first);
    let to = to.unwrap_or(from);
    ServerStats {
        pid: watch.pid(),
        cpu_percent: process::cpu_percent(&from, &to),
        cpu_secs: (to.cpu_secs - from.cpu_secs).max(0.0),
        rss_start_bytes: first.rss_bytes,
        rss_peak_bytes: watch.peak_rss(),
        rss_end_bytes: to.rss_bytes,
        lost: watch.lost(),
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
            other_addrs: cfg.other_addrs.clone(),
            tls: cfg.tls.is_some(),
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
            slow: cfg.slow,
            churn: cfg.churn,
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
        notices: NoticeStats {
            joined: sum(|s| s.joins_seen),
            left: sum(|s| s.leaves_seen),
            disconnected: sum(|s| s.disconnects_seen),
        },
        malformed_tokens: sum(|s| s.malformed_tokens),
        unexpected_tokens: sum(|s| s.unexpected_tokens),
        disconnects,
        drained,
        latency: LatencyStats::from_histogram(&shared.latency()),
        server: None,
        others: Vec::new(),
        slow: None,
        churn: None,
        latency_series: None,
        warnings: Vec::new(),
    }
}
