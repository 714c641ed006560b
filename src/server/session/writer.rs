//! A connection's output: the task that drains the member's outbox onto the
//! socket.
//!
//! Everything queued since the last write goes out in one vectored write,
//! straight from the shared event buffers: no per-connection write buffer
//! exists, so an idle connection holds none, and a busy one costs one system
//! call per batch rather than per message.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::server::outbox::{Drain, Outbox, Queued};

/// Most buffers handed to one vectored write (the kernel's `IOV_MAX` is
/// 1024). They are on the stack only for the duration of one poll.
const MAX_SLICES: usize = 512;

pub use crate::server::outbox::Encoding;

/// Drains an outbox onto a socket. Ends when the outbox is aborted (at
/// once) or closed (after a flush bounded by `close_timeout`).
///
/// Waiting is all an idle connection's writer does, so only that state is
/// kept in its task. A batch is first written without waiting, which is
/// how nearly every batch goes; only a write that blocks gets a future of
/// its own, boxed for as long as it lasts.
// An `async move` block rather than an `async fn`, which would keep second
// copies of the arguments in the task for its whole life.
#[allow(clippy::manual_async_fn)]
pub fn write_loop<W>(
    mut writer: W,
    outbox: Arc<Outbox>,
    encoding: Encoding,
    close_timeout: Duration,
) -> impl Future<Output = ()> + Send
where
    W: AsyncWrite + Send + Unpin + 'static,
{
    async move {
        let mut batch = VecDeque::new();
        let mut offset = 0;
        loop {
            match outbox.take(&mut batch, &mut offset).await {
                Drain::Abort => return,
                Drain::More => {
                    let cost: usize = batch.iter().map(Queued::cost).sum();
                    let now = poll_fn(|cx| {
                        let w = Pin::new(&mut writer);
                        Poll::Ready(poll_write_queue(w, cx, &mut batch, &mut offset, encoding))
                    })
                    .await;
                    let written = match now {
                        Poll::Ready(r) => r,
                        Poll::Pending => {
                            let blocked = Blocked {
                                outbox: &outbox,
                                queue: &mut batch,
                                offset: &mut offset,
                                encoding,
                                close_timeout,
                            };
                            match Box::pin(blocked.write(&mut writer)).await {
                                Some(r) => r,
                                None => return,
                            }
                        }
                    };
                    outbox.release(cost);
                    if written.is_err() {
                        // The reader sees the outbox end and reports the
                        // member gone.
                        outbox.abort();
                        return;
                    }
                }
                Drain::Finish => {
                    let _ = Box::pin(tokio::time::timeout(close_timeout, async {
                        write_queue(&mut writer, &mut batch, offset, encoding).await?;
                        writer.shutdown().await
                    }))
                    .await;
                    return;
                }
            }
        }
    }
}

/// A batch whose write blocked: the client is not reading fast enough.
struct Blocked<'a> {
    outbox: &'a Outbox,
    queue: &'a mut VecDeque<Queued>,
    offset: &'a mut usize,
    encoding: Encoding,
    close_timeout: Duration,
}

impl Blocked<'_> {
    /// Finishes the write, or gives up (`None`) if the outbox is aborted,
    /// or closes and the write still blocks `close_timeout` later: nothing
    /// waits on a dead reader for ever.
    async fn write<W: AsyncWrite + Unpin>(self, writer: &mut W) -> Option<io::Result<()>> {
        let Blocked {
            outbox,
            queue,
            offset,
            encoding,
            close_timeout,
        } = self;
        let write =
            poll_fn(|cx| poll_write_queue(Pin::new(&mut *writer), cx, queue, offset, encoding));
        tokio::pin!(write);
        let mut give_up: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                r = &mut write => return Some(r),
                _ = outbox.aborted() => return None,
                _ = outbox.ended(), if give_up.is_none() => {
                    give_up = Some(tokio::time::Instant::now() + close_timeout);
                }
                _ = sleep_until_opt(give_up) => return None,
            }
        }
    }
}

/// Sleeps until `at`, or for ever when there is no deadline.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Writes every item of `queue`, in order, and flushes. Items leave the
/// queue as soon as they are fully written; on success it is empty.
pub async fn write_queue<W: AsyncWrite + Unpin>(
    writer: &mut W,
    queue: &mut VecDeque<Queued>,
    mut offset: usize,
    encoding: Encoding,
) -> io::Result<()> {
    poll_fn(|cx| poll_write_queue(Pin::new(&mut *writer), cx, queue, &mut offset, encoding)).await
}

/// Writes as much of `queue` as the writer takes now, starting `offset`
/// bytes into the first item, then flushes. Items leave the queue once
/// fully written and `offset` follows a partly written one, so a pending
/// write can be polled again later, from any future.
fn poll_write_queue<W: AsyncWrite + Unpin>(
    mut writer: Pin<&mut W>,
    cx: &mut std::task::Context<'_>,
    queue: &mut VecDeque<Queued>,
    offset: &mut usize,
    encoding: Encoding,
) -> Poll<io::Result<()>> {
    loop {
        while queue
            .front()
            .is_some_and(|item| item.wire(encoding.format, encoding.encode).len() == *offset)
        {
            queue.pop_front();
            *offset = 0;
        }
        if queue.is_empty() {
            return writer.poll_flush(cx);
        }
        let mut written = match poll_write_items(writer.as_mut(), cx, queue, *offset, encoding) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        while written > 0 {
            let Some(front) = queue.front() else { break };
            let left = front.wire(encoding.format, encoding.encode).len() - *offset;
            if written < left {
                *offset += written;
                break;
            }
            written -= left;
            *offset = 0;
            queue.pop_front();
        }
    }
}

