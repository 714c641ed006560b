//! Durable message history: every room message (and `/me` action) with its
//! room, sequence number, server time, sender and text.
//!
//! Private messages are not stored.
//!
//! There are two stores behind one [`Store`] trait:
//!
//! - [`SqliteStore`] ([`open_sqlite`]): one SQLite file in WAL mode. Appends
//!   are queued to a dedicated writer thread that commits everything queued,
//!   up to a batch limit, in one transaction with `synchronous=FULL` (group
//!   commit), so one `fsync` makes a whole batch durable. Reads use their own
//!   connections and do not wait for the writer.
//! - [`MemoryStore`] ([`memory`]): the same behaviour in memory, gone when the
//!   process exits.
//!
//! "No history" is not a store: callers hold an `Option<Arc<dyn Store>>` and
//! use `None`.
//!
//! Sequence numbers are per room and chosen by the caller (the hub). The store
//! rejects a sequence number it already holds for the room
//! ([`StoreError::Duplicate`]) and remembers each room's highest one even after
//! retention has deleted the messages, so [`Store::last_seq`] is what numbering
//! continues from after a restart.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::event::Event;
use crate::names::{Nick, RoomName};

mod memory;
pub mod redis;
mod sqlite;

pub use memory::{MemoryStore, DEFAULT_MEMORY_BUDGET};
pub use sqlite::{SqliteOptions, SqliteStore};

/// File name of the history database inside the data directory.
pub const DEFAULT_DB_FILE: &str = "history.sqlite3";

/// Most messages one [`Store::page`] call returns; larger limits are clamped.
pub const MAX_PAGE: usize = crate::proto::MAX_HISTORY_PAGE;

/// One stored room message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room's key: its case-folded name, as [`RoomName::key`] gives it.
    pub room: String,
    /// The room's name as the server spells it, for display.
    pub room_name: String,
    /// Position in the room's order, starting at 1.
    pub seq: u64,
    /// Server time, milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub nick: String,
    pub text: String,
    /// A `/me` action rather than a plain line.
    pub action: bool,
}

impl StoredMessage {
    /// The stored form of a room message; `None` for every other event.
    pub fn from_event(event: &Event) -> Option<StoredMessage> {
        match event {
            Event::Message {
                room,
                seq,
                ts_ms,
                from,
                text,
                action,
            } => Some(StoredMessage {
                room: room.key(),
                room_name: room.as_str().to_string(),
                seq: *seq,
                ts_ms: *ts_ms,
                nick: from.as_str().to_string(),
                text: text.to_string(),
                action: *action,
            }),
            _ => None,
        }
    }

    /// The message as an [`Event::Message`] for replay. `None` if the stored
    /// room or nick is not a valid name (any more).
    pub fn to_event(&self) -> Option<Event> {
        Some(Event::Message {
            room: RoomName::parse(&self.room_name).ok()?,
            seq: self.seq,
            ts_ms: self.ts_ms,
            from: Nick::parse(&self.nick).ok()?,
            text: self.text.as_str().into(),
            action: self.action,
        })
    }

    /// Rough bytes held while the message waits in a queue.
    fn approx_size(&self) -> usize {
        64 + self.room.len() + self.room_name.len() + self.nick.len() + self.text.len()
    }
}

/// What to delete, and when. Both limits may apply at once; `None` keeps
/// everything for that criterion. The default keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep a room's messages whose seq is among its last `n` sequence
    /// numbers: a message is deleted once `seq <= last_seq - n`.
    pub max_per_room: Option<u64>,
    /// Delete messages whose server timestamp is older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Keeps everything.
    pub const KEEP_ALL: Retention = Retention {
        max_per_room: None,
        max_age: None,
    };

    fn is_active(&self) -> bool {
        self.max_per_room.is_some() || self.max_age.is_some()
    }

    /// Messages with `ts_ms` below this are expired at time `now_ms`.
    fn age_cutoff(&self, now_ms: u64) -> Option<u64> {
        self.max_age.map(|age| {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            now_ms.saturating_sub(age_ms)
        })
    }

    /// Messages with `seq` at or below this are expired in a room whose last
    /// seq is `last_seq`.
    fn seq_cutoff(&self, last_seq: u64) -> Option<u64> {
        self.max_per_room.map(|n| last_seq.saturating_sub(n))
    }
}

