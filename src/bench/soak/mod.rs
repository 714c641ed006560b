//! `rchat bench --soak`: a long run in which misbehaving clients try every
//! abuse at once while well-behaved clients check that the server still
//! delivers each of their messages exactly once and in order.
//!
//! A quarter of the clients (at least two) are steady ([`steady`]): they
//! join rooms of about a dozen, then talk within the server's default flood
//! limits, in their rooms and privately, for the whole run; every message
//! carries a per-sender sequence number. The rest are chaos slots
//! ([`chaos`]), each playing one persona after another: wanderers, JSON
//! misusers, garbage senders, flooders, slow readers, abrupt disconnects,
//! stalled TLS handshakes. At the end the steady clients stop sending,
//! wait until everything sent to them has arrived (at most [`DRAIN`]),
//! and the run fails if anything was lost, doubled, reordered or delivered
//! to the wrong client; if a steady client was refused anything or lost its
//! connection; if the server died or does not answer a fresh client
//! afterwards; or if a stalled handshake was left open too long.
//!
//! What this module does not own: the flags (`cli.rs`) and the sockets'
//! set-up (`conn.rs`).

mod chaos;
mod steady;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

pub use chaos::ChaosCounts;

use super::conn::{Connector, TlsTarget};
use super::process::{Process, Watch};
use super::progress::Progress;
use super::report::{fmt_bytes, ServerStats};
use super::{server_stats, BenchError};
use steady::{Ledger, Phases, Plan};

/// Longest the steady clients wait, once sending has stopped, for what is
/// still in flight.
pub const DRAIN: Duration = Duration::from_secs(15);
/// Steady clients per room, about.
const ROOM_SIZE: usize = 12;
/// Steady clients joining at once.
const JOINING_AT_ONCE: usize = 32;
/// How long the final fresh client waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Failure samples kept in the report.
const SAMPLES: usize = 5;

/// What a soak does.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsTarget>,
    /// Connections at once: steady clients plus chaos slots.
    pub clients: usize,
    /// How long the chaos and the steady talk last.
    pub duration: Duration,
    /// How long connecting the steady clients may take.
    pub connect_timeout: Duration,
    pub server_pid: Option<u32>,
    /// Seed of every random choice; random when absent (the report says
    /// which was used, so a failing run can be repeated).
    pub seed: Option<u64>,
    /// The server's `max_line`, which garbage goes past.
    pub max_line: usize,
    /// Longest the server may leave a stalled TLS handshake open.
    pub stall_limit: Duration,
    pub quiet: bool,
}

impl SoakConfig {
    /// A soak of `clients` for `duration` against a server with default
    /// limits.
    pub fn new(addr: SocketAddr, clients: usize, duration: Duration) -> SoakConfig {
        let defaults = crate::config::ServerConfig::default();
        SoakConfig {
            addr,
            tls: None,
            clients,
            duration,
            connect_timeout: Duration::from_secs(30),
            server_pid: None,
            seed: None,
            max_line: defaults.max_line,
            // The register timeout bounds a stalled handshake; a margin
            // for a busy machine on top.
            stall_limit: Duration::from_secs(defaults.register_timeout_secs + 10),
            quiet: true,
        }
    }
}

