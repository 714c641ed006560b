//! A member's outbound queue: what the hub has handed over for one
//! connection but its writer has not yet put on the wire.
//!
//! It is bounded in bytes, not messages, because a slow reader is measured in
//! what it costs the server to hold. Bytes count from the moment the hub pushes
//! an item until the writer reports it written, so a writer stuck in a send
//! still counts against its limit. Pushing past the limit aborts the outbox:
//! the queue is dropped at once and the hub evicts the member. Nothing here
//! blocks the pusher, so one stalled client can never slow the hub.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::event::{Envelope, Format};

/// One item queued for a connection.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A hub event, shared with every other recipient.
    Event(Arc<Envelope>),
    /// Bytes already in this connection's wire format (replies, help text).
    Raw(Bytes),
}

impl Outgoing {
    /// What the item costs against the send-queue limit.
    pub fn cost(&self) -> usize {
        match self {
            Outgoing::Event(env) => env.event.approx_size(),
            Outgoing::Raw(b) => b.len(),
        }
    }

    /// The bytes to write, in `format`.
    pub fn bytes(&self, format: Format, encode: fn(&crate::event::Event) -> Bytes) -> Bytes {
        match self {
            Outgoing::Event(env) => env.encoded(format, encode),
            Outgoing::Raw(b) => b.clone(),
        }
    }
}

/// Result of [`Outbox::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The limit was exceeded; the outbox is now aborted.
    Overflow,
    /// The outbox was already closing or aborted; the item was dropped.
    Closed,
}

/// What the writer should do after draining a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Write the batch, then ask again.
    More,
    /// Write the batch, flush, then shut the connection down gracefully.
    Finish,
    /// Stop now without writing anything more.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Open,
    Closing,
    Aborted,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Outgoing>,
    /// Bytes queued plus bytes handed to the writer and not yet released.
    pending: usize,
    status: Status,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    wake: Notify,
    limit: usize,
    /// Cancelled when the outbox closes or aborts: the reader stops.
    ended: CancellationToken,
    /// Cancelled only on abort: the writer gives up even mid-write.
    aborted: CancellationToken,
}

impl Outbox {
    pub fn new(limit: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pending: 0,
                status: Status::Open,
            }),
            wake: Notify::new(),
            limit,
            ended: CancellationToken::new(),
            aborted: CancellationToken::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // in a way that matters more than losing the connection, so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an item without ever waiting.
    pub fn push(&self, item: Outgoing) -> Push {
        let mut st = self.lock();
        if st.status != Status::Open {
            return Push::Closed;
        }
        let cost = item.cost();
        if st.pending + cost > self.limit {
            st.status = Status::Aborted;
            st.queue = VecDeque::new();
            drop(st);
            self.fire_abort();
            return Push::Overflow;
        }
        st.pending += cost;
        let was_empty = st.queue.is_empty();
        st.queue.push_back(item);
        drop(st);
        if was_empty {
            self.wake.notify_one();
        }
        Push::Queued
    }

    /// Graceful close: what is queued is still written, then the writer
    /// shuts the connection down.
    pub fn close(&self) {
        let mut st = self.lock();
        if st.status == Status::Open {
            st.status = Status::Closing;
        }
        drop(st);
        self.ended.cancel();
        self.wake.notify_one();
    }

    /// Immediate close: drops everything queued.
    pub fn abort(&self) {
        let mut st = self.lock();
        st.status = Status::Aborted;
        st.queue = VecDeque::new();
        drop(st);
        self.fire_abort();
    }

    fn fire_abort(&self) {
        self.aborted.cancel();
        self.ended.cancel();
        self.wake.notify_one();
    }

    /// Moves everything queued into `batch`, waiting until there is
    /// something to do. Single consumer: the connection's writer.
    pub async fn drain(&self, batch: &mut Vec<Outgoing>) -> Drain {
        loop {
            {
                let mut st = self.lock();
                match st.status {
                    Status::Aborted => return Drain::Abort,
                    Status::Closing => {
                        batch.extend(st.queue.drain(..));
                        return Drain::Finish;
                    }
                    Status::Open if !st.queue.is_empty() => {
                        batch.extend(st.queue.drain(..));
                        if st.queue.capacity() > 64 {
                            // Don't keep a burst-sized queue on an idle member.
                            st.queue.shrink_to(64);
                        }
                        return Drain::More;
                    }
                    Status::Open => {}
                }
            }
            self.wake.notified().await;
        }
    }

    /// The writer reports `bytes` of cost written, freeing room in the queue.
    pub fn release(&self, cost: usize) {
        let mut st = self.lock();
        st.pending = st.pending.saturating_sub(cost);
    }

    /// Resolves once the outbox is closing or aborted.
    pub async fn ended(&self) {
        self.ended.cancelled().await
    }

    /// Resolves once the outbox is aborted.
    pub async fn aborted(&self) {
        self.aborted.cancelled().await
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.is_cancelled()
    }

    /// Bytes held for this member now (queued or being written).
    pub fn pending(&self) -> usize {
        self.lock().pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(n: usize) -> Outgoing {
        Outgoing::Raw(Bytes::from(vec![b'x'; n]))
    }

    #[tokio::test]
    async fn queues_and_drains_in_order() {
        let ob = Outbox::new(100);
        assert_eq!(ob.push(Outgoing::Raw("a".into())), Push::Queued);
        assert_eq!(ob.push(Outgoing::Raw("b".into())), Push::Queued);
        let mut batch = Vec::new();
        assert_eq!(ob.drain(&mut batch).await, Drain::More);
        let got: Vec<_> = batch
            .iter()
            .map(|o| o.bytes(Format::Text, crate::proto::text::render))
            .collect();
        assert_eq!(got, vec![Bytes::from("a"), Bytes::from("b")]);
    }

    #[tokio::test]
    async fn unreleased_bytes_count_until_written() {
        let ob = Outbox::new(10);
        assert_eq!(ob.push(raw(6)), Push::Queued);
        let mut batch = Vec::new();
        ob.drain(&mut batch).await;
        // Still being written: a further 6 bytes would exceed 10.
        assert_eq!(ob.push(raw(6)), Push::Overflow);
        assert!(ob.is_aborted());
        assert_eq!(ob.push(raw(1)), Push::Closed);
        assert_eq!(ob.drain(&mut batch).await, Drain::Abort);
    }

    #[tokio::test]
    async fn release_makes_room() {
        let ob = Outbox::new(10);
        ob.push(raw(6));
        let mut batch = Vec::new();
        ob.drain(&mut batch).await;
        ob.release(6);
        assert_eq!(ob.push(raw(6)), Push::Queued);
        assert_eq!(ob.pending(), 6);
    }

    #[tokio::test]
    async fn close_flushes_then_finishes() {
        let ob = Outbox::new(100);
        ob.push(raw(3));
        ob.close();
        assert_eq!(ob.push(raw(3)), Push::Closed);
        let mut batch = Vec::new();
        assert_eq!(ob.drain(&mut batch).await, Drain::Finish);
        assert_eq!(batch.len(), 1);
        ob.ended().await;
    }

    #[tokio::test]
    async fn drain_waits_for_a_push() {
        let ob = Outbox::new(100);
        let ob2 = ob.clone();
        let waiter = tokio::spawn(async move {
            let mut batch = Vec::new();
            let d = ob2.drain(&mut batch).await;
            (d, batch.len())
        });
        tokio::task::yield_now().await;
        ob.push(raw(1));
        assert_eq!(waiter.await.unwrap(), (Drain::More, 1));
    }
}
