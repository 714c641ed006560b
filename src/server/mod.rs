//! The server: listeners, the accept loop, admission ([`admission`]:
//! `max_clients`, `max_per_ip`, refusals told in the client's format), TLS
//! handshakes, and shutdown.
//!
//! Shutdown follows the mini-redis pattern: one [`CancellationToken`] says
//! "stop" to every accept loop and pending handshake; every connection task
//! holds a clone of an `mpsc::Sender`, so when the receiver sees the channel
//! close, all of them are done. In between, the hub tells every member the
//! server is going away and closes their outboxes after a flush.

pub mod access;
pub mod admission;
pub mod bans;
pub mod cluster;
pub mod flood;
pub mod hub;
pub mod outbox;
pub mod pace;
pub mod session;
pub mod tcp;
pub mod tls;
pub mod tls_conn;
pub mod trim;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::{ConfigError, HistoryMode, ServerConfig};
use crate::store::{self, Retention, Store, StoreError};
use access::{Access, AccessError};
use admission::{Admission, Admit, Refusal};
use bans::Bans;
use cluster::{Cluster, ClusterError};
use hub::{History, Hub, HubLimits};
use pace::Pacer;
use store::redis::RedisStore;

/// The notice every member receives when the server stops.
pub const SHUTDOWN_NOTICE: &str = "server shutting down; goodbye";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(
        "no data directory is known for this user; give one with --data-dir, \
         or run with --history memory or --history off"
    )]
    NoDataDir,
    #[error(
        "another rchat server is using the message store in {}; stop it, or give this one \
         another --data-dir",
        .0.display()
    )]
    StoreInUse(std::path::PathBuf),
    #[error("cannot lock the message store in {}: {cause}", path.display())]
    Lock {
        path: std::path::PathBuf,
        cause: std::io::Error,
    },
}

/// The open history store, and the lock that keeps a second server off its
/// file until this one has closed it.
struct OpenStore {
    store: Arc<dyn Store>,
    _lock: Option<std::fs::File>,
}

/// Name of the lock file beside the database.
const LOCK_FILE: &str = "rchat.lock";

fn open_store(config: &ServerConfig) -> Result<Option<OpenStore>, ServerError> {
    let retention = Retention {
        max_per_room: config.history_max_per_room,
        max_age: config.history_max_age,
    };
    match config.history {
        HistoryMode::Off => Ok(None),
        HistoryMode::Memory => Ok(Some(OpenStore {
            store: store::memory_within(retention, config.history_memory_budget),
            _lock: None,
        })),
        HistoryMode::Sqlite => {
            let dir = match &config.data_dir {
                Some(dir) => dir.clone(),
                None => store::default_data_dir().ok_or(ServerError::NoDataDir)?,
            };
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::CreateDir {
                path: dir.clone(),
                error: Arc::new(e),
            })?;
            let lock_path = dir.join(LOCK_FILE);
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|cause| ServerError::Lock {
                    path: lock_path.clone(),
                    cause,
                })?;
            match lock.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(ServerError::StoreInUse(dir));
                }
                Err(std::fs::TryLockError::Error(cause)) => {
                    return Err(ServerError::Lock {
                        path: lock_path,
                        cause,
                    });
                }
            }
            let path = dir.join(store::DEFAULT_DB_FILE);
            let store = store::open_sqlite(&path, retention)?;
            info!(path = %path.display(), "message history in {}", path.display());
            Ok(Some(OpenStore {
                store,
                _lock: Some(lock),
            }))
        }
    }
}

/// A server whose listeners are bound but not yet accepting.
pub struct Server {
    config: Arc<ServerConfig>,
    listeners: Vec<TcpListener>,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    store: Option<OpenStore>,
    access: Arc<Access>,
    bans: Arc<Bans>,
    cluster: Option<Arc<Cluster>>,
    /// The hub's membership changes, for the cluster's publisher.
    membership: Option<mpsc::Receiver<hub::Membership>>,
}

