//! A plain TCP connection shared by the three parties that use it: the
//! session's reader, its writer task, and whoever kicks its outbox (the
//! task that queued a message for it, writing it straight away).
//!
//! Sharing needs no lock: the socket is read and written through `&self`,
//! each side waiting on its own readiness. Who may write when is decided
//! by the outbox (one writer at a time), not here. The socket lives as long
//! as any of the three holds it, so a late kick can never write into a
//! descriptor the system has since given to another connection.
//!
//! TLS connections are not shared this way: a TLS record needs the
//! connection's own state, so only their writer task writes to them.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::server::outbox::Direct;

/// A TCP connection with one handle per user.
#[derive(Clone)]
pub struct SharedTcp(Arc<TcpStream>);

impl SharedTcp {
    pub fn new(socket: TcpStream) -> SharedTcp {
        SharedTcp(Arc::new(socket))
    }

    /// The handle an outbox writes through when kicked.
    pub fn direct(&self) -> Arc<dyn Direct> {
        self.0.clone()
    }
}

impl Direct for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

impl AsyncRead for SharedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.0.poll_read_ready(cx))?;
            // A read that finds nothing clears the readiness, so the next
            // round waits for the socket again. The bytes go straight into
            // the caller's uninitialised buffer: zeroing it first would
            // cost more than the read (the session reads 16 KB at a time).
            let read = self.0.try_io(Interest::READABLE, || {
                // SAFETY: `recv` only writes bytes into the buffer; it
                // never de-initialises any.
                let unfilled = unsafe { buf.unfilled_mut() };
                socket2::SockRef::from(self.0.as_ref()).recv(unfilled)
            });
            match read {
                Ok(n) => {
                    // SAFETY: `recv` initialised the first `n` bytes.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write(buf) {
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
            ready!(self.0.poll_write_ready(cx))?;
            match self.0.try_write_vectored(bufs) {
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
        let r = socket2::SockRef::from(self.0.as_ref()).shutdown(Shutdown::Write);
        Poll::Ready(match r {
            // Already gone: nothing left to shut.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            r => r,
        })
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
        let (mut reader, mut writer) = (shared.clone(), shared.clone());
        peer.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        // The direct handle and the writer write the same socket, in turn.
        let direct = shared.direct();
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
        shared.0.writable().await.unwrap();
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
