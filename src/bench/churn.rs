//! `--churn N`: a wave of N clients that join the room at once during the
//! measured window, stay a while, then all quit at once, to show whether
//! a burst of joins and leaves stalls delivery to everyone else.
//!
//! The wave: at its planned moment every churn client starts connecting
//! (as fast as the server takes connections); once all are in the room,
//! or the time is up, they stay for the hold time, reading and discarding
//! whatever arrives so that none is evicted; then all quit at the same
//! instant (`/quit` to rchat, a closed write side to a server without
//! greeting) and read until the server closes their connection, so every
//! socket closes cleanly. The [`ChurnOutcome`] holds when each phase began
//! and ended, so that the run can report the measured clients' latency
//! during the joins and during the leaves apart from the rest (see
//! `series`). Everything here ends by the run's hard deadline, or at once
//! when the run is cancelled.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use super::conn::Reader;
use super::extra::{Joined, Joiner};
use super::shared::Shared;

/// Bytes read at a time by a churn client.
const READ_BUF: usize = 4096;
/// Churn clients spawned but not yet in the room (or failed): a little
/// more than the connections made at once (`extra::CONNECT_CONCURRENCY`).
const SPAWN_AHEAD: usize = 512;

/// When and how the wave runs.
pub(crate) struct Churn {
    pub(crate) joiner: Joiner,
    pub(crate) clients: usize,
    /// When the wave starts connecting.
    pub(crate) at: Deadline,
    /// How long the clients stay once all are in the room.
    pub(crate) hold: std::time::Duration,
    /// Everything is over by then, finished or not.
    pub(crate) deadline: Deadline,
    pub(crate) shared: Arc<Shared>,
    /// The run's own end: close everything at once.
    pub(crate) cancel: CancellationToken,
}

/// What the wave did; times are the run's nanoseconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ChurnOutcome {
    /// Whether the wave began at all (the run may end first).
    pub(crate) started: bool,
    /// When the first client started connecting.
    pub(crate) join_from_ns: u64,
    /// When the last client was in the room (or the wait gave up).
    pub(crate) join_to_ns: u64,
    /// Clients that were in the room.
    pub(crate) joined: usize,
    /// When every client was told to quit.
    pub(crate) leave_from_ns: u64,
    /// When the last connection closed (or the wait gave up).
    pub(crate) leave_to_ns: u64,
    /// Clients whose connection the server closed after they quit.
    pub(crate) left: usize,
    /// Clients that failed to join, or whose quit was not completed.
    pub(crate) failed: usize,
    /// Why the first of them failed.
    pub(crate) first_error: Option<String>,
}

/// What one churn client reports.
enum News {
    Joined,
    Failed(String),
}

