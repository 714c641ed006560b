//! The results of a run: a serialisable [`Report`] and its text table.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

pub use super::series::{LatencySeries, WindowLatency};

/// Everything a run measured. Serialises to JSON for `--out`.
///
/// Counts of messages, deliveries, loss and latency cover only messages
/// stamped inside the measured window (after the warm-up, before the end);
/// duplicates, order violations, unparsed lines and unexpected tokens are
/// counted over the whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The settings the run used.
    pub settings: Settings,
    pub connect: ConnectStats,
    /// Messages written in the measured window.
    pub messages_sent: u64,
    pub messages_per_sec: f64,
    /// Messages written during the warm-up (not counted elsewhere).
    pub warmup_messages: u64,
    /// `messages_sent × (clients − 1)`: every other client should get each.
    pub expected_deliveries: u64,
    /// First arrivals of measured messages, over all receivers.
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    /// `expected_deliveries − deliveries`.
    pub loss: u64,
    /// `loss / expected_deliveries` (0 when nothing was expected).
    pub loss_ratio: f64,
    /// Messages a receiver got more than once (each extra copy counts).
    pub duplicates: u64,
    /// Messages that arrived after a later message from the same sender,
    /// per receiver.
    pub order_violations: u64,
    /// Lines received after the start that held no valid token and were
    /// no membership notice (see `notices`): other server notices, errors,
    /// garbage, over-long lines.
    pub unparsed_lines: u64,
    /// Notices that someone joined, left or was disconnected, read by the
    /// measured clients after the start (each client's copy counts).
    pub notices: NoticeStats,
    /// Of `unparsed_lines`, those with the token marker `#b:` but no
    /// well-formed token after it.
    pub malformed_tokens: u64,
    /// Well-formed tokens this run did not send to that receiver (unknown
    /// sender or sequence number, or the receiver's own message echoed).
    pub unexpected_tokens: u64,
    /// Measured clients whose connection failed or was closed before the
    /// end (slow and churn clients are reported apart).
    pub disconnects: u64,
    /// Whether every message sent arrived everywhere before the grace
    /// period ran out.
    pub drained: bool,
    /// End-to-end latency of `deliveries`, from the send time embedded in
    /// the token to the read that returned the line.
    pub latency: LatencyStats,
    /// The server's CPU and memory, with `--server-pid`.
    pub server: Option<ServerStats>,
    /// The other processes watched (a cluster's other nodes, its Redis),
    /// in the order their `--server-pid` was given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub others: Vec<ServerStats>,
    /// The slow clients, with `--slow`.
    pub slow: Option<SlowStats>,
    /// The join and leave wave, with `--churn`.
    pub churn: Option<ChurnStats>,
    /// Latency of the measured messages by send time, in steps across the
    /// measured window (with `--slow` or `--churn`).
    pub latency_series: Option<LatencySeries>,
    /// Why the figures above may not mean what they seem; see
    /// [`Report::measured`]. Empty for a clean run.
    pub warnings: Vec<String>,
}

/// Membership notices the measured clients read after the start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NoticeStats {
    /// `* NICK joined ROOM` (ncat: `... is connected as <userN>.`).
    pub joined: u64,
    /// `* NICK left ROOM`, `* NICK quit`.
    pub left: u64,
    /// `* NICK was disconnected (WHY)`: evictions among them (ncat:
    /// `<userN> is disconnected.`).
    pub disconnected: u64,
}

/// The slow clients (`--slow`): extra clients that joined before the start
/// and then did not read (or read a trickle). Not measured.
#[derive(Debug, Clone, Serialize)]
pub struct SlowStats {
    pub clients: usize,
    /// Bytes per second each read; `None` (JSON `null`): none at all.
    pub read_rate: Option<u64>,
    /// Slow clients the server disconnected during the run: a measured
    /// client read the server's notice of it, or a reading slow client
    /// saw its connection end.
    pub evicted: usize,
    /// When, for each of those, in seconds since the measured window
    /// opened (negative: during the warm-up), earliest first.
    pub evicted_at_secs: Vec<f64>,
    /// Bytes the slow clients read in all.
    pub bytes_read: u64,
}