/// Latency of the steady clients' messages, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The result of a soak; [`SoakReport::passed`] says whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub seed: u64,
    /// The id in every steady nick and room name of this run.
    pub run_id: String,
    pub clients: usize,
    pub steady: usize,
    pub rooms: usize,
    pub chaos_slots: usize,
    pub duration_secs: f64,
    /// Messages the steady clients sent (room and private).
    pub sent: u64,
    /// Deliveries owed to steady clients, and those that arrived.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Messages a steady client received that were not meant for it.
    pub misrouted: u64,
    pub malformed: u64,
    /// Error replies to steady clients (a refusal of a well-behaved client
    /// is a failure), with samples.
    pub steady_errors: u64,
    pub steady_error_samples: Vec<String>,
    /// Steady connections that ended early, with samples of why.
    pub steady_disconnects: u64,
    pub steady_disconnect_samples: Vec<String>,
    pub latency: SoakLatency,
    pub chaos: ChaosCounts,
    pub server: Option<ServerStats>,
    /// A fresh client got an answer from the server after the soak.
    pub server_answered: bool,
    /// Why the soak failed; empty when it passed.
    pub failures: Vec<String>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The report for a person.
    pub fn table(&self) -> String {
        let c = &self.chaos;
        let mut t = String::new();
        let mut line = |s: String| {
            t.push_str(&s);
            t.push('\n');
        };
        line(format!(
            "soak {} (seed {}): {} clients for {:.0} s: {} steady in {} rooms, {} chaos slots",
            self.run_id,
            self.seed,
            self.clients,
            self.duration_secs,
            self.steady,
            self.rooms,
            self.chaos_slots
        ));
        line(format!(
            "steady:   {} sent, {} of {} deliveries checked: lost {}, duplicated {}, reordered {}, misrouted {}",
            self.sent, self.delivered, self.expected, self.lost, self.duplicates, self.reordered, self.misrouted
        ));
        line(format!(
            "          latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; errors {}, disconnects {}",
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.latency.max_ms,
            self.steady_errors,
            self.steady_disconnects
        ));
        let personas: Vec<String> = c.personas.iter().map(|(n, k)| format!("{n} {k}")).collect();
        line(format!(
            "chaos:    {} connections ({} failed); lifetimes: {}",
            c.connections,
            c.connect_failures,
            personas.join(", ")
        ));
        line(format!(
            "          flood refusals {}, flood kicks {}, other errors {}, garbage {}",
            c.flood_refusals,
            c.flood_kicks,
            c.errors,
            fmt_bytes(c.garbage_bytes as f64)
        ));
        line(format!(
            "          slow readers evicted {} (slowest {:.1} s), not evicted in {} s {}, cut short by the end {}",
            c.evictions,
            c.slow_evicted_max_ms as f64 / 1000.0,
            chaos::SLOW_LIFETIME.as_secs(),
            c.slow_not_evicted,
            c.slow_cut_short
        ));
        line(format!(
            "          stalled TLS handshakes closed by the server {} (slowest {:.1} s), left open too long {}",
            c.stalls_closed,
            c.stall_close_max_ms as f64 / 1000.0,
            c.stalls_overdue
        ));
        if let Some(s) = &self.server {
            line(format!(
                "server:   pid {}: CPU {:.1}% of a core; RSS start {}, peak {}, end {}{}",
                s.pid,
                s.cpu_percent,
                fmt_bytes(s.rss_start_bytes as f64),
                fmt_bytes(s.rss_peak_bytes as f64),
                fmt_bytes(s.rss_end_bytes as f64),
                if s.lost { " (process lost)" } else { "" }
            ));
        }
        line(format!(
            "after:    a fresh client {}",
            if self.server_answered {
                "was answered"
            } else {
                "got no answer"
            }
        ));
        for sample in self
            .steady_error_samples
            .iter()
            .chain(&self.steady_disconnect_samples)
        {
            line(format!("  e.g. {sample}"));
        }
        if self.passed() {
            line("PASSED".into());
        } else {
            line(format!("FAILED: {}", self.failures.join("; ")));
        }
        t
    }
}

