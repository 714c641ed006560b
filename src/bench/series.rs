//! Latency over time: the measured window cut into short steps by send
//! time, with a small histogram per step, so that a moment when delivery
//! stalled (a join wave, an eviction) shows up instead of vanishing into
//! the run's percentiles.
//!
//! Kept only when a run has something happening at a moment (`--slow`,
//! `--churn`): it costs a second histogram record per delivery. Steps are
//! histograms of two significant digits, allocated when their first sample
//! arrives (about 11 KiB each), and there are at most [`MAX_STEPS`] of
//! them, so memory stays at about 3 MiB or less whatever the duration. The
//! whole-run percentiles keep their full precision elsewhere (`shared`).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The step lengths to choose from, in milliseconds: each below a second
/// divides it, each above is a whole number of seconds.
const STEPS_MS: [u64; 13] = [
    100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 30_000, 60_000, 120_000, 300_000, 600_000,
];
/// Most steps in one run; longer runs get longer steps.
const MAX_STEPS: usize = 300;
/// Latencies above a minute are recorded as a minute here.
const MAX_NS: u64 = 60_000_000_000;
/// Below a microsecond nothing is told apart.
const MIN_NS: u64 = 1_000;

/// Per-step histograms over the measured window.
pub(crate) struct Series {
    step_ns: u64,
    steps: Vec<Option<Histogram<u32>>>,
}

/// Latency of the messages sent in one span of the measured window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct WindowLatency {
    /// Where the span starts and ends, in seconds since the measured
    /// window opened, rounded out to whole steps of the series.
    pub from_secs: f64,
    pub to_secs: f64,
    pub samples: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The series as reported: one point per step, and the p99 of each second.
#[derive(Debug, Clone, Serialize)]
pub struct LatencySeries {
    pub step_secs: f64,
    pub points: Vec<WindowLatency>,
    /// p99 latency of the messages sent in each second of the measured
    /// window (in each step, if steps are longer), in ms; `null` where
    /// nothing was sent.
    pub p99_per_second_ms: Vec<Option<f64>>,
}

impl Series {
    /// Steps covering `duration`: the shortest of [`STEPS_MS`] that needs
    /// at most [`MAX_STEPS`], so that seconds hold whole steps; for runs
    /// longer than that allows (50 hours), whole seconds.
    pub(crate) fn new(duration: Duration) -> Series {
        let total = duration.as_nanos();
        let fits = |step_ns: u128| total.div_ceil(step_ns) <= MAX_STEPS as u128;
        let step_ns = STEPS_MS
            .iter()
            .map(|&ms| u128::from(ms) * 1_000_000)
            .find(|&ns| fits(ns))
            .unwrap_or_else(|| {
                total.div_ceil(MAX_STEPS as u128).div_ceil(1_000_000_000) * 1_000_000_000
            });
        let steps = total.div_ceil(step_ns).max(1) as usize;
        Series {
            step_ns: step_ns as u64,
            steps: (0..steps).map(|_| None).collect(),
        }
    }

    #[cfg(test)]
    pub(crate) fn step(&self) -> Duration {
        Duration::from_nanos(self.step_ns)
    }

    /// Records one delivery of a message sent `offset_ns` after the measured
    /// window opened, which took `latency_ns`.
    pub(crate) fn record(&mut self, offset_ns: u64, latency_ns: u64) {
        let Some(slot) = self.steps.get_mut((offset_ns / self.step_ns) as usize) else {
            return;
        };
        let h = slot.get_or_insert_with(new_histogram);
        h.saturating_record(latency_ns.clamp(MIN_NS, MAX_NS));
    }

    /// Latency of the messages sent between `from` and `to` (offsets into
    /// the measured window), over every step the span touches.
    pub(crate) fn window(&self, from: Duration, to: Duration) -> WindowLatency {
        let (first, last) = self.steps_of(from, to);
        self.merge(first..last)
    }

    /// Latency of the messages sent in steps that touch none of `spans`.
    pub(crate) fn outside(&self, spans: &[(Duration, Duration)]) -> WindowLatency {
        let touched: Vec<(usize, usize)> =
            spans.iter().map(|&(a, b)| self.steps_of(a, b)).collect();
        let mut all = new_histogram();
        for (i, h) in self.steps.iter().enumerate() {
            let inside = touched.iter().any(|&(a, b)| (a..b).contains(&i));
            if let (false, Some(h)) = (inside, h) {
                let _ = all.add(h);
            }
        }
        stats(&all, 0.0, self.secs_at(self.steps.len()))
    }

    /// One point per step.
    pub(crate) fn report(&self) -> LatencySeries {
        LatencySeries {
            step_secs: self.step_secs(),
            points: (0..self.steps.len())
                .map(|i| self.merge(i..i + 1))
                .collect(),
            p99_per_second_ms: self.p99_by_second(),
        }
    }

