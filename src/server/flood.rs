//! Flood control: a token bucket over every line one connection sends.
//!
//! Each line takes a token; tokens come back at `flood_rate` per second up
//! to `flood_burst`, so a paste of up to `flood_burst` lines goes through
//! untouched and a steady typist never notices. A line without a token is
//! refused (the session tells the client when to retry), never dropped
//! silently. A connection refused `flood_kick_refusals` times within
//! `flood_kick_window_secs` is flooding on purpose or broken: the session
//! disconnects it.
//!
//! Pure: the caller passes the time, so tests need no clock. A session
//! without flood control (`flood_rate = 0`) holds no bucket at all and its
//! lines cost nothing here.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::ServerConfig;

/// What to do with one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Handle it.
    Pass,
    /// Refuse it; a token is due after `retry_after`.
    Refuse { retry_after: Duration },
    /// Refuse it and disconnect: refused too often lately.
    Kick,
}

/// One connection's bucket.
#[derive(Debug, Clone)]
pub struct Flood {
    /// Tokens per second.
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    /// Refusals in the current window; 0 in `kick_after` never kicks.
    refusals: u32,
    window_start: Instant,
    kick_after: u32,
    window: Duration,
}

impl Flood {
    /// The bucket the configuration asks for, full; `None` when flood
    /// control is off.
    pub fn from_config(config: &ServerConfig, now: Instant) -> Option<Flood> {
        (config.flood_rate > 0).then(|| Flood {
            rate: f64::from(config.flood_rate),
            burst: f64::from(config.flood_burst.max(1)),
            tokens: f64::from(config.flood_burst.max(1)),
            last: now,
            refusals: 0,
            window_start: now,
            kick_after: config.flood_kick_refusals,
            window: Duration::from_secs(config.flood_kick_window_secs),
        })
    }

    /// Takes a token for one line sent at `now`.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.take(now, 1.0)
    }

    /// Takes `extra` more tokens for a line that costs more than one (it
    /// has already paid its one at [`Flood::check`]), at most what the
    /// burst allows, so that every request can pass when the bucket is
    /// full. A refusal counts towards the kick like any other.
    pub fn charge(&mut self, now: Instant, extra: u32) -> Verdict {
        let extra = f64::from(extra).min(self.burst - 1.0);
        if extra <= 0.0 {
            return Verdict::Pass;
        }
        self.take(now, extra)
    }

    fn take(&mut self, now: Instant, cost: f64) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Verdict::Pass;
        }
        if now.saturating_duration_since(self.window_start) > self.window {
            self.window_start = now;
            self.refusals = 0;
        }
        self.refusals += 1;
        if self.kick_after > 0 && self.refusals >= self.kick_after {
            return Verdict::Kick;
        }
        let missing = cost - self.tokens;
        // Rounded up to the millisecond, so a client that waits exactly
        // this long is not refused again.
        let ms = (missing / self.rate * 1000.0).ceil().max(1.0);
        Verdict::Refuse {
            retry_after: Duration::from_millis(ms as u64),
        }
    }
}

/// Messages of history one flood token pays for. A history request makes
/// the server read and send up to 500 messages for one short line, far
/// more than a chat line costs it; without a price, a client within the
/// line limit could have the server read and send thousands of messages a
/// second for it. One token per 50 is what a chat line costs in a room of
/// 50: `/history 500` takes 10 tokens, the default page of 20 or 50 one.
pub const HISTORY_PER_TOKEN: usize = 50;

/// The tokens a history request of `limit` messages costs beyond its line.
pub fn history_extra(limit: usize) -> u32 {
    u32::try_from(limit.saturating_sub(1) / HISTORY_PER_TOKEN).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_big_history_request_costs_more_and_never_more_than_a_burst() {
        assert_eq!(history_extra(1), 0);
        assert_eq!(history_extra(50), 0);
        assert_eq!(history_extra(51), 1);
        assert_eq!(history_extra(500), 9);
        let now = Instant::now();
        let mut f = Flood::from_config(&config(5, 20, 50), now).unwrap();
        // A full bucket pays for /history 500 twice (10 tokens each).
        for _ in 0..2 {
            assert_eq!(f.check(now), Verdict::Pass);
            assert_eq!(f.charge(now, history_extra(500)), Verdict::Pass);
        }
        assert_eq!(
            f.check(now),
            Verdict::Refuse {
                retry_after: Duration::from_millis(200)
            }
        );
        // Two seconds later: ten tokens, one for the line, nine more.
        let later = now + Duration::from_secs(2);
        assert_eq!(f.check(later), Verdict::Pass);
        assert_eq!(f.charge(later, 9), Verdict::Pass);
        // A small bucket caps the price, so the request can still pass.
        let mut small = Flood::from_config(&config(1, 3, 50), now).unwrap();
        assert_eq!(small.check(now), Verdict::Pass);
        assert_eq!(small.charge(now, history_extra(500)), Verdict::Pass);
        assert!(matches!(small.check(now), Verdict::Refuse { .. }));
    }

    fn config(rate: u32, burst: u32, kick: u32) -> ServerConfig {
        ServerConfig {
            flood_rate: rate,
            flood_burst: burst,
            flood_kick_refusals: kick,
            flood_kick_window_secs: 10,
            ..ServerConfig::default()
        }
    }

    #[test]
    fn off_means_no_bucket() {
        assert!(Flood::from_config(&config(0, 20, 50), Instant::now()).is_none());
    }

    #[test]
    fn a_burst_passes_then_lines_are_refused_with_when_to_retry() {
        let t = Instant::now();
        let mut flood = Flood::from_config(&config(5, 20, 0), t).unwrap();
        for _ in 0..20 {
            assert_eq!(flood.check(t), Verdict::Pass);
        }
        assert_eq!(
            flood.check(t),
            Verdict::Refuse {
                retry_after: Duration::from_millis(200)
            }
        );
        // After the promised wait, exactly one line passes.
        let later = t + Duration::from_millis(200);
        assert_eq!(flood.check(later), Verdict::Pass);
        assert!(matches!(flood.check(later), Verdict::Refuse { .. }));
        // A quiet minute refills the bucket to the burst, not beyond.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..20 {
            assert_eq!(flood.check(much_later), Verdict::Pass);
        }
        assert!(matches!(flood.check(much_later), Verdict::Refuse { .. }));
    }

    #[test]
    fn a_steady_typist_is_never_refused() {
        let mut t = Instant::now();
        let mut flood = Flood::from_config(&config(5, 20, 50), t).unwrap();
        for _ in 0..1000 {
            t += Duration::from_millis(200);
            assert_eq!(flood.check(t), Verdict::Pass);
        }
    }

    #[test]
    fn refused_too_often_in_the_window_is_a_kick() {
        let t = Instant::now();
        let mut flood = Flood::from_config(&config(1, 1, 5), t).unwrap();
        assert_eq!(flood.check(t), Verdict::Pass);
        for _ in 0..4 {
            assert!(matches!(flood.check(t), Verdict::Refuse { .. }));
        }
        assert_eq!(flood.check(t), Verdict::Kick);

        // Refusals spread beyond the window do not add up.
        let mut t = Instant::now();
        let mut flood = Flood::from_config(&config(1, 1, 3), t).unwrap();
        flood.check(t);
        for _ in 0..10 {
            t += Duration::from_secs(11);
            flood.check(t); // passes: a token came back
            assert!(matches!(flood.check(t), Verdict::Refuse { .. }));
        }
    }
}
