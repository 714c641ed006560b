//! Opening one benchmark connection, over plain TCP or TLS, and splitting it
//! into the halves the reader and the sender own.
//!
//! Whom to trust over TLS is not decided here: the caller builds the rustls
//! configuration (the CLI uses [`crate::client::trust::client_config`], so
//! `--ca` and `--insecure` mean what they mean for `rchat connect`).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use crate::client::trust;

/// The receiving half of a connection.
pub(crate) type Reader = Box<dyn AsyncRead + Send + Unpin>;
/// The sending half of a connection.
pub(crate) type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// How to speak TLS to the server under test.
#[derive(Clone)]
pub struct TlsTarget {
    /// Trust settings and protocol versions, on the project's one crypto
    /// provider.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must be valid for (also sent as
    /// SNI).
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTarget")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Where a connection failed.
#[derive(Debug)]
pub(crate) enum ConnectFailure {
    Tcp(std::io::Error),
    /// Why the handshake failed, in words: when the certificate was not
    /// trusted, the trust code's own explanation.
    Tls(String),
}

/// Opens connections to one server (or, spread, to the nodes of a
/// cluster in turn).
#[derive(Clone)]
pub(crate) struct Connector {
    addr: SocketAddr,
    /// Every node clients are spread over, `addr` first.
    nodes: std::sync::Arc<[SocketAddr]>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Connector {
    pub(crate) fn new(addr: SocketAddr, tls: Option<&TlsTarget>) -> Connector {
        Connector {
            addr,
            nodes: std::sync::Arc::from([addr]),
            tls: tls.map(|t| (TlsConnector::from(t.config.clone()), t.server_name.clone())),
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This connector, spreading clients over `others` too.
    pub(crate) fn spread_over(mut self, others: &[SocketAddr]) -> Connector {
        let mut nodes = vec![self.addr];
        nodes.extend_from_slice(others);
        self.nodes = nodes.into();
        self
    }

    /// The connector for client `idx`: to the nodes in turn.
    pub(crate) fn for_client(&self, idx: usize) -> Connector {
        let mut one = self.clone();
        one.addr = self.nodes[idx % self.nodes.len()];
        one
    }

    /// Connects, with TCP_NODELAY (the server under test sets it too, and
    /// latency is what is measured), and finishes the TLS handshake if any.
    pub(crate) async fn connect(&self) -> Result<(Reader, Writer), ConnectFailure> {
        self.connect_with(None).await
    }

    /// Like [`Connector::connect`], with the socket's receive buffer fixed
    /// at `recv_buffer` bytes if given (before connecting, so that the
    /// kernel's autotuning leaves it alone): a client that reads slowly on
    /// purpose then holds little in its own kernel, and the server's queue
    /// for it fills soon.
    pub(crate) async fn connect_with(
        &self,
        recv_buffer: Option<u32>,
    ) -> Result<(Reader, Writer), ConnectFailure> {
        let stream = self.connect_tcp(recv_buffer, false).await?;
        self.wrap(stream).await
    }

    /// Only the TCP connection, with TCP_NODELAY, the receive buffer fixed
    /// at `recv_buffer` bytes if given and, with `reset_on_close`, a zero
    /// linger time, so that dropping it resets the connection rather than
    /// closing it (what a crashed client or a pulled cable looks like to
    /// the server).
    pub(crate) async fn connect_tcp(
        &self,
        recv_buffer: Option<u32>,
        reset_on_close: bool,
    ) -> Result<TcpStream, ConnectFailure> {
        let socket = if self.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(ConnectFailure::Tcp)?;
        if let Some(bytes) = recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(ConnectFailure::Tcp)?;
        }
        if reset_on_close {
            socket.set_zero_linger().map_err(ConnectFailure::Tcp)?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(ConnectFailure::Tcp)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Whether connections are wrapped in TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Finishes the TLS handshake on `stream` if this connector speaks TLS,
    /// and splits the result.
    pub(crate) async fn wrap(&self, stream: TcpStream) -> Result<(Reader, Writer), ConnectFailure> {
        match &self.tls {
            None => {
                let (r, w) = stream.into_split();
                Ok((Box::new(r), Box::new(w)))
            }
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), stream).await.map_err(|e| {
                    ConnectFailure::Tls(match trust::rejection(&e) {
                        Some(why) => why.to_string(),
                        None => e.to_string(),
                    })
                })?;
                let (r, w) = tokio::io::split(tls);
                Ok((Box::new(r), Box::new(w)))
            }
        }
    }
}