    /// p99 latency per second (or per step, if steps are longer), in ms;
    /// `None` for a second in which nothing was sent.
    pub(crate) fn p99_by_second(&self) -> Vec<Option<f64>> {
        let per = (1_000_000_000 / self.step_ns).max(1) as usize;
        (0..self.steps.len())
            .step_by(per)
            .map(|i| {
                let w = self.merge(i..(i + per).min(self.steps.len()));
                (w.samples > 0).then_some(w.p99_ms)
            })
            .collect()
    }

    /// The step range `[first, last)` a span touches.
    fn steps_of(&self, from: Duration, to: Duration) -> (usize, usize) {
        let n = self.steps.len();
        let first = ((from.as_nanos() / u128::from(self.step_ns)) as usize).min(n);
        let last = (to.as_nanos().div_ceil(u128::from(self.step_ns)) as usize)
            .max(first + 1)
            .min(n);
        (first, last)
    }

    fn merge(&self, range: std::ops::Range<usize>) -> WindowLatency {
        let mut all = new_histogram();
        for h in self.steps[range.clone()].iter().flatten() {
            // Same bounds on both sides, so adding cannot fail.
            let _ = all.add(h);
        }
        stats(&all, self.secs_at(range.start), self.secs_at(range.end))
    }

    /// Where step `i` starts, in seconds.
    fn secs_at(&self, i: usize) -> f64 {
        (i as u128 * u128::from(self.step_ns)) as f64 / 1e9
    }

    fn step_secs(&self) -> f64 {
        self.step_ns as f64 / 1e9
    }
}

fn stats(h: &Histogram<u32>, from_secs: f64, to_secs: f64) -> WindowLatency {
    let ms = |v: u64| v as f64 / 1e6;
    let empty = h.is_empty();
    let q = |q: f64| {
        if empty {
            0.0
        } else {
            ms(h.value_at_quantile(q))
        }
    };
    WindowLatency {
        from_secs,
        to_secs,
        samples: h.len(),
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        max_ms: if empty { 0.0 } else { ms(h.max()) },
    }
}

fn new_histogram() -> Histogram<u32> {
    Histogram::new_with_bounds(MIN_NS, MAX_NS, 2).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn steps_are_round_and_at_most_max_steps() {
        let s = Series::new(Duration::from_secs(10));
        assert_eq!(s.step(), Duration::from_millis(100));
        assert_eq!(s.steps.len(), 100);
        let s = Series::new(Duration::from_secs(30));
        assert_eq!(s.step(), Duration::from_millis(100));
        assert_eq!(s.p99_by_second().len(), 30);
        let s = Series::new(Duration::from_secs(31));
        assert_eq!(s.step(), Duration::from_millis(200));
        assert_eq!(s.p99_by_second().len(), 31);
        let s = Series::new(Duration::from_secs(3600));
        assert_eq!(s.step(), Duration::from_secs(20));
        assert_eq!(s.steps.len(), 180);
        let s = Series::new(Duration::from_secs(10 * 24 * 3600));
        assert!(s.steps.len() <= MAX_STEPS, "{}", s.steps.len());
        assert_eq!(s.step().subsec_nanos(), 0);
        assert_eq!(Series::new(Duration::from_millis(250)).steps.len(), 3);
    }

    #[test]
    fn windows_split_a_stall_from_the_rest() {
        let mut s = Series::new(Duration::from_secs(3));
        for i in 0..3000u64 {
            // One message a millisecond; those sent from 1.2 s to 1.4 s
            // took 50 ms, the rest 1 ms.
            let slow = (1200..1400).contains(&i);
            s.record(i * MS, if slow { 50 * MS } else { MS });
        }
        let stall = s.window(Duration::from_millis(1250), Duration::from_millis(1350));
        assert_eq!((stall.from_secs, stall.to_secs), (1.2, 1.4));
        assert_eq!(stall.samples, 200);
        assert!((stall.p50_ms - 50.0).abs() < 1.0, "{stall:?}");
        let rest = s.outside(&[(Duration::from_millis(1250), Duration::from_millis(1350))]);
        assert_eq!(rest.samples, 2800);
        assert!((rest.max_ms - 1.0).abs() < 0.05, "{rest:?}");
        let by_second = s.p99_by_second();
        assert_eq!(by_second.len(), 3);
        assert!(by_second[0].unwrap() < 1.1 && by_second[1].unwrap() > 49.0);
        let points = s.report().points;
        assert_eq!(points.len(), 30);
        assert_eq!(points[12].samples, 100);
        // A message sent after the window is not counted anywhere.
        s.record(5_000 * MS, MS);
        assert_eq!(s.outside(&[]).samples, 3000);
    }

    #[test]
    fn empty_spans_report_zero_samples() {
        let s = Series::new(Duration::from_secs(1));
        let w = s.window(Duration::from_secs(5), Duration::from_secs(6));
        assert_eq!(w.samples, 0);
        assert_eq!(w.p99_ms, 0.0);
        assert_eq!(s.p99_by_second(), vec![None]);
    }
}