/// The churn wave (`--churn`): extra clients joining at once, staying,
/// and quitting at once. Times are seconds since the measured window
/// opened.
#[derive(Debug, Clone, Serialize)]
pub struct ChurnStats {
    pub clients: usize,
    /// The room the wave joined, when not the measured clients' own.
    pub room: Option<String>,
    /// Whether the wave began before the run ended.
    pub started: bool,
    /// The first connect of the wave.
    pub join_from_secs: f64,
    /// The last of the wave in the room (or the wait given up).
    pub join_to_secs: f64,
    /// Clients of the wave that were in the room.
    pub joined: usize,
    /// All told to quit.
    pub leave_from_secs: f64,
    /// The last connection closed by the server.
    pub leave_to_secs: f64,
    /// Clients whose quit the server completed by closing the connection.
    pub left: usize,
    /// Clients that did not join, or did not leave cleanly.
    pub failed: usize,
    pub first_error: Option<String>,
    /// Latency of the measured messages sent while the wave joined.
    pub during_joins: WindowLatency,
    /// Latency of the measured messages sent while the wave left.
    pub during_leaves: WindowLatency,
    /// Latency of every other measured message.
    pub outside: WindowLatency,
}

/// The server process during a run (`--server-pid`).
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    pub pid: u32,
    /// CPU time (user + system) over the measured window, as a percentage
    /// of one core: 200 means both cores of a 2-core machine were busy.
    pub cpu_percent: f64,
    /// CPU seconds used in the measured window.
    pub cpu_secs: f64,
    /// Resident memory before the first client connected.
    pub rss_start_bytes: u64,
    /// Highest resident memory sampled (every 100 ms) during the run.
    pub rss_peak_bytes: u64,
    /// Resident memory at the end of the measured window.
    pub rss_end_bytes: u64,
    /// The process could not be read any more before the run ended (it
    /// exited or crashed); the figures stop at the last good sample.
    pub lost: bool,
}

/// The settings of a run, as reported.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub addr: SocketAddr,
    /// The cluster's other nodes the clients were spread over.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_addrs: Vec<SocketAddr>,
    /// Whether the clients spoke TLS.
    pub tls: bool,
    pub clients: usize,
    pub senders: usize,
    /// Total messages per second over all senders; `None` (JSON `null`)
    /// means as fast as possible.
    pub rate: Option<f64>,
    /// In-flight messages allowed per sender; 0 means unbounded.
    pub window: usize,
    pub size: usize,
    pub duration_secs: f64,
    pub warmup_secs: f64,
    pub grace_secs: f64,
    /// Slow clients besides `clients` (`--slow`).
    pub slow: usize,
    /// Clients of the churn wave besides `clients` (`--churn`).
    pub churn: usize,
}

/// Connection set-up.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectStats {
    /// From the first connect until every client was connected and greeted.
    pub total_ms: f64,
    /// Clients that saw an rchat greeting (0 against a server that sends
    /// none, such as `ncat --chat`).
    pub greeted: usize,
    /// Connect time per connection (TCP, plus the TLS handshake if any),
    /// from when the client may start connecting.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Time per connection until its greeting was read. rchat waits up to
    /// 300 ms for a first line before greeting, so expect about that much.
    pub ready_p50_ms: f64,
    pub ready_p99_ms: f64,
    /// After everyone was greeted, how long until every client had read the
    /// join notices of the clients that joined after it.
    pub settle_ms: f64,
    /// Roll-call rounds held before the start (0 against a server that
    /// greets every client; see `run`).
    pub roll_call_rounds: u32,
    /// Whether the roll call reached every client in time. If not, clients
    /// the server had not admitted yet show up as loss.
    pub roll_call_complete: bool,
    /// Clients connected again because the server closed them while
    /// letting them in, or the roll call never reached them (only against
    /// servers that send no greeting).
    pub reconnects: u32,
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    pub samples: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The latency distribution, for plotting: points of increasing
    /// percentile, denser towards the tail.
    pub cdf: Vec<CdfPoint>,
}

/// One point of a latency distribution: `percentile`% of the samples took
/// at most `latency_ms`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct CdfPoint {
    pub percentile: f64,
    pub latency_ms: f64,
}

