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
//!
//! A connection whose socket can be written without waiting (plain TCP,
//! TLS) has a [`Direct`] way in: whoever queued the item for an idle
//! connection writes it there and then, once its own locks are released
//! ([`Outbox::kick`]), instead of waking the writer task. That task is left
//! the slow cases: a write the socket does not take whole (or, over TLS,
//! takes but cannot send yet), a burst. Exactly one party
//! writes at a time (the writer task or one kicker), so bytes never
//! interleave and items leave in the order they were queued.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use bytes::Bytes;

use futures::task::AtomicWaker;
use tokio::sync::Notify;

use crate::event::{Bundle, Envelope, Event, Format};

/// Queue entries whose storage is kept between batches: enough for steady
/// traffic, small enough (64 bytes) for every idle member to hold.
const KEEP_QUEUE: usize = 4;

/// Most items a kicker writes itself; more are a burst, left to the
/// writer task (whose batch is not limited to what fits on a stack).
const MAX_DIRECT: usize = 8;

/// How a connection's events are put on its wire: the format, and the
/// encoder for an event not yet encoded in it.
#[derive(Clone, Copy)]
pub struct Encoding {
    pub format: Format,
    pub encode: fn(&Event) -> Bytes,
}

/// A socket that can be written without waiting: what the socket takes now
/// is written, the rest is refused (`WouldBlock`). Plain TCP is one; so is
/// TLS (`tls_conn.rs`), which may take bytes it has not yet put on the
/// wire.
pub trait Direct: Send + Sync {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Whether bytes taken are still held on this side (TLS records the
    /// socket had no room for): the writer task must flush them once the
    /// socket has room, since nothing else may come to push them out.
    fn unflushed(&self) -> bool {
        false
    }
}

/// Who is putting this connection's queue on the wire right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Nobody: the next item queued needs a kick or a wake.
    Idle,
    /// The writer task, from taking a batch until it asks for the next.
    Writer,
    /// A kicker, for the span of one non-blocking write.
    Kicker,
}

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
    /// Bytes of the queue's first item already written (by a kicker whose
    /// write the socket took only in part).
    offset: usize,
    owner: Owner,
    /// A kicker's write was taken but not all sent ([`Direct::unflushed`]):
    /// the writer task flushes, even with nothing queued.
    flush: bool,
    /// Bytes queued plus bytes handed to the writer and not yet released.
    pending: usize,
}

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
    /// The socket, for writing without the writer task, when it allows.
    direct: Option<(Arc<dyn Direct>, Encoding)>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("state", &self.state)
            .field("status", &self.status)
            .field("limit", &self.limit)
            .field("direct", &self.direct.is_some())
            .finish()
    }
}

impl Outbox {
    pub fn new(limit: usize) -> Arc<Outbox> {
        Outbox::build(limit, None)
    }

    /// An outbox whose kicks write straight to `socket`, in `encoding`.
    pub fn with_direct(limit: usize, socket: Arc<dyn Direct>, encoding: Encoding) -> Arc<Outbox> {
        Outbox::build(limit, Some((socket, encoding)))
    }