impl Server {
    /// Validates the configuration, loads TLS material and binds every
    /// listen address. Port 0 picks a free port; see [`Server::local_addrs`].
    pub async fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        config.validate()?;
        let access = Arc::new(Access::load(&config)?);
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let acceptor = tls::acceptor(cert, key)?;
                log_certificate(cert);
                Some(acceptor)
            }
            _ => None,
        };
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let listener = listen(*addr, config.listen_backlog)
                .map_err(|cause| ServerError::Bind { addr: *addr, cause })?;
            listeners.push(listener);
        }
        let cluster = match &config.cluster {
            Some(url) => Some(Arc::new(
                Cluster::connect(url, config.history_max_per_room, config.cluster_node_ttl).await?,
            )),
            None => None,
        };
        let store = match &cluster {
            // The cluster's history is its streams in Redis.
            Some(cluster) => Some(OpenStore {
                store: Arc::new(RedisStore::new(cluster.client().clone(), cluster.url())),
                _lock: None,
            }),
            None => open_store(&config)?,
        };
        let history = store.as_ref().map(|s| History {
            store: s.store.clone(),
            replay: config.history_replay,
            store_private: config.store_private,
        });
        let bans = Arc::new(Bans::load(store.as_ref().map(|s| s.store.clone())));
        let mut hub = Hub::with_history(HubLimits::from_config(&config), history)
            .with_guard(access.clone(), bans.clone());
        let mut membership = None;
        if cluster.is_some() {
            let (tx, rx) = mpsc::channel(hub::MEMBERSHIP_QUEUE);
            hub = hub.with_observer(tx);
            membership = Some(rx);
        }
        let hub = Arc::new(hub);
        Ok(Server {
            config: Arc::new(config),
            listeners,
            tls,
            hub,
            store,
            access,
            bans,
            cluster,
            membership,
        })
    }

    /// The addresses actually bound, with real ports.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The hub, for embedding and tests.
    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// Accepts connections until `shutdown` completes, then tells every
    /// client, closes every connection and returns once all tasks are done
    /// (or the close timeout has passed).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
        let admission = Arc::new(Admission::new(&self.config, self.bans.clone()));
        let tls = self.tls.is_some();
        let pace = Pacer::new(self.config.accept_rate, self.config.accept_burst).map(Arc::new);
        for listener in self.listeners {
            let addr = listener.local_addr().ok();
            if let Some(addr) = addr {
                info!(%addr, tls, "listening on {addr}");
                if !tls && !addr.ip().is_loopback() {
                    warn!(
                        %addr,
                        "WARNING: listening on a non-loopback address without TLS; \
                         everything users send crosses the network in clear text. \
                         Use --tls-cert and --tls-key (see `rchat gen-cert`)."
                    );
                }
            }
            let acceptor = Acceptor {
                listener,
                tls: self.tls.clone(),
                hub: self.hub.clone(),
                config: self.config.clone(),
                admission: admission.clone(),
                pace: pace.clone(),
                access: self.access.clone(),
                cluster: self.cluster.clone(),
                stop: stop.clone(),
                done: done_tx.clone(),
            };
            tokio::spawn(acceptor.run());
        }
        drop(done_tx);
        tokio::spawn(trim::run(stop.clone()));
        tokio::spawn(tell_held_notices(self.hub.clone(), stop.clone()));
        if let Some(cluster) = &self.cluster {
            cluster::tail::spawn(cluster.clone(), self.hub.clone(), stop.clone());
            cluster::liveness::spawn(cluster.clone(), self.hub.clone(), stop.clone());
            if let Some(changes) = self.membership {
                cluster::members::spawn_publisher(cluster.clone(), changes, stop.clone());
            }
        }

        shutdown.await;
        info!("shutting down");
        stop.cancel();
        self.hub.shutdown(SHUTDOWN_NOTICE);
        if let Some(cluster) = &self.cluster {
            // The other nodes tell this one's members' departure now.
            match tokio::time::timeout(Duration::from_secs(2), cluster.leave()).await {
                Ok(Ok(())) => info!("left the cluster"),
                Ok(Err(e)) => warn!(error = %e, "cannot leave the cluster cleanly"),
                Err(_) => warn!("cannot leave the cluster cleanly: Redis did not answer"),
            }
        }
        // Every task owns a sender; recv() yields None once all are gone.
        let grace = self.config.close_timeout() + Duration::from_secs(1);
        if tokio::time::timeout(grace, done_rx.recv()).await.is_err() {
            warn!("some connections did not close in time; exiting anyway");
        }
        if let Some(open) = self.store {
            // Writes what is still queued; the lock is released after.
            let closed = tokio::task::spawn_blocking(move || {
                open.store.close();
                let stats = open.store.stats();
                info!(
                    stored = stats.stored,
                    failed = stats.failed,
                    batches = stats.batches,
                    pruned = stats.pruned,
                    "message store closed"
                );
                drop(open);
            });
            if closed.await.is_err() {
                error!("closing the message store failed");
            }
        }
        info!("stopped");
    }
}

