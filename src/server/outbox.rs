//! A member's outbound queue: what the hub has handed over for one
//! connection but its writer has not yet put on the wire.
//!
//! It is bounded in bytes, not messages, because a slow reader is measured in
//! what it costs the server to hold. Bytes count from the moment the hub pushes
//! an item until the writer reports it written, so a writer stuck in a send
//! still counts against its limit. Pushing past the limit aborts the outbox:
//! the queue is dropped at once and the hub evicts the member. Nothing here
//! blocks the pusher, so one stalled client can never slow the hub.
//!
//! The writer takes the whole queue at once, leaving an empty one in its
//! place, so a burst's queue leaves with the burst instead of staying
//! allocated on an idle member.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use std::task::Poll;

use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::event::{Bundle, Envelope, Event, Format};

/// Queue entries whose storage is kept between batches: enough for steady
/// traffic, small enough (64 bytes) for every idle member to hold.
const KEEP_QUEUE: usize = 4;

/// One item queued for a connection.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A hub event, shared with every other recipient.
    Event(Arc<Envelope>),
    /// Several hub events for the same recipients, written as one.
    Bundle(Arc<Bundle>),
    /// Bytes already in this connection's wire format (replies, help text).
    Raw(Bytes),
}

impl Outgoing {
    /// What the item costs against the send-queue limit.
    pub fn cost(&self) -> usize {
        match self {
            Outgoing::Event(env) => env.approx_size(),
            Outgoing::Bundle(bundle) => bundle.approx_size(),
            Outgoing::Raw(b) => b.len(),
        }
    }

    /// The bytes to write, in `format`.
    pub fn bytes(&self, format: Format, encode: fn(&Event) -> Bytes) -> Bytes {
        Queued::from(self.clone()).wire(format, encode).clone()
    }
}

/// An [`Outgoing`] as a queue holds it: a tag and one pointer. A burst
/// (every member of a big room told of each of a thousand joins) is queued
/// for every member at once, so an entry costs 16 bytes rather than 40.
#[derive(Debug)]
pub enum Queued {
    Event(Arc<Envelope>),
    Bundle(Arc<Bundle>),
    Raw(Box<Bytes>),
}

impl From<Outgoing> for Queued {
    fn from(item: Outgoing) -> Queued {
        match item {
            Outgoing::Event(env) => Queued::Event(env),
            Outgoing::Bundle(bundle) => Queued::Bundle(bundle),
            Outgoing::Raw(bytes) => Queued::Raw(Box::new(bytes)),
        }
    }
}

impl From<Queued> for Outgoing {
    fn from(item: Queued) -> Outgoing {
        match item {
            Queued::Event(env) => Outgoing::Event(env),
            Queued::Bundle(bundle) => Outgoing::Bundle(bundle),
            Queued::Raw(bytes) => Outgoing::Raw(*bytes),
        }
    }
}

impl Queued {
    /// What the item costs against the send-queue limit.
    pub fn cost(&self) -> usize {
        match self {
            Queued::Event(env) => env.approx_size(),
            Queued::Bundle(bundle) => bundle.approx_size(),
            Queued::Raw(b) => b.len(),
        }
    }

    /// The bytes to write, in `format`, borrowed from the item.
    pub fn wire(&self, format: Format, encode: fn(&Event) -> Bytes) -> &Bytes {
        match self {
            Queued::Event(env) => env.wire(format, encode),
            Queued::Bundle(bundle) => bundle.wire(format, encode),
            Queued::Raw(b) => b,
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

/// What the writer should do after taking a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Write the batch, then ask again.
    More,
    /// Write the batch, flush, then shut the connection down gracefully.
    Finish,
    /// Stop now without writing anything more.
    Abort,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Status {
    Open = 0,
    Closing = 1,
    Aborted = 2,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Queued>,
    /// Bytes queued plus bytes handed to the writer and not yet released.
    pending: usize,
}

#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    /// Only ever moves forward, from open to closing to aborted. Written
    /// under the lock, read without it.
    status: AtomicU8,
    /// Wakes the writer: something was queued, or the status changed. A
    /// single slot for the one consumer's waker: cheaper per delivery than
    /// a `Notify`'s list of waiters (see docs/performance.md, scenario 9).
    wake: AtomicWaker,
    /// Wakes everyone waiting in [`Outbox::ended`] or [`Outbox::aborted`].
    changed: Notify,
    limit: usize,
}

impl Outbox {
    pub fn new(limit: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                pending: 0,
            }),
            status: AtomicU8::new(Status::Open as u8),
            wake: AtomicWaker::new(),
            changed: Notify::new(),
            limit,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // in a way that matters more than losing the connection, so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn status(&self) -> Status {
        match self.status.load(Ordering::Acquire) {
            0 => Status::Open,
            1 => Status::Closing,
            _ => Status::Aborted,
        }
    }

