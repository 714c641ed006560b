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
//!
//! No Redis call runs under the hub's lock: the sessions call the cluster,
//! then the hub. What is not here yet: member lists, join and leave notices
//! and private messages across nodes, and node failure (see
//! docs/cluster.md).

pub mod members;
pub mod tail;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use tracing::info;

use crate::names::{Nick, RoomName};
use crate::server::hub::MemberId;
use crate::store::redis::keys;

/// Longest a Redis command may take before the caller is told it failed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Guest numbers tried before registration gives up.
const GUEST_TRIES: usize = 16;
/// The counter guest nicks are numbered from, cluster-wide.
const GUESTS: &str = "rchat:guests";

/// Appends one message to a room's stream and advances its counter; the
/// new seq is both the reply and the entry's id. `ARGV[1]`: the most
/// entries kept (0: all).
const APPEND: &str = r#"
local seq = redis.call('INCR', KEYS[2])
local id = seq .. '-0'
local max = tonumber(ARGV[1])
if max > 0 then
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', max, id,
    'r', ARGV[2], 'f', ARGV[3], 't', ARGV[4], 'a', ARGV[5], 'ts', ARGV[6], 'n', ARGV[7], 'm', ARGV[8])
else
  redis.call('XADD', KEYS[1], id,
    'r', ARGV[2], 'f', ARGV[3], 't', ARGV[4], 'a', ARGV[5], 'ts', ARGV[6], 'n', ARGV[7], 'm', ARGV[8])
end
return seq
"#;

/// Sends a private message to the node that holds the nick `KEYS[1]`
/// claims: appends it to that node's inbox stream. 0 if no one holds it.
const PRIVATE: &str = r#"
local owner = redis.call('GET', KEYS[1])
if not owner then return 0 end
local node = string.match(owner, '^([^/]+)/')
if not node then return 0 end
redis.call('XADD', 'rchat:node:' .. node .. ':inbox', 'MAXLEN', '~', ARGV[5], '*',
  'f', ARGV[1], 'to', ARGV[2], 't', ARGV[3], 'ts', ARGV[4])
return 1
"#;

/// Private messages kept in a node's inbox stream; its reader takes them
/// at once, so this bounds only what waits for a node that is gone.
const INBOX_KEPT: u64 = 10_000;

/// Deletes a nick's claim only if `ARGV[1]` still owns it.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

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
    #[error("the cluster's Redis failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// This node's handle on the cluster. Cheap to share: wrap in an `Arc`.
pub struct Cluster {
    url: String,
    client: redis::Client,
    /// Ordinary commands, through a connection that reconnects by itself.
    cmd: ConnectionManager,
    /// This node's id, random per start: in every claim and entry it makes.
    node: String,
    append: Script,
    release: Script,
    private: Script,
    /// Entries kept per room stream (0: all).
    max_per_room: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a message was placed.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub seq: u64,
    pub ts_ms: u64,
}

impl Cluster {
    /// Joins the cluster at `url`: checks that Redis answers, so a wrong
    /// address fails at start rather than at the first message.
    pub async fn connect(url: &str, max_per_room: Option<u64>) -> Result<Cluster, ClusterError> {
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
        let node = format!("{:016x}", fastrand::u64(..));
        info!(%node, "joined the cluster at {shown}");
        Ok(Cluster {
            url: shown,
            client,
            cmd,
            node,
            append: Script::new(APPEND),
            release: Script::new(RELEASE),
            private: Script::new(PRIVATE),
            max_per_room: max_per_room.unwrap_or(0),
        })
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

    pub fn node(&self) -> &str {
        &self.node
    }

    /// What a claim by this session holds: the node and a token of the
    /// session's own, so that only its owner can release it.
    pub fn owner(&self, token: u64) -> String {
        format!("{}/{token:x}", self.node)
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
        let seq: u64 = self
            .append
            .key(keys::log(&key))
            .key(keys::seq(&key))
            .arg(self.max_per_room)
            .arg(room.as_str())
            .arg(from.as_str())
            .arg(text)
            .arg(if action { "1" } else { "0" })
            .arg(ts_ms)
            .arg(&self.node)
            .arg(member.raw())
            .invoke_async(&mut self.cmd.clone())
            .await?;
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
        format!("rchat:node:{}:inbox", self.node)
    }

    /// Claims `nick` for `owner`, cluster-wide; `false` if someone holds
    /// it (an owner re-claiming its own nick gets `true`).
    pub async fn claim(&self, nick: &Nick, owner: &str) -> Result<bool, ClusterError> {
        let key = nick_key(nick);
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(owner)
            .arg("NX")
            .query_async(&mut self.cmd.clone())
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        let holder: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.cmd.clone())
            .await?;
        Ok(holder.as_deref() == Some(owner))
    }

    /// Releases `nick` if `owner` holds it.
    pub async fn release(&self, nick: &Nick, owner: &str) -> Result<(), ClusterError> {
        let _: i64 = self
            .release
            .key(nick_key(nick))
            .arg(owner)
            .invoke_async(&mut self.cmd.clone())
            .await?;
        Ok(())
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
        let err = Cluster::connect("redis://:hunter2@127.0.0.1:1/0", None)
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