    fn build(limit: usize, direct: Option<(Arc<dyn Direct>, Encoding)>) -> Arc<Outbox> {
        Arc::new(Outbox {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                offset: 0,
                owner: Owner::Idle,
                flush: false,
                pending: 0,
            }),
            status: AtomicU8::new(Status::Open as u8),
            wake: AtomicWaker::new(),
            changed: Notify::new(),
            limit,
            direct,
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

    /// Queues an item without ever waiting, waking the writer task if
    /// the connection was idle. It never writes, so it may be called under
    /// any lock.
    pub fn push(&self, item: Outgoing) -> Push {
        let (push, idle) = self.enqueue(item);
        if idle {
            self.wake.wake();
        }
        push
    }

    /// Queues an item and, if the connection was idle, writes it at once
    /// when the socket allows ([`Outbox::kick`]). It may write, so it must
    /// not be called under the hub's lock.
    pub fn send(&self, item: Outgoing) -> Push {
        let (push, idle) = self.enqueue(item);
        if idle {
            self.kick();
        }
        push
    }

    /// Queues an item, leaving the write to the caller: if the connection
    /// was idle, the outbox is added to `kicks`, each of which must be
    /// [kicked](Outbox::kick) (or [woken](Outbox::wake)) once the caller's
    /// locks are released.
    pub fn push_deferred(self: &Arc<Self>, item: Outgoing, kicks: &mut Vec<Arc<Outbox>>) -> Push {
        let (push, idle) = self.enqueue(item);
        if idle {
            kicks.push(self.clone());
        }
        push
    }

    /// Queues an item; says whether the connection was idle (nothing queued,
    /// nobody writing), so that someone must now get the item moving.
    fn enqueue(&self, item: Outgoing) -> (Push, bool) {
        let mut st = self.lock();
        if self.status() != Status::Open {
            return (Push::Closed, false);
        }
        let cost = item.cost();
        if st.pending + cost > self.limit {
            self.advance(Status::Aborted);
            st.queue = VecDeque::new();
            drop(st);
            self.announce();
            return (Push::Overflow, false);
        }
        st.pending += cost;
        let idle = st.queue.is_empty() && st.owner == Owner::Idle;
        st.queue.push_back(item.into());
        (Push::Queued, idle)
    }

    /// Wakes the writer task to write what is queued: the other way to
    /// follow up a [`push_deferred`](Outbox::push_deferred), which spreads
    /// the writing over the runtime's threads.
    pub fn wake(&self) {
        self.wake.wake();
    }

    /// Gets what is queued moving: written here and now if the socket has
    /// a direct way in and takes it all, otherwise by waking the writer
    /// task. Costs one non-blocking write at most.
    pub fn kick(&self) {
        if let Some((socket, encoding)) = &self.direct {
            if self.write_now(socket.as_ref(), *encoding) {
                return;
            }
        }
        self.wake.wake();
    }

    /// Writes a small queue with one non-blocking write. Returns whether
    /// the writer task has nothing to do: everything was written, or
    /// someone else owns the queue and will look at it again.
    fn write_now(&self, socket: &dyn Direct, encoding: Encoding) -> bool {
        let mut st = self.lock();
        if st.owner != Owner::Idle {
            return true;
        }
        let n = st.queue.len();
        if n == 0 {
            return true;
        }
        if n > MAX_DIRECT || st.offset != 0 || self.status() != Status::Open {
            return false;
        }
        st.owner = Owner::Kicker;
        // Nearly every kick writes one line: its own size of list, not
        // eight slots set up and dropped each time.
        if n == 1 {
            self.write_items::<1>(st, n, socket, encoding)
        } else {
            self.write_items::<MAX_DIRECT>(st, n, socket, encoding)
        }
    }

    /// Takes the first `n` (at most `N`) queued items, for the kicker that
    /// now owns the queue, and writes them with one call.
    fn write_items<const N: usize>(
        &self,
        mut st: MutexGuard<'_, State>,
        n: usize,
        socket: &dyn Direct,
        encoding: Encoding,
    ) -> bool {
        let mut items: [Option<Queued>; N] = [const { None }; N];
        for slot in items[..n].iter_mut() {
            *slot = st.queue.pop_front();
        }
        drop(st);

        let mut slices = [IoSlice::new(&[]); N];
        for (slice, item) in slices.iter_mut().zip(items.iter().flatten()) {
            *slice = IoSlice::new(item.wire(encoding.format, encoding.encode));
        }
        let result = match socket.try_write_vectored(&slices[..n]) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            r => r,
        };

        // What was written in full leaves; the rest goes back in front,
        // `offset` marking how far into the first of it the socket took.
        let mut written = *result.as_ref().unwrap_or(&0);
        let mut freed = 0;
        let mut first_left = n;
        let mut offset = 0;
        for (i, item) in items[..n].iter().enumerate() {
            let Some(item) = item else { continue };
            let len = item.wire(encoding.format, encoding.encode).len();
            if written < len {
                first_left = i;
                offset = written;
                break;
            }
            written -= len;
            freed += item.cost();
        }
        let unflushed = result.is_ok() && socket.unflushed();
        let mut st = self.lock();
        st.owner = Owner::Idle;
        st.flush |= unflushed;
        st.pending = st.pending.saturating_sub(freed);
        if result.is_err() {
            // The reader sees the outbox end and reports the member gone.
            drop(st);
            self.abort();
            return true;
        }
        if self.status() != Status::Aborted {
            for item in items[first_left..n].iter_mut().rev() {
                if let Some(item) = item.take() {
                    st.queue.push_front(item);
                }
            }
            st.offset = offset;
        }
        st.queue.is_empty() && !st.flush && self.status() == Status::Open
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
    ///
    /// `offset` is set to how many bytes of the batch's first item were
    /// already written (by a kicker the socket did not take in full).
    /// Asking for the next batch says the previous one is written.
    pub async fn take(&self, batch: &mut VecDeque<Queued>, offset: &mut usize) -> Drain {
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
            if st.owner == Owner::Writer {
                st.owner = Owner::Idle;
            }
            if st.queue.capacity() == 0 {
                if let Some(spare) = spare.as_mut() {
                    std::mem::swap(&mut st.queue, spare);
                }
            }
            match self.status() {
                Status::Aborted => Poll::Ready(Drain::Abort),
                // A kicker is writing: it wakes this task when done if it
                // leaves anything (or the outbox is closing).
                _ if st.owner == Owner::Kicker => Poll::Pending,
                Status::Closing => {
                    *batch = std::mem::take(&mut st.queue);
                    *offset = std::mem::take(&mut st.offset);
                    Poll::Ready(Drain::Finish)
                }
                // Something to write, or (with an empty batch) only
                // something to flush.
                Status::Open if !st.queue.is_empty() || st.flush => {
                    st.flush = false;
                    let next = spare.take().unwrap_or_default();
                    *batch = std::mem::replace(&mut st.queue, next);
                    *offset = std::mem::take(&mut st.offset);
                    st.owner = Owner::Writer;
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
        let drain = self.take(&mut taken, &mut 0).await;
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
        assert_eq!(ob.take(&mut batch, &mut 0).await, Drain::More);
        assert_eq!(batch.len(), 1000);
        // The burst's storage went to the writer; the member keeps none.
        assert_eq!(ob.queue_capacity(), 0);
        batch.clear();
        ob.release(1000);
        ob.push(raw(1));
        assert_eq!(ob.take(&mut batch, &mut 0).await, Drain::More);
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
            assert_eq!(ob.take(&mut batch, &mut 0).await, Drain::More);
            assert_eq!(batch.len(), 1);
            ob.release(1);
        }
        // The written batch's storage went back to the queue: the next
        // push needs no allocation, and an idle member holds only this.
        let waiter = {
            let ob = ob.clone();
            tokio::spawn(async move { ob.take(&mut batch, &mut 0).await })
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

    /// A socket for direct writes: takes at most `take` bytes per write
    /// (0: refuses with `WouldBlock`), or fails when `fail` is set.
    #[derive(Default)]
    struct FakeSocket {
        out: std::sync::Mutex<Vec<u8>>,
        /// With `hold` set, what a direct write takes waits here, unsent,
        /// as TLS records the socket had no room for do: the next write
        /// sends it first, or a flush.
        held: std::sync::Mutex<Vec<u8>>,
        hold: std::sync::atomic::AtomicBool,
        take: std::sync::atomic::AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
        writes: std::sync::atomic::AtomicUsize,
    }

    impl FakeSocket {
        fn taking(n: usize) -> Arc<FakeSocket> {
            let socket = FakeSocket::default();
            socket.take.store(n, Ordering::SeqCst);
            Arc::new(socket)
        }

        fn text(&self) -> String {
            String::from_utf8(self.out.lock().unwrap().clone()).unwrap()
        }
    }

    impl Direct for FakeSocket {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            self.writes.fetch_add(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let mut left = self.take.load(Ordering::SeqCst);
            if left == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.send_held();
            let hold = self.hold.load(Ordering::SeqCst);
            let mut out = if hold {
                self.held.lock().unwrap()
            } else {
                self.out.lock().unwrap()
            };
            let mut n = 0;
            for b in bufs {
                let k = b.len().min(left);
                out.extend_from_slice(&b[..k]);
                n += k;
                left -= k;
            }
            Ok(n)
        }

        fn unflushed(&self) -> bool {
            !self.held.lock().unwrap().is_empty()
        }
    }

    impl FakeSocket {
        fn send_held(&self) {
            let held = std::mem::take(&mut *self.held.lock().unwrap());
            self.out.lock().unwrap().extend_from_slice(&held);
        }
    }

    /// The writer task's side of the same socket: appends to the fake's
    /// output, taking whatever it is given.
    struct WriterSide(Arc<FakeSocket>);

    impl tokio::io::AsyncWrite for WriterSide {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.0.send_held();
            self.0.out.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            self.0.send_held();
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const TEXT: Encoding = Encoding {
        format: Format::Text,
        encode: crate::proto::text::render,
    };

    fn line(i: usize) -> Outgoing {
        Outgoing::Raw(Bytes::from(format!("line {i}\n")))
    }

    #[test]
    fn a_kick_writes_an_idle_connection_itself() {
        let socket = FakeSocket::taking(usize::MAX);
        let ob = Outbox::with_direct(1000, socket.clone(), TEXT);
        let mut kicks = Vec::new();
        assert_eq!(ob.push_deferred(line(1), &mut kicks), Push::Queued);
        // Queued behind the first, before the kick: the same kick takes it.
        assert_eq!(ob.push_deferred(line(2), &mut kicks), Push::Queued);
        assert_eq!(
            kicks.len(),
            1,
            "only the push to an idle outbox asks for a kick"
        );
        assert!(
            socket.text().is_empty(),
            "nothing is written before the kick"
        );
        kicks[0].kick();
        assert_eq!(socket.text(), "line 1\nline 2\n");
        assert_eq!(
            socket.writes.load(Ordering::SeqCst),
            1,
            "one write for both"
        );
        assert_eq!(ob.pending(), 0);
        assert!(ob.drain_now().is_empty(), "nothing left for the writer");
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_goes_to_the_writer_in_order() {
        for take in [0, 1, 5, 9, 13] {
            let socket = FakeSocket::taking(take);
            let ob = Outbox::with_direct(1000, socket.clone(), TEXT);
            ob.send(line(1));
            ob.send(line(2));
            let writer = tokio::spawn(crate::server::session::writer::write_loop(
                WriterSide(socket.clone()),
                ob.clone(),
                TEXT,
                std::time::Duration::from_secs(5),
            ));
            ob.send(line(3));
            ob.close();
            writer.await.unwrap();
            assert_eq!(socket.text(), "line 1\nline 2\nline 3\n", "taking {take}");
        }
    }

    #[test]
    fn a_failed_direct_write_ends_the_outbox() {
        let socket = FakeSocket::taking(usize::MAX);
        socket.fail.store(true, Ordering::SeqCst);
        let ob = Outbox::with_direct(1000, socket.clone(), TEXT);
        ob.send(line(1));
        assert!(ob.is_aborted());
        assert_eq!(ob.push(line(2)), Push::Closed);
    }

    #[tokio::test]
    async fn no_kick_while_the_writer_owns_the_queue() {
        let socket = FakeSocket::taking(usize::MAX);
        let ob = Outbox::with_direct(1000, socket.clone(), TEXT);
        ob.push(line(1));
        let mut batch = VecDeque::new();
        assert_eq!(ob.take(&mut batch, &mut 0).await, Drain::More);
        // The writer holds a batch it has not written: a kick must not
        // write the next item before it.
        let mut kicks = Vec::new();
        ob.push_deferred(line(2), &mut kicks);
        assert!(kicks.is_empty());
        ob.kick();
        assert!(socket.text().is_empty());
        assert_eq!(ob.take(&mut batch, &mut 0).await, Drain::More);
        assert_eq!(batch.len(), 1);
    }

    proptest::proptest! {
        /// However pushes, kicks, partial writes, bytes taken but held
        /// (TLS) and the writer task interleave, the socket gets every
        /// item once, whole, in order, and nothing is left held without
        /// the outbox being closed.
        #[test]
        fn bytes_arrive_once_in_order(
            steps in proptest::collection::vec(
                (0usize..4, 0usize..12, proptest::bool::ANY, proptest::bool::ANY),
                1..60,
            )
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let socket = FakeSocket::taking(0);
                let ob = Outbox::with_direct(1 << 20, socket.clone(), TEXT);
                let writer = tokio::spawn(crate::server::session::writer::write_loop(
                    WriterSide(socket.clone()),
                    ob.clone(),
                    TEXT,
                    std::time::Duration::from_secs(5),
                ));
                let mut expected = String::new();
                let mut i = 0;
                for (pushes, take, yield_now, hold) in steps {
                    socket.take.store(take, Ordering::SeqCst);
                    socket.hold.store(hold, Ordering::SeqCst);
                    let mut kicks = Vec::new();
                    for _ in 0..pushes {
                        i += 1;
                        expected.push_str(&format!("line {i}\n"));
                        ob.push_deferred(line(i), &mut kicks);
                    }
                    for k in kicks {
                        k.kick();
                    }
                    if yield_now {
                        tokio::task::yield_now().await;
                    }
                }
                // With nothing more pushed, all of it arrives while the
                // outbox is still open (a close would flush whatever was
                // left held anyway, and a new write would send it first).
                socket.take.store(usize::MAX, Ordering::SeqCst);
                socket.hold.store(false, Ordering::SeqCst);
                let all_in = async {
                    while socket.text() != expected {
                        tokio::task::yield_now().await;
                    }
                };
                let arrived = tokio::time::timeout(std::time::Duration::from_secs(2), all_in).await;
                assert!(arrived.is_ok(), "stranded: {:?} of {:?}", socket.text(), expected);
                ob.close();
                writer.await.unwrap();
                assert_eq!(socket.text(), expected);
            });
        }
    }
}