    /// Moves the status forward to `to` (never back); call with the lock
    /// held. Returns whether it changed.
    fn advance(&self, to: Status) -> bool {
        self.status.fetch_max(to as u8, Ordering::AcqRel) < to as u8
    }

    /// Queues an item without ever waiting.
    pub fn push(&self, item: Outgoing) -> Push {
        let mut st = self.lock();
        if self.status() != Status::Open {
            return Push::Closed;
        }
        let cost = item.cost();
        if st.pending + cost > self.limit {
            self.advance(Status::Aborted);
            st.queue = VecDeque::new();
            drop(st);
            self.announce();
            return Push::Overflow;
        }
        st.pending += cost;
        let was_empty = st.queue.is_empty();
        st.queue.push_back(item.into());
        drop(st);
        if was_empty {
            self.wake.wake();
        }
        Push::Queued
    }

    /// Graceful close: what is queued is still written, then the writer
    /// shuts the connection down.
    pub fn close(&self) {
        let st = self.lock();
        let changed = self.advance(Status::Closing);
        drop(st);
        if changed {
            self.announce();
        }
    }

    /// Immediate close: drops everything queued.
    pub fn abort(&self) {
        let mut st = self.lock();
        let changed = self.advance(Status::Aborted);
        st.queue = VecDeque::new();
        drop(st);
        if changed {
            self.announce();
        }
    }

    fn announce(&self) {
        self.changed.notify_waiters();
        self.wake.wake();
    }

    /// Moves everything queued into `batch`, waiting until there is
    /// something to do. Single consumer: the connection's writer, which
    /// passes back the batch it has written (its storage is reused).
    ///
    /// The queue's storage moves with its items, and the writer's written
    /// batch becomes the next queue if it is small: a burst's queue leaves
    /// with the burst, while steady traffic allocates nothing per message
    /// (an idle member keeps two small queues, 128 bytes).
    pub async fn take(&self, batch: &mut VecDeque<Queued>) -> Drain {
        let mut spare = std::mem::take(batch);
        spare.clear();
        if spare.capacity() > KEEP_QUEUE {
            spare = VecDeque::new();
        }
        let mut spare = Some(spare);
        std::future::poll_fn(|cx| {
            // Registered before the look, so a push in between wakes it.
            self.wake.register(cx.waker());
            let mut st = self.lock();
            if st.queue.capacity() == 0 {
                if let Some(spare) = spare.as_mut() {
                    std::mem::swap(&mut st.queue, spare);
                }
            }
            match self.status() {
                Status::Aborted => Poll::Ready(Drain::Abort),
                Status::Closing => {
                    *batch = std::mem::take(&mut st.queue);
                    Poll::Ready(Drain::Finish)
                }
                Status::Open if !st.queue.is_empty() => {
                    let next = spare.take().unwrap_or_default();
                    *batch = std::mem::replace(&mut st.queue, next);
                    Poll::Ready(Drain::More)
                }
                Status::Open => Poll::Pending,
            }
        })
        .await
    }

    /// Moves everything queued to the end of `batch`; for tests, which look
    /// at what a member was sent.
    #[cfg(test)]
    pub async fn drain(&self, batch: &mut Vec<Outgoing>) -> Drain {
        let mut taken = VecDeque::new();
        let drain = self.take(&mut taken).await;
        batch.extend(taken.into_iter().map(Outgoing::from));
        drain
    }