/// One vectored write of as many queued items as fit, starting `offset`
/// bytes into the first. The buffer list lives on the stack, sized to the
/// queue: a single message does not set up room for hundreds.
fn poll_write_items<W: AsyncWrite>(
    writer: Pin<&mut W>,
    cx: &mut std::task::Context<'_>,
    queue: &VecDeque<Queued>,
    offset: usize,
    encoding: Encoding,
) -> Poll<io::Result<usize>> {
    match queue.len() {
        0..=4 => poll_write_up_to::<4, W>(writer, cx, queue, offset, encoding),
        5..=32 => poll_write_up_to::<32, W>(writer, cx, queue, offset, encoding),
        _ => poll_write_up_to::<MAX_SLICES, W>(writer, cx, queue, offset, encoding),
    }
}

fn poll_write_up_to<const N: usize, W: AsyncWrite>(
    writer: Pin<&mut W>,
    cx: &mut std::task::Context<'_>,
    queue: &VecDeque<Queued>,
    offset: usize,
    encoding: Encoding,
) -> Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); N];
    let mut n = 0;
    for (i, item) in queue.iter().enumerate() {
        let bytes = item.wire(encoding.format, encoding.encode);
        let bytes = if i == 0 { &bytes[offset..] } else { &bytes[..] };
        if bytes.is_empty() {
            continue;
        }
        slices[n] = IoSlice::new(bytes);
        n += 1;
        if n == N {
            break;
        }
    }
    writer.poll_write_vectored(cx, &slices[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Bundle, Envelope, Event, Format};
    use crate::proto::text;
    use std::task::{Context, Poll};

    const TEXT: Encoding = Encoding {
        format: Format::Text,
        encode: text::render,
    };

    /// Accepts at most `chunk` bytes per write, one buffer at a time when
    /// not vectored, and counts the calls.
    struct Trickle {
        out: Vec<u8>,
        chunk: usize,
        vectored: bool,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.chunk);
            self.out.extend_from_slice(&buf[..n]);
            self.calls += 1;
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            if !self.vectored {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
                return self.poll_write(
                    &mut Context::from_waker(futures::task::noop_waker_ref()),
                    first,
                );
            }
            let mut left = self.chunk;
            for b in bufs {
                let n = b.len().min(left);
                self.out.extend_from_slice(&b[..n]);
                left -= n;
                if left == 0 {
                    break;
                }
            }
            self.calls += 1;
            Poll::Ready(Ok(self.chunk - left))
        }

        fn is_write_vectored(&self) -> bool {
            self.vectored
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn queue() -> VecDeque<Queued> {
        let notice = |t: &str| Envelope::new(Event::Notice(t.into()));
        VecDeque::from(vec![
            Queued::Raw(Box::new("raw\n".into())),
            Queued::Raw(Box::default()),
            Queued::Event(notice("one")),
            Queued::Bundle(Bundle::new(vec![notice("two"), notice("three")])),
        ])
    }

    const EXPECTED: &str = "raw\n* one\n* two\n* three\n";

    #[tokio::test]
    async fn one_write_for_a_whole_batch() {
        let mut w = Trickle {
            out: Vec::new(),
            chunk: usize::MAX,
            vectored: true,
            calls: 0,
        };
        let mut q = queue();
        write_queue(&mut w, &mut q, 0, TEXT).await.unwrap();
        assert_eq!(String::from_utf8(w.out).unwrap(), EXPECTED);
        assert_eq!(w.calls, 1);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn partial_writes_resume_mid_item() {
        for vectored in [true, false] {
            for chunk in 1..8 {
                let mut w = Trickle {
                    out: Vec::new(),
                    chunk,
                    vectored,
                    calls: 0,
                };
                let mut q = queue();
                write_queue(&mut w, &mut q, 0, TEXT).await.unwrap();
                assert_eq!(String::from_utf8(w.out).unwrap(), EXPECTED);
            }
        }
    }

    /// Blocks every other call (waking at once) and takes 3 bytes when it
    /// does not, so writes go back and forth between the fast path and the
    /// blocked one, in the middle of items.
    struct Stutter {
        out: Arc<std::sync::Mutex<Vec<u8>>>,
        block: bool,
    }

    impl AsyncWrite for Stutter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.block = !self.block;
            if self.block {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(3);
            self.out.lock().unwrap().extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn blocked_writes_resume_where_they_stopped() {
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = Stutter {
            out: out.clone(),
            block: false,
        };
        let outbox = Outbox::new(1 << 20);
        let task = tokio::spawn(write_loop(
            writer,
            outbox.clone(),
            TEXT,
            Duration::from_secs(5),
        ));
        let mut expected = String::new();
        for i in 0..50 {
            let line = format!("line number {i}\n");
            expected.push_str(&line);
            outbox.push(crate::server::outbox::Outgoing::Raw(line.into()));
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        outbox.close();
        task.await.unwrap();
        assert_eq!(
            String::from_utf8(out.lock().unwrap().clone()).unwrap(),
            expected
        );
    }

    #[tokio::test]
    async fn more_items_than_one_call_takes() {
        let mut w = Trickle {
            out: Vec::new(),
            chunk: usize::MAX,
            vectored: true,
            calls: 0,
        };
        let mut q: VecDeque<Queued> = (0..MAX_SLICES * 2 + 3)
            .map(|i| Queued::Raw(Box::new(format!("{i}\n").into())))
            .collect();
        write_queue(&mut w, &mut q, 0, TEXT).await.unwrap();
        let expected: String = (0..MAX_SLICES * 2 + 3).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(w.out).unwrap(), expected);
        assert_eq!(w.calls, 3);
    }
}
