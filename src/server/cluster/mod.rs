//! Several `rchat serve --cluster redis://…` nodes acting as one server.
//!
//! Redis holds what must be one across nodes, and each node keeps doing
//! the rest locally:
//!
//! - **One order per room.** A room's messages go into one Redis stream,
//!   appended by one Lua script that also advances the room's counter, so
//!   entry `SEQ-0` is message `SEQ`: the order every node delivers, and the
//!   room's history ([`crate::store::redis`] reads it back).
//! - **Delivery.** Each node's reader ([`tail`]) follows the streams of the
//!   rooms live on the node and hands each entry to the hub, which tells
//!   the local members once each, in order. A sender's own message comes
//!   back through the stream too, and skips its author.
//! - **One namespace of nicks.** A nick is claimed in Redis
//!   (`rchat:nick:KEY`, case-folded, `SET NX`) before the hub takes it, and
//!   released only by its owner (a compare-and-delete script).
//! - **Who is where** ([`members`]) and **which nodes live** ([`liveness`]):
//!   a node's heartbeat, the sweep that reaps dead nodes, and what a node
//!   does when it finds itself reaped or Redis emptied.
//!
//! No Redis call runs under the hub's lock: the sessions call the cluster,
//! then the hub. The scripts that make the rules hold are in [`scripts`].

pub mod liveness;
pub mod members;
pub mod scripts;
pub mod tail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;
use tracing::info;

use scripts::Scripts;

use crate::names::{Nick, RoomName};
use crate::server::hub::MemberId;
use crate::store::redis::keys;

/// Longest a Redis command may take before the caller is told it failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Guest numbers tried before registration gives up.
const GUEST_TRIES: usize = 16;
/// The counter guest nicks are numbered from, cluster-wide.
const GUESTS: &str = "rchat:guests";

/// Private messages kept in a node's inbox stream; its reader takes them
/// at once, so this bounds only what waits for a node that is gone.
const INBOX_KEPT: u64 = 10_000;

/// Why the cluster could not be joined, or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid --cluster address {url}: {error}; use redis://HOST:PORT[/DB] or redis+unix:///PATH")]
    Url {
        url: String,
        error: redis::RedisError,
    },
    #[error("cannot reach the cluster's Redis at {url}: {error}")]
    Connect {
        url: String,
        error: redis::RedisError,
    },
    #[error("this server is rejoining the cluster; try again in a few seconds")]
    NotRegistered,
    #[error("the cluster's Redis failed: {0}")]
    Redis(redis::RedisError),
}

impl From<redis::RedisError> for ClusterError {
    fn from(error: redis::RedisError) -> ClusterError {
        if scripts::is_not_registered(&error) {
            ClusterError::NotRegistered
        } else {
            ClusterError::Redis(error)
        }
    }
}

/// Who this node is in the cluster: both change when it must register
/// again (see [`liveness`]).
#[derive(Debug, Clone)]
struct Identity {
    /// Random per registration: in every claim and entry the node makes.
    node: Arc<str>,
    /// The cluster's epoch when the node registered: a different one in
    /// Redis means Redis has lost its data since.
    epoch: Arc<str>,
}

/// This node's handle on the cluster. Cheap to share: wrap in an `Arc`.
pub struct Cluster {
    url: String,
    client: redis::Client,
    /// Ordinary commands, through a connection that reconnects by itself.
    cmd: ConnectionManager,
    identity: RwLock<Identity>,
    /// The nicks this node's sessions hold: nick key → (nick, owner), so
    /// that they can be claimed again if Redis loses them.
    claims: Mutex<HashMap<String, (Nick, String)>>,
    scripts: Scripts,
    /// Entries kept per room stream (0: all).
    max_per_room: u64,
    /// How long the node's heartbeat lives in Redis unrefreshed.
    node_ttl: Duration,
    /// Wakes the heartbeat early: a call found the node unregistered.
    suspect: Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node())
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A fresh node id.
fn new_node_id() -> Arc<str> {
    format!("{:016x}", fastrand::u64(..)).into()
}

/// Where a message was placed.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub seq: u64,
    pub ts_ms: u64,
}