/// Counters, for logs, metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Messages durably stored.
    pub stored: u64,
    /// Appends that failed (duplicate, write error, overload, closed).
    pub failed: u64,
    /// Write transactions committed for appends (group commits). With
    /// concurrency this is far below `stored`.
    pub batches: u64,
    /// Messages deleted by retention.
    pub pruned: u64,
    /// Appends queued but not yet written.
    pub queued: u64,
}

/// Why the store could not do something. The messages are meant for an
/// operator's log and name the file concerned.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {}: {error}", path.display())]
    CreateDir {
        path: PathBuf,
        error: Arc<std::io::Error>,
    },
    #[error("cannot open the message store {}: {error}", path.display())]
    Open {
        path: PathBuf,
        error: Arc<rusqlite::Error>,
    },
    #[error(
        "the message store {} has schema version {found}, but this rchat knows only versions up \
         to {supported}; run a newer rchat, or point the store at another file",
        path.display()
    )]
    UnknownSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "{} is an SQLite database but not an rchat message store; point the store at another file",
        path.display()
    )]
    NotAStore { path: PathBuf },
    #[error("writing to the message store {} failed: {error}", path.display())]
    Write {
        path: PathBuf,
        error: Arc<rusqlite::Error>,
    },
    #[error("reading the message store {} failed: {error}", path.display())]
    Read {
        path: PathBuf,
        error: Arc<rusqlite::Error>,
    },
    #[error(
        "message {seq} of room {room} is already stored; is another rchat server using the same \
         message store?"
    )]
    Duplicate { room: String, seq: u64 },
    #[error(
        "the message store is overloaded ({queued} messages waiting to be written); the message \
         was not stored"
    )]
    Overloaded { queued: u64 },
    #[error("cannot start the message store's writer thread: {error}")]
    Thread { error: Arc<std::io::Error> },
    #[error("the message store is closed")]
    Closed,
    #[error("the cluster's Redis at {url} failed: {error}")]
    Redis { url: String, error: String },
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Completes once an appended message is durable, or has failed.
///
/// Await it (it is a [`Future`], `Unpin`, and cancel-safe: dropping it does
/// not cancel the write), or call [`Receipt::wait`] outside async code.
#[must_use = "a receipt tells whether the message was stored"]
pub struct Receipt {
    state: ReceiptState,
}

enum ReceiptState {
    Ready(Option<Result<(), StoreError>>),
    Pending(oneshot::Receiver<Result<(), StoreError>>),
}

impl Receipt {
    /// A receipt that is already complete.
    pub fn ready(result: Result<(), StoreError>) -> Receipt {
        Receipt {
            state: ReceiptState::Ready(Some(result)),
        }
    }

    /// A pending receipt and the sender that completes it.
    fn pending() -> (oneshot::Sender<Result<(), StoreError>>, Receipt) {
        let (tx, rx) = oneshot::channel();
        let receipt = Receipt {
            state: ReceiptState::Pending(rx),
        };
        (tx, receipt)
    }

    /// Blocks the thread until the outcome is known. Panics if called from
    /// within an async runtime; await the receipt there instead.
    pub fn wait(self) -> Result<(), StoreError> {
        match self.state {
            ReceiptState::Ready(result) => result.unwrap_or(Err(StoreError::Closed)),
            ReceiptState::Pending(rx) => rx.blocking_recv().unwrap_or(Err(StoreError::Closed)),
        }
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.state {
            ReceiptState::Ready(r) => f.debug_tuple("Receipt::Ready").field(r).finish(),
            ReceiptState::Pending(_) => f.write_str("Receipt::Pending"),
        }
    }
}

impl Future for Receipt {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            ReceiptState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or(Err(StoreError::Closed)))
            }
            // The writer dropping the sender without an answer means it died.
            ReceiptState::Pending(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(StoreError::Closed))),
        }
    }
}

