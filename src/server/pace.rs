//! Pacing waves: new connections (at most `accept_rate` taken in per
//! second, server-wide, after a burst of `accept_burst`) and ended sessions
//! (`leave_rate` taken out per second after `leave_burst`).
//!
//! Taking a connection in costs the server far more than a chat line (a
//! task, a welcome, a join with its notices), and a class or a LAN party
//! logging in at once, or a reconnect storm after a network blip, asks for
//! thousands in a second. Taken in as fast as they come, they starve the
//! people already chatting of CPU for as long as the wave lasts. Paced,
//! the wave waits its turn in the kernel's accept queue (`listen_backlog`,
//! which must be deep enough) and everyone else keeps their latency. No
//! connection is refused here: a waiting client has simply not been
//! greeted yet.
//!
//! The same holds for the other end of a storm: ten thousand clients
//! quitting at once, or dropped by one network blip, each cost a hub
//! removal, a last write, a shutdown and a close. Taken all at once they
//! held everyone else's lines back by a fifth of a second on the reference
//! machine; paced, the leaving wait (their connections already said
//! goodbye or are gone) and the others do not (docs/performance.md,
//! scenario 9).
//!
//! [`Pace`] is pure: the caller passes the time. [`Pacer`] is the shared,
//! waiting form, behind a lock held for a few arithmetic operations. Not
//! here: accepting, or limits on how many connections are open
//! (`admission.rs`).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The pace of new connections.
#[derive(Debug)]
pub struct Pace {
    /// Time between connections at the steady rate.
    interval: Duration,
    /// How far ahead of the steady rate a burst may run.
    slack: Duration,
    /// When the next connection would be due at the steady rate, had every
    /// slot so far been used (a "theoretical arrival time").
    due: Instant,
}

impl Pace {
    /// `rate` connections a second after a burst of `burst`; `None` when
    /// `rate` is 0 (no pacing).
    pub fn new(rate: u32, burst: u32, now: Instant) -> Option<Pace> {
        if rate == 0 {
            return None;
        }
        let interval = Duration::from_secs(1) / rate;
        Some(Pace {
            interval,
            slack: interval * burst.saturating_sub(1),
            due: now,
        })
    }

    /// Takes a slot for one connection at `now`, or says how long to wait
    /// before asking again.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let due = self.due.max(now);
        let allowed_from = due.checked_sub(self.slack).unwrap_or(now);
        if now < allowed_from {
            return Err(allowed_from - now);
        }
        self.due = due + self.interval;
        Ok(())
    }
}

/// A [`Pace`] that many tasks share, each waiting for its turn.
#[derive(Debug)]
pub struct Pacer {
    pace: Mutex<Pace>,
}

impl Pacer {
    /// `rate` a second after a burst of `burst`; `None` when `rate` is 0.
    pub fn new(rate: u32, burst: u32) -> Option<Pacer> {
        let pace = Pace::new(rate, burst, Instant::now())?;
        Some(Pacer {
            pace: Mutex::new(pace),
        })
    }

    /// Waits until a slot is free and takes it.
    pub async fn wait(&self) {
        loop {
            let slot = self
                .pace
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(Instant::now());
            match slot {
                Ok(()) => return,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waiters_are_let_through_at_the_rate() {
        let pacer = std::sync::Arc::new(Pacer::new(10, 2).unwrap());
        let start = Instant::now();
        let mut turns = Vec::new();
        for _ in 0..5 {
            let pacer = pacer.clone();
            turns.push(tokio::spawn(async move {
                pacer.wait().await;
                Instant::now()
            }));
        }
        let mut at = Vec::new();
        for t in turns {
            at.push(t.await.unwrap() - start);
        }
        at.sort();
        // Two at once (the burst), then one every 100 ms.
        let ms: Vec<u128> = at.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [0, 0, 100, 200, 300]);
    }

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let start = Instant::now();
        let mut pace = Pace::new(100, 5, start).unwrap();
        for _ in 0..5 {
            assert_eq!(pace.take(start), Ok(()));
        }
        // The sixth waits for the steady rate: 10 ms a connection.
        let wait = pace.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(10));
        assert_eq!(pace.take(start + wait), Ok(()));
        assert!(pace.take(start + wait).is_err());
        // Over two seconds: the rate's 200 and the burst's 4 more than one.
        let mut taken = 6;
        let mut now = start + wait;
        while now < start + Duration::from_secs(2) {
            match pace.take(now) {
                Ok(()) => taken += 1,
                Err(wait) => now += wait,
            }
        }
        assert_eq!(taken, 204);
    }

    #[test]
    fn a_quiet_spell_refills_the_burst_but_no_more() {
        let start = Instant::now();
        let mut pace = Pace::new(10, 3, start).unwrap();
        for _ in 0..3 {
            assert_eq!(pace.take(start), Ok(()));
        }
        assert!(pace.take(start).is_err());
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(pace.take(later), Ok(()));
        }
        assert!(
            pace.take(later).is_err(),
            "a minute's quiet buys only the burst"
        );
    }

    #[test]
    fn rate_zero_is_no_pacing() {
        assert!(Pace::new(0, 10, Instant::now()).is_none());
    }
}