impl Cluster {
    /// Joins the cluster at `url`: checks that Redis answers and registers
    /// the node, so a wrong address fails at start rather than at the first
    /// message. `node_ttl` is how long the node counts as alive without a
    /// heartbeat.
    pub async fn connect(
        url: &str,
        max_per_room: Option<u64>,
        node_ttl: Duration,
    ) -> Result<Cluster, ClusterError> {
        // A password in the address never reaches a log or an error.
        let shown = redact(url);
        let client = redis::Client::open(url).map_err(|error| ClusterError::Url {
            url: shown.clone(),
            error,
        })?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2);
        let connect = async {
            let mut cmd = client.get_connection_manager_with_config(config).await?;
            redis::cmd("PING").query_async::<String>(&mut cmd).await?;
            Ok::<_, redis::RedisError>(cmd)
        };
        let cmd = connect.await.map_err(|error| ClusterError::Connect {
            url: shown.clone(),
            error,
        })?;
        let cluster = Cluster {
            url: shown,
            client,
            cmd,
            identity: RwLock::new(Identity {
                node: new_node_id(),
                epoch: "".into(),
            }),
            claims: Mutex::new(HashMap::new()),
            scripts: Scripts::default(),
            max_per_room: max_per_room.unwrap_or(0),
            node_ttl,
            suspect: Notify::new(),
        };
        cluster.register(None).await?;
        info!(node = %cluster.node(), "joined the cluster at {}", cluster.url);
        Ok(cluster)
    }

    /// The Redis address, with any password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A Redis client for the same server (the store and the reader open
    /// their own connections).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// This node's current id.
    pub fn node(&self) -> Arc<str> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .node
            .clone()
    }

    fn epoch(&self) -> Arc<str> {
        self.identity
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .epoch
            .clone()
    }

    /// What a claim by this session holds: the node and a token of the
    /// session's own, so that only its owner can release it.
    pub fn owner(&self, token: u64) -> String {
        format!("{}/{token:x}", self.node())
    }

    /// Tells the heartbeat a call was refused for want of registration.
    fn refused<T>(&self, result: Result<T, ClusterError>) -> Result<T, ClusterError> {
        if matches!(result, Err(ClusterError::NotRegistered)) {
            self.suspect.notify_one();
        }
        result
    }

    /// Places a chat line in its room's order.
    pub async fn append(
        &self,
        room: &RoomName,
        from: &Nick,
        text: &str,
        action: bool,
        member: MemberId,
    ) -> Result<Placed, ClusterError> {
        let key = room.key();
        let ts_ms = now_ms();
        let placed = self
            .scripts
            .append
            .key(keys::log(&key))
            .key(keys::seq(&key))
            .arg(self.max_per_room)
            .arg(room.as_str())
            .arg(from.as_str())
            .arg(text)
            .arg(if action { "1" } else { "0" })
            .arg(ts_ms)
            .arg(&*self.node())
            .arg(member.raw())
            .invoke_async::<u64>(&mut self.cmd.clone())
            .await
            .map_err(ClusterError::from);
        let seq = self.refused(placed)?;
        Ok(Placed { seq, ts_ms })
    }

    /// Sends a private message to whoever holds `to`, on whichever node;
    /// `false` if no one in the cluster has that nick.
    pub async fn send_private(
        &self,
        from: &Nick,
        to: &str,
        text: &str,
    ) -> Result<bool, ClusterError> {
        let sent: i64 = self
            .scripts
            .private
            .key(format!("rchat:nick:{}", to.to_ascii_lowercase()))
            .arg(from.as_str())
            .arg(to)
            .arg(text)
            .arg(now_ms())
            .arg(INBOX_KEPT)
            .invoke_async(&mut self.cmd.clone())
            .await?;
        Ok(sent == 1)
    }

    /// This node's inbox: private messages sent to its members from other
    /// nodes.
    pub fn inbox(&self) -> String {
        format!("rchat:node:{}:inbox", self.node())
    }

    /// Claims `nick` for `owner`, cluster-wide; `false` if someone holds
    /// it (an owner re-claiming its own nick gets `true`).
    pub async fn claim(&self, nick: &Nick, owner: &str) -> Result<bool, ClusterError> {
        // A session of an id this node has given up claims nothing.
        if !self.owns(owner) {
            return Err(ClusterError::NotRegistered);
        }
        let node = self.node();
        let claimed = self
            .scripts
            .claim
            .key(nick_key(nick))
            .key(format!("rchat:node:{node}:nicks"))
            .arg(owner)
            .arg(&*node)
            .arg(nick.key())
            .invoke_async::<i64>(&mut self.cmd.clone())
            .await
            .map_err(ClusterError::from);
        let claimed = self.refused(claimed)? == 1;
        if claimed && !self.owns(owner) {
            // The node took a new id meanwhile: this claim is the old id's,
            // and goes with it.
            return Err(ClusterError::NotRegistered);
        }
        if claimed {
            self.claims_held()
                .insert(nick.key(), (nick.clone(), owner.to_string()));
        }
        Ok(claimed)
    }

    /// Releases `nick` if `owner` holds it.
    pub async fn release(&self, nick: &Nick, owner: &str) -> Result<(), ClusterError> {
        {
            let mut held = self.claims_held();
            if held.get(&nick.key()).is_some_and(|(_, o)| o == owner) {
                held.remove(&nick.key());
            }
        }
        let _: i64 = self
            .scripts
            .release
            .key(nick_key(nick))
            .arg(owner)
            .arg(nick.key())
            .invoke_async(&mut self.cmd.clone())
            .await?;
        Ok(())
    }

    fn claims_held(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Nick, String)>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A guest nick no one in the cluster holds, claimed for `owner`.
    pub async fn claim_guest(&self, owner: &str) -> Result<Option<Nick>, ClusterError> {
        for _ in 0..GUEST_TRIES {
            let n: u64 = redis::cmd("INCR")
                .arg(GUESTS)
                .query_async(&mut self.cmd.clone())
                .await?;
            let Ok(nick) = Nick::parse(&format!("guest{n}")) else {
                continue;
            };
            if self.claim(&nick, owner).await? {
                return Ok(Some(nick));
            }
        }
        Ok(None)
    }

    /// The command connection, for the reader's `CLIENT UNBLOCK`.
    pub(crate) fn commands(&self) -> ConnectionManager {
        self.cmd.clone()
    }
}

/// `url` with the user and password part masked: `redis://***@host:6379`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// A nick's claim key: its case-folded form.
fn nick_key(nick: &Nick) -> String {
    format!("rchat:nick:{}", nick.key())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_the_address_are_masked() {
        assert_eq!(
            redact("redis://:s3cret@10.0.0.5:6379/2"),
            "redis://***@10.0.0.5:6379/2"
        );
        assert_eq!(redact("redis://user:p@ss@host/0"), "redis://***@host/0");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            redact("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
    }

    #[tokio::test]
    async fn a_wrong_address_is_refused_without_its_password() {
        let err = Cluster::connect(
            "redis://:hunter2@127.0.0.1:1/0",
            None,
            Duration::from_secs(15),
        )
        .await
        .expect_err("nothing listens on port 1");
        let shown = err.to_string();
        assert!(
            shown.contains("cannot reach the cluster's Redis"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
