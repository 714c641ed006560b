//! `--slow N`: clients that join the room before the start and then never
//! read (or read only a trickle, `--slow-rate`), so that a server with a
//! bounded send queue must evict them while the measured clients go on.
//!
//! They are not measured: the run's deliveries, loss and latency are the
//! measured clients' alone. What is reported is whether and when the
//! server dropped each one. A slow client cannot see that itself (the end
//! of its connection sits behind everything it has not read), so the
//! evidence is the server's own `* NICK was disconnected (...)` notice as
//! a measured client reads it (see `client`); a trickling client that
//! reads through to the end of its connection also counts. Against a
//! server that sends no greeting, nicks are unknown, and only the latter
//! is seen.
//!
//! Each slow client's receive buffer is kept small, so that the bytes it
//! leaves unread pile up in the server's queue rather than in this
//! machine's kernel.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::task::JoinSet;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use super::conn::{Reader, Writer};
use super::extra::Joiner;
use super::shared::Shared;
use super::BenchError;

/// The receive buffer of a slow client, in bytes (Linux doubles it).
pub(crate) const RECV_BUFFER: u32 = 8 * 1024;
/// Most bytes a trickling client reads at once.
const READ_CHUNK: usize = 1024;

/// What one slow client saw.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SlowOutcome {
    pub(crate) bytes_read: u64,
    /// When its connection ended (a trickling client only), in the run's
    /// nanoseconds.
    pub(crate) closed_ns: Option<u64>,
}

/// The slow clients of one run, in the room.
pub(crate) struct SlowClients {
    tasks: JoinSet<(usize, SlowOutcome)>,
    count: usize,
}

impl SlowClients {
    /// Connects `count` slow clients and waits until each is in the room;
    /// then they stop reading (or trickle at `rate` bytes per second)
    /// until `cancel`. Their nicks go to `shared`, for the measured
    /// clients to recognise their evictions.
    pub(crate) async fn join(
        joiner: Joiner,
        count: usize,
        rate: Option<u64>,
        shared: Arc<Shared>,
        cancel: CancellationToken,
        deadline: Deadline,
    ) -> Result<SlowClients, BenchError> {
        let joiner = Arc::new(joiner);
        let slots = Arc::new(joiner.slots());
        let mut joining = JoinSet::new();
        for idx in 0..count {
            let (joiner, slots) = (joiner.clone(), slots.clone());
            joining.spawn(async move { (idx, joiner.join(&slots, deadline).await) });
        }
        let mut nicks = vec![None; count];
        let mut tasks = JoinSet::new();
        while let Some(joined) = joining.join_next().await {
            let Ok((idx, joined)) = joined else { continue };
            let joined = joined.map_err(|reason| BenchError::Slow {
                client: idx,
                reason,
            })?;
            nicks[idx] = joined.nick;
            let (shared, cancel) = (shared.clone(), cancel.clone());
            let (reader, writer) = (joined.reader, joined.writer);
            tasks.spawn(async move {
                let outcome = hold(reader, writer, rate, &shared, &cancel).await;
                (idx, outcome)
            });
        }
        shared.set_slow_nicks(nicks);
        Ok(SlowClients { tasks, count })
    }

    /// After `cancel`: what each saw, waiting at most `timeout`; then every
    /// socket is closed.
    pub(crate) async fn collect(mut self, timeout: Duration) -> Vec<SlowOutcome> {
        let mut out = vec![SlowOutcome::default(); self.count];
        let until = Deadline::now() + timeout;
        while let Ok(Some(joined)) = tokio::time::timeout_at(until, self.tasks.join_next()).await {
            if let Ok((idx, outcome)) = joined {
                out[idx] = outcome;
            }
        }
        self.tasks.abort_all();
        out
    }
}

/// Keeps the connection open without reading, or reading `rate` bytes per
/// second, until `cancel` or the server closes it.
async fn hold(
    mut reader: Reader,
    // Kept open: a closed write side would read as a quit.
    _writer: Writer,
    rate: Option<u64>,
    shared: &Shared,
    cancel: &CancellationToken,
) -> SlowOutcome {
    let mut outcome = SlowOutcome::default();
    let Some(rate) = rate.filter(|&r| r > 0) else {
        cancel.cancelled().await;
        return outcome;
    };
    let chunk = (rate as usize).clamp(1, READ_CHUNK);
    let mut buf = vec![0u8; chunk];
    let mut next = tokio::time::Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return outcome,
            _ = tokio::time::sleep_until(next) => {}
        }
        let began = tokio::time::Instant::now();
        let read = tokio::select! {
            biased;
            _ = cancel.cancelled() => return outcome,
            r = reader.read(&mut buf) => r,
        };
        match read {
            Ok(0) | Err(_) => {
                outcome.closed_ns = Some(shared.now_ns());
                return outcome;
            }
            Ok(n) => {
                outcome.bytes_read += n as u64;
                // No credit builds up while nothing arrives.
                next = next.max(began) + Duration::from_secs_f64(n as f64 / rate as f64);
            }
        }
    }
}