/// Runs one soak. See the [module documentation](self).
pub async fn run(cfg: &SoakConfig) -> Result<SoakReport, BenchError> {
    if cfg.clients < 4 {
        return Err(BenchError::Config(
            "a soak needs at least 4 clients (2 steady, 2 chaos)".into(),
        ));
    }
    if cfg.duration.is_zero() {
        return Err(BenchError::Config("a soak needs a duration".into()));
    }
    let watch = match cfg.server_pid {
        Some(pid) => Some(Watch::start(Process::open(pid)?)?),
        None => None,
    };
    let seed = cfg.seed.unwrap_or_else(|| fastrand::u64(..));
    let mut rng = fastrand::Rng::with_seed(seed);
    let steady_count = (cfg.clients / 4).max(2);
    let plan = Arc::new(Plan {
        run: format!("{:04x}", rng.u16(..)),
        steady: steady_count,
        rooms: steady_count.div_ceil(ROOM_SIZE),
    });
    let origin = Instant::now();
    let ledger = Arc::new(Ledger::new(&plan, origin));
    let connector = Connector::new(cfg.addr, cfg.tls.as_ref());
    let progress = Progress::new(cfg.quiet, steady_count);

    let (stopped_tx, mut stopped_rx) = mpsc::unbounded_channel();
    let (complete_tx, mut complete_rx) = mpsc::unbounded_channel();
    let phases = Phases {
        go: CancellationToken::new(),
        stop_send: CancellationToken::new(),
        all_sent: CancellationToken::new(),
        finish: CancellationToken::new(),
        stopped: stopped_tx,
        complete: complete_tx,
        down: Arc::new(AtomicU64::new(0)),
    };
    // However this returns, every steady client and chaos slot stops.
    let _finish = phases.finish.clone().drop_guard();
    let stop_chaos = CancellationToken::new();
    let _stop_chaos = stop_chaos.clone().drop_guard();

    // Steady clients: all in their rooms before anyone talks.
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let joining = Arc::new(Semaphore::new(JOINING_AT_ONCE));
    let deadline = Deadline::now() + cfg.connect_timeout;
    let mut steady_tasks = JoinSet::new();
    for i in 0..steady_count {
        let (connector, plan, ledger, phases) = (
            connector.clone(),
            plan.clone(),
            ledger.clone(),
            phases.clone(),
        );
        let (ready_tx, joining) = (ready_tx.clone(), joining.clone());
        let offsets = (
            Duration::from_millis(rng.u64(0..steady::ROOM_EVERY.as_millis() as u64)),
            Duration::from_millis(rng.u64(0..steady::PM_EVERY.as_millis() as u64)),
        );
        steady_tasks.spawn(async move {
            let joined = {
                let _turn = joining.acquire().await;
                steady::join(&connector, &plan, i, deadline).await
            };
            match joined {
                Ok(joined) => {
                    let _ = ready_tx.send((i, Ok(())));
                    let outcome = steady::run(joined, plan, i, ledger, phases, offsets).await;
                    (i, Some(outcome))
                }
                Err(e) => {
                    let _ = ready_tx.send((i, Err(e)));
                    (i, None)
                }
            }
        });
    }
    drop(ready_tx);
    let mut ready = 0;
    while ready < steady_count {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some((_, Ok(())))) => {
                ready += 1;
                progress.connecting(ready, steady_count);
            }
            Ok(Some((client, Err(reason)))) => {
                progress.finish();
                return Err(match reason.strip_prefix(steady::REFUSED) {
                    Some(line) => BenchError::Refused {
                        client,
                        line: line.to_string(),
                    },
                    None => BenchError::Closed { client, reason },
                });
            }
            Ok(None) | Err(_) => {
                progress.finish();
                return Err(BenchError::ConnectTimeout {
                    ready,
                    wanted: steady_count,
                    timeout: cfg.connect_timeout,
                });
            }
        }
    }

    // The soak proper: steady talk and chaos side by side.
    let chaos_slots = cfg.clients - steady_count;
    let chaos = Arc::new(chaos::Chaos {
        connector: connector.clone(),
        plan: plan.clone(),
        max_line: cfg.max_line,
        stall_limit: cfg.stall_limit,
        tally: chaos::Tally::default(),
    });
    let from = watch.as_ref().and_then(|w| w.sample());
    phases.go.cancel();
    let mut chaos_tasks = JoinSet::new();
    for _ in 0..chaos_slots {
        chaos_tasks.spawn(chaos::slot(chaos.clone(), rng.u64(..), stop_chaos.clone()));
    }
    let began = Deadline::now();
    progress.start(cfg.duration);
    let mut server_died = false;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    while began.elapsed() < cfg.duration {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(began + cfg.duration) => {}
        }
        if watch.as_ref().is_some_and(|w| w.sample().is_none()) {
            server_died = true;
            break;
        }
        let c = chaos.tally.snapshot();
        progress.running(
            began.elapsed(),
            &format!(
                "{} sent; chaos {} conns, {} refused, {} kicked, {} evicted; steady down {}",
                ledger.total_sent(),
                c.connections,
                c.flood_refusals,
                c.flood_kicks,
                c.evictions,
                phases.down.load(Ordering::Relaxed)
            ),
        );
    }
    let soaked = began.elapsed();

    // Wind down: chaos off, senders stop, receivers drain.
    stop_chaos.cancel();
    phases.stop_send.cancel();
    progress.draining();
    let stop_deadline = Deadline::now() + Duration::from_secs(10);
    for _ in 0..steady_count {
        if !matches!(
            tokio::time::timeout_at(stop_deadline, stopped_rx.recv()).await,
            Ok(Some(_))
        ) {
            break;
        }
    }
    phases.all_sent.cancel();
    let drain_deadline = Deadline::now() + DRAIN;
    for _ in 0..steady_count {
        if !matches!(
            tokio::time::timeout_at(drain_deadline, complete_rx.recv()).await,
            Ok(Some(_))
        ) {
            break;
        }
    }
    let to = watch.as_ref().and_then(|w| w.sample());
    let server_answered = !server_died && probe(&connector).await.is_ok();
    phases.finish.cancel();
    let chaos_deadline = Deadline::now() + Duration::from_secs(5);
    while let Ok(Some(_)) = tokio::time::timeout_at(chaos_deadline, chaos_tasks.join_next()).await {
    }
    chaos_tasks.abort_all();
    let mut outcomes = Vec::with_capacity(steady_count);
    let collect_deadline = Deadline::now() + Duration::from_secs(5);
    while let Ok(Some(joined)) =
        tokio::time::timeout_at(collect_deadline, steady_tasks.join_next()).await
    {
        if let Ok((i, Some(outcome))) = joined {
            outcomes.push((i, outcome));
        }
    }
    progress.finish();

    let mut report = SoakReport {
        seed,
        run_id: plan.run.clone(),
        clients: cfg.clients,
        steady: steady_count,
        rooms: plan.rooms,
        chaos_slots,
        duration_secs: soaked.as_secs_f64(),
        sent: ledger.total_sent(),
        expected: 0,
        delivered: 0,
        lost: 0,
        duplicates: 0,
        reordered: 0,
        misrouted: 0,
        malformed: 0,
        steady_errors: 0,
        steady_error_samples: Vec::new(),
        steady_disconnects: 0,
        steady_disconnect_samples: Vec::new(),
        latency: SoakLatency::default(),
        chaos: chaos.tally.snapshot(),
        server: watch.as_ref().map(|w| server_stats(w, from, to)),
        server_answered,
        failures: Vec::new(),
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)
        .expect("static histogram bounds are valid");
    for (i, o) in &outcomes {
        for &s in &o.expected {
            let sent = ledger.sent(s);
            let got = o.unique[s].min(sent);
            report.expected += sent;
            report.delivered += got;
            report.lost += sent - got;
        }
        report.duplicates += o.duplicates;
        report.reordered += o.late;
        report.misrouted += o.misrouted;
        report.malformed += o.malformed;
        report.steady_errors += o.errors;
        for sample in &o.error_samples {
            if report.steady_error_samples.len() < SAMPLES {
                report
                    .steady_error_samples
                    .push(format!("{} was sent: {sample}", plan.nick(*i)));
            }
        }
        if let Some(why) = &o.lost_connection {
            report.steady_disconnects += 1;
            if report.steady_disconnect_samples.len() < SAMPLES {
                report
                    .steady_disconnect_samples
                    .push(format!("{} lost its connection: {why}", plan.nick(*i)));
            }
        }
        let _ = latency.add(&o.latency_us);
    }
    if !latency.is_empty() {
        let ms = |us: u64| us as f64 / 1000.0;
        report.latency = SoakLatency {
            p50_ms: ms(latency.value_at_quantile(0.5)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            p999_ms: ms(latency.value_at_quantile(0.999)),
            max_ms: ms(latency.max()),
        };
    }
    report.failures = failures(&report, outcomes.len(), server_died);
    Ok(report)
}