impl ConnectStats {
    pub(crate) fn new(total: Duration, tcp: &mut [Duration], ready: &mut [Duration]) -> Self {
        tcp.sort_unstable();
        ready.sort_unstable();
        ConnectStats {
            total_ms: ms(total),
            greeted: 0,
            p50_ms: ms(percentile(tcp, 0.50)),
            p99_ms: ms(percentile(tcp, 0.99)),
            max_ms: ms(tcp.last().copied().unwrap_or_default()),
            ready_p50_ms: ms(percentile(ready, 0.50)),
            ready_p99_ms: ms(percentile(ready, 0.99)),
            settle_ms: 0.0,
            roll_call_rounds: 0,
            roll_call_complete: true,
            reconnects: 0,
        }
    }
}

impl LatencyStats {
    pub(crate) fn from_histogram(h: &Histogram<u64>) -> Self {
        let ns = |v: u64| v as f64 / 1e6;
        if h.is_empty() {
            return LatencyStats {
                samples: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p90_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
                cdf: Vec::new(),
            };
        }
        // Halving the distance to 100% each step, CDF_STEPS points per half:
        // fine detail in the tail, where latency plots are read.
        let mut cdf: Vec<CdfPoint> = h
            .iter_quantiles(CDF_STEPS)
            .map(|v| CdfPoint {
                percentile: v.quantile_iterated_to() * 100.0,
                latency_ms: ns(v.value_iterated_to()),
            })
            .take_while(|p| p.percentile < 100.0)
            .collect();
        cdf.push(CdfPoint {
            percentile: 100.0,
            latency_ms: ns(h.max()),
        });
        LatencyStats {
            samples: h.len(),
            mean_ms: h.mean() / 1e6,
            p50_ms: ns(h.value_at_quantile(0.50)),
            p90_ms: ns(h.value_at_quantile(0.90)),
            p99_ms: ns(h.value_at_quantile(0.99)),
            p999_ms: ns(h.value_at_quantile(0.999)),
            max_ms: ns(h.max()),
            cdf,
        }
    }
}

