//! A connection's input, framed into lines without a resident read buffer.
//!
//! Most connections are idle most of the time, so what an idle connection
//! holds decides how many fit in memory. [`LineReader`] reads only when the
//! socket is readable, into a buffer on the stack of the poll call, and keeps
//! on the heap only what must survive until the next read: an incomplete
//! line (at most the codec's limit) and the frames of the last read that the
//! session has not taken yet. A connection whose input ends on a line
//! boundary and whose frames are all taken holds nothing at all.
//!
//! Framing rules are the [`LineCodec`]'s; this module owns only the reading.

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use futures::Stream;
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::Decoder;

use crate::proto::line::{Frame, LineCodec};

/// Most bytes taken from the socket per read. It lives on the stack only
/// for the duration of one poll; 16 KiB is one TLS record, and more than a
/// busy sender's burst.
const READ_CHUNK: usize = 16 * 1024;

/// Lines read from `R`, one [`Frame`] at a time (as a [`Stream`]), with the
/// frames already read available without waiting through
/// [`LineReader::next_buffered`].
#[derive(Debug)]
pub struct LineReader<R> {
    io: R,
    codec: LineCodec,
    /// The incomplete line after the last read; unallocated when there is
    /// none.
    partial: BytesMut,
    /// Frames decoded but not yet taken; unallocated when there are none.
    ready: VecDeque<Frame>,
    /// End of input (or a read error) was seen: nothing more will be read.
    done: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub fn new(io: R, codec: LineCodec) -> LineReader<R> {
        LineReader {
            io,
            codec,
            partial: BytesMut::new(),
            ready: VecDeque::new(),
            done: false,
        }
    }

    pub fn codec_mut(&mut self) -> &mut LineCodec {
        &mut self.codec
    }

    /// Heap bytes this reader keeps between reads. Zero for a connection
    /// whose input ended on a line boundary and whose frames were taken.
    pub fn held(&self) -> usize {
        self.partial.capacity() + self.ready.capacity() * std::mem::size_of::<Frame>()
    }

    /// The next frame already read, without reading more. A session uses
    /// it to handle everything one read brought in one go.
    pub fn next_buffered(&mut self) -> Option<Frame> {
        let frame = self.ready.pop_front();
        if self.ready.is_empty() && self.ready.capacity() > 0 {
            // A burst of lines must not leave its queue on an idle member.
            self.ready = VecDeque::new();
        }
        frame
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame>>> {
        loop {
            if let Some(frame) = self.next_buffered() {
                return Poll::Ready(Some(Ok(frame)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            if let Err(e) = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf)) {
                self.done = true;
                self.partial = BytesMut::new();
                return Poll::Ready(Some(Err(e)));
            }
            let read = buf.filled();
            if read.is_empty() {
                self.done = true;
                self.finish()?;
            } else {
                self.decode(read)?;
            }
        }
    }

    /// Frames `read` after the incomplete line kept from before, and keeps
    /// the new incomplete line, copied so the read's buffer can go.
    fn decode(&mut self, read: &[u8]) -> io::Result<()> {
        let mut buf = if self.partial.is_empty() {
            BytesMut::from(read)
        } else {
            let mut buf = std::mem::take(&mut self.partial);
            buf.extend_from_slice(read);
            buf
        };
        while let Some(frame) = self.codec.decode(&mut buf)? {
            self.ready.push_back(frame);
        }
        if !buf.is_empty() {
            self.partial = BytesMut::from(&buf[..]);
        }
        Ok(())
    }

    /// At end of input, an unterminated last line is still a frame.
    fn finish(&mut self) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.partial);
        while let Some(frame) = self.codec.decode_eof(&mut buf)? {
            self.ready.push_back(frame);
        }
        Ok(())
    }
}

impl<R: AsyncRead + Unpin> Stream for LineReader<R> {
    type Item = io::Result<Frame>;

    /// Cancel-safe: bytes are taken from the socket only in a poll that
    /// also frames them, so dropping a pending `next()` loses nothing.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_frame(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    fn line(s: &str) -> Frame {
        Frame::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[tokio::test]
    async fn idle_after_whole_lines_holds_nothing() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = LineReader::new(server, LineCodec::new(1024));
        client.write_all(b"one\ntwo\nthree\n").await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), line("one"));
        // The rest of that read is there without waiting.
        assert_eq!(reader.next_buffered(), Some(line("two")));
        assert_eq!(reader.next_buffered(), Some(line("three")));
        assert_eq!(reader.next_buffered(), None);
        assert_eq!(reader.held(), 0);
    }

    #[tokio::test]
    async fn a_burst_does_not_stay_allocated() {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let mut reader = LineReader::new(server, LineCodec::new(1024));
        let burst: Vec<u8> = b"x\n".repeat(8000);
        client.write_all(&burst).await.unwrap();
        let mut n = 0;
        while n < 8000 {
            reader.next().await.unwrap().unwrap();
            n += 1;
            while reader.next_buffered().is_some() {
                n += 1;
            }
        }
        assert_eq!(reader.held(), 0);
    }

    #[tokio::test]
    async fn keeps_only_the_incomplete_line() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = LineReader::new(server, LineCodec::new(1024));
        let mut input = b"done\n".repeat(1000);
        input.extend_from_slice(b"half");
        client.write_all(&input).await.unwrap();
        for _ in 0..1000 {
            assert_eq!(reader.next().await.unwrap().unwrap(), line("done"));
        }
        // What remains is the four bytes of the unfinished line, not the
        // read that brought them.
        assert_eq!(reader.held(), 4);
        client.write_all(b" a line\n").await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), line("half a line"));
        assert_eq!(reader.held(), 0);
    }

    #[tokio::test]
    async fn unterminated_last_line_at_eof_then_end() {
        let (mut client, server) = tokio::io::duplex(1024);
        let mut reader = LineReader::new(server, LineCodec::new(16));
        client.write_all(b"a\nb").await.unwrap();
        drop(client);
        assert_eq!(reader.next().await.unwrap().unwrap(), line("a"));
        assert_eq!(reader.next().await.unwrap().unwrap(), line("b"));
        assert!(reader.next().await.is_none());
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn oversize_line_held_within_the_limit() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut reader = LineReader::new(server, LineCodec::new(8));
        client.write_all(&[b'z'; 5000]).await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), Frame::TooLong);
        client.write_all(b"zz\nok\n").await.unwrap();
        assert_eq!(reader.next().await.unwrap().unwrap(), line("ok"));
        assert!(reader.held() <= 10);
    }
}