/// Durable (or in-memory) room history.
pub trait Store: Send + Sync + 'static {
    /// Queues a message without blocking. The receipt completes once the
    /// message is durable, or with the reason it is not.
    ///
    /// When the queue is full (by count or by bytes) the receipt is already
    /// failed with [`StoreError::Overloaded`]: the caller is never blocked.
    /// Call it in sequence order per room (the hub holds its lock anyway);
    /// the store does accept a room's messages out of order, but a seq it
    /// already holds fails with [`StoreError::Duplicate`].
    fn append(&self, msg: StoredMessage) -> Receipt;

    /// The highest seq ever appended to a room (0 if none), including
    /// messages still queued and messages retention has deleted. A new room
    /// object in the hub continues numbering from here.
    fn last_seq(&self, room_key: &str) -> Result<u64, StoreError>;

    /// The newest `limit` (at most [`MAX_PAGE`]) stored messages of a room with
    /// `seq < before` (all of them when `before` is `None`), oldest first.
    /// Messages still queued for writing are included, so a room recreated
    /// right after its last message was posted replays that message too;
    /// an append that then fails to be written disappears from later pages.
    fn page(
        &self,
        room_key: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Writes everything queued, stops the writer and waits for it. Later
    /// appends fail with [`StoreError::Closed`]; reads keep working.
    /// Idempotent; dropping the last handle does the same.
    fn close(&self);

    fn stats(&self) -> StoreStats;

    /// The bans kept, for a server starting up. A store that keeps none
    /// (memory) has none: bans then live only as long as the server.
    fn load_bans(&self) -> Result<Vec<BanRecord>, StoreError> {
        Ok(Vec::new())
    }

    /// Keeps a ban (replacing one on the same target) across restarts.
    fn save_ban(&self, _ban: &BanRecord) -> Result<(), StoreError> {
        Ok(())
    }

    /// Forgets the ban on `target`.
    fn delete_ban(&self, _target: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// What a room that comes back to life needs, blocking: where its
    /// numbering goes on, and its newest `replay` messages. A store that
    /// others append to meanwhile (a cluster's) reads both at once.
    fn read_log(&self, room_key: &str, replay: usize) -> Result<RoomLog, StoreError> {
        RoomLog::read_in_two(self, room_key, replay)
    }

    /// What a room that comes back to life needs from the store, for
    /// callers on the async runtime. A networked backend answers this
    /// natively; the default runs the blocking reads on tokio's blocking
    /// pool, so no async thread waits on the disk.
    fn room_log(
        self: Arc<Self>,
        room_key: String,
        replay: usize,
    ) -> BoxFuture<'static, Result<RoomLog, StoreError>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || RoomLog::read(&*self, &room_key, replay))
                .await
                .unwrap_or(Err(StoreError::Closed))
        })
    }

    /// [`Store::page`] for callers on the async runtime; the default runs
    /// it on tokio's blocking pool.
    fn page_async(
        self: Arc<Self>,
        room_key: String,
        before: Option<u64>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<StoredMessage>, StoreError>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || self.page(&room_key, before, limit))
                .await
                .unwrap_or(Err(StoreError::Closed))
        })
    }
}

/// A ban as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BanRecord {
    /// An address or a CIDR block, as `/bans` shows it.
    pub target: String,
    pub reason: Option<String>,
    /// When it ends, in milliseconds since the Unix epoch; `None`: never.
    pub until_ms: Option<u64>,
    /// The operator who set it.
    pub by: String,
    pub since_ms: u64,
}

/// A future a [`Store`] answers with.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A room's place in the store: where its numbering goes on, and its newest
/// messages (oldest first) for the replay a joiner gets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomLog {
    pub last_seq: u64,
    pub recent: Vec<StoredMessage>,
}

impl RoomLog {
    /// Reads a room's log with the blocking calls, the newest `replay`
    /// messages with it (none for 0).
    pub fn read<S: Store + ?Sized>(
        store: &S,
        room_key: &str,
        replay: usize,
    ) -> Result<RoomLog, StoreError> {
        store.read_log(room_key, replay)
    }