/// Points per halving of the distance to 100% in [`LatencyStats::cdf`].
const CDF_STEPS: u32 = 8;

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Report {
    /// A human-readable summary, one fact per line.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let c = &self.connect;
        let l = &self.latency;
        let rate = match s.rate {
            Some(r) => format!("{} msg/s", fmt_num(r)),
            None => "max".to_string(),
        };
        let window = match s.window {
            0 => "unbounded".to_string(),
            w => w.to_string(),
        };
        let mut out = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(out, "{k:<16}{v}");
        };
        row(
            "target",
            format!(
                "{}{}{}, {} clients ({} sending), rate {rate}, window {window}, {} B messages",
                s.addr,
                match s.other_addrs.len() {
                    0 => String::new(),
                    n => format!(" and {n} more node{}", if n == 1 { "" } else { "s" }),
                },
                if s.tls { " (TLS)" } else { "" },
                s.clients,
                s.senders,
                s.size
            ),
        );
        row(
            "duration",
            format!(
                "{:.1} s measured after {:.1} s warm-up",
                s.duration_secs, s.warmup_secs
            ),
        );
        row(
            "connect",
            format!(
                "{} clients in {:.1} ms; per connection p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                s.clients, c.total_ms, c.p50_ms, c.p99_ms, c.max_ms
            ),
        );
        row(
            "greeting",
            format!(
                "{} of {} greeted; ready p50 {:.1} ms, p99 {:.1} ms; join notices drained in {:.1} ms{}",
                c.greeted,
                s.clients,
                c.ready_p50_ms,
                c.ready_p99_ms,
                c.settle_ms,
                match (c.roll_call_rounds, c.roll_call_complete) {
                    (0, _) => String::new(),
                    (n, true) => format!(" (roll call: {n} rounds{})", reconnected(c.reconnects)),
                    (n, false) => format!(
                        " (roll call incomplete after {n} rounds{})",
                        reconnected(c.reconnects)
                    ),
                }
            ),
        );
        row(
            "sent",
            format!(
                "{} messages ({}/s), {} more in warm-up",
                self.messages_sent,
                fmt_num(self.messages_per_sec),
                self.warmup_messages
            ),
        );
        row(
            "deliveries",
            format!(
                "{} of {} expected ({}/s)",
                self.deliveries,
                self.expected_deliveries,
                fmt_num(self.deliveries_per_sec)
            ),
        );
        row(
            "loss",
            if self.measured() {
                format!(
                    "{} ({:.3}%){}",
                    self.loss,
                    self.loss_ratio * 100.0,
                    if self.drained {
                        ""
                    } else {
                        "; grace period ran out before everything arrived"
                    }
                )
            } else {
                "unknown: nothing was sent in the measured window".to_string()
            },
        );
        row("duplicates", self.duplicates.to_string());
        row("out of order", self.order_violations.to_string());
        row(
            "unparsed lines",
            format!(
                "{} ({} malformed tokens); {} unexpected tokens",
                self.unparsed_lines, self.malformed_tokens, self.unexpected_tokens
            ),
        );
        row("disconnects", self.disconnects.to_string());
        let n = &self.notices;
        if n.joined + n.left + n.disconnected > 0 {
            row(
                "notices",
                format!(
                    "{} joined, {} left, {} disconnected (as read by the measured clients)",
                    n.joined, n.left, n.disconnected
                ),
            );
        }
        row(
            "latency",
            if l.samples == 0 {
                "no samples".to_string()
            } else {
                format!(
                    "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples)",
                    l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.samples
                )
            },
        );
        if let Some(srv) = &self.server {
            row(
                "server",
                format!(
                    "pid {}: CPU {:.0}% of one core; RSS {} at start, {} peak, {} at end{}",
                    srv.pid,
                    srv.cpu_percent,
                    fmt_bytes(srv.rss_start_bytes as f64),
                    fmt_bytes(srv.rss_peak_bytes as f64),
                    fmt_bytes(srv.rss_end_bytes as f64),
                    if srv.lost { " (process lost)" } else { "" }
                ),
            );
        }
        for other in &self.others {
            row(
                "also",
                format!(
                    "pid {}: CPU {:.0}% of one core; RSS {} peak{}",
                    other.pid,
                    other.cpu_percent,
                    fmt_bytes(other.rss_peak_bytes as f64),
                    if other.lost { " (process lost)" } else { "" }
                ),
            );
        }
        if let (Some(srv), false) = (&self.server, self.others.is_empty()) {
            let total: f64 =
                srv.cpu_percent + self.others.iter().map(|o| o.cpu_percent).sum::<f64>();
            row("CPU in all", format!("{total:.0}% of one core"));
        }
        if let Some(slow) = &self.slow {
            row("slow clients", slow.summary());
        }
        if let Some(c) = &self.churn {
            row("churn", c.summary());
            if c.started {
                row("  during joins", window_line(&c.during_joins));
                row("  during leaves", window_line(&c.during_leaves));
                row("  otherwise", window_line(&c.outside));
            }
        }
        if let Some(series) = &self.latency_series {
            row("p99 per second", p99_line(series));
        }
        for w in &self.warnings {
            row("WARNING", w.clone());
        }
        out
    }

    /// Whether the run measured anything: some message was sent inside the
    /// measured window. A run that did not (every sender stalled, say) has
    /// no loss, throughput or latency to report, whatever its zeros say.
    pub fn measured(&self) -> bool {
        self.expected_deliveries > 0
    }

    /// Fills [`Report::warnings`] from the figures.
    pub(crate) fn check(&mut self) {
        let mut w = Vec::new();
        if !self.measured() {
            w.push(format!(
                "nothing was measured: no message was sent in the {:.1} s window \
                 ({} sent in the warm-up); the senders stalled, so loss, throughput \
                 and latency mean nothing",
                self.settings.duration_secs, self.warmup_messages
            ));
        }
        if self.measured() && self.deliveries == 0 {
            w.push(
                "no message of the measured window arrived anywhere: there is no latency \
                 to report"
                    .to_string(),
            );
        }
        if !self.connect.roll_call_complete {
            w.push(
                "the roll call did not reach every client: the server had not admitted \
                 them all when the run started"
                    .to_string(),
            );
        }
        if !self.drained {
            w.push("the grace period ran out before every message arrived".to_string());
        }
        if self.disconnects > 0 {
            w.push(format!(
                "{} clients lost their connection during the run",
                self.disconnects
            ));
        }
        if let Some(slow) = &self.slow {
            if slow.evicted < slow.clients {
                w.push(format!(
                    "{} of {} slow clients were not seen to be disconnected by the server",
                    slow.clients - slow.evicted,
                    slow.clients
                ));
            }
        }
        if let Some(c) = &self.churn {
            if !c.started {
                w.push("the churn wave did not begin before the run ended".to_string());
            } else if c.joined < c.clients || c.left < c.clients || c.failed > 0 {
                w.push(format!(
                    "churn: {} of {} clients joined and {} left cleanly{}",
                    c.joined,
                    c.clients,
                    c.left,
                    c.first_error
                        .as_ref()
                        .map(|e| format!(" (first failure: {e})"))
                        .unwrap_or_default()
                ));
            }
            if c.started && c.leave_to_secs > self.settings.duration_secs {
                w.push(
                    "the churn wave was still under way when the measured window closed; \
                     messages sent after it are not measured"
                        .to_string(),
                );
            }
        }
        if self.server.as_ref().is_some_and(|s| s.lost) {
            w.push("the server process could not be read any more during the run".to_string());
        }
        self.warnings = w;
    }
}

