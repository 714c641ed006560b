//! The in-memory store: the same behaviour as the SQLite store, kept in a map
//! of rooms and lost when the process exits. Appends complete at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{now_ms, Receipt, Retention, Store, StoreError, StoreStats, StoredMessage, MAX_PAGE};

#[derive(Debug, Default)]
struct Room {
    /// Highest seq ever appended, kept when retention empties the room.
    last_seq: u64,
    /// Sorted by seq.
    messages: VecDeque<StoredMessage>,
}

impl Room {
    /// Drops what retention no longer keeps.
    fn prune(&mut self, retention: &Retention, now_ms: u64) -> u64 {
        let before = self.messages.len();
        if let Some(cutoff) = retention.seq_cutoff(self.last_seq) {
            let expired = self.messages.partition_point(|m| m.seq <= cutoff);
            self.messages.drain(..expired);
        }
        if let Some(cutoff) = retention.age_cutoff(now_ms) {
            // Server timestamps grow with seq (bar clock steps), so expired
            // messages sit at the front; a message behind a newer one waits
            // for it.
            while self.messages.front().is_some_and(|m| m.ts_ms < cutoff) {
                self.messages.pop_front();
            }
        }
        (before - self.messages.len()) as u64
    }
}

/// History in memory. See [`super::memory`].
#[derive(Debug)]
pub struct MemoryStore {
    rooms: Mutex<HashMap<String, Room>>,
    retention: Retention,
    closed: AtomicBool,
    stored: AtomicU64,
    failed: AtomicU64,
    pruned: AtomicU64,
}

impl MemoryStore {
    pub(super) fn new(retention: Retention) -> MemoryStore {
        MemoryStore {
            rooms: Mutex::default(),
            retention,
            closed: AtomicBool::new(false),
            stored: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Room>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn try_append(&self, msg: StoredMessage) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let mut rooms = self.lock();
        let room = rooms.entry(msg.room.clone()).or_default();
        // Almost always appended at the end; a late seq is inserted in place.
        let at = room.messages.partition_point(|m| m.seq < msg.seq);
        if room.messages.get(at).is_some_and(|m| m.seq == msg.seq) {
            return Err(StoreError::Duplicate {
                room: msg.room,
                seq: msg.seq,
            });
        }
        room.last_seq = room.last_seq.max(msg.seq);
        room.messages.insert(at, msg);
        let pruned = room.prune(&self.retention, now_ms());
        self.pruned.fetch_add(pruned, Ordering::Relaxed);
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
        Ok(self.lock().get(room_key).map_or(0, |r| r.last_seq))
    }

    fn page(
        &self,
        room_key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(room_key) else {
            return Ok(Vec::new());
        };
        // Age retention is applied on access too, so a quiet room still
        // forgets old messages.
        let pruned = room.prune(&self.retention, now_ms());
        self.pruned.fetch_add(pruned, Ordering::Relaxed);
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