/// Days before a certificate's expiry from which `rchat serve` warns.
const EXPIRY_WARNING_DAYS: i64 = 30;

/// Logs the served certificate's fingerprint (what users compare when they
/// first connect) and expiry, loudly when it is near or past.
fn log_certificate(path: &std::path::Path) {
    let Some(der) = crate::cert::load_certs(path)
        .ok()
        .and_then(|certs| certs.into_iter().next())
    else {
        return;
    };
    let fingerprint = crate::cert::fingerprint(der.as_ref());
    let Some(info) = crate::cert::info(der.as_ref()) else {
        info!(%fingerprint, "TLS certificate (expiry unreadable)");
        return;
    };
    let expires = crate::clock::date_time(info.not_after.max(0) as u64 * 1000);
    let now = crate::server::bans::now_ms() as i64 / 1000;
    let days_left = (info.not_after - now).div_euclid(86_400);
    if info.not_after <= now {
        error!(%fingerprint, %expires, "the TLS certificate EXPIRED on {expires} UTC; clients will refuse it; make a new one (rchat gen-cert)");
    } else if days_left < EXPIRY_WARNING_DAYS {
        warn!(%fingerprint, %expires, days_left, "the TLS certificate expires in {days_left} days ({expires} UTC); renew it soon");
    } else {
        info!(%fingerprint, %expires, days_left, "TLS certificate {fingerprint}, valid until {expires} UTC");
    }
}

