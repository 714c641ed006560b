//! A session's handle on the cluster: the owner name its nick claims are
//! made under, so that only this session can release them.

use std::sync::Arc;

use tracing::warn;

use crate::names::Nick;
use crate::server::cluster::Cluster;

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
            if let Err(e) = link.cluster.release(&nick, &link.owner).await {
                warn!(nick = %nick, error = %e, "cannot release a nick's claim");
            }
        });
    }
}
