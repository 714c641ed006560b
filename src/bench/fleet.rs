//! The clients of one run before the measurement starts: connecting them at
//! a pace the server can take, and, against a server that sends no
//! greeting, the roll call that proves every one of them is in the room,
//! connecting again any client that the server never took in.
//!
//! The measurement itself (senders, receivers' counts, the report) is the
//! business of [`super::run`]; the fleet only hands it the write halves and,
//! at the end, collects what each client's current connection counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use super::client::{ClientTask, Failed, Ready, RecvStats};
use super::conn::{Connector, Writer};
use super::progress::Progress;
use super::shared::{Shared, GREET_SILENT};
use super::token;
use super::{BenchError, ConnectStats};

/// Connections in progress at once against a server that greets (rchat).
/// Greetings are then awaited without limit.
const CONNECT_CONCURRENCY: usize = 256;
/// How often one client is connected in all before the run gives up on it
/// (only against servers that send no greeting, which may drop clients
/// while they are being admitted).
const MAX_ATTEMPTS: u32 = 4;
/// How long each roll-call round waits before probing again.
const ROLL_CALL_ROUND: Duration = Duration::from_millis(250);
/// Rounds a ready client may miss before it is connected again.
const RECONNECT_AFTER_ROUNDS: u64 = 4;
const POLL: Duration = Duration::from_millis(5);

/// What a client task hands back when the run ends.
type Outcome = (usize, u32, RecvStats);

pub(crate) struct Fleet {
    connector: Connector,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: JoinSet<Outcome>,
    clients: Vec<Slot>,
    ready_tx: mpsc::Sender<Result<Ready, Failed>>,
    ready_rx: mpsc::Receiver<Result<Ready, Failed>>,
    /// Connect slots for the clients spawned next.
    slots: Arc<Semaphore>,
    tcp_times: Vec<Duration>,
    ready_times: Vec<Duration>,
    greeted: usize,
    ready: usize,
    reconnects: u32,
}

/// One client as the fleet sees it.
#[derive(Default)]
struct Slot {
    generation: u32,
    attempts: u32,
    task: Option<AbortHandle>,
    writer: Option<Writer>,
    ready: bool,
    /// The roll-call round during which it became ready.
    ready_round: u64,
}

impl Fleet {
    pub(crate) fn new(
        connector: Connector,
        shared: Arc<Shared>,
        cancel: CancellationToken,
        clients: usize,
    ) -> Fleet {
        let (ready_tx, ready_rx) = mpsc::channel(clients.clamp(1, 1024));
        Fleet {
            connector,
            shared,
            cancel,
            tasks: JoinSet::new(),
            clients: (0..clients).map(|_| Slot::default()).collect(),
            ready_tx,
            ready_rx,
            slots: Arc::new(Semaphore::new(1)),
            tcp_times: Vec::with_capacity(clients),
            ready_times: Vec::with_capacity(clients),
            greeted: 0,
            ready: 0,
            reconnects: 0,
        }
    }

    /// Starts (or restarts) client `idx` on a new connection.
    fn spawn(&mut self, idx: usize) {
        let slot = &mut self.clients[idx];
        if let Some(old) = slot.task.take() {
            old.abort();
        }
        slot.writer = None;
        if slot.ready {
            slot.ready = false;
            self.ready -= 1;
        }
        slot.generation += 1;
        slot.attempts += 1;
        self.shared.probe_seen[idx].store(0, Ordering::Release);
        let generation = slot.generation;
        let task = ClientTask {
            idx,
            generation,
            connector: self.connector.for_client(idx),
            shared: self.shared.clone(),
            connect_slots: self.slots.clone(),
            ready_tx: self.ready_tx.clone(),
            cancel: self.cancel.clone(),
        };
        let handle = self
            .tasks
            .spawn(async move { (idx, generation, task.run().await) });
        self.clients[idx].task = Some(handle);
    }

    /// Takes in one client's news. A failure is fatal unless the server
    /// sends no greeting and the client may still try again.
    fn on_news(&mut self, news: Result<Ready, Failed>, round: u64) -> Result<(), BenchError> {
        match news {
            Ok(r) => {
                let slot = &mut self.clients[r.idx];
                if r.generation != slot.generation || slot.ready {
                    return Ok(());
                }
                slot.writer = Some(r.writer);
                slot.ready = true;
                slot.ready_round = round;
                self.ready += 1;
                self.tcp_times.push(r.tcp);
                self.ready_times.push(r.ready);
                self.greeted += usize::from(r.greeted);
                Ok(())
            }
            Err(f) => {
                let slot = &self.clients[f.idx];
                if f.generation != slot.generation {
                    return Ok(());
                }
                let retry = matches!(f.error, BenchError::Closed { .. })
                    && self.shared.greet_mode.load(Ordering::Relaxed) == GREET_SILENT
                    && slot.attempts < MAX_ATTEMPTS;
                if !retry {
                    return Err(f.error);
                }
                self.reconnects += 1;
                self.spawn(f.idx);
                Ok(())
            }
        }
    }

