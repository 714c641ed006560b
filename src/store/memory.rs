//! The in-memory store: the same behaviour as the SQLite store, kept in a map
//! of rooms and lost when the process exits. Appends complete at once.
//!
//! Memory is bounded by a byte budget over all rooms: past it, the oldest
//! messages server-wide are forgotten first, whatever the retention says.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{now_ms, Receipt, Retention, Store, StoreError, StoreStats, StoredMessage, MAX_PAGE};

#[derive(Debug, Default)]
struct Room {
    /// Highest seq ever appended, kept when retention empties the room.
    last_seq: u64,
    /// Sorted by seq.
    messages: VecDeque<StoredMessage>,
}

impl Room {
    /// Drops what retention no longer keeps; returns (messages, bytes).
    fn prune(&mut self, retention: &Retention, now_ms: u64) -> (u64, usize) {
        let (mut count, mut bytes) = (0, 0);
        let seq_cutoff = retention.seq_cutoff(self.last_seq);
        let age_cutoff = retention.age_cutoff(now_ms);
        // Server timestamps grow with seq (bar clock steps), so expired
        // messages sit at the front; a message behind a newer one waits for
        // it.
        while let Some(m) = self.messages.front() {
            let expired =
                seq_cutoff.is_some_and(|c| m.seq <= c) || age_cutoff.is_some_and(|c| m.ts_ms < c);
            if !expired {
                break;
            }
            bytes += m.approx_size();
            count += 1;
            self.messages.pop_front();
        }
        (count, bytes)
    }
}

/// Default byte budget of [`MemoryStore`].
pub const DEFAULT_MEMORY_BUDGET: usize = crate::config::DEFAULT_HISTORY_MEMORY_BUDGET;

#[derive(Debug, Default)]
struct Inner {
    rooms: HashMap<Arc<str>, Room>,
    /// Every kept message's (room, seq), oldest first, for the budget;
    /// entries of messages retention already dropped are skipped lazily.
    order: VecDeque<(Arc<str>, u64)>,
    /// Messages kept, to know when `order` is mostly stale.
    kept: usize,
    bytes: usize,
}

impl Inner {
    /// Accounts for messages retention dropped from a room.
    fn forget(&mut self, (count, bytes): (u64, usize)) -> u64 {
        self.kept -= count as usize;
        self.bytes -= bytes;
        // Stale entries may pile up behind a live one at the front; rebuild
        // the order once they outnumber the live ones.
        if self.order.len() > 2 * self.kept + 1024 {
            let rooms = &self.rooms;
            self.order.retain(|(room, seq)| {
                rooms
                    .get(room)
                    .is_some_and(|r| r.messages.front().is_some_and(|m| m.seq <= *seq))
            });
        }
        count
    }

    /// Forgets the oldest messages until the budget holds.
    fn fit(&mut self, budget: usize) -> u64 {
        let mut dropped = 0;
        while self.bytes > budget {
            let Some((room_key, seq)) = self.order.pop_front() else {
                break;
            };
            let Some(room) = self.rooms.get_mut(&room_key) else {
                continue;
            };
            if room.messages.front().is_some_and(|m| m.seq == seq) {
                if let Some(m) = room.messages.pop_front() {
                    self.bytes -= m.approx_size();
                    self.kept -= 1;
                    dropped += 1;
                }
            }
        }
        dropped
    }
}

/// History in memory. See [`super::memory`].
#[derive(Debug)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    retention: Retention,
    budget: usize,
    closed: AtomicBool,
    stored: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
}

