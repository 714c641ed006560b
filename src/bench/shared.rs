//! State shared by every client task of one run: the clock, the timeline,
//! per-sender counters and windows, the latency histogram (and its series
//! over time, when kept), and what the measured clients learn about the
//! slow clients' evictions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::series::Series;
use super::BenchConfig;

/// Highest latency the histogram tracks exactly: one hour, in nanoseconds.
/// Anything slower is recorded as this.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// Latency is recorded into this many histograms, so receivers seldom wait
/// for each other; they are merged for the report.
const LATENCY_SHARDS: usize = 16;

/// Bits of a window slot holding the count of receivers; the rest hold the
/// sequence number the slot is tracking.
const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const SEQ_MASK: u64 = u64::MAX >> COUNT_BITS;

/// Timeline value meaning "not yet".
const UNSET: u64 = u64::MAX;

/// What the server's greeting looks like, decided by the first client that
/// can tell (see `client::greet`).
pub(crate) const GREET_UNKNOWN: u8 = 0;
pub(crate) const GREET_RCHAT: u8 = 1;
pub(crate) const GREET_SILENT: u8 = 2;

pub(crate) struct Shared {
    origin: Instant,
    pub(crate) clients: usize,
    /// Clients that join the room before the start: the measured ones and
    /// the slow ones. Each measured client expects the join notices of
    /// those that join after it (see `client::Settle`).
    pub(crate) joiners: usize,
    pub(crate) senders: usize,
    pub(crate) window: usize,
    pub(crate) size: usize,
    /// Receivers of each message: every client but its sender.
    pub(crate) receivers: u64,
    start_ns: AtomicU64,
    warm_ns: AtomicU64,
    end_ns: AtomicU64,
    pub(crate) per_sender: Vec<SenderState>,
    /// First arrivals of any valid message, warm-up included; drives the
    /// progress display and the end-of-run drain.
    pub(crate) delivered: AtomicU64,
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Latency by send time, with `--slow` or `--churn`.
    series: Option<Mutex<Series>>,
    /// The slow clients' nicks, by slow client, once they are in the room.
    slow_nicks: OnceLock<HashMap<Vec<u8>, usize>>,
    /// Per slow client, when a measured client first read that the server
    /// disconnected it ([`UNSET`] if none did).
    slow_evicted_ns: Vec<AtomicU64>,
    pub(crate) greet_mode: AtomicU8,
    /// Speak IRC (`--irc`): register, join, send `PRIVMSG`s.
    pub(crate) irc: bool,
    /// Clients that have read every join notice they expect (see
    /// `client::Settle`).
    pub(crate) settled: AtomicUsize,
    /// Per client, the highest roll-call round it has received a probe of
    /// (see `run`'s roll call; only against servers without a greeting).
    pub(crate) probe_seen: Vec<AtomicU64>,
}

/// One sender's counters and closed-loop window.
pub(crate) struct SenderState {
    /// Messages numbered so far; a token with `seq` at or above this did not
    /// come from this run.
    pub(crate) issued: AtomicU64,
    /// Messages fully written to the socket.
    pub(crate) written: AtomicU64,
    /// Of those, stamped inside the measured window.
    pub(crate) window_sent: AtomicU64,
    /// Messages that every other client has received.
    pub(crate) completed: AtomicU64,
    /// Receiver counts of in-flight messages, indexed by `seq & ring_mask`;
    /// each slot packs `seq << COUNT_BITS | count`. Empty unless windowed.
    ring: Box<[AtomicU64]>,
    ring_mask: u64,
    /// Woken when a message completes.
    pub(crate) room: Notify,
    /// The connection failed while writing.
    pub(crate) failed: AtomicBool,
}

/// The measured part of the run, in nanoseconds since the origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeline {
    pub(crate) start_ns: u64,
    pub(crate) warm_ns: u64,
    pub(crate) end_ns: u64,
}

impl Timeline {
    /// Whether a message stamped `sent_ns` counts towards the results.
    pub(crate) fn measured(&self, sent_ns: u64) -> bool {
        self.warm_ns <= sent_ns && sent_ns < self.end_ns
    }
}