    /// Connects every client and waits until each is greeted (or, against
    /// a server that sends none, let in). The first client goes alone, to
    /// learn whether the server greets; then the rest follow, many at once
    /// if it does, one at a time if it does not.
    pub(crate) async fn connect_all(
        &mut self,
        deadline: Deadline,
        timeout: Duration,
        progress: &Progress,
    ) -> Result<(), BenchError> {
        let total = self.clients.len();
        let timed_out = |ready| BenchError::ConnectTimeout {
            ready,
            wanted: total,
            timeout,
        };
        self.spawn(0);
        let mut spawned_rest = false;
        while self.ready < total {
            if !spawned_rest && self.clients[0].ready {
                spawned_rest = true;
                let silent = self.shared.greet_mode.load(Ordering::Relaxed) == GREET_SILENT;
                let width = if silent { 1 } else { CONNECT_CONCURRENCY };
                self.slots = Arc::new(Semaphore::new(width));
                for idx in 1..total {
                    self.spawn(idx);
                }
            }
            match tokio::time::timeout_at(deadline, self.ready_rx.recv()).await {
                Err(_) | Ok(None) => return Err(timed_out(self.ready)),
                Ok(Some(news)) => self.on_news(news, 0)?,
            }
            progress.connecting(self.ready, total);
        }
        Ok(())
    }

    /// Connect statistics so far; `total` is the time since the first
    /// connect.
    pub(crate) fn connect_stats(&mut self, total: Duration) -> ConnectStats {
        let mut stats = ConnectStats::new(total, &mut self.tcp_times, &mut self.ready_times);
        stats.greeted = self.greeted;
        stats
    }

    /// Whether every client saw an rchat greeting.
    pub(crate) fn all_greeted(&self) -> bool {
        self.greeted >= self.clients.len()
    }

    /// Has clients 0 and 1 send probe lines, round after round, until every
    /// client has received a probe of the latest round: a relay passes a
    /// line on only to the clients it has admitted, so then everyone is
    /// admitted (and has read the announcements the relay sent before).
    ///
    /// Clients that missed a round nudge the server with a line of their
    /// own: when the server's accept queue overflows, Linux drops the
    /// client's final handshake ACK, and a client that only listens stays
    /// half-open for good, while any data it sends completes the handshake.
    /// Clients that miss [`RECONNECT_AFTER_ROUNDS`] rounds all the same are
    /// connected again. Returns the rounds sent, whether the roll call
    /// completed before `deadline`, and how many clients were connected
    /// again; if it did not complete, the run goes ahead and any clients
    /// still outside show up as loss.
    pub(crate) async fn roll_call(&mut self, deadline: Deadline) -> (u32, bool, u32) {
        let mut round: u64 = 0;
        let mut nudge = Vec::new();
        token::write_probe(&mut nudge, 0);
        loop {
            let now = Deadline::now();
            if now >= deadline {
                return (round as u32, false, self.reconnects);
            }
            self.take_news(round);
            if round > 0 {
                for idx in 0..self.clients.len() {
                    let missed = self.shared.probe_seen[idx].load(Ordering::Acquire) < round;
                    let slot = &mut self.clients[idx];
                    if !slot.ready || !missed {
                        continue;
                    }
                    if round - slot.ready_round >= RECONNECT_AFTER_ROUNDS
                        && slot.attempts < MAX_ATTEMPTS
                    {
                        self.reconnects += 1;
                        self.spawn(idx);
                    } else if idx >= 2 {
                        if let Some(w) = slot.writer.as_mut() {
                            // A failed write shows up as another missed round.
                            let _ = tokio::time::timeout_at(deadline, write(w, &nudge)).await;
                        }
                    }
                }
            }
            round += 1;
            let mut line = Vec::new();
            token::write_probe(&mut line, round);
            for slot in self.clients.iter_mut().take(2) {
                if let Some(w) = slot.writer.as_mut() {
                    let _ = tokio::time::timeout_at(deadline, write(w, &line)).await;
                }
            }
            let round_end = (now + ROLL_CALL_ROUND).min(deadline);
            loop {
                self.take_news(round);
                let all = self.ready == self.clients.len()
                    && self
                        .shared
                        .probe_seen
                        .iter()
                        .all(|seen| seen.load(Ordering::Acquire) >= round);
                if all {
                    return (round as u32, true, self.reconnects);
                }
                if Deadline::now() >= round_end {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Takes in whatever clients reported without waiting; failures there
    /// leave the client outside (the roll call then stays incomplete).
    fn take_news(&mut self, round: u64) {
        while let Ok(news) = self.ready_rx.try_recv() {
            let _ = self.on_news(news, round);
        }
    }

    /// The write half of client `idx`, if it is connected.
    pub(crate) fn take_writer(&mut self, idx: usize) -> Option<Writer> {
        self.clients[idx].writer.take()
    }

    pub(crate) fn put_writer(&mut self, idx: usize, writer: Writer) {
        self.clients[idx].writer = Some(writer);
    }

    /// After the receivers were told to stop: what each client's current
    /// connection counted, waiting at most `timeout`. Then every socket is
    /// closed.
    pub(crate) async fn collect(mut self, timeout: Duration) -> Vec<RecvStats> {
        let mut stats = vec![RecvStats::default(); self.clients.len()];
        let until = Instant::now() + timeout;
        let until = Deadline::from_std(until);
        while let Ok(Some(joined)) = tokio::time::timeout_at(until, self.tasks.join_next()).await {
            if let Ok((idx, generation, s)) = joined {
                if self.clients[idx].generation == generation {
                    stats[idx] = s;
                }
            }
        }
        self.tasks.abort_all();
        stats
    }
}

async fn write(w: &mut Writer, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}