    /// [`Store::read_log`]'s default: two reads, consistent for a store
    /// only this server appends to (the hub does not append to a room
    /// while it reads it).
    pub fn read_in_two<S: Store + ?Sized>(
        store: &S,
        room_key: &str,
        replay: usize,
    ) -> Result<RoomLog, StoreError> {
        let last_seq = store.last_seq(room_key)?;
        let recent = if replay > 0 {
            store.page(room_key, None, replay)?
        } else {
            Vec::new()
        };
        Ok(RoomLog { last_seq, recent })
    }
}

/// Opens (creating the directory and file if missing) an SQLite store with
/// the default queue and batch sizes.
pub fn open_sqlite(path: &Path, retention: Retention) -> Result<Arc<SqliteStore>, StoreError> {
    SqliteStore::open(
        path,
        SqliteOptions {
            retention,
            ..SqliteOptions::default()
        },
    )
    .map(Arc::new)
}

/// Opens an SQLite store with explicit options.
pub fn open_sqlite_with(
    path: &Path,
    options: SqliteOptions,
) -> Result<Arc<SqliteStore>, StoreError> {
    SqliteStore::open(path, options).map(Arc::new)
}

/// A store that lives in memory only, within [`memory::DEFAULT_MEMORY_BUDGET`]
/// bytes: past that, the oldest messages server-wide are forgotten first.
pub fn memory(retention: Retention) -> Arc<MemoryStore> {
    memory_within(retention, memory::DEFAULT_MEMORY_BUDGET)
}

/// A memory store with its own byte budget.
pub fn memory_within(retention: Retention, budget: usize) -> Arc<MemoryStore> {
    Arc::new(MemoryStore::new(retention, budget))
}

/// The platform's data directory for rchat (`~/.local/share/rchat` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("rchat"))
}