impl MemoryStore {
    pub(super) fn new(retention: Retention, budget: usize) -> MemoryStore {
        MemoryStore {
            inner: Mutex::default(),
            retention,
            budget,
            closed: AtomicBool::new(false),
            stored: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_append(&self, msg: StoredMessage) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let mut guard = self.lock();
        let inner = &mut *guard;
        let key: Arc<str> = match inner.rooms.get_key_value(msg.room.as_str()) {
            Some((k, _)) => k.clone(),
            None => msg.room.as_str().into(),
        };
        let room = inner.rooms.entry(key.clone()).or_default();
        // Almost always appended at the end; a late seq is inserted in place.
        let at = room.messages.partition_point(|m| m.seq < msg.seq);
        if room.messages.get(at).is_some_and(|m| m.seq == msg.seq) {
            return Err(StoreError::Duplicate {
                room: msg.room,
                seq: msg.seq,
            });
        }
        room.last_seq = room.last_seq.max(msg.seq);
        let size = msg.approx_size();
        inner.order.push_back((key, msg.seq));
        room.messages.insert(at, msg);
        let pruned = room.prune(&self.retention, now_ms());
        inner.kept += 1;
        inner.bytes += size;
        let mut dropped = inner.forget(pruned);
        dropped += inner.fit(self.budget);
        self.pruned.fetch_add(dropped, Ordering::Relaxed);
        Ok(())
    }
}

impl Store for MemoryStore {
    fn append(&self, msg: StoredMessage) -> Receipt {
        let result = self.try_append(msg);
        let counter = if result.is_ok() {
            &self.stored
        } else {
            &self.failed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Receipt::ready(result)
    }

    fn last_seq(&self, room_key: &str) -> Result<u64, StoreError> {
        Ok(self.lock().rooms.get(room_key).map_or(0, |r| r.last_seq))
    }

    fn page(
        &self,
        room_key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let Some(room) = inner.rooms.get_mut(room_key) else {
            return Ok(Vec::new());
        };
        // Age retention is applied on access too, so a quiet room still
        // forgets old messages.
        let pruned = room.prune(&self.retention, now_ms());
        let pruned = inner.forget(pruned);
        self.pruned.fetch_add(pruned, Ordering::Relaxed);
        let Some(room) = inner.rooms.get(room_key) else {
            return Ok(Vec::new());
        };
        let end = match before {
            Some(before) => room.messages.partition_point(|m| m.seq < before),
            None => room.messages.len(),
        };
        let start = end.saturating_sub(limit.min(MAX_PAGE));
        Ok(room.messages.range(start..end).cloned().collect())
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    fn stats(&self) -> StoreStats {
        let stored = self.stored.load(Ordering::Relaxed);
        StoreStats {
            stored,
            failed: self.failed.load(Ordering::Relaxed),
            batches: stored,
            pruned: self.pruned.load(Ordering::Relaxed),
            queued: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{memory_within, Retention, Store, StoredMessage};

    fn msg(room: &str, seq: u64, text: &str) -> StoredMessage {
        StoredMessage {
            room: room.into(),
            room_name: room.into(),
            seq,
            ts_ms: seq,
            nick: "n".into(),
            text: text.into(),
            action: false,
        }
    }

    #[test]
    fn the_budget_forgets_the_oldest_messages_server_wide() {
        let size = msg("a", 1, &"x".repeat(100)).approx_size();
        let store = memory_within(Retention::KEEP_ALL, size * 10);
        for seq in 1..=6 {
            store
                .append(msg("a", seq, &"x".repeat(100)))
                .wait()
                .unwrap();
        }
        for seq in 1..=8 {
            store
                .append(msg("b", seq, &"x".repeat(100)))
                .wait()
                .unwrap();
        }
        // 14 appended, room for 10: a1..a4 were the oldest.
        let a: Vec<u64> = store
            .page("a", None, 100)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        let b: Vec<u64> = store
            .page("b", None, 100)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        assert_eq!(a, vec![5, 6]);
        assert_eq!(b, (1..=8).collect::<Vec<_>>());
        assert_eq!(store.stats().pruned, 4);
        // Numbering is remembered all the same.
        assert_eq!(store.last_seq("a").unwrap(), 6);
    }

    #[test]
    fn retention_and_the_budget_together_stay_bounded() {
        let retention = Retention {
            max_per_room: Some(2),
            max_age: None,
        };
        let store = memory_within(retention, 1 << 20);
        for seq in 1..=20_000 {
            store.append(msg("r", seq, "m")).wait().unwrap();
        }
        let inner = store.lock();
        assert_eq!(inner.kept, 2);
        // Entries of messages retention dropped do not pile up.
        assert!(
            inner.order.len() <= 2 * inner.kept + 1024 + 1,
            "{}",
            inner.order.len()
        );
    }
}
