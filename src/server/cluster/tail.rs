//! A node's reader: follows the streams of the rooms live on this node and
//! hands every entry to the hub, in each room's order.
//!
//! It reads on a connection of its own, because `XREAD BLOCK` holds the
//! connection until something arrives: without a client-side response
//! timeout, each read bounded instead by an outer timeout a little longer
//! than the block. When a room comes to life on this node mid-read, the
//! read is cut short (`CLIENT UNBLOCK` from the command connection) so the
//! next one includes it. On any error it reconnects with back-off and goes
//! on from the last seq the hub delivered in each room, so nothing is lost
//! and nothing is told twice (the hub ignores a seq it has told).

use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Cluster, ClusterError};
use crate::names::Nick;
use crate::server::hub::{Hub, MemberId};
use crate::store::redis::{entry_message, keys};

/// How long one `XREAD` blocks in Redis.
const BLOCK: Duration = Duration::from_secs(5);
/// How long the reader waits for a blocked read to answer before it takes
/// the connection for dead.
const OUTER: Duration = Duration::from_secs(8);
/// Most entries read per room per round.
const COUNT: usize = 512;
/// Back-off between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the reader; it stops when `stop` is cancelled.
pub fn spawn(cluster: Arc<Cluster>, hub: Arc<Hub>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        // The inbox is new with the node's id: read from its start, and on
        // after the last entry taken.
        let mut inbox_last = "0-0".to_string();
        loop {
            match follow(&cluster, &hub, &stop, &mut backoff, &mut inbox_last).await {
                Ok(()) => return,
                Err(e) => warn!(error = %e, "the cluster reader lost Redis; reconnecting"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

/// Reads until stopped (`Ok`) or until the connection fails.
async fn follow(
    cluster: &Cluster,
    hub: &Hub,
    stop: &CancellationToken,
    backoff: &mut Duration,
    inbox_last: &mut String,
) -> Result<(), ClusterError> {
    let config = AsyncConnectionConfig::new()
        .set_response_timeout(None)
        .set_connection_timeout(Some(Duration::from_secs(2)));
    let mut conn = cluster
        .client()
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut conn)
        .await?;
    *backoff = BACKOFF_MIN;
    info!(node = %cluster.node(), "the cluster reader is following the rooms");
    loop {
        // Interest first, then the positions: a room created after the
        // positions were read is sure to wake this read.
        let created = hub.rooms_created().notified();
        tokio::pin!(created);
        created.as_mut().enable();
        let rooms = hub.live_rooms();
        let inbox = cluster.inbox();
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&inbox);
        for (key, _) in &rooms {
            cmd.arg(keys::log(key));
        }
        cmd.arg(inbox_last.as_str());
        for (_, seq) in &rooms {
            cmd.arg(format!("{seq}-0"));
        }
        let read =
            tokio::time::timeout(OUTER, cmd.query_async::<Option<StreamReadReply>>(&mut conn));
        tokio::pin!(read);
        let mut poked = false;
        let reply = loop {
            tokio::select! {
                r = &mut read => break r,
                _ = &mut created, if !poked => {
                    poked = true;
                    unblock(cluster, id).await;
                }
                _ = stop.cancelled() => return Ok(()),
            }
        };
        let reply = match reply {
            Ok(r) => r?,
            Err(_) => {
                return Err(ClusterError::Redis(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "a blocked read did not answer in time",
                ))))
            }
        };
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            if stream.key == inbox {
                for entry in &stream.ids {
                    deliver_private(hub, entry);
                    *inbox_last = entry.id.clone();
                }
                continue;
            }
            let Some(room_key) = stream
                .key
                .strip_prefix("rchat:room:")
                .and_then(|k| k.strip_suffix(":log"))
            else {
                continue;
            };
            for entry in &stream.ids {
                let Some(msg) = entry_message(room_key, entry) else {
                    continue;
                };
                let origin = (entry.get::<String>("n").as_deref() == Some(cluster.node()))
                    .then(|| entry.get::<u64>("m").map(MemberId::from_raw))
                    .flatten();
                hub.deliver_logged(&msg, origin);
            }
        }
    }
}

/// Hands a private message from another node to its addressee here, if it
/// is still here.
fn deliver_private(hub: &Hub, entry: &redis::streams::StreamId) {
    let (Some(from), Some(to), Some(text), Some(ts_ms)) = (
        entry.get::<String>("f"),
        entry.get::<String>("to"),
        entry.get::<String>("t"),
        entry.get::<u64>("ts"),
    ) else {
        return;
    };
    let Ok(from) = Nick::parse(&from) else { return };
    hub.deliver_private(from, &to, &text, ts_ms);
}

/// Cuts the reader's blocked `XREAD` short, so that its next read covers a
/// room that just came to life. A failure only delays that room by one
/// block.
async fn unblock(cluster: &Cluster, reader: i64) {
    let result: redis::RedisResult<i64> = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(reader)
        .query_async(&mut cluster.commands())
        .await;
    if let Err(e) = result {
        warn!(error = %e, "cannot wake the cluster reader");
    }
}