impl Shared {
    pub(crate) fn new(cfg: &BenchConfig, origin: Instant) -> Shared {
        let ring_len = if cfg.window == 0 {
            0
        } else {
            (cfg.window.next_power_of_two() * 2).max(2)
        };
        let per_sender = (0..cfg.senders)
            .map(|_| SenderState {
                issued: AtomicU64::new(0),
                written: AtomicU64::new(0),
                window_sent: AtomicU64::new(0),
                completed: AtomicU64::new(0),
                ring: (0..ring_len).map(|_| AtomicU64::new(UNSET)).collect(),
                ring_mask: (ring_len as u64).saturating_sub(1),
                room: Notify::new(),
                failed: AtomicBool::new(false),
            })
            .collect();
        let latency = (0..LATENCY_SHARDS)
            .map(|_| Mutex::new(new_histogram()))
            .collect();
        let series = (cfg.slow > 0 || cfg.churn > 0).then(|| Mutex::new(Series::new(cfg.duration)));
        Shared {
            origin,
            clients: cfg.clients,
            joiners: cfg.clients + cfg.slow,
            senders: cfg.senders,
            window: cfg.window,
            size: cfg.size,
            receivers: cfg.clients as u64 - 1,
            start_ns: AtomicU64::new(UNSET),
            warm_ns: AtomicU64::new(UNSET),
            end_ns: AtomicU64::new(UNSET),
            per_sender,
            delivered: AtomicU64::new(0),
            latency,
            series,
            slow_nicks: OnceLock::new(),
            slow_evicted_ns: (0..cfg.slow).map(|_| AtomicU64::new(UNSET)).collect(),
            greet_mode: AtomicU8::new(GREET_UNKNOWN),
            irc: cfg.irc,
            settled: AtomicUsize::new(0),
            probe_seen: (0..cfg.clients).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Nanoseconds since the origin, on the monotonic clock.
    pub(crate) fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    pub(crate) fn ns_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }

    pub(crate) fn instant(&self, ns: u64) -> Instant {
        self.origin + Duration::from_nanos(ns)
    }

    /// Fixes the timeline; receivers start counting once they see it.
    pub(crate) fn set_timeline(&self, t: Timeline) {
        self.warm_ns.store(t.warm_ns, Ordering::Relaxed);
        self.end_ns.store(t.end_ns, Ordering::Relaxed);
        self.start_ns.store(t.start_ns, Ordering::Release);
    }

    /// The timeline, once the senders have been told to start.
    pub(crate) fn timeline(&self) -> Option<Timeline> {
        let start_ns = self.start_ns.load(Ordering::Acquire);
        (start_ns != UNSET).then(|| Timeline {
            start_ns,
            warm_ns: self.warm_ns.load(Ordering::Relaxed),
            end_ns: self.end_ns.load(Ordering::Relaxed),
        })
    }

    /// Records deliveries, each `(sent_ns, latency_ns)`, into one shard of
    /// the histogram, and into the series if one is kept. `warm_ns` is
    /// when the measured window opened.
    pub(crate) fn record_latencies(&self, shard: usize, samples: &[(u64, u64)], warm_ns: u64) {
        if samples.is_empty() {
            return;
        }
        {
            let mut h = self.latency[shard % LATENCY_SHARDS]
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for &(_, ns) in samples {
                h.saturating_record(ns.clamp(1, MAX_LATENCY_NS));
            }
        }
        if let Some(series) = &self.series {
            let mut series = series.lock().unwrap_or_else(|e| e.into_inner());
            for &(sent_ns, ns) in samples {
                series.record(sent_ns.saturating_sub(warm_ns), ns);
            }
        }
    }

    /// Runs `f` on the latency series, if one is kept.
    pub(crate) fn with_series<T>(&self, f: impl FnOnce(&Series) -> T) -> Option<T> {
        let series = self.series.as_ref()?;
        let series = series.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&series))
    }

    /// Remembers the slow clients' nicks (where the server gave one).
    pub(crate) fn set_slow_nicks(&self, nicks: Vec<Option<Vec<u8>>>) {
        let map = nicks
            .into_iter()
            .enumerate()
            .filter_map(|(idx, nick)| Some((nick?, idx)))
            .collect();
        let _ = self.slow_nicks.set(map);
    }

    /// A measured client read that the server disconnected `nick` at
    /// `now_ns`; if that is a slow client, remember when.
    pub(crate) fn disconnected(&self, nick: &[u8], now_ns: u64) {
        let Some(&idx) = self.slow_nicks.get().and_then(|m| m.get(nick)) else {
            return;
        };
        if let Some(at) = self.slow_evicted_ns.get(idx) {
            at.fetch_min(now_ns, Ordering::Relaxed);
        }
    }

    /// Per slow client, when its eviction was first read, if it was.
    pub(crate) fn slow_evictions(&self) -> Vec<Option<u64>> {
        self.slow_evicted_ns
            .iter()
            .map(|at| Some(at.load(Ordering::Relaxed)).filter(|&ns| ns != UNSET))
            .collect()
    }

    /// All recorded latencies, merged.
    pub(crate) fn latency(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.latency {
            let h = shard.lock().unwrap_or_else(|e| e.into_inner());
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

impl SenderState {
    /// Claims the window slot for `seq` before it is sent.
    pub(crate) fn arm(&self, seq: u64) {
        if let Some(slot) = self.slot(seq) {
            slot.store((seq & SEQ_MASK) << COUNT_BITS, Ordering::Relaxed);
        }
    }

    /// Counts one receiver's first arrival of `seq`; when every receiver has
    /// it, releases the sender's window slot. Arrivals for a slot that has
    /// since been reused (a message given up on) are ignored.
    pub(crate) fn arrived(&self, seq: u64, receivers: u64) {
        let Some(slot) = self.slot(seq) else { return };
        let tag = seq & SEQ_MASK;
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            if cur == UNSET || cur >> COUNT_BITS != tag {
                return;
            }
            match slot.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    if (cur & COUNT_MASK) + 1 == receivers {
                        self.completed.fetch_add(1, Ordering::Release);
                        self.room.notify_one();
                    }
                    return;
                }
                Err(now) => cur = now,
            }
        }
    }

    fn slot(&self, seq: u64) -> Option<&AtomicU64> {
        if self.ring.is_empty() {
            None
        } else {
            Some(&self.ring[(seq & self.ring_mask) as usize])
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid histogram bounds")
}
