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
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::event::{Event, Format};
use crate::server::outbox::{Drain, Outbox, Queued};

/// Most buffers handed to one vectored write (the kernel's `IOV_MAX` is
/// 1024). They are on the stack only for the duration of one poll.
const MAX_SLICES: usize = 512;

/// How a writer renders events for its connection.
#[derive(Clone, Copy)]
pub struct Encoding {
    pub format: Format,
    pub encode: fn(&Event) -> Bytes,
}

/// Drains an outbox onto a socket. Ends when the outbox is aborted (at
/// once) or closed (after a flush bounded by `close_timeout`).
///
/// Waiting is all an idle connection's writer does, so only that state is
/// kept in its task: the work of a batch runs in a future boxed for the
/// batch's duration.
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
        loop {
            match outbox.take(&mut batch).await {
                Drain::Abort => return,
                Drain::More => {
                    let more =
                        write_batch(&mut writer, &outbox, &mut batch, encoding, close_timeout);
                    if !Box::pin(more).await {
                        return;
                    }
                }
                Drain::Finish => {
                    let _ = Box::pin(tokio::time::timeout(close_timeout, async {
                        write_queue(&mut writer, &mut batch, encoding).await?;
                        writer.shutdown().await
                    }))
                    .await;
                    return;
                }
            }
        }
    }
}

/// Writes one batch taken from the outbox and releases its cost. Returns
/// whether the writer should go on.
async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    outbox: &Outbox,
    batch: &mut VecDeque<Queued>,
    encoding: Encoding,
    close_timeout: Duration,
) -> bool {
    let cost: usize = batch.iter().map(Queued::cost).sum();
    // A write may block on a client that stopped reading. If the session
    // closes meanwhile (quit, ping timeout, shutdown), the write gets
    // `close_timeout` more, then the connection is dropped: nothing waits
    // on a dead reader for ever.
    let write = write_queue(writer, batch, encoding);
    tokio::pin!(write);
    let mut give_up: Option<tokio::time::Instant> = None;
    let written = loop {
        tokio::select! {
            r = &mut write => break r,
            _ = outbox.aborted() => return false,
            _ = outbox.ended(), if give_up.is_none() => {
                give_up = Some(tokio::time::Instant::now() + close_timeout);
            }
            _ = sleep_until_opt(give_up) => return false,
        }
    };
    outbox.release(cost);
    if written.is_err() {
        // The reader sees the outbox end and reports the member gone.
        outbox.abort();
        return false;
    }
    true
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
    encoding: Encoding,
) -> io::Result<()> {
    if queue.is_empty() {
        return Ok(());
    }
    // Bytes of the front item already written.
    let mut offset = 0;
    loop {
        while queue
            .front()
            .is_some_and(|item| item.wire(encoding.format, encoding.encode).len() == offset)
        {
            queue.pop_front();
            offset = 0;
        }
        if queue.is_empty() {
            break;
        }
        let mut written =
            poll_fn(|cx| poll_write_items(Pin::new(&mut *writer), cx, queue, offset, encoding))
                .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = queue.front() else { break };
            let left = front.wire(encoding.format, encoding.encode).len() - offset;
            if written < left {
                offset += written;
                break;
            }
            written -= left;
            offset = 0;
            queue.pop_front();
        }
    }
    writer.flush().await
}

/// One vectored write of as many queued items as fit, starting `offset`
/// bytes into the first.
fn poll_write_items<W: AsyncWrite>(
    writer: Pin<&mut W>,
    cx: &mut std::task::Context<'_>,
    queue: &VecDeque<Queued>,
    offset: usize,
    encoding: Encoding,
) -> std::task::Poll<io::Result<usize>> {
    let mut slices = [IoSlice::new(&[]); MAX_SLICES];
    let mut n = 0;
    for (i, item) in queue.iter().enumerate() {
        let bytes = item.wire(encoding.format, encoding.encode);
        let bytes = if i == 0 { &bytes[offset..] } else { &bytes[..] };
        if bytes.is_empty() {
            continue;
        }
        slices[n] = IoSlice::new(bytes);
        n += 1;
        if n == MAX_SLICES {
            break;
        }
    }
    writer.poll_write_vectored(cx, &slices[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Bundle, Envelope};
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
        write_queue(&mut w, &mut q, TEXT).await.unwrap();
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
                write_queue(&mut w, &mut q, TEXT).await.unwrap();
                assert_eq!(String::from_utf8(w.out).unwrap(), EXPECTED);
            }
        }
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
        write_queue(&mut w, &mut q, TEXT).await.unwrap();
        let expected: String = (0..MAX_SLICES * 2 + 3).map(|i| format!("{i}\n")).collect();
        assert_eq!(String::from_utf8(w.out).unwrap(), expected);
        assert_eq!(w.calls, 3);
    }
}