impl SlowStats {
    fn summary(&self) -> String {
        let reading = match self.read_rate {
            None => "never reading".to_string(),
            Some(r) => format!(
                "reading {}/s, {} read",
                fmt_bytes(r as f64),
                fmt_bytes(self.bytes_read as f64)
            ),
        };
        let when = match (self.evicted_at_secs.first(), self.evicted_at_secs.last()) {
            (Some(a), Some(b)) if self.evicted > 1 => format!(", {a:.2} s to {b:.2} s"),
            (Some(a), _) => format!(", at {a:.2} s"),
            _ => String::new(),
        };
        format!(
            "{} ({reading}): {} disconnected by the server{when} into the measured window",
            self.clients, self.evicted
        )
    }
}

impl ChurnStats {
    fn summary(&self) -> String {
        let clients = match &self.room {
            Some(room) => format!("{} clients into {room}", self.clients),
            None => format!("{} clients", self.clients),
        };
        if !self.started {
            return format!("{clients}: the wave never began");
        }
        format!(
            "{clients}: joined from {:.2} s to {:.2} s ({} in the room), quit from {:.2} s to {:.2} s ({} left cleanly, {} failed)",
            self.join_from_secs,
            self.join_to_secs,
            self.joined,
            self.leave_from_secs,
            self.leave_to_secs,
            self.left,
            self.failed
        )
    }
}

/// One window's latency on a line.
fn window_line(w: &WindowLatency) -> String {
    if w.samples == 0 {
        return format!(
            "no samples (messages sent {:.1}-{:.1} s)",
            w.from_secs, w.to_secs
        );
    }
    format!(
        "p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms ({} samples, sent {:.1}-{:.1} s)",
        w.p50_ms, w.p99_ms, w.p999_ms, w.max_ms, w.samples, w.from_secs, w.to_secs
    )
}

/// The p99 of each second of the series, in ms, `-` where nothing was sent.
fn p99_line(series: &LatencySeries) -> String {
    let cells: Vec<String> = series
        .p99_per_second_ms
        .iter()
        .map(|p| p.map_or_else(|| "-".to_string(), fmt_ms))
        .collect();
    format!("{} ms", cells.join(" "))
}

/// A latency with about three significant digits.
fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn reconnected(n: u32) -> String {
    match n {
        0 => String::new(),
        n => format!(", {n} clients connected again"),
    }
}

/// A byte count in KiB, MiB or GiB.
pub(crate) fn fmt_bytes(b: f64) -> String {
    const K: f64 = 1024.0;
    let a = b.abs();
    if a >= K * K * K {
        format!("{:.2} GiB", b / (K * K * K))
    } else if a >= K * K {
        format!("{:.1} MiB", b / (K * K))
    } else if a >= K {
        format!("{:.1} KiB", b / K)
    } else {
        format!("{b:.0} B")
    }
}

/// A rate or count with no more precision than it deserves.
pub(crate) fn fmt_num(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&v[..1], 0.99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.99), Duration::ZERO);
    }
}
