//! The SQLite store: one database file in WAL mode, written by one dedicated
//! thread with group commit, read through a small pool of connections.
//!
//! # Writing
//!
//! [`Store::append`] puts the message on a bounded queue and returns at once.
//! The writer thread takes everything queued (up to `max_batch`), inserts it in
//! one transaction and commits with `synchronous=FULL`, so a single `fsync`
//! makes the whole batch durable; only then are the batch's receipts
//! completed. While one batch is being synced the next one queues up, so the
//! busier the server, the bigger the batches.
//!
//! # Retention
//!
//! Between batches (and at most once a second when nothing else is due), the
//! writer deletes expired messages in chunks of at most [`PRUNE_CHUNK`] rows
//! per transaction, so a large backlog never holds up appends for long.
//!
//! # Schema
//!
//! `messages(room, seq, ts, nick, text, action, room_name)` keyed by
//! `(room, seq)`, an index on `ts` for age retention, and
//! `rooms(room, name, last_seq)` so a room's numbering survives retention.
//! The version is kept in `PRAGMA user_version`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

use super::{
    now_ms, BanRecord, Receipt, Retention, Store, StoreError, StoreStats, StoredMessage, MAX_PAGE,
};

/// The schema version this code writes.
const SCHEMA_VERSION: i64 = 2;

/// `MIGRATIONS[v]` takes the schema from version `v` to `v + 1`; version 0 is
/// an empty file.
const MIGRATIONS: &[&str] = &[
    "
    CREATE TABLE messages (
        room      TEXT    NOT NULL,
        seq       INTEGER NOT NULL,
        ts        INTEGER NOT NULL,
        nick      TEXT    NOT NULL,
        text      TEXT    NOT NULL,
        action    INTEGER NOT NULL DEFAULT 0,
        room_name TEXT    NOT NULL,
        PRIMARY KEY (room, seq)
    ) WITHOUT ROWID;
    CREATE INDEX messages_ts ON messages (ts);
    CREATE TABLE rooms (
        room     TEXT    NOT NULL PRIMARY KEY,
        name     TEXT    NOT NULL,
        last_seq INTEGER NOT NULL
    ) WITHOUT ROWID;
",
    "
    CREATE TABLE bans (
        target   TEXT    NOT NULL PRIMARY KEY,
        reason   TEXT,
        until_ms INTEGER,
        by       TEXT    NOT NULL,
        since_ms INTEGER NOT NULL
    ) WITHOUT ROWID;
",
];

/// Most rows retention deletes in one transaction.
pub const PRUNE_CHUNK: usize = 1000;
/// Most rooms retention looks at in one transaction.
const PRUNE_ROOMS: usize = 256;
/// How often retention runs when it has no backlog.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The WAL is truncated to this after a checkpoint.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

const INSERT_MESSAGE: &str = "INSERT INTO messages (room, seq, ts, nick, text, action, room_name) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const UPSERT_ROOM: &str = "INSERT INTO rooms (room, name, last_seq) VALUES (?1, ?2, ?3) \
     ON CONFLICT (room) DO UPDATE SET name = excluded.name, \
     last_seq = max(last_seq, excluded.last_seq)";
const SELECT_PAGE: &str = "SELECT room, room_name, seq, ts, nick, text, action FROM messages \
     WHERE room = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3";
const SELECT_LAST_SEQ: &str = "SELECT last_seq FROM rooms WHERE room = ?1";
const PRUNE_BY_SEQ: &str = "DELETE FROM messages WHERE room = ?1 AND seq IN \
     (SELECT seq FROM messages WHERE room = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3)";
const PRUNE_BY_AGE: &str = "DELETE FROM messages WHERE (room, seq) IN \
     (SELECT room, seq FROM messages WHERE ts < ?1 LIMIT ?2)";

/// Tuning for [`SqliteStore`]. The defaults suit a busy server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    pub retention: Retention,
    /// Appends that may wait for the writer; more fail with
    /// [`StoreError::Overloaded`].
    pub queue_len: usize,
    /// Bytes of messages that may wait for the writer, roughly; more fail
    /// with [`StoreError::Overloaded`]. A single message is always accepted
    /// into an empty queue.
    pub queue_bytes: usize,
    /// Most appends committed in one transaction.
    pub max_batch: usize,
    /// Read connections; reads beyond this many at once wait for one.
    pub readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            retention: Retention::KEEP_ALL,
            queue_len: 64 * 1024,
            queue_bytes: 64 << 20,
            max_batch: 4096,
            readers: 4,
        }
    }
}

