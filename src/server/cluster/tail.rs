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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::streams::StreamReadReply;
use redis::AsyncConnectionConfig;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{members, Cluster, ClusterError};
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
/// How soon an unblock that found the read not yet blocked is tried again.
const UNBLOCK_RETRY: Duration = Duration::from_millis(2);
/// Unblocks tried per read; past them the new room waits for the block to
/// end.
const UNBLOCK_TRIES: u32 = 100;
/// Back-off between reconnection attempts.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the reader; it stops when `stop` is cancelled.
pub fn spawn(cluster: Arc<Cluster>, hub: Arc<Hub>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        // The inbox is new with the node's id: read from its start, and on
        // after the last entry taken (again from the start under a new id).
        let mut inbox_last = (cluster.inbox(), "0-0".to_string());
        // Each live room's events stream, from when the room was first
        // followed.
        let mut events_last: HashMap<String, String> = HashMap::new();
        loop {
            let read = follow(
                &cluster,
                &hub,
                &stop,
                &mut backoff,
                &mut inbox_last,
                &mut events_last,
            );
            match read.await {
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
    inbox_last: &mut (String, String),
    events_last: &mut HashMap<String, String>,
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
        events_last.retain(|key, _| rooms.iter().any(|r| &r.key == key));
        for room in &rooms {
            events_last
                .entry(room.key.clone())
                .or_insert_with(|| room.events_from.clone());
        }
        let inbox = cluster.inbox();
        if inbox_last.0 != inbox {
            *inbox_last = (inbox.clone(), "0-0".to_string());
        }
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&inbox);
        for room in &rooms {
            cmd.arg(keys::log(&room.key))
                .arg(members::events_key(&room.key));
        }
        cmd.arg(inbox_last.1.as_str());
        for room in &rooms {
            cmd.arg(format!("{}-0", room.last_seq))
                .arg(events_last.get(&room.key).map_or("$", String::as_str));
        }
        let read =
            tokio::time::timeout(OUTER, cmd.query_async::<Option<StreamReadReply>>(&mut conn));
        tokio::pin!(read);
        let mut poked = false;
        let mut tries = 0;
        let reply = loop {
            tokio::select! {
                // The read first: it must be on its way before it can be
                // cut short.
                biased;
                r = &mut read => break r,
                _ = stop.cancelled() => return Ok(()),
                _ = &mut created, if !poked => {
                    poked = true;
                }
                // Until the read has really blocked in Redis, an unblock
                // finds nothing to cut: try again shortly.
                woke = unblock(cluster, id), if poked && tries < UNBLOCK_TRIES => {
                    tries += 1;
                    if woke {
                        tries = UNBLOCK_TRIES;
                    } else {
                        tokio::time::sleep(UNBLOCK_RETRY).await;
                    }
                }
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
                    inbox_last.1 = entry.id.clone();
                }
                continue;
            }
            let Some(room) = stream.key.strip_prefix("rchat:room:") else {
                continue;
            };
            if let Some(room_key) = room.strip_suffix(":events") {
                for entry in &stream.ids {
                    if let Some(event) = members::event_of(entry, &cluster.node()) {
                        hub.tell_remote(room_key, event);
                    }
                    events_last.insert(room_key.to_string(), entry.id.clone());
                }
                continue;
            }
            let Some(room_key) = room.strip_suffix(":log") else {
                continue;
            };
            for entry in &stream.ids {
                let Some(msg) = entry_message(room_key, entry) else {
                    continue;
                };
                let origin = (entry.get::<String>("n").as_deref() == Some(&*cluster.node()))
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
/// block. `true` if the read was cut short.
async fn unblock(cluster: &Cluster, reader: i64) -> bool {
    let result: redis::RedisResult<i64> = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(reader)
        .query_async(&mut cluster.commands())
        .await;
    match result {
        Ok(n) => n == 1,
        Err(e) => {
            warn!(error = %e, "cannot wake the cluster reader");
            false
        }
    }
}
