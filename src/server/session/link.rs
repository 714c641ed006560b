//! A session's handle on the cluster: the owner name its nick claims are
//! made under, so that only this session can release them.

use std::sync::Arc;

use tracing::warn;

use crate::names::Nick;
use crate::server::cluster::Cluster;

/// Attempts at releasing a nick's claim, and the pause before a retry
/// (growing with each).
const RELEASE_TRIES: u32 = 4;
const RELEASE_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

pub(super) struct Link {
    pub(super) cluster: Arc<Cluster>,
    /// This session's claims hold this value in Redis.
    pub(super) owner: String,
}

impl Link {
    pub(super) fn new(cluster: Arc<Cluster>) -> Arc<Link> {
        let owner = cluster.owner(fastrand::u64(..));
        Arc::new(Link { cluster, owner })
    }

    /// A guest nick claimed cluster-wide, or why there is none.
    pub(super) async fn guest(&self) -> Result<Nick, String> {
        match self.cluster.claim_guest(&self.owner).await {
            Ok(Some(nick)) => Ok(nick),
            Ok(None) => Err("cannot find a free guest nick; try again".into()),
            Err(e) => Err(format!("the server cannot register you now ({e})")),
        }
    }

    /// Releases `nick`'s claim in the background (the session is ending, or
    /// has moved to another nick).
    pub(super) fn release(self: &Arc<Self>, nick: Nick) {
        let link = self.clone();
        tokio::spawn(async move {
            // A claim left behind would keep the nick from everyone: try a
            // few times (the command connection reconnects by itself).
            for attempt in 1..=RELEASE_TRIES {
                match link.cluster.release(&nick, &link.owner).await {
                    Ok(()) => return,
                    Err(e) if attempt == RELEASE_TRIES => {
                        warn!(nick = %nick, error = %e, "cannot release a nick's claim");
                    }
                    Err(_) => tokio::time::sleep(RELEASE_RETRY * attempt).await,
                }
            }
        });
    }
}
