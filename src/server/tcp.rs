//! A plain TCP connection shared by the three parties that use it: the
//! session's reader, its writer task, and whoever kicks its outbox (the
//! task that queued a message for it, writing it straight away).
//!
//! Sharing needs no lock: the read half is the session's own, and the
//! write half is written through `&self` (by the writer task, waiting on
//! the socket's write readiness, and by kicks, which never wait). Who may
//! write when is decided by the outbox (one writer at a time), not here.
//! The socket lives as long as any of the three holds it, so a late kick
//! can never write into a descriptor the system has since given to another
//! connection.
//!
//! TLS connections are shared the same way by `tls_conn.rs`, with a lock
//! around the record state that sealing and opening need.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use crate::server::outbox::Direct;

/// A TCP connection whose write side has several users. The read side is
/// tokio's own (which, among other things, knows a short read means the
/// socket is drained and skips the read that would say so).
pub struct SharedTcp {
    read: OwnedReadHalf,
    write: Arc<OwnedWriteHalf>,
}

impl SharedTcp {
    pub fn new(socket: TcpStream) -> SharedTcp {
        let (read, write) = socket.into_split();
        SharedTcp {
            read,
            write: Arc::new(write),
        }
    }

    /// The handle an outbox writes through when kicked.
    pub fn direct(&self) -> Arc<dyn Direct> {
        self.write.clone()
    }

    fn socket(&self) -> &TcpStream {
        (*self.write).as_ref()
    }
}

impl Direct for OwnedWriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        OwnedWriteHalf::try_write_vectored(self, bufs)
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket().poll_write_ready(cx))?;
            // A write the socket refuses clears the readiness, so the next
            // round waits for the socket again.
            match self.socket().try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket().poll_write_ready(cx))?;
            match self.socket().try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown_write(self.socket()))
    }
}

/// Ends the sending side of `socket` (the peer reads end of file); a peer
/// already gone leaves nothing to shut. Shared with `tls_conn.rs`.
pub(super) fn shutdown_write(socket: &TcpStream) -> io::Result<()> {
    match socket2::SockRef::from(socket).shutdown(Shutdown::Write) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (SharedTcp, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (SharedTcp::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn reads_writes_and_shuts_down_through_any_handle() {
        let (shared, mut peer) = pair().await;
        let direct = shared.direct();
        let (mut reader, mut writer) = tokio::io::split(shared);
        peer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // The direct handle and the writer write the same socket, in turn.
        let n = direct.try_write_vectored(&[IoSlice::new(b"one "), IoSlice::new(b"two ")]);
        assert_eq!(n.unwrap(), 8);
        writer.write_all(b"three").await.unwrap();
        writer.shutdown().await.unwrap();
        let mut all = String::new();
        peer.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "one two three");
    }

    #[tokio::test]
    async fn a_full_socket_refuses_a_direct_write_without_waiting() {
        let (shared, _peer) = pair().await;
        shared.socket().writable().await.unwrap();
        let direct = shared.direct();
        let chunk = vec![b'x'; 64 * 1024];
        let mut total = 0usize;
        // The peer never reads: the buffers fill and the write is refused.
        let refused = loop {
            match direct.try_write_vectored(&[IoSlice::new(&chunk)]) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 1 << 30, "the socket never filled");
        };
        assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
        assert!(total > 0, "nothing was written before the socket filled");
    }
}