/// Why a soak with these figures failed.
fn failures(r: &SoakReport, reported: usize, server_died: bool) -> Vec<String> {
    let mut f = Vec::new();
    let mut check = |bad: bool, what: String| {
        if bad {
            f.push(what);
        }
    };
    check(
        server_died || r.server.as_ref().is_some_and(|s| s.lost),
        "the server process went away".into(),
    );
    check(
        !r.server_answered,
        "a fresh client got no answer after the soak".into(),
    );
    check(
        reported < r.steady,
        format!(
            "{} steady clients did not report",
            r.steady.saturating_sub(reported)
        ),
    );
    check(r.sent == 0, "the steady clients sent nothing".into());
    check(r.lost > 0, format!("{} deliveries lost", r.lost));
    check(r.duplicates > 0, format!("{} duplicates", r.duplicates));
    check(
        r.reordered > 0,
        format!("{} deliveries out of order", r.reordered),
    );
    check(
        r.misrouted > 0,
        format!("{} deliveries to the wrong client", r.misrouted),
    );
    check(r.malformed > 0, format!("{} mangled tokens", r.malformed));
    check(
        r.steady_errors > 0,
        format!("{} errors sent to well-behaved clients", r.steady_errors),
    );
    check(
        r.steady_disconnects > 0,
        format!(
            "{} well-behaved clients lost their connection",
            r.steady_disconnects
        ),
    );
    check(
        r.chaos_slots > 0 && r.chaos.connections == 0,
        "no chaos client ever connected".into(),
    );
    check(
        r.chaos.slow_not_evicted > 0,
        format!(
            "{} slow readers were not evicted within {} s",
            r.chaos.slow_not_evicted,
            chaos::SLOW_LIFETIME.as_secs()
        ),
    );
    check(
        r.chaos.stalls_overdue > 0,
        format!(
            "{} stalled TLS handshakes were left open too long",
            r.chaos.stalls_overdue
        ),
    );
    f
}

/// Whether the server still answers a newcomer: `/rooms` on a fresh
/// connection.
async fn probe(connector: &Connector) -> Result<(), String> {
    let work = async {
        let (mut reader, mut writer) = connector.connect().await.map_err(|e| format!("{e:?}"))?;
        writer
            .write_all(b"/rooms\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = reader.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed".to_string());
            }
            seen.extend_from_slice(&buf[..n]);
            if seen
                .split(|&b| b == b'\n')
                .any(|l| l.starts_with(b"* rooms:"))
            {
                return Ok(());
            }
            if seen.len() > 1 << 20 {
                return Err("no answer in the first MiB".into());
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}