impl Churn {
    pub(crate) async fn run(self) -> ChurnOutcome {
        let mut out = ChurnOutcome::default();
        let shared = self.shared.clone();
        tokio::select! {
            _ = tokio::time::sleep_until(self.at) => {}
            _ = self.cancel.cancelled() => return out,
            _ = tokio::time::sleep_until(self.deadline) => return out,
        }
        out.started = true;
        out.join_from_ns = shared.now_ns();
        let quit = CancellationToken::new();
        // Room for every client's news: nobody waits to report, even while
        // the wave is still being spawned below.
        let (news_tx, mut news_rx) = mpsc::channel(self.clients.max(1));
        let joiner = Arc::new(self.joiner);
        let slots = Arc::new(joiner.slots());
        // Clients are spawned as earlier ones get in, not all at once: ten
        // thousand tasks made and polled in one go cost this process a
        // burst of CPU that showed as a spike in the measured clients'
        // latency, whatever the server did.
        let spawning = Arc::new(tokio::sync::Semaphore::new(SPAWN_AHEAD));
        let mut tasks = JoinSet::new();
        for _ in 0..self.clients {
            let ahead = tokio::select! {
                ahead = spawning.clone().acquire_owned() => ahead.ok(),
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(self.deadline) => break,
            };
            let member = Member {
                joiner: joiner.clone(),
                slots: slots.clone(),
                news: news_tx.clone(),
                quit: quit.clone(),
                abort: self.cancel.clone(),
                deadline: self.deadline,
            };
            tasks.spawn(member.run(ahead));
        }
        drop(news_tx);

        // Joins: until every client is in (or failed), or time is up.
        let mut heard = 0;
        while heard < self.clients {
            let news = tokio::select! {
                news = news_rx.recv() => news,
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(self.deadline) => break,
            };
            match news {
                None => break,
                Some(News::Joined) => out.joined += 1,
                Some(News::Failed(why)) => {
                    out.failed += 1;
                    out.first_error.get_or_insert(why);
                }
            }
            heard += 1;
        }
        out.join_to_ns = shared.now_ns();

        // Stay, then all quit at once.
        tokio::select! {
            _ = tokio::time::sleep(self.hold) => {}
            _ = self.cancel.cancelled() => {}
            _ = tokio::time::sleep_until(self.deadline) => {}
        }
        out.leave_from_ns = shared.now_ns();
        quit.cancel();
        while let Ok(Some(done)) = tokio::time::timeout_at(self.deadline, tasks.join_next()).await {
            match done {
                Ok(Ok(())) => out.left += 1,
                Ok(Err(Some(why))) => {
                    out.failed += 1;
                    out.first_error.get_or_insert(why);
                }
                // Failed before joining: already counted.
                Ok(Err(None)) => {}
                Err(e) => {
                    out.failed += 1;
                    out.first_error.get_or_insert(e.to_string());
                }
            }
        }
        out.leave_to_ns = shared.now_ns();
        if !tasks.is_empty() {
            out.failed += tasks.len();
            out.first_error
                .get_or_insert_with(|| "the server did not close the connection in time".into());
            tasks.abort_all();
        }
        out
    }
}

/// One churn client.
struct Member {
    joiner: Arc<Joiner>,
    slots: Arc<tokio::sync::Semaphore>,
    news: mpsc::Sender<News>,
    quit: CancellationToken,
    abort: CancellationToken,
    deadline: Deadline,
}

impl Member {
    /// Joins, stays until told to quit, quits and reads to the end. `Ok`
    /// once the server closed the connection after the quit; `Err(None)`
    /// if it never joined (already reported), `Err(Some(why))` otherwise.
    async fn run(self, ahead: Option<OwnedSemaphorePermit>) -> Result<(), Option<String>> {
        let joined = tokio::select! {
            j = self.joiner.join(&self.slots, self.deadline) => j,
            _ = self.abort.cancelled() => Err("the run ended first".to_string()),
        };
        // In or not, the next client may be spawned.
        drop(ahead);
        let Joined {
            mut reader,
            mut writer,
            ..
        } = match joined {
            Ok(j) => j,
            Err(why) => {
                let _ = self.news.send(News::Failed(why)).await;
                return Err(None);
            }
        };
        let _ = self.news.send(News::Joined).await;
        drop(self.news);
        let mut buf = vec![0u8; READ_BUF];
        // Stay, reading everything, so that the server never finds this
        // client slow.
        loop {
            let read = tokio::select! {
                biased;
                _ = self.abort.cancelled() => return Err(Some("the run ended first".into())),
                _ = self.quit.cancelled() => break,
                r = reader.read(&mut buf) => r,
            };
            match read {
                Ok(0) | Err(_) => {
                    return Err(Some(
                        "the server closed the connection during the stay".into(),
                    ))
                }
                Ok(_) => {}
            }
        }
        let quit = async {
            if self.joiner.silent {
                writer.shutdown().await
            } else {
                writer.write_all(b"/quit\n").await?;
                writer.flush().await
            }
        };
        if let Err(e) = quit.await {
            return Err(Some(format!("cannot quit: {e}")));
        }
        let until_closed = read_to_end(&mut reader, &mut buf);
        tokio::select! {
            _ = self.abort.cancelled() => Err(Some("the run ended first".into())),
            r = tokio::time::timeout_at(self.deadline, until_closed) => match r {
                Ok(()) => Ok(()),
                Err(_) => Err(Some("the server did not close the connection in time".into())),
            },
        }
    }
}

/// Reads and discards until the server closes the connection.
async fn read_to_end(reader: &mut Reader, buf: &mut [u8]) {
    while let Ok(1..) = reader.read(buf).await {}
}