/// The default database file: [`DEFAULT_DB_FILE`] in [`default_data_dir`].
pub fn default_db_path() -> Option<PathBuf> {
    default_data_dir().map(|d| d.join(DEFAULT_DB_FILE))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    pub(crate) fn msg(room: &str, seq: u64, ts_ms: u64, text: &str) -> StoredMessage {
        StoredMessage {
            room: room.to_ascii_lowercase(),
            room_name: room.to_string(),
            seq,
            ts_ms,
            nick: "alice".to_string(),
            text: text.to_string(),
            action: seq.is_multiple_of(7),
        }
    }

    fn seqs(page: &[StoredMessage]) -> Vec<u64> {
        page.iter().map(|m| m.seq).collect()
    }

    /// Polls `cond` until it holds or a generous deadline passes.
    pub(crate) async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Behaviour every store shares.
    async fn suite_append_and_page(store: Arc<dyn Store>) {
        assert_eq!(store.last_seq("dev").unwrap(), 0);
        assert!(store.page("dev", None, 10).unwrap().is_empty());

        let now = now_ms();
        let receipts: Vec<Receipt> = (1..=25)
            .map(|seq| store.append(msg("Dev", seq, now + seq, &format!("line {seq}"))))
            .collect();
        for r in receipts {
            r.await.unwrap();
        }
        store.append(msg("other", 1, now, "x")).await.unwrap();

        assert_eq!(store.last_seq("dev").unwrap(), 25);
        assert_eq!(store.last_seq("other").unwrap(), 1);
        assert_eq!(store.last_seq("nothing").unwrap(), 0);

        // Newest first selection, returned oldest first.
        let newest = store.page("dev", None, 10).unwrap();
        assert_eq!(seqs(&newest), (16..=25).collect::<Vec<_>>());
        let m = &newest[0];
        assert_eq!(m.room, "dev");
        assert_eq!(m.room_name, "Dev");
        assert_eq!(m.text, "line 16");
        assert_eq!(m.ts_ms, now + 16);
        assert_eq!(m.nick, "alice");
        assert!(!m.action);
        assert!(store.page("dev", Some(15), 1).unwrap()[0].action);

        // Paging backwards with `before`.
        let older = store.page("dev", Some(16), 10).unwrap();
        assert_eq!(seqs(&older), (6..=15).collect::<Vec<_>>());
        let oldest = store.page("dev", Some(6), 10).unwrap();
        assert_eq!(seqs(&oldest), (1..=5).collect::<Vec<_>>());
        assert!(store.page("dev", Some(1), 10).unwrap().is_empty());
        assert!(store.page("dev", None, 0).unwrap().is_empty());
        assert_eq!(store.page("dev", Some(1000), 3).unwrap().len(), 3);
        assert_eq!(seqs(&store.page("dev", None, 100).unwrap()).len(), 25);
        // Rooms do not mix.
        assert_eq!(seqs(&store.page("other", None, 100).unwrap()), vec![1]);

        // A seq already stored is refused; the rest of the batch is not hurt.
        let dup = store.append(msg("dev", 7, now, "again"));
        let fine = store.append(msg("dev", 26, now, "new"));
        assert!(matches!(
            dup.await,
            Err(StoreError::Duplicate { seq: 7, .. })
        ));
        fine.await.unwrap();
        assert_eq!(store.page("dev", Some(8), 1).unwrap()[0].text, "line 7");

        // Out of order but new is accepted and paged in seq order.
        store.append(msg("gaps", 5, now, "5")).await.unwrap();
        store.append(msg("gaps", 3, now, "3")).await.unwrap();
        assert_eq!(seqs(&store.page("gaps", None, 10).unwrap()), vec![3, 5]);
        assert_eq!(store.last_seq("gaps").unwrap(), 5);

        let stats = store.stats();
        assert_eq!(stats.stored, 29);
        assert_eq!(stats.failed, 1);

        store.close();
        assert!(matches!(
            store.append(msg("dev", 100, now, "late")).await,
            Err(StoreError::Closed)
        ));
        // Reads still work after close.
        assert_eq!(store.last_seq("dev").unwrap(), 26);
    }

    async fn suite_retention_by_count(store: Arc<dyn Store>) {
        let now = now_ms();
        let receipts: Vec<Receipt> = (1..=2500)
            .map(|seq| store.append(msg("busy", seq, now, "m")))
            .chain((1..=5).map(|seq| store.append(msg("quiet", seq, now, "m"))))
            .collect();
        for r in receipts {
            r.await.unwrap();
        }
        eventually("count retention", || {
            store.page("busy", None, MAX_PAGE).unwrap().len() == 10
        })
        .await;
        assert_eq!(
            seqs(&store.page("busy", None, 100).unwrap()),
            (2491..=2500).collect::<Vec<_>>()
        );
        assert_eq!(store.page("quiet", None, 100).unwrap().len(), 5);
        assert_eq!(store.last_seq("busy").unwrap(), 2500);
        assert!(store.stats().pruned >= 2490);
    }

    async fn suite_retention_by_age(store: Arc<dyn Store>) {
        let now = now_ms();
        let two_hours_ago = now - 2 * 3600 * 1000;
        let receipts: Vec<Receipt> = (1..=1500)
            .map(|seq| store.append(msg("old", seq, two_hours_ago, "m")))
            .chain((1501..=1505).map(|seq| store.append(msg("old", seq, now, "m"))))
            .collect();
        for r in receipts {
            r.await.unwrap();
        }
        eventually("age retention", || {
            store.page("old", None, MAX_PAGE).unwrap().len() == 5
        })
        .await;
        assert_eq!(
            seqs(&store.page("old", None, 100).unwrap()),
            (1501..=1505).collect::<Vec<_>>()
        );
        assert_eq!(store.last_seq("old").unwrap(), 1505);
    }

    async fn suite_concurrent(store: Arc<dyn Store>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        const TASKS: u64 = 40;
        const EACH: u64 = 50;
        let shared_seq = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let store = store.clone();
            let shared_seq = shared_seq.clone();
            tasks.push(tokio::spawn(async move {
                for i in 1..=EACH {
                    let own = store.append(msg(&format!("room{t}"), i, i, "own"));
                    let seq = shared_seq.fetch_add(1, Ordering::SeqCst) + 1;
                    let shared = store.append(msg("shared", seq, seq, "shared"));
                    own.await.unwrap();
                    shared.await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for t in 0..TASKS {
            let page = store.page(&format!("room{t}"), None, MAX_PAGE).unwrap();
            assert_eq!(seqs(&page), (1..=EACH).collect::<Vec<_>>());
        }
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = store.page("shared", before, 300).unwrap();
            if page.is_empty() {
                break;
            }
            before = Some(page[0].seq);
            all.splice(0..0, seqs(&page));
        }
        assert_eq!(all, (1..=TASKS * EACH).collect::<Vec<_>>());
        assert_eq!(store.last_seq("shared").unwrap(), TASKS * EACH);
        let stats = store.stats();
        assert_eq!(stats.stored, 2 * TASKS * EACH);
        assert_eq!(stats.queued, 0);
    }

    fn sqlite_store(dir: &tempfile::TempDir, retention: Retention) -> Arc<dyn Store> {
        open_sqlite(&dir.path().join("h.sqlite3"), retention).unwrap()
    }

    fn count(n: u64) -> Retention {
        Retention {
            max_per_room: Some(n),
            max_age: None,
        }
    }

    fn hour() -> Retention {
        Retention {
            max_per_room: None,
            max_age: Some(Duration::from_secs(3600)),
        }
    }

    #[tokio::test]
    async fn memory_append_and_page() {
        suite_append_and_page(memory(Retention::KEEP_ALL)).await;
    }

    #[tokio::test]
    async fn sqlite_append_and_page() {
        let dir = tempfile::tempdir().unwrap();
        suite_append_and_page(sqlite_store(&dir, Retention::KEEP_ALL)).await;
    }

    #[tokio::test]
    async fn memory_retention_by_count() {
        suite_retention_by_count(memory(count(10))).await;
    }

    #[tokio::test]
    async fn sqlite_retention_by_count() {
        let dir = tempfile::tempdir().unwrap();
        suite_retention_by_count(sqlite_store(&dir, count(10))).await;
    }

    #[tokio::test]
    async fn memory_retention_by_age() {
        suite_retention_by_age(memory(hour())).await;
    }

    #[tokio::test]
    async fn sqlite_retention_by_age() {
        let dir = tempfile::tempdir().unwrap();
        suite_retention_by_age(sqlite_store(&dir, hour())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_concurrent_appends() {
        suite_concurrent(memory(Retention::KEEP_ALL)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite_concurrent_appends() {
        let dir = tempfile::tempdir().unwrap();
        let store = sqlite_store(&dir, Retention::KEEP_ALL);
        suite_concurrent(store.clone()).await;
        let stats = store.stats();
        assert!(
            stats.batches < stats.stored,
            "group commit did not batch: {stats:?}"
        );
    }

    #[test]
    fn event_round_trip() {
        let event = Event::Message {
            room: RoomName::parse("#Dev").unwrap(),
            seq: 4,
            ts_ms: 99,
            from: Nick::parse("Bob").unwrap(),
            text: "waves".into(),
            action: true,
        };
        let stored = StoredMessage::from_event(&event).unwrap();
        assert_eq!(stored.room, "dev");
        assert_eq!(stored.room_name, "Dev");
        assert_eq!(stored.to_event(), Some(event));
        assert!(StoredMessage::from_event(&Event::Notice("x".into())).is_none());
    }

    #[test]
    fn default_paths_end_in_rchat() {
        if let Some(path) = default_db_path() {
            assert!(path.ends_with(Path::new("rchat").join(DEFAULT_DB_FILE)));
        }
    }

    #[test]
    fn retention_cutoffs() {
        let r = Retention {
            max_per_room: Some(10),
            max_age: Some(Duration::from_secs(1)),
        };
        assert_eq!(r.seq_cutoff(25), Some(15));
        assert_eq!(r.seq_cutoff(3), Some(0));
        assert_eq!(r.age_cutoff(5000), Some(4000));
        assert_eq!(r.age_cutoff(10), Some(0));
        assert_eq!(Retention::KEEP_ALL.seq_cutoff(5), None);
        assert!(!Retention::default().is_active());
    }
}
