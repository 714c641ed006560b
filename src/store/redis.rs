//! A cluster's history, read from the Redis streams the nodes append to
//! (see `server::cluster`). The stream of a room is its history: entry
//! `SEQ-0` holds message `SEQ`, and the room's counter holds the highest
//! seq ever given. This store only reads; appending is the cluster's job,
//! because there the seq is given by Redis, not by the hub.
//!
//! The reads are the [`Store`] trait's blocking ones, on a synchronous
//! connection with timeouts; the trait's async faces run them on tokio's
//! blocking pool, so no runtime thread waits on Redis and the hub's lock is
//! never held meanwhile.

use std::sync::Mutex;
use std::time::Duration;

use redis::streams::StreamRangeReply;

use super::{Receipt, RoomLog, Store, StoreError, StoreStats, StoredMessage, MAX_PAGE};

/// Longest a read may take before it fails.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The Redis keys of one room, shared with `server::cluster`.
pub mod keys {
    /// The room's stream: its history and its fan-out.
    pub fn log(room_key: &str) -> String {
        format!("rchat:room:{room_key}:log")
    }

    /// The room's counter: the highest seq given.
    pub fn seq(room_key: &str) -> String {
        format!("rchat:room:{room_key}:seq")
    }
}

/// Reads a cluster's room streams.
pub struct RedisStore {
    client: redis::Client,
    url: String,
    conn: Mutex<Option<redis::Connection>>,
}

impl RedisStore {
    pub fn new(client: redis::Client, url: &str) -> RedisStore {
        RedisStore {
            client,
            url: url.to_string(),
            conn: Mutex::new(None),
        }
    }

    fn error(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Redis {
            url: self.url.clone(),
            error: e.to_string(),
        }
    }

    /// Runs `f` on the connection, opening it first if needed; a failed
    /// call drops the connection, so the next one starts afresh.
    fn with<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(READ_TIMEOUT)
                .map_err(|e| self.error(e))?;
            conn.set_read_timeout(Some(READ_TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(READ_TIMEOUT)))
                .map_err(|e| self.error(e))?;
            *slot = Some(conn);
        }
        let Some(conn) = slot.as_mut() else {
            return Err(StoreError::Closed);
        };
        f(conn).map_err(|e| {
            *slot = None;
            self.error(e)
        })
    }
}

/// A stream entry as a stored message; `None` for an entry that is not
/// one of ours.
pub fn entry_message(room_key: &str, entry: &redis::streams::StreamId) -> Option<StoredMessage> {
    let seq = entry.id.split('-').next()?.parse().ok()?;
    Some(StoredMessage {
        room: room_key.to_string(),
        room_name: entry.get("r")?,
        seq,
        ts_ms: entry.get("ts")?,
        nick: entry.get("f")?,
        text: entry.get("t")?,
        action: entry.get::<String>("a").is_some_and(|a| a == "1"),
    })
}

impl Store for RedisStore {
    fn append(&self, _msg: StoredMessage) -> Receipt {
        Receipt::ready(Err(StoreError::Unsupported(
            "in a cluster, messages are appended by the cluster, not the store",
        )))
    }

    fn last_seq(&self, room_key: &str) -> Result<u64, StoreError> {
        self.with(|c| {
            redis::cmd("GET")
                .arg(keys::seq(room_key))
                .query::<Option<u64>>(c)
        })
        .map(|n| n.unwrap_or(0))
    }

    fn page(
        &self,
        room_key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let limit = limit.min(MAX_PAGE);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let end = match before {
            Some(0) | Some(1) => return Ok(Vec::new()),
            Some(b) => format!("({b}-0"),
            None => "+".to_string(),
        };
        let reply: StreamRangeReply = self.with(|c| {
            redis::cmd("XREVRANGE")
                .arg(keys::log(room_key))
                .arg(&end)
                .arg("-")
                .arg("COUNT")
                .arg(limit)
                .query(c)
        })?;
        let mut messages: Vec<StoredMessage> = reply
            .ids
            .iter()
            .filter_map(|e| entry_message(room_key, e))
            .collect();
        messages.reverse();
        Ok(messages)
    }

    /// The counter and the newest entries in one transaction: an append
    /// by another node falls wholly before or wholly after it, so the
    /// joiner's replay ends exactly where live delivery begins.
    fn read_log(&self, room_key: &str, replay: usize) -> Result<RoomLog, StoreError> {
        let replay = replay.min(MAX_PAGE);
        let (last_seq, reply): (Option<u64>, StreamRangeReply) = self.with(|c| {
            redis::pipe()
                .atomic()
                .cmd("GET")
                .arg(keys::seq(room_key))
                .cmd("XREVRANGE")
                .arg(keys::log(room_key))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(replay.max(1))
                .query(c)
        })?;
        let mut recent: Vec<StoredMessage> = if replay == 0 {
            Vec::new()
        } else {
            reply
                .ids
                .iter()
                .filter_map(|e| entry_message(room_key, e))
                .collect()
        };
        recent.reverse();
        Ok(RoomLog {
            last_seq: last_seq.unwrap_or(0),
            recent,
        })
    }

    fn close(&self) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}