/// Has the hub tell the join and leave notices big rooms hold when each
/// room's are due ([`hub::NOTICE_DELAY`] after the first, longer in bigger
/// rooms), until `stop`.
async fn tell_held_notices(hub: Arc<Hub>, stop: CancellationToken) {
    let mut next: Option<std::time::Instant> = None;
    loop {
        let due = async {
            match next {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = due => {}
            // A room started holding: its due time may come first.
            _ = hub.notices_held() => {}
            _ = stop.cancelled() => return,
        }
        next = hub.tell_due(std::time::Instant::now());
    }
}

/// Binds `addr` with a kernel accept queue of `backlog` connections
/// (`listen_backlog`).
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// The accept loop of one listener.
struct Acceptor {
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    admission: Arc<Admission>,
    /// Shared by every listener; `None` without pacing.
    pace: Option<Arc<Pacer>>,
    access: Arc<Access>,
    cluster: Option<Arc<Cluster>>,
    stop: CancellationToken,
    done: mpsc::Sender<()>,
}

/// Longest the accept loop waits after a failed accept, doubling from
/// [`ACCEPT_BACKOFF_FIRST`]: out of file descriptors, retrying at once
/// would spin a core while nothing can change.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(10);

impl Acceptor {
    async fn run(self) {
        let mut backoff = ACCEPT_BACKOFF_FIRST;
        // Failures since the last success: logged loudly once per episode.
        let mut failures = 0u64;
        loop {
            if !self.paced().await {
                return;
            }
            let accepted = tokio::select! {
                r = self.listener.accept() => r,
                _ = self.stop.cancelled() => return,
            };
            let (socket, peer) = match accepted {
                Ok(pair) => {
                    if failures > 0 {
                        info!(failures, "accepting connections again");
                    }
                    failures = 0;
                    backoff = ACCEPT_BACKOFF_FIRST;
                    pair
                }
                Err(e) => {
                    // Usually out of file descriptors (EMFILE, ENFILE):
                    // wait for some to free up rather than spin or die.
                    // Existing connections are served meanwhile.
                    if failures == 0 {
                        error!(
                            error = %e,
                            "accept failed; backing off until connections can be accepted again \
                             (out of file descriptors? see the open-file limit)"
                        );
                    } else {
                        debug!(error = %e, ?backoff, "accept failed again");
                    }
                    failures += 1;
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            if self.config.socket_send_buffer > 0 {
                // Bounds what a client that stops reading holds in the
                // kernel, and so how soon its send queue overflows.
                let _ = socket2::SockRef::from(&socket)
                    .set_send_buffer_size(self.config.socket_send_buffer);
            }
            if self.config.tcp_keepalive_secs > 0 {
                // Find peers that vanished without a FIN or RST (a laptop
                // lid closed, a NAT entry dropped), so their slots are freed.
                let keepalive = socket2::TcpKeepalive::new()
                    .with_time(Duration::from_secs(self.config.tcp_keepalive_secs))
                    .with_interval(Duration::from_secs(10))
                    .with_retries(6);
                let _ = socket2::SockRef::from(&socket).set_tcp_keepalive(&keepalive);
            }
            let (ticket, refusal) = match self.admission.admit(peer.ip()) {
                Admit::In(ticket) => (Ticket::Admitted(ticket), None),
                Admit::Refused(refusal, permit) => {
                    info!(%peer, reason = %refusal.message(), "refused");
                    (Ticket::Refusing(permit), Some(refusal))
                }
                Admit::Drop(refusal) => {
                    debug!(%peer, reason = %refusal.message(), "closed unanswered: too many refusals under way");
                    continue;
                }
            };
            let conn = Connection {
                access: self.access.clone(),
                cluster: self.cluster.clone(),
                socket,
                peer,
                ticket,
                refusal,
                tls: self.tls.clone(),
                hub: self.hub.clone(),
                config: self.config.clone(),
                stop: self.stop.clone(),
                done: self.done.clone(),
            };
            tokio::spawn(conn.run());
        }
    }

    /// Waits for the pace to allow one more connection (see `pace.rs`);
    /// `false` if the server stops meanwhile.
    async fn paced(&self) -> bool {
        let Some(pace) = &self.pace else {
            return true;
        };
        tokio::select! {
            _ = pace.wait() => true,
            _ = self.stop.cancelled() => false,
        }
    }
}

/// What a connection holds for its life: its admission, or, when it is
/// being refused, its place among the refusals under way.
enum Ticket {
    Admitted(#[allow(dead_code)] admission::Ticket),
    // Held only to be released on drop.
    Refusing(#[allow(dead_code)] OwnedSemaphorePermit),
}

/// One accepted connection, holding its admission permit and a shutdown
/// sender for its lifetime.
struct Connection {
    access: Arc<Access>,
    cluster: Option<Arc<Cluster>>,
    socket: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    /// Why it is not admitted, told once the protocol is known.
    refusal: Option<Refusal>,
    tls: Option<TlsAcceptor>,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    stop: CancellationToken,
    done: mpsc::Sender<()>,
}

impl Connection {
    // An `async move` block rather than an `async fn`, which would keep a
    // second copy of `self` in the task for the connection's whole life.
    #[allow(clippy::manual_async_fn)]
    fn run(self) -> impl Future<Output = ()> + Send {
        async move {
            // Registration (handshake, detection, hello) must end by then.
            let deadline = tokio::time::Instant::now() + self.config.register_timeout();
            let (stream, direct): (Box<dyn session::Stream>, _) = match self.tls {
                None => {
                    let socket = tcp::SharedTcp::new(self.socket);
                    let direct = socket.direct();
                    (Box::new(socket), direct)
                }
                // Boxed: the handshake's state is large and must not size
                // the task for the rest of the connection's life.
                Some(acceptor) => {
                    let handshake = handshake(
                        acceptor,
                        self.socket,
                        self.peer,
                        &self.config,
                        deadline,
                        &self.stop,
                    );
                    match Box::pin(handshake).await {
                        Some(stream) => {
                            let direct = stream.direct();
                            (Box::new(stream), direct)
                        }
                        None => return,
                    }
                }
            };
            session::run(
                stream,
                self.peer,
                self.hub,
                self.config,
                session::Admission {
                    refusal: self.refusal,
                    deadline,
                    access: self.access,
                    cluster: self.cluster,
                    direct: Some(direct),
                },
            )
            .await;
            drop(self.ticket);
            drop(self.done);
        }
    }
}

/// Completes a TLS handshake within the configured time, unless the server
/// stops first. The connection comes out behind an `Arc` (rustls' state is
/// over a kilobyte), so that it costs heap only for TLS connections.
async fn handshake(
    acceptor: TlsAcceptor,
    socket: TcpStream,
    peer: SocketAddr,
    config: &ServerConfig,
    register_by: tokio::time::Instant,
    stop: &CancellationToken,
) -> Option<tls_conn::SharedTls> {
    let by = register_by.min(tokio::time::Instant::now() + config.handshake_timeout());
    let handshake = tokio::time::timeout_at(by, acceptor.accept(socket));
    let stream = tokio::select! {
        r = handshake => r,
        _ = stop.cancelled() => return None,
    };
    match stream {
        Ok(Ok(stream)) => Some(tls_conn::SharedTls::new(stream)),
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
