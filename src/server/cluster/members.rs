//! Who is where, cluster-wide: each node keeps its own members in the
//! rooms' member hashes (`rchat:room:ROOM:members`, nick key → nick) and
//! tells the other nodes of joins, leaves and renames through each room's
//! events stream (`rchat:room:ROOM:events`), which their readers turn into
//! the usual notices.
//!
//! The hub hands every change to a bounded queue under its lock, without
//! waiting; the publisher here writes them to Redis in order. Notices are
//! best effort: a change written while a node's reader was reconnecting
//! may be told late, and one dropped from a full queue is not told.

use std::sync::Arc;

use redis::streams::StreamId;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Cluster, ClusterError};
use crate::event::{Event, LeaveReason};
use crate::names::{Nick, RoomName};
use crate::server::hub::Membership;

/// Events kept per room stream: only new ones are read, so this bounds
/// only memory.
pub(super) const EVENTS_KEPT: u64 = 1000;

/// A room's members on the other nodes, and the position of the room's
/// events stream that goes with that list (one script, so atomic): every
/// join or leave not in the list is after that position.
pub async fn elsewhere(
    cluster: &Cluster,
    room_key: &str,
) -> Result<(Vec<Nick>, String), ClusterError> {
    let node = cluster.node();
    let (position, names): (String, Vec<String>) = cluster
        .scripts
        .elsewhere
        .key(members_key(room_key))
        .key(format!("rchat:node:{node}:members"))
        .key(events_key(room_key))
        .arg(room_key)
        .invoke_async(&mut cluster.commands())
        .await?;
    let nicks = names.iter().filter_map(|n| Nick::parse(n).ok()).collect();
    Ok((nicks, position))
}

/// Every room with members anywhere: room key → room name as spelled.
const ROOMS: &str = "rchat:rooms";

pub fn members_key(room_key: &str) -> String {
    format!("rchat:room:{room_key}:members")
}

pub fn events_key(room_key: &str) -> String {
    format!("rchat:room:{room_key}:events")
}

/// Starts the publisher of this node's membership changes.
pub fn spawn_publisher(
    cluster: Arc<Cluster>,
    mut changes: mpsc::Receiver<Membership>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                _ = stop.cancelled() => return,
                change = changes.recv() => match change {
                    Some(change) => change,
                    None => return,
                },
            };
            if let Err(e) = publish(&cluster, &change).await {
                warn!(error = %e, "cannot update the cluster's member lists");
            }
        }
    })
}

/// Writes one change: each room it touches is one [`scripts`] call, which
/// keeps the member hashes and tells the room's events stream together.
///
/// [`scripts`]: super::scripts
async fn publish(cluster: &Cluster, change: &Membership) -> Result<(), ClusterError> {
    let node = cluster.node();
    match change {
        Membership::Joined { room, nick } => {
            let event = ["k", "join", "n", nick.as_str()];
            member(cluster, &node, "join", room, nick, None, &event).await
        }
        Membership::Left { room, nick, reason } => {
            let (kind, text, by) = match reason {
                LeaveReason::Part => ("part", None, None),
                LeaveReason::Quit(why) => ("quit", why.as_deref(), None),
                LeaveReason::Dropped(why) => ("dropped", Some(&**why), None),
                LeaveReason::Kicked { by, reason } => ("kicked", reason.as_deref(), Some(by)),
            };
            let mut event = vec!["k", "leave", "n", nick.as_str(), "why", kind];
            if let Some(text) = text {
                event.extend(["t", text]);
            }
            if let Some(by) = by {
                event.extend(["by", by.as_str()]);
            }
            member(cluster, &node, "leave", room, nick, None, &event).await
        }
        Membership::Renamed { old, new, rooms } => {
            let event = ["k", "rename", "n", new.as_str(), "old", old.as_str()];
            for room in rooms {
                member(cluster, &node, "rename", room, new, Some(old), &event).await?;
            }
            Ok(())
        }
    }
}

/// One membership change in one room, as the `MEMBER` script takes it.
async fn member(
    cluster: &Cluster,
    node: &str,
    op: &str,
    room: &RoomName,
    nick: &Nick,
    old: Option<&Nick>,
    event: &[&str],
) -> Result<(), ClusterError> {
    let mut call = cluster.scripts.member.prepare_invoke();
    call.arg(node)
        .arg(op)
        .arg(room.key())
        .arg(room.as_str())
        .arg(nick.key())
        .arg(nick.as_str())
        .arg(old.map(Nick::key).unwrap_or_default())
        .arg(EVENTS_KEPT)
        .arg("o")
        .arg(node)
        .arg("r")
        .arg(room.as_str());
    for field in event {
        call.arg(*field);
    }
    let _: i64 = call.invoke_async(&mut cluster.commands()).await?;
    Ok(())
}

/// Every member of a room, on every node, sorted ignoring case.
pub async fn who(cluster: &Cluster, room_key: &str) -> Result<Vec<Nick>, ClusterError> {
    let names: Vec<String> = redis::cmd("HVALS")
        .arg(members_key(room_key))
        .query_async(&mut cluster.commands())
        .await?;
    let mut nicks: Vec<Nick> = names.iter().filter_map(|n| Nick::parse(n).ok()).collect();
    nicks.sort_by_key(|n| n.key());
    Ok(nicks)
}

/// Every room with members on any node, with its member count, sorted by
/// name ignoring case.
pub async fn rooms(cluster: &Cluster) -> Result<Vec<(RoomName, usize)>, ClusterError> {
    let rooms: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(ROOMS)
        .query_async(&mut cluster.commands())
        .await?;
    let mut pipe = redis::pipe();
    for (key, _) in &rooms {
        pipe.cmd("HLEN").arg(members_key(key));
    }
    let counts: Vec<usize> = pipe.query_async(&mut cluster.commands()).await?;
    let mut list: Vec<(RoomName, usize)> = rooms
        .iter()
        .zip(counts)
        .filter(|(_, n)| *n > 0)
        .filter_map(|((_, name), n)| RoomName::parse(name).ok().map(|r| (r, n)))
        .collect();
    list.sort_by_key(|(r, _)| r.key());
    Ok(list)
}

/// The notice an events entry from another node stands for; `None` for
/// this node's own entries and for anything malformed.
pub fn event_of(entry: &StreamId, this_node: &str) -> Option<Event> {
    if entry.get::<String>("o").as_deref() == Some(this_node) {
        return None;
    }
    let room = RoomName::parse(&entry.get::<String>("r")?).ok()?;
    let nick = Nick::parse(&entry.get::<String>("n")?).ok()?;
    match entry.get::<String>("k")?.as_str() {
        "join" => Some(Event::Joined { room, nick }),
        "rename" => Some(Event::Renamed {
            old: Nick::parse(&entry.get::<String>("old")?).ok()?,
            new: nick,
        }),
        "leave" => {
            let text = entry.get::<String>("t").map(Arc::<str>::from);
            let reason = match entry.get::<String>("why")?.as_str() {
                "part" => LeaveReason::Part,
                "quit" => LeaveReason::Quit(text),
                "dropped" => LeaveReason::Dropped(text.unwrap_or_else(|| "connection lost".into())),
                "kicked" => LeaveReason::Kicked {
                    by: Nick::parse(&entry.get::<String>("by")?).ok()?,
                    reason: text,
                },
                _ => return None,
            };
            Some(Event::Left { room, nick, reason })
        }
        _ => None,
    }
}