/// A room's appends that are queued but not yet committed, by seq. Reads
/// merge them in, so a page or `last_seq` sees every accepted append at once,
/// not only after its batch commits.
type Inflight = BTreeMap<u64, StoredMessage>;

/// State shared by the handle and the writer thread.
#[derive(Debug, Default)]
struct Shared {
    inflight: Mutex<HashMap<String, Inflight>>,
    queued: AtomicU64,
    queued_bytes: AtomicUsize,
    stored: AtomicU64,
    failed: AtomicU64,
    batches: AtomicU64,
    pruned: AtomicU64,
}

impl Shared {
    fn inflight(&self) -> MutexGuard<'_, HashMap<String, Inflight>> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_inflight<'a>(&self, appends: impl Iterator<Item = (&'a str, u64)>) {
        let mut map = self.inflight();
        for (room, seq) in appends {
            if let Some(entry) = map.get_mut(room) {
                entry.remove(&seq);
                if entry.is_empty() {
                    map.remove(room);
                }
            }
        }
    }
}

struct Append {
    msg: StoredMessage,
    size: usize,
    done: oneshot::Sender<Result<(), StoreError>>,
}

enum Cmd {
    Append(Append),
    /// Test hook: the writer acknowledges, then waits until released.
    #[cfg(test)]
    Pause {
        paused: mpsc::Sender<()>,
        release: mpsc::Receiver<()>,
    },
}

/// History in an SQLite file (WAL mode). Appends go through a bounded queue
/// to one writer thread that group-commits them with `synchronous=FULL` and
/// applies retention between batches; reads use a small pool of their own
/// connections. See [`crate::store`].
///
/// Dropping it (or [`Store::close`]) writes everything queued and joins the
/// writer thread; that can block for as long as the queued batches take.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    tx: RwLock<Option<SyncSender<Cmd>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    shared: Arc<Shared>,
    queue_bytes: usize,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn is_duplicate(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

fn open_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
    move |error| StoreError::Open {
        path: path.to_path_buf(),
        error: Arc::new(error),
    }
}

/// Creates the directory (private to the user on Unix) and an empty file
/// (likewise) if they are missing, so SQLite and its WAL inherit the mode.
fn create_file(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir).map_err(|error| StoreError::CreateDir {
            path: dir.to_path_buf(),
            error: Arc::new(error),
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // Let SQLite report it, with its own words, below.
        Err(e) => {
            debug!(path = %path.display(), error = %e, "pre-creating the store failed");
            Ok(())
        }
    }
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error(path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error(path))?;
    Ok(conn)
}

/// Brings the schema to [`SCHEMA_VERSION`], or refuses a file it does not
/// understand.
fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(open_error(path))?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(open_error(path))?;
    if !(0..=SCHEMA_VERSION).contains(&version) {
        return Err(StoreError::UnknownSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == 0 {
        let objects: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(open_error(path))?;
        if objects > 0 {
            return Err(StoreError::NotAStore {
                path: path.to_path_buf(),
            });
        }
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        debug!(path = %path.display(), from, "migrating the message store");
        tx.execute_batch(sql).map_err(open_error(path))?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(open_error(path))?;
    tx.commit().map_err(open_error(path))
}

impl SqliteStore {
    pub(super) fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        create_file(path)?;
        let mut conn = connect(path)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_error(path))?;
        if !mode.eq_ignore_ascii_case("wal") {
            warn!(path = %path.display(), mode, "the message store could not switch to WAL mode");
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_error(path))?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)
            .map_err(open_error(path))?;
        migrate(&mut conn, path)?;

        let readers = (0..options.readers.max(1))
            .map(|_| {
                let reader = connect(path)?;
                reader
                    .pragma_update(None, "query_only", true)
                    .map_err(open_error(path))?;
                Ok(Mutex::new(reader))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

        // After a restart every room may be over a (possibly lowered) limit.
        let dirty = if options.retention.max_per_room.is_some() {
            let mut stmt = conn
                .prepare("SELECT room FROM rooms")
                .map_err(open_error(path))?;
            let rooms = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<HashSet<_>, _>>())
                .map_err(open_error(path))?;
            drop(stmt);
            rooms
        } else {
            HashSet::new()
        };

        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::sync_channel(options.queue_len.max(1));
        let writer = Writer {
            conn,
            path: path.to_path_buf(),
            shared: shared.clone(),
            retention: options.retention,
            max_batch: options.max_batch.max(1),
            dirty,
            backlog: options.retention.is_active(),
            next_prune: Instant::now(),
        };
        let handle = std::thread::Builder::new()
            .name("rchat-store".to_string())
            .spawn(move || writer.run(rx))
            .map_err(|error| StoreError::Thread {
                error: Arc::new(error),
            })?;
        debug!(path = %path.display(), "message store open");
        Ok(SqliteStore {
            path: path.to_path_buf(),
            tx: RwLock::new(Some(tx)),
            writer: Mutex::new(Some(handle)),
            readers,
            next_reader: AtomicUsize::new(0),
            shared,
            queue_bytes: options.queue_bytes,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A free read connection, or the next one in turn if all are busy.
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for reader in &self.readers {
            match reader.try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(e)) => return e.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn read_error(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |error| StoreError::Read {
            path: self.path.clone(),
            error: Arc::new(error),
        }
    }

    fn refuse(&self, error: StoreError) -> Receipt {
        let failed = self.shared.failed.fetch_add(1, Ordering::Relaxed) + 1;
        // Text clients get no ack to fail, so the operator must hear of it;
        // at the 1st, 2nd, 4th, 8th... refusal, so a flood cannot flood the log.
        if failed.is_power_of_two() {
            warn!(path = %self.path.display(), failed, error = %error, "messages not stored");
        }
        Receipt::ready(Err(error))
    }

    /// Test hook: stops the writer between batches until the returned sender
    /// is used or dropped.
    #[cfg(test)]
    fn pause_writer(&self) -> mpsc::Sender<()> {
        let (paused_tx, paused_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let guard = self.tx.read().unwrap();
        guard
            .as_ref()
            .unwrap()
            .send(Cmd::Pause {
                paused: paused_tx,
                release: release_rx,
            })
            .unwrap();
        paused_rx.recv().unwrap();
        release_tx
    }
}

impl Store for SqliteStore {
    fn append(&self, msg: StoredMessage) -> Receipt {
        let guard = self.tx.read().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else {
            return self.refuse(StoreError::Closed);
        };
        let shared = &*self.shared;
        let size = msg.approx_size();
        let before = shared.queued_bytes.fetch_add(size, Ordering::AcqRel);
        if before > 0 && before + size > self.queue_bytes {
            shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            let queued = shared.queued.load(Ordering::Relaxed);
            return self.refuse(StoreError::Overloaded { queued });
        }
        let copy = msg.clone();
        let (done, receipt) = Receipt::pending();
        // The in-flight map stays locked until the message is queued, so the
        // writer cannot finish it before it is counted, and a refused message
        // is never counted.
        let mut inflight = shared.inflight();
        let closed = match tx.try_send(Cmd::Append(Append { msg, size, done })) {
            Ok(()) => {
                shared.queued.fetch_add(1, Ordering::Relaxed);
                inflight
                    .entry(copy.room.clone())
                    .or_default()
                    .insert(copy.seq, copy);
                return receipt;
            }
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Disconnected(_)) => true,
        };
        drop(inflight);
        shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
        self.refuse(if closed {
            StoreError::Closed
        } else {
            StoreError::Overloaded {
                queued: shared.queued.load(Ordering::Relaxed),
            }
        })
    }

    fn last_seq(&self, room_key: &str) -> Result<u64, StoreError> {
        // Queued appends first: one that commits between the two look-ups
        // is then seen in the database.
        let queued = self
            .shared
            .inflight()
            .get(room_key)
            .and_then(|e| e.last_key_value())
            .map_or(0, |(seq, _)| *seq);
        let stored: Option<i64> = self
            .reader()
            .prepare_cached(SELECT_LAST_SEQ)
            .and_then(|mut stmt| stmt.query_row([room_key], |r| r.get(0)).optional())
            .map_err(self.read_error())?;
        Ok(queued.max(stored.map_or(0, to_u64)))
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
        // The queued appends are looked at first: one that commits between
        // the two reads is then found in the database, and merged once.
        let upper = before.unwrap_or(u64::MAX);
        let queued: Vec<StoredMessage> = self
            .shared
            .inflight()
            .get(room_key)
            .map(|e| {
                e.range(..upper)
                    .rev()
                    .take(limit)
                    .map(|(_, m)| m.clone())
                    .collect()
            })
            .unwrap_or_default();
        let before = before.map_or(i64::MAX, to_i64);
        let reader = self.reader();
        let mut stmt = reader
            .prepare_cached(SELECT_PAGE)
            .map_err(self.read_error())?;
        let rows = stmt
            .query_map(params![room_key, before, limit as i64], |r| {
                Ok(StoredMessage {
                    room: r.get(0)?,
                    room_name: r.get(1)?,
                    seq: to_u64(r.get(2)?),
                    ts_ms: to_u64(r.get(3)?),
                    nick: r.get(4)?,
                    text: r.get(5)?,
                    action: r.get(6)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        let mut page = rows.map_err(self.read_error())?;
        if !queued.is_empty() {
            page.extend(queued);
            page.sort_unstable_by_key(|m| std::cmp::Reverse(m.seq));
            page.dedup_by_key(|m| m.seq);
            page.truncate(limit);
        }
        page.reverse();
        Ok(page)
    }

    fn close(&self) {
        // Holding the handle's lock while joining makes a second caller wait
        // for the flush too.
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        drop(self.tx.write().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(handle) = writer.take() {
            if handle.join().is_err() {
                error!(path = %self.path.display(), "the message store's writer thread panicked");
            }
        }
    }

    fn load_bans(&self) -> Result<Vec<BanRecord>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare_cached("SELECT target, reason, until_ms, by, since_ms FROM bans")
            .map_err(self.read_error())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(BanRecord {
                    target: r.get(0)?,
                    reason: r.get(1)?,
                    until_ms: r.get::<_, Option<i64>>(2)?.map(to_u64),
                    by: r.get(3)?,
                    since_ms: to_u64(r.get(4)?),
                })
            })
            .map_err(self.read_error())?;
        rows.collect::<Result<_, _>>().map_err(self.read_error())
    }

    fn save_ban(&self, ban: &BanRecord) -> Result<(), StoreError> {
        // The readers are query-only and the writer thread is for
        // messages; a ban is rare enough for a connection of its own.
        let conn = connect(&self.path)?;
        conn.execute(
            "INSERT OR REPLACE INTO bans (target, reason, until_ms, by, since_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                ban.target,
                ban.reason,
                ban.until_ms.map(to_i64),
                ban.by,
                to_i64(ban.since_ms)
            ],
        )
        .map(|_| ())
        .map_err(|error| StoreError::Write {
            path: self.path.clone(),
            error: Arc::new(error),
        })
    }

    fn delete_ban(&self, target: &str) -> Result<(), StoreError> {
        let conn = connect(&self.path)?;
        conn.execute("DELETE FROM bans WHERE target = ?1", [target])
            .map(|_| ())
            .map_err(|error| StoreError::Write {
                path: self.path.clone(),
                error: Arc::new(error),
            })
    }

    fn stats(&self) -> StoreStats {
        let s = &*self.shared;
        StoreStats {
            stored: s.stored.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            batches: s.batches.load(Ordering::Relaxed),
            pruned: s.pruned.load(Ordering::Relaxed),
            queued: s.queued.load(Ordering::Relaxed),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    path: PathBuf,
    shared: Arc<Shared>,
    retention: Retention,
    max_batch: usize,
    /// Rooms that may hold more than `max_per_room` messages.
    dirty: HashSet<String>,
    /// The last retention pass stopped at its limit: run again soon.
    backlog: bool,
    next_prune: Instant,
}

impl Writer {
    fn run(mut self, rx: Receiver<Cmd>) {
        let mut batch = Vec::with_capacity(self.max_batch.min(1024));
        loop {
            let first = match self.prune_wait() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(wait) => rx.recv_timeout(wait),
            };
            match first {
                Ok(cmd) => {
                    let mut next = Some(cmd);
                    while let Some(cmd) = next.take() {
                        match cmd {
                            Cmd::Append(append) => batch.push(append),
                            #[cfg(test)]
                            Cmd::Pause { paused, release } => {
                                if !batch.is_empty() {
                                    self.write(&mut batch);
                                }
                                let _ = paused.send(());
                                let _ = release.recv();
                            }
                        }
                        if batch.len() < self.max_batch {
                            next = rx.try_recv().ok();
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Every queued command has been received by now.
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !batch.is_empty() {
                self.write(&mut batch);
            }
            if self.prune_wait() == Some(Duration::ZERO) {
                self.prune();
            }
        }
        // Leave one tidy file behind on a clean shutdown.
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        {
            warn!(path = %self.path.display(), error = %e, "final checkpoint of the message store failed");
        }
        debug!(path = %self.path.display(), "message store closed");
    }

    /// How long until retention is due; `None` when it has nothing to do.
    fn prune_wait(&self) -> Option<Duration> {
        if self.retention.max_age.is_none() && self.dirty.is_empty() {
            return None;
        }
        if self.backlog {
            return Some(Duration::ZERO);
        }
        Some(self.next_prune.saturating_duration_since(Instant::now()))
    }

    /// Commits one batch and completes its receipts.
    fn write(&mut self, batch: &mut Vec<Append>) {
        let outcome = insert_batch(&mut self.conn, batch);
        let shared = &*self.shared;
        // The batch is committed (or not) before the numbering it carried is
        // handed over from the in-flight map to the database.
        shared.remove_inflight(batch.iter().map(|a| (a.msg.room.as_str(), a.msg.seq)));
        let bytes: usize = batch.iter().map(|a| a.size).sum();
        shared.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        shared
            .queued
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        let results = match outcome {
            Ok(results) => {
                shared.batches.fetch_add(1, Ordering::Relaxed);
                results
            }
            Err(e) => {
                error!(
                    path = %self.path.display(),
                    error = %e,
                    messages = batch.len(),
                    "writing to the message store failed"
                );
                let error = StoreError::Write {
                    path: self.path.clone(),
                    error: Arc::new(e),
                };
                vec![Err(error); batch.len()]
            }
        };
        for (append, result) in batch.drain(..).zip(results) {
            if result.is_ok() {
                shared.stored.fetch_add(1, Ordering::Relaxed);
                if self.retention.max_per_room.is_some() && !self.dirty.contains(&append.msg.room) {
                    self.dirty.insert(append.msg.room);
                }
            } else {
                shared.failed.fetch_add(1, Ordering::Relaxed);
            }
            // The appender may have stopped waiting; that is fine.
            let _ = append.done.send(result);
        }
    }

    /// One bounded retention pass in its own transaction. Deletions need not
    /// be durable at once (a lost one is redone), so it commits without the
    /// `fsync` of `synchronous=FULL`; the next batch's commit covers it.
    fn prune(&mut self) {
        let now = Instant::now();
        let result = self
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .and_then(|()| prune_pass(&mut self.conn, &self.retention, &mut self.dirty, now_ms()));
        if let Err(e) = self.conn.pragma_update(None, "synchronous", "FULL") {
            // Without FULL, acknowledged appends would not be durable: stop
            // acknowledging them by failing the writer loudly.
            panic!(
                "cannot restore synchronous=FULL on the message store {}: {e}",
                self.path.display()
            );
        }
        match result {
            Ok((deleted, more)) => {
                self.shared
                    .pruned
                    .fetch_add(deleted as u64, Ordering::Relaxed);
                self.backlog = more;
                if deleted > 0 {
                    debug!(deleted, more, "retention pass");
                }
            }
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "retention pass on the message store failed");
                self.backlog = false;
            }
        }
        self.next_prune = now + PRUNE_INTERVAL;
    }
}

/// Inserts a batch in one transaction. Returns each append's own outcome (a
/// duplicate fails alone); an error fails the whole batch.
fn insert_batch(
    conn: &mut Connection,
    batch: &[Append],
) -> rusqlite::Result<Vec<Result<(), StoreError>>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut results = Vec::with_capacity(batch.len());
    {
        let mut rooms: HashMap<&str, (&str, u64)> = HashMap::new();
        let mut insert = tx.prepare_cached(INSERT_MESSAGE)?;
        for Append { msg: m, .. } in batch {
            let inserted = insert.execute(params![
                m.room,
                to_i64(m.seq),
                to_i64(m.ts_ms),
                m.nick,
                m.text,
                m.action,
                m.room_name,
            ]);
            match inserted {
                Ok(_) => {
                    let room = rooms.entry(&m.room).or_insert((&m.room_name, 0));
                    *room = (&m.room_name, room.1.max(m.seq));
                    results.push(Ok(()));
                }
                Err(e) if is_duplicate(&e) => results.push(Err(StoreError::Duplicate {
                    room: m.room.clone(),
                    seq: m.seq,
                })),
                Err(e) => return Err(e),
            }
        }
        let mut upsert = tx.prepare_cached(UPSERT_ROOM)?;
        for (room, (name, last_seq)) in rooms {
            upsert.execute(params![room, name, to_i64(last_seq)])?;
        }
    }
    tx.commit()?;
    Ok(results)
}

/// Deletes up to [`PRUNE_CHUNK`] expired rows. Returns how many, and whether
/// there may be more.
fn prune_pass(
    conn: &mut Connection,
    retention: &Retention,
    dirty: &mut HashSet<String>,
    now_ms: u64,
) -> rusqlite::Result<(usize, bool)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut budget = PRUNE_CHUNK;
    let mut more = false;
    if let Some(cutoff) = retention.age_cutoff(now_ms) {
        let deleted = tx
            .prepare_cached(PRUNE_BY_AGE)?
            .execute(params![to_i64(cutoff), budget as i64])?;
        budget -= deleted;
        more |= budget == 0;
    }
    if retention.max_per_room.is_some() {
        let rooms: Vec<String> = dirty.iter().take(PRUNE_ROOMS).cloned().collect();
        more |= dirty.len() > rooms.len();
        let mut last = tx.prepare_cached(SELECT_LAST_SEQ)?;
        let mut delete = tx.prepare_cached(PRUNE_BY_SEQ)?;
        for room in rooms {
            if budget == 0 {
                more = true;
                break;
            }
            let last_seq: Option<i64> = last.query_row([&room], |r| r.get(0)).optional()?;
            let cutoff = retention
                .seq_cutoff(last_seq.map_or(0, to_u64))
                .unwrap_or(0);
            let deleted = if cutoff > 0 {
                delete.execute(params![room, to_i64(cutoff), budget as i64])?
            } else {
                0
            };
            if deleted == budget {
                more = true;
            } else {
                dirty.remove(&room);
            }
            budget -= deleted;
        }
    }
    tx.commit()?;
    Ok((PRUNE_CHUNK - budget, more))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{eventually, msg};
    use super::super::{open_sqlite, open_sqlite_with};
    use super::*;

    fn db(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("h.sqlite3")
    }

    fn all_seqs(store: &dyn Store, room: &str) -> Vec<u64> {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = store.page(room, before, MAX_PAGE).unwrap();
            let Some(first) = page.first() else {
                return all;
            };
            before = Some(first.seq);
            all.splice(0..0, page.iter().map(|m| m.seq));
        }
    }

    #[test]
    fn persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a").join("b").join("history.sqlite3");
        let store = open_sqlite(&path, Retention::KEEP_ALL).unwrap();
        for seq in 1..=3 {
            store
                .append(msg("Dev", seq, 1000 + seq, "hi"))
                .wait()
                .unwrap();
        }
        store.append(msg("ops", 9, 1, "x")).wait().unwrap();
        drop(store);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let mode = std::fs::metadata(path.parent().unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700);
        }

        let store = open_sqlite(&path, Retention::KEEP_ALL).unwrap();
        assert_eq!(store.last_seq("dev").unwrap(), 3);
        assert_eq!(store.last_seq("ops").unwrap(), 9);
        let page = store.page("dev", None, 10).unwrap();
        assert_eq!(page.len(), 3);
        assert_eq!(page[2], msg("Dev", 3, 1003, "hi"));
        store.append(msg("dev", 4, 0, "again")).wait().unwrap();
        assert_eq!(store.last_seq("dev").unwrap(), 4);

        let raw = Connection::open(&path).unwrap();
        let mode: String = raw
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let version: i64 = raw
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn drop_flushes_pending_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&db(&dir), Retention::KEEP_ALL).unwrap();
        let receipts: Vec<Receipt> = (1..=3000)
            .map(|seq| store.append(msg("r", seq, seq, "m")))
            .collect();
        drop(store);
        for r in receipts {
            r.wait().unwrap();
        }
        let store = open_sqlite(&db(&dir), Retention::KEEP_ALL).unwrap();
        assert_eq!(store.last_seq("r").unwrap(), 3000);
        assert_eq!(all_seqs(&*store, "r"), (1..=3000).collect::<Vec<_>>());
    }

    const CRASH_CHILD: &str = "RCHAT_STORE_CRASH_CHILD";

    /// Not a test on its own: the body of the child process that
    /// `reopens_after_crash_mid_stream` kills mid-stream.
    #[test]
    fn crash_child() {
        let Some(path) = std::env::var_os(CRASH_CHILD) else {
            return;
        };
        let store = open_sqlite(Path::new(&path), Retention::KEEP_ALL).unwrap();
        let durable: Vec<Receipt> = (1..=200)
            .map(|seq| store.append(msg("crash", seq, seq, "durable")))
            .collect();
        for r in durable {
            r.wait().unwrap();
        }
        for seq in 201..=20_000 {
            drop(store.append(msg("crash", seq, seq, "in flight")));
        }
        std::process::abort();
    }

    #[test]
    fn reopens_after_crash_mid_stream() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::sqlite::tests::crash_child",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(CRASH_CHILD, &path)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the child should have aborted: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 0,
            "no WAL left behind"
        );

        let store = open_sqlite(&path, Retention::KEEP_ALL).unwrap();
        let last = store.last_seq("crash").unwrap();
        assert!((200..=20_000).contains(&last), "last seq {last}");
        // Batches commit in order, so what survived is a prefix.
        assert_eq!(all_seqs(&*store, "crash"), (1..=last).collect::<Vec<_>>());
        store
            .append(msg("crash", last + 1, 0, "after"))
            .wait()
            .unwrap();
    }

