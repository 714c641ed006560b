//! Which nodes are alive, and what a node does when it finds it is not.
//!
//! Each node keeps a heartbeat key (`rchat:node:NODE:alive`) that expires
//! `cluster_node_ttl` after its last refresh, and refreshes it three times
//! per TTL. Every node also sweeps the registered nodes (`rchat:nodes`) as
//! often, and reaps each whose heartbeat has expired with one script that
//! runs once per dead node: its nicks are freed, its members leave their
//! rooms (every node tells its members they were dropped) and its inbox
//! goes.
//!
//! A node that cannot refresh its heartbeat before it could expire stops
//! serving: it drops its clients (they reconnect, perhaps to another node)
//! and registers again under a new id, so two nodes never both own a nick.
//! A node that finds the cluster's epoch changed knows Redis lost its data:
//! it keeps its clients, tells them, and registers its rooms, nicks and
//! members again.
//!
//! What this does not do: decide anything about messages, which
//! [`super::tail`] follows.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{members, new_node_id, Cluster, ClusterError, Identity, COMMAND_TIMEOUT};
use crate::server::hub::{Hub, NodeRoster};

/// The longest pause between heartbeats and between sweeps, whatever the
/// TTL.
const PERIOD_MAX: Duration = Duration::from_secs(5);
/// How far above the highest seq it had delivered a node puts a room's
/// counter when Redis has lost it, so that a message numbered while
/// another node was behind is not taken for one already told.
const SEQ_GAP: u64 = 1000;
/// Back-off between attempts to register again.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// What a dropped client is told.
const LOST_NOTICE: &str =
    "this server lost contact with the cluster; reconnect (perhaps to another server)";
/// What other nodes' members are told of a reaped node's members.
const REAPED_REASON: &str = "their server stopped answering";
/// What other nodes' members are told when a node shuts down.
const SHUTDOWN_REASON: &str = "their server shut down";
/// What every client is told when Redis has lost its data.
const EMPTIED_NOTICE: &str =
    "the cluster's Redis restarted without its data: earlier history is gone";
/// What a client whose nick someone took meanwhile is told.
const NICK_LOST_NOTICE: &str =
    "someone took your nick while the cluster's Redis was restarting; reconnect";

impl Cluster {
    /// How often the heartbeat is refreshed and dead nodes are swept.
    pub fn beat_period(&self) -> Duration {
        (self.node_ttl / 3).clamp(Duration::from_millis(10), PERIOD_MAX)
    }

    /// Registers the node under its current id. With `roster`, Redis has
    /// lost its data and this node's rooms, nicks and members are put back
    /// too; returns the nick keys someone else took meanwhile.
    pub(super) async fn register(
        &self,
        roster: Option<&NodeRoster>,
    ) -> Result<Vec<String>, ClusterError> {
        let node = self.node();
        let mut call = self.scripts.register.prepare_invoke();
        call.arg(&*node)
            .arg(self.node_ttl.as_millis() as u64)
            .arg(format!("{:016x}", fastrand::u64(..)));
        let empty = NodeRoster::default();
        let roster = roster.unwrap_or(&empty);
        call.arg(roster.rooms.len());
        for (key, seq) in &roster.rooms {
            let raised = if *seq > 0 { seq + SEQ_GAP } else { 0 };
            call.arg(key).arg(raised);
        }
        let prefix = format!("{node}/");
        let claims: Vec<(String, String)> = self
            .claims_held()
            .iter()
            .filter(|(_, (_, owner))| owner.starts_with(&prefix))
            .map(|(key, (_, owner))| (key.clone(), owner.clone()))
            .collect();
        call.arg(claims.len());
        for (key, owner) in &claims {
            call.arg(key).arg(owner);
        }
        for (room, nick) in &roster.memberships {
            call.arg(room.key())
                .arg(room.as_str())
                .arg(nick.key())
                .arg(nick.as_str());
        }
        let (epoch, lost): (String, Vec<String>) = call.invoke_async(&mut self.commands()).await?;
        {
            let mut held = self.claims_held();
            for key in &lost {
                held.remove(key);
            }
        }
        let mut identity = self.identity.write().unwrap_or_else(|e| e.into_inner());
        if identity.node == node {
            identity.epoch = epoch.into();
        }
        Ok(lost)
    }

    /// Refreshes the heartbeat: 1 if done, -1 if the node was reaped, -2
    /// if Redis has lost its data.
    async fn beat(&self) -> Result<i64, ClusterError> {
        let beat = self
            .scripts
            .beat
            .arg(&*self.node())
            .arg(self.node_ttl.as_millis() as u64)
            .arg(&*self.epoch())
            .invoke_async(&mut self.commands())
            .await?;
        Ok(beat)
    }

    /// Reaps every registered node whose heartbeat has expired; returns how
    /// many this call reaped.
    pub async fn sweep(&self) -> Result<usize, ClusterError> {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg("rchat:nodes")
            .query_async(&mut self.commands())
            .await?;
        let me = self.node();
        let mut reaped = 0;
        for node in nodes.iter().filter(|n| n.as_str() != &*me) {
            if self.reap(node, REAPED_REASON).await? {
                info!(dead = %node, "reaped a node whose heartbeat expired");
                reaped += 1;
            }
        }
        Ok(reaped)
    }

