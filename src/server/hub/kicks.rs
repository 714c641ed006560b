//! Who writes what a fan-out queued, and when: the hub's lock guard
//! ([`Locked`]) collects the outboxes that were idle and kicks them once the
//! lock is released, unless the traffic of the moment ([`Load`]) or the room's
//! size says to leave them to their writer tasks.
//!
//! It owns no state of its own beyond a spare list per thread; the counts
//! live in the hub's `State`, under its lock.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use super::State;
use crate::server::outbox::Outbox;

/// The hub's state, locked. The outboxes queued to while it was held are
/// kicked once it is released, in the order they were queued to: a kick
/// may write to a socket, and nobody waits on I/O under the hub's lock.
pub(super) struct Locked<'a> {
    // Fields drop in order: the lock is released, then the kicks happen.
    pub(super) state: MutexGuard<'a, State>,
    pub(super) kicks: Kicks,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.state
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.state
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // The state keeps the (empty) spare list, so the next fan-out
        // queues into storage that is already there.
        std::mem::swap(&mut self.state.kicks, &mut self.kicks.0);
        let fanned = std::mem::take(&mut self.state.fanned);
        let light = fanned == 0 || self.state.load.direct_after(fanned, Instant::now());
        self.kicks.1 = if light { self.state.direct_fanout } else { 0 };
    }
}

thread_local! {
    /// An empty list with room in it, kept per thread between lock holds:
    /// fan-outs allocate nothing for their kicks.
    static SPARE_KICKS: std::cell::Cell<Vec<Arc<Outbox>>> = const {
        std::cell::Cell::new(Vec::new())
    };
}

/// Outboxes to kick, taken from the state when its lock is released, and
/// the most of them to write here (more are left to their writer tasks).
pub(super) struct Kicks(Vec<Arc<Outbox>>, usize);

impl Kicks {
    pub(super) fn spare() -> Kicks {
        Kicks(SPARE_KICKS.try_with(|s| s.take()).unwrap_or_default(), 0)
    }
}

impl Drop for Kicks {
    fn drop(&mut self) {
        // A fan-out to a room of everyday size is written by this task,
        // one socket after another: far cheaper than waking a task per
        // member and another core to run some of them. A bigger one wants
        // every core: under quiet traffic it is cut into parts of
        // `direct_fanout`, this task writes one and a task of its own
        // each other part, for whichever worker is free (a wake-up per
        // part, not per member); under busier traffic its members' writer
        // tasks were woken as it was queued. Thousands at once (a big
        // room's summary of joins) are written by one task, a slice at a
        // time: woken, their writer tasks would all queue ahead of every
        // other room's traffic.
        if self.0.len() >= SLICED_KICKS {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let list = std::mem::take(&mut self.0);
                runtime.spawn(async move {
                    for slice in list.chunks(KICK_SLICE) {
                        slice.iter().for_each(|outbox| outbox.kick());
                        tokio::task::yield_now().await;
                    }
                });
                return;
            }
        }
        let per = self.1;
        if per > 0 && self.0.len() > per {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                while self.0.len() > per {
                    let part = self.0.split_off(per.max(self.0.len() - per));
                    runtime.spawn(async move { part.iter().for_each(|outbox| outbox.kick()) });
                }
            }
        }
        let direct = self.0.len() <= self.1;
        for outbox in self.0.drain(..) {
            if direct {
                outbox.kick();
            } else {
                outbox.wake();
            }
        }
        let list = std::mem::take(&mut self.0);
        let _ = SPARE_KICKS.try_with(|s| s.set(list));
    }
}

/// Kicks from one lock hold written a slice at a time by a task of their
/// own. Only a big room's held notices come this many (lines into rooms
/// this big wake their writer tasks as they are queued).
pub(super) const SLICED_KICKS: usize = 1024;
/// Sockets written between two yields of that task: about 0.2 ms of writes.
const KICK_SLICE: usize = 64;

/// Lines pushed to members within the current [`LOAD_WINDOW`].
///
/// Under heavy traffic the fan-outs are left to the writer tasks: each
/// finds several items queued when it runs and writes them with one call,
/// where kicks would write every fan-out on its own (closed loop in a room
/// of 100, kicking every fan-out cost a quarter of the throughput and half
/// again the CPU). Everyday traffic, far below the limit, is kicked.
///
/// Over a longer [`SPELL`] it also tells whether traffic is quiet enough
/// for a big room's fan-out to be kicked (cut into parts, see [`Kicks`]):
/// at 10 and 100 msg/s into a room of 500 that took a sixth and a tenth
/// less CPU than waking 499 writer tasks per line, the tail about level;
/// at 1,000 msg/s, there or in a room of 200, it lost to them, its p99
/// up by a third or more (docs/performance.md, scenario 9).
#[derive(Debug, Default)]
pub(super) struct Load {
    since: Option<Instant>,
    lines: usize,
    spell_since: Option<Instant>,
    spell_lines: usize,
    /// Lines of the spell before the current one (0 if nothing was pushed
    /// in it).
    last_spell: usize,
}

impl Load {
    /// Whether the traffic of the window so far is light enough for kicks.
    pub(super) fn is_light(&self) -> bool {
        self.lines <= MAX_KICKED_PER_WINDOW
    }

    /// Whether the traffic of the last spell, and of this one so far, is
    /// quiet enough for a big room's fan-out to be kicked.
    pub(super) fn is_quiet(&self) -> bool {
        self.is_light() && self.last_spell.max(self.spell_lines) <= MAX_QUIET_PER_SPELL
    }

    /// Counts `lines` more; says whether the window's traffic is still
    /// light enough for kicks.
    pub(super) fn direct_after(&mut self, lines: usize, now: Instant) -> bool {
        if self
            .since
            .is_none_or(|at| now.saturating_duration_since(at) >= LOAD_WINDOW)
        {
            self.since = Some(now);
            self.lines = 0;
        }
        self.lines += lines;
        let spell = self.spell_since.map(|at| now.saturating_duration_since(at));
        if spell.is_none_or(|spell| spell >= SPELL) {
            let follows = spell.is_some_and(|spell| spell < 2 * SPELL);
            self.last_spell = if follows { self.spell_lines } else { 0 };
            self.spell_since = Some(now);
            self.spell_lines = 0;
        }
        self.spell_lines += lines;
        self.lines <= MAX_KICKED_PER_WINDOW
    }
}

/// The window over which traffic is counted, and the most lines per window
/// that are kicked (a million a second): 1,000 msg/s into a room of 100 is
/// a tenth of it, closed-loop chat in the same room about nine times it.
pub(super) const LOAD_WINDOW: Duration = Duration::from_millis(1);
pub(super) const MAX_KICKED_PER_WINDOW: usize = 1000;

/// The longer span over which quiet traffic is told, and the most lines in
/// one for a room bigger than `direct_fanout` to be kicked (150,000 a
/// second: 300 msg/s into a room of 500).
pub(super) const SPELL: Duration = Duration::from_millis(10);
pub(super) const MAX_QUIET_PER_SPELL: usize = 1500;