    /// What is queued right now, without waiting (empty if nothing is);
    /// for tests, which look at what a member was sent.
    #[cfg(test)]
    pub fn drain_now(&self) -> Vec<Outgoing> {
        use std::future::Future;
        let mut batch = Vec::new();
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        {
            let fut = self.drain(&mut batch);
            futures::pin_mut!(fut);
            let _ = fut.as_mut().poll(&mut cx);
        }
        batch
    }

    /// The writer reports `bytes` of cost written, freeing room in the queue.
    pub fn release(&self, cost: usize) {
        let mut st = self.lock();
        st.pending = st.pending.saturating_sub(cost);
    }

    /// Waits until the status is at least `at`.
    async fn reached(&self, at: Status) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the check, so a change in between wakes it.
            notified.as_mut().enable();
            if self.status() >= at {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once the outbox is closing or aborted.
    pub async fn ended(&self) {
        self.reached(Status::Closing).await
    }

    /// Resolves once the outbox is aborted.
    pub async fn aborted(&self) {
        self.reached(Status::Aborted).await
    }

    pub fn is_aborted(&self) -> bool {
        self.status() == Status::Aborted
    }

    /// Bytes held for this member now (queued or being written).
    pub fn pending(&self) -> usize {
        self.lock().pending
    }

    /// Queue entries allocated now, used or not.
    pub fn queue_capacity(&self) -> usize {
        self.lock().queue.capacity()
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
    async fn a_burst_queue_leaves_with_the_burst() {
        let ob = Outbox::new(1 << 20);
        for _ in 0..1000 {
            ob.push(raw(1));
        }
        let mut batch = VecDeque::new();
        assert_eq!(ob.take(&mut batch).await, Drain::More);
        assert_eq!(batch.len(), 1000);
        // The burst's storage went to the writer; the member keeps none.
        assert_eq!(ob.queue_capacity(), 0);
        batch.clear();
        ob.release(1000);
        ob.push(raw(1));
        assert_eq!(ob.take(&mut batch).await, Drain::More);
        // The writer's emptied burst-sized queue was not kept either.
        assert_eq!(ob.queue_capacity(), 0);
        assert!(batch.capacity() <= KEEP_QUEUE);
    }

    #[tokio::test]
    async fn steady_traffic_reuses_small_storage() {
        let ob = Outbox::new(1 << 20);
        let mut batch = VecDeque::new();
        for _ in 0..3 {
            ob.push(raw(1));
            assert_eq!(ob.take(&mut batch).await, Drain::More);
            assert_eq!(batch.len(), 1);
            ob.release(1);
        }
        // The written batch's storage went back to the queue: the next
        // push needs no allocation, and an idle member holds only this.
        let waiter = {
            let ob = ob.clone();
            tokio::spawn(async move { ob.take(&mut batch).await })
        };
        tokio::task::yield_now().await;
        let kept = ob.queue_capacity();
        assert!(kept > 0 && kept <= KEEP_QUEUE, "kept {kept}");
        ob.push(raw(1));
        assert_eq!(waiter.await.unwrap(), Drain::More);
    }

    #[test]
    fn queue_entries_are_one_pointer() {
        assert_eq!(std::mem::size_of::<Queued>(), 16);
    }

    #[tokio::test]
    async fn ending_wakes_every_waiter() {
        let ob = Outbox::new(100);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let ob = ob.clone();
                tokio::spawn(async move { ob.ended().await })
            })
            .collect();
        let aborted = {
            let ob = ob.clone();
            tokio::spawn(async move { ob.aborted().await })
        };
        tokio::task::yield_now().await;
        ob.close();
        for w in waiters {
            w.await.unwrap();
        }
        // Closing is not aborting.
        tokio::task::yield_now().await;
        assert!(!aborted.is_finished());
        ob.abort();
        aborted.await.unwrap();
        // Once ended, it stays ended.
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