    /// Reaps `node` if its heartbeat has expired and no one has yet.
    async fn reap(&self, node: &str, reason: &str) -> Result<bool, ClusterError> {
        let reaped: i64 = self
            .scripts
            .reap
            .arg(node)
            .arg(reason)
            .arg(members::EVENTS_KEPT)
            .invoke_async(&mut self.commands())
            .await?;
        Ok(reaped == 1)
    }

    /// Leaves the cluster at shutdown: the heartbeat goes at once and the
    /// node reaps itself, so the others tell its members' departure now
    /// rather than a TTL later.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let node = self.node();
        let _: i64 = redis::cmd("DEL")
            .arg(format!("rchat:node:{node}:alive"))
            .query_async(&mut self.commands())
            .await?;
        self.reap(&node, SHUTDOWN_REASON).await?;
        Ok(())
    }

    /// Takes a new id: what the old one held is for a reaper now.
    fn new_identity(&self) -> Arc<str> {
        let mut identity = self.identity.write().unwrap_or_else(|e| e.into_inner());
        let old = identity.node.clone();
        *identity = Identity {
            node: new_node_id(),
            epoch: identity.epoch.clone(),
        };
        self.claims_held().clear();
        old
    }

    /// Whether `owner` (of a claim) names this node's current id.
    pub(super) fn owns(&self, owner: &str) -> bool {
        owner.split('/').next() == Some(&*self.node())
    }
}

/// Starts the heartbeat and the sweep; they stop when `stop` is
/// cancelled.
pub fn spawn(cluster: Arc<Cluster>, hub: Arc<Hub>, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let period = cluster.beat_period();
        let patience = COMMAND_TIMEOUT.min(period);
        // Registration happened at connect, just before.
        let mut alive_until = Instant::now() + cluster.node_ttl;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
                _ = cluster.suspect.notified() => {}
                _ = tokio::time::sleep_until(alive_until) => {
                    warn!(node = %cluster.node(), "the heartbeat could not be refreshed in time; \
                        dropping every client and registering again");
                    start_over(&cluster, &hub, &stop).await;
                    alive_until = Instant::now() + cluster.node_ttl;
                    continue;
                }
            }
            let sent = Instant::now();
            match tokio::time::timeout(patience, cluster.beat()).await {
                Ok(Ok(1)) => alive_until = sent + cluster.node_ttl,
                Ok(Ok(-1)) => {
                    warn!(node = %cluster.node(), "another node reaped this one; \
                        dropping every client and registering again");
                    start_over(&cluster, &hub, &stop).await;
                    alive_until = Instant::now() + cluster.node_ttl;
                    continue;
                }
                Ok(Ok(_)) => {
                    warn!("the cluster's Redis has lost its data; registering this node again");
                    if restore(&cluster, &hub).await {
                        alive_until = Instant::now() + cluster.node_ttl;
                    }
                }
                Ok(Err(e)) => warn!(error = %e, "cannot refresh this node's heartbeat"),
                Err(_) => warn!("cannot refresh this node's heartbeat: Redis did not answer"),
            }
            match tokio::time::timeout(patience, cluster.sweep()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "cannot sweep for dead nodes"),
                Err(_) => warn!("cannot sweep for dead nodes: Redis did not answer"),
            }
        }
    })
}

/// Stops serving under the current id and registers under a new one:
/// every client is dropped, and the old id is left to be reaped (by this
/// node too, once its heartbeat has expired).
async fn start_over(cluster: &Cluster, hub: &Hub, stop: &CancellationToken) {
    // The id changes first, so that no claim made from here on counts for
    // a session of the old one.
    let old = cluster.new_identity();
    let dropped = hub.drop_members(None, LOST_NOTICE);
    info!(old = %old, node = %cluster.node(), dropped, "registering under a new id");
    let mut retry = RETRY_MIN;
    loop {
        match tokio::time::timeout(COMMAND_TIMEOUT, cluster.register(None)).await {
            Ok(Ok(_)) => break,
            Ok(Err(e)) => warn!(error = %e, "cannot register this node again yet"),
            Err(_) => warn!("cannot register this node again yet: Redis did not answer"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(RETRY_MAX);
    }
    info!(node = %cluster.node(), "registered again");
    if let Ok(Ok(true)) =
        tokio::time::timeout(COMMAND_TIMEOUT, cluster.reap(&old, REAPED_REASON)).await
    {
        info!(dead = %old, "reaped this node's old id");
    }
}

/// Registers this node's rooms, nicks and members again after Redis lost
/// them, and tells the clients; `false` if Redis refused (the next beat
/// tries again).
async fn restore(cluster: &Cluster, hub: &Hub) -> bool {
    let roster = hub.roster();
    match tokio::time::timeout(COMMAND_TIMEOUT, cluster.register(Some(&roster))).await {
        Ok(Ok(lost)) => {
            if !lost.is_empty() {
                hub.drop_members(Some(&lost), NICK_LOST_NOTICE);
            }
            hub.notice_all(EMPTIED_NOTICE);
            info!(
                rooms = roster.rooms.len(),
                members = roster.memberships.len(),
                lost = lost.len(),
                "registered this node again after Redis lost its data"
            );
            true
        }
        Ok(Err(e)) => {
            warn!(error = %e, "cannot register this node again yet");
            false
        }
        Err(_) => {
            warn!("cannot register this node again yet: Redis did not answer");
            false
        }
    }
}
