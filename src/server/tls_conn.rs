//! A TLS connection shared by the three parties that use it, as
//! [`tcp::SharedTcp`](super::tcp::SharedTcp) shares a plain one: the
//! session's reader, its writer task, and whoever kicks its outbox.
//!
//! A TLS record needs the connection's state (keys, sequence numbers), so
//! the rustls connection sits behind a mutex that every party takes for
//! the span of one non-blocking step: seal and write, or read and open.
//! Ciphertext the socket does not take stays queued inside rustls, in
//! order, and goes out first on the next write by anyone; a kicker that
//! leaves some behind says so ([`Direct::unflushed`]), and the writer task
//! is woken to flush it when the socket has room. Which party may hand
//! over *plaintext* when is the outbox's business (one at a time), not
//! this module's.
//!
//! Not here: the handshake (tokio-rustls does it, then hands over the
//! connection) and certificates (`tls.rs`).

use std::io::{self, BufRead, IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use rustls::ServerConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::server::outbox::Direct;

/// A TLS connection whose write side has several users.
pub struct SharedTls {
    inner: Arc<Inner>,
}

struct Inner {
    socket: TcpStream,
    conn: Mutex<ServerConnection>,
}

impl SharedTls {
    /// Takes over a connection whose handshake is complete.
    pub fn new(stream: tokio_rustls::server::TlsStream<TcpStream>) -> SharedTls {
        let (socket, conn) = stream.into_inner();
        SharedTls {
            inner: Arc::new(Inner {
                socket,
                conn: Mutex::new(conn),
            }),
        }
    }

    /// The handle an outbox writes through when kicked.
    pub fn direct(&self) -> Arc<dyn Direct> {
        self.inner.clone()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ServerConnection> {
        // A panic while sealing a record leaves nothing half-done that a
        // later write could make worse: the state is still the connection's.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes queued ciphertext without waiting. `Ok(true)`: none is left.
    fn flush_now(&self, conn: &mut ServerConnection) -> io::Result<bool> {
        while conn.wants_write() {
            match conn.write_tls(&mut Socket(&self.socket)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Seals what fits of `bufs` and writes it, without waiting. Refuses
    /// (`WouldBlock`) while earlier ciphertext is still waiting for room.
    fn write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut conn = self.lock();
        if !self.flush_now(&mut conn)? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = conn.writer().write_vectored(bufs)?;
        // What the socket does not take now goes out with the next write,
        // or when the writer task flushes.
        self.flush_now(&mut conn)?;
        Ok(n)
    }

    /// Writes queued ciphertext, waiting for room.
    fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.flush_now(&mut self.lock())? {
                return Poll::Ready(Ok(()));
            }
            // The refused write cleared the readiness: this waits for room.
            ready!(self.socket.poll_write_ready(cx))?;
        }
    }
}

impl Direct for Inner {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_now(bufs)
    }

    fn unflushed(&self) -> bool {
        self.lock().wants_write()
    }
}

/// The socket as the blocking `Read`/`Write` rustls asks for, never
/// blocking: a full or empty socket is `WouldBlock` (and clears tokio's
/// readiness, so that waiting for it again is honest).
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for SharedTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let inner = &*self.inner;
        loop {
            let mut conn = inner.lock();
            match conn.reader().fill_buf() {
                // Plaintext, or (empty) the peer's close_notify.
                Ok(data) => {
                    let n = data.len().min(buf.remaining());
                    buf.put_slice(&data[..n]);
                    conn.reader().consume(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Among them: the socket closed without a close_notify.
                Err(e) => return Poll::Ready(Err(e)),
            }
            match conn.read_tls(&mut Socket(&inner.socket)) {
                Ok(_) => {
                    // A read of 0 marks the end; the next look at the
                    // plaintext reports it.
                    if let Err(e) = conn.process_new_packets() {
                        // The alert that says why, if the socket takes it.
                        let _ = inner.flush_now(&mut conn);
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                    }
                    // Whatever the records asked for in return (a key
                    // update) goes out now, or with the next write.
                    if conn.wants_write() {
                        inner.flush_now(&mut conn)?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drop(conn);
                    ready!(inner.socket.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for SharedTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.inner.write_now(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.inner.socket.poll_write_ready(cx))?;
                }
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.lock().send_close_notify();
        ready!(self.inner.poll_flush(cx))?;
        Poll::Ready(super::tcp::shutdown_write(&self.inner.socket))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rustls_pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::client::TlsStream as ClientTls;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::*;
    use crate::event::Format;
    use crate::server::outbox::{Encoding, Outbox, Outgoing};

    /// A server side taken over after its handshake, and its client.
    async fn pair() -> (SharedTls, ClientTls<TcpStream>) {
        let dir = tempfile::tempdir().unwrap();
        let cert = crate::cert::self_signed(&["localhost".into()], 1).unwrap();
        crate::cert::write_pair(dir.path(), &cert, false).unwrap();
        let (cert_path, key_path) = crate::cert::pem_paths(dir.path());
        let server = crate::tls::server_config(&cert_path, &key_path).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.cert_der.clone()))
            .unwrap();
        let client = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = async {
            let (socket, _) = listener.accept().await.unwrap();
            TlsAcceptor::from(Arc::new(server))
                .accept(socket)
                .await
                .unwrap()
        };
        let connect = async {
            let socket = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            TlsConnector::from(Arc::new(client))
                .connect(name, socket)
                .await
                .unwrap()
        };
        let (server, client) = tokio::join!(accept, connect);
        (SharedTls::new(server), client)
    }

    #[tokio::test]
    async fn kicks_and_the_writer_share_one_record_stream() {
        let (shared, mut client) = pair().await;
        let direct = shared.direct();
        let (mut reader, mut writer) = tokio::io::split(shared);

        client.write_all(b"hello server").await.unwrap();
        let mut got = [0u8; 12];
        reader.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello server");

        let n = direct.try_write_vectored(&[IoSlice::new(b"one "), IoSlice::new(b"two ")]);
        assert_eq!(n.unwrap(), 8);
        assert!(!direct.unflushed());
        writer.write_all(b"three").await.unwrap();
        direct
            .try_write_vectored(&[IoSlice::new(b" four")])
            .unwrap();
        writer.shutdown().await.unwrap();
        let mut all = String::new();
        client.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "one two three four");
    }

    #[tokio::test]
    async fn what_a_full_socket_leaves_is_flushed_by_the_writer_task() {
        let (shared, mut client) = pair().await;
        let direct = shared.direct();
        let (_reader, writer) = tokio::io::split(shared);
        let text = Encoding {
            format: Format::Text,
            encode: crate::proto::text::render,
        };
        let outbox = Outbox::with_direct(64 << 20, direct.clone(), text);
        let task = tokio::spawn(crate::server::session::writer::write_loop(
            writer,
            outbox.clone(),
            text,
            Duration::from_secs(5),
        ));
        // The client reads nothing yet: the kernel's buffers fill, until a
        // kick's records are taken but stay inside rustls. Nothing more is
        // queued after that one, so only the writer task can send them.
        let mut expected = Vec::new();
        let mut i = 0u32;
        while !direct.unflushed() {
            assert!(i < 1_000_000, "the socket never filled");
            let line = format!("line {i:07} {}\n", "x".repeat(200));
            i += 1;
            expected.extend_from_slice(line.as_bytes());
            let mut kicks = Vec::new();
            outbox.push_deferred(Outgoing::Raw(line.into()), &mut kicks);
            assert_eq!(kicks.len(), 1, "the outbox was idle after every kick");
            kicks[0].kick();
        }
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(Duration::from_secs(20), client.read_exact(&mut got))
            .await
            .expect("every byte arrives: nothing is stranded inside rustls")
            .unwrap();
        assert!(got == expected, "bytes arrive once and in order");
        outbox.close();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_gone_without_close_notify_ends_the_read() {
        let (mut shared, client) = pair().await;
        drop(client);
        let mut buf = [0u8; 16];
        let r = shared.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
}