    #[test]
    fn group_commit_writes_queued_appends_in_one_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&db(&dir), Retention::KEEP_ALL).unwrap();
        let release = store.pause_writer();
        let receipts: Vec<Receipt> = (1..=500)
            .map(|seq| store.append(msg("g", seq, seq, "m")))
            .collect();
        assert_eq!(store.stats().queued, 500);
        // Queued appends count for numbering before they are durable.
        assert_eq!(store.last_seq("g").unwrap(), 500);
        // And reads see them: a page never misses an accepted append.
        assert_eq!(all_seqs(&*store, "g"), (1..=500).collect::<Vec<_>>());
        assert_eq!(
            store
                .page("g", Some(7), 3)
                .unwrap()
                .iter()
                .map(|m| m.seq)
                .collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        drop(release);
        for r in receipts {
            r.wait().unwrap();
        }
        let stats = store.stats();
        assert_eq!((stats.batches, stats.stored, stats.queued), (1, 500, 0));
        assert_eq!(store.last_seq("g").unwrap(), 500);
    }

    #[test]
    fn pages_merge_committed_and_queued_messages_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&db(&dir), Retention::KEEP_ALL).unwrap();
        for seq in 1..=5 {
            store.append(msg("m", seq, seq, "stored")).wait().unwrap();
        }
        let release = store.pause_writer();
        let receipts: Vec<Receipt> = (6..=9)
            .map(|seq| store.append(msg("m", seq, seq, "queued")))
            .collect();
        let page = store.page("m", None, 6).unwrap();
        assert_eq!(
            page.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![4, 5, 6, 7, 8, 9]
        );
        assert_eq!(page[1].text, "stored");
        assert_eq!(page[2].text, "queued");
        drop(release);
        for r in receipts {
            r.wait().unwrap();
        }
        assert_eq!(all_seqs(&*store, "m"), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn max_batch_splits_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            max_batch: 100,
            ..SqliteOptions::default()
        };
        let store = open_sqlite_with(&db(&dir), options).unwrap();
        let release = store.pause_writer();
        let receipts: Vec<Receipt> = (1..=450)
            .map(|seq| store.append(msg("g", seq, seq, "m")))
            .collect();
        drop(release);
        for r in receipts {
            r.wait().unwrap();
        }
        assert_eq!(store.stats().batches, 5);
    }

    #[test]
    fn full_queue_overloads_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            queue_len: 4,
            ..SqliteOptions::default()
        };
        let store = open_sqlite_with(&db(&dir), options).unwrap();
        let release = store.pause_writer();
        let receipts: Vec<Receipt> = (1..=6)
            .map(|seq| store.append(msg("o", seq, seq, "m")))
            .collect();
        // The refused ones do not count for numbering.
        assert_eq!(store.last_seq("o").unwrap(), 4);
        drop(release);
        let results: Vec<_> = receipts.into_iter().map(Receipt::wait).collect();
        assert!(results[..4].iter().all(Result::is_ok));
        for r in &results[4..] {
            let err = r.as_ref().unwrap_err();
            assert!(matches!(err, StoreError::Overloaded { queued: 4 }), "{err}");
        }
        assert_eq!(store.stats().failed, 2);

        // The byte limit too; one message always fits in an empty queue.
        let options = SqliteOptions {
            queue_bytes: 1000,
            ..SqliteOptions::default()
        };
        let store = open_sqlite_with(&dir.path().join("b.sqlite3"), options).unwrap();
        let release = store.pause_writer();
        let big = "x".repeat(2000);
        let first = store.append(msg("o", 1, 1, &big));
        let second = store.append(msg("o", 2, 2, "small"));
        drop(release);
        first.wait().unwrap();
        assert!(matches!(second.wait(), Err(StoreError::Overloaded { .. })));
    }

    #[test]
    fn reads_do_not_wait_for_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&db(&dir), Retention::KEEP_ALL).unwrap();
        store.append(msg("r", 1, 1, "m")).wait().unwrap();
        // Another connection holds the write lock with uncommitted rows.
        let mut raw = Connection::open(db(&dir)).unwrap();
        let tx = raw
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        tx.execute(INSERT_MESSAGE, params!["r", 2, 2, "x", "x", false, "r"])
            .unwrap();
        let started = Instant::now();
        assert_eq!(all_seqs(&*store, "r"), vec![1]);
        assert_eq!(store.last_seq("r").unwrap(), 1);
        assert!(started.elapsed() < BUSY_TIMEOUT / 2);
        tx.rollback().unwrap();
    }

    #[tokio::test]
    async fn retention_applies_after_reopen_with_a_lower_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_sqlite(&db(&dir), Retention::KEEP_ALL).unwrap();
        let receipts: Vec<Receipt> = (1..=100)
            .map(|seq| store.append(msg("r", seq, seq, "m")))
            .collect();
        for r in receipts {
            r.await.unwrap();
        }
        drop(store);
        let limit = Retention {
            max_per_room: Some(10),
            max_age: None,
        };
        let store = open_sqlite(&db(&dir), limit).unwrap();
        eventually("retention after reopen", || {
            store.page("r", None, MAX_PAGE).unwrap().len() == 10
        })
        .await;
        assert_eq!(store.page("r", None, 1).unwrap()[0].seq, 100);
        assert_eq!(store.last_seq("r").unwrap(), 100);
    }

    #[test]
    fn refuses_unknown_schema_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = db(&dir);
        open_sqlite(&path, Retention::KEEP_ALL).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = open_sqlite(&path, Retention::KEEP_ALL).unwrap_err();
        assert!(
            matches!(err, StoreError::UnknownSchema { found: 99, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("version 99"), "{text}");
    }

    #[test]
    fn refuses_foreign_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let foreign = dir.path().join("foreign.db");
        Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = open_sqlite(&foreign, Retention::KEEP_ALL).unwrap_err();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        assert!(err.to_string().contains("foreign.db"));

        let garbage = dir.path().join("garbage.db");
        std::fs::write(&garbage, "this is not a database\n".repeat(100)).unwrap();
        let err = open_sqlite(&garbage, Retention::KEEP_ALL).unwrap_err();
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert!(err.to_string().contains("garbage.db"), "{err}");

        let blocked = dir.path().join("file");
        std::fs::write(&blocked, "").unwrap();
        let err = open_sqlite(&blocked.join("h.sqlite3"), Retention::KEEP_ALL).unwrap_err();
        assert!(matches!(err, StoreError::CreateDir { .. }), "{err}");
        assert!(err.to_string().contains("file"), "{err}");
    }
}
