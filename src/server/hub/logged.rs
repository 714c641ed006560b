//! The hub's side of a cluster: rooms whose order is given outside the
//! hub. In a cluster, a message is placed in its room's order by Redis;
//! the node's reader then hands it here, and the hub only tells the room's
//! members on this node, in that order, once each. Also the checks and
//! registrations the cluster's callers need around it.
//!
//! Nothing here does I/O: the caller has already talked to Redis.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, Notify};
use tracing::warn;

use super::{key_of, Hub, HubError, MemberId};
use crate::event::{Envelope, Event, LeaveReason};
use crate::names::{Nick, RoomName};
use crate::server::outbox::{Outbox, Outgoing};
use crate::store::StoredMessage;

/// A change in who is where, as a cluster's publisher needs it to keep
/// the cluster's member lists and tell the other nodes.
#[derive(Debug, Clone)]
pub enum Membership {
    Joined {
        room: RoomName,
        nick: Nick,
    },
    Left {
        room: RoomName,
        nick: Nick,
        reason: LeaveReason,
    },
    Renamed {
        old: Nick,
        new: Nick,
        rooms: Vec<RoomName>,
    },
}

/// A room live on this node, as a cluster's reader follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveRoom {
    pub key: String,
    pub last_seq: u64,
    /// Where the node follows the room's cluster events from.
    pub events_from: String,
}

/// Changes waiting for the publisher; past this they are dropped (and
/// logged), never waited for under the lock.
pub const MEMBERSHIP_QUEUE: usize = 4096;

/// Hands a change to the publisher without waiting.
pub(super) fn tell(observer: &mpsc::Sender<Membership>, change: Membership) {
    if observer.try_send(change).is_err() {
        warn!("the cluster's member lists are behind; a membership change was dropped");
    }
}

impl super::State {
    pub(super) fn observe(&self, change: Membership) {
        if let Some(observer) = &self.observer {
            tell(observer, change);
        }
    }
}

impl MemberId {
    /// The number behind the id, unique on this node while it runs.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The id whose [`MemberId::raw`] is `raw`, as a cluster entry written
    /// by this node names it.
    pub(crate) fn from_raw(raw: u64) -> MemberId {
        MemberId(raw)
    }
}

impl Hub {
    /// This hub, telling `observer` of every join, leave and rename.
    pub fn with_observer(self, observer: mpsc::Sender<Membership>) -> Hub {
        self.lock().observer = Some(observer);
        self
    }

    /// Tells this node's members of a room about a join, leave or rename on
    /// another node.
    pub fn tell_remote(&self, room_key: &str, event: Event) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(room) = st.rooms.get_mut(room_key) else {
            return;
        };
        match &event {
            Event::Joined { nick, .. } => {
                room.remote.insert(nick.key(), nick.clone());
            }
            Event::Left { nick, .. } => {
                room.remote.remove(&nick.key());
            }
            Event::Renamed { old, new } => {
                room.remote.remove(&old.key());
                room.remote.insert(new.key(), new.clone());
            }
            _ => {}
        }
        st.announce(room_key, Envelope::new(event), None);
        self.settle(st);
    }

    /// The name of `room` as it is spelled here, if it is live here.
    pub fn room_name(&self, room: &str) -> Option<RoomName> {
        self.lock().rooms.get(&key_of(room)).map(|r| r.name.clone())
    }

    /// [`Hub::connect_from`] under a nick chosen elsewhere (a cluster's
    /// guest nick, claimed in Redis first).
    pub fn connect_as(
        &self,
        outbox: Arc<Outbox>,
        addr: Option<IpAddr>,
        nick: Nick,
        greet: impl FnOnce(&Nick) -> Outgoing,
    ) -> Result<(MemberId, Nick), HubError> {
        self.admit(outbox, addr, Some(nick), greet)
    }

    /// Whether member `id` may post to `room`: its nick and the room's
    /// name if so.
    pub fn speaker_of(&self, id: MemberId, room: &str) -> Result<(Nick, RoomName), HubError> {
        let key = key_of(room);
        let mut guard = self.lock();
        let (from, target) = guard.speaker(id, &key, room)?;
        Ok((from, target.name.clone()))
    }

    /// Every live room: its key, the seq of the last message its members
    /// were told, and when it came to life here (ms since the epoch):
    /// where a cluster's reader goes on from.
    pub fn live_rooms(&self) -> Vec<LiveRoom> {
        let st = self.lock();
        st.rooms
            .iter()
            .map(|(key, room)| LiveRoom {
                key: key.clone(),
                last_seq: room.last_seq,
                events_from: room.events_from.clone(),
            })
            .collect()
    }

    /// Notified whenever a room comes to life.
    pub fn rooms_created(&self) -> &Notify {
        &self.created
    }

    /// Whether someone on this node has `nick` (ignoring case).
    pub fn is_here(&self, nick: &str) -> bool {
        self.lock().nicks.contains_key(&nick.to_ascii_lowercase())
    }

    /// Delivers a private message that came from another node to `to`,
    /// if it is still here; `false` if not.
    pub fn deliver_private(&self, from: Nick, to: &str, text: &str, ts_ms: u64) -> bool {
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(&target) = st.nicks.get(&to.to_ascii_lowercase()) else {
            return false;
        };
        let Some((to_nick, outbox)) = st
            .members
            .get(&target)
            .map(|m| (m.nick.clone(), m.outbox.clone()))
        else {
            return false;
        };
        let env = Envelope::new(Event::Private {
            from,
            to: to_nick,
            ts_ms,
            text: text.into(),
        });
        st.deliver(target, &outbox, &env);
        self.settle(st);
        true
    }

    /// Tells the room's members on this node a message placed in the
    /// room's order elsewhere: once, in order (a seq at or below the last
    /// one told is ignored), and not to `origin`, the member who said it.
    /// A room not live here is ignored: its members are elsewhere.
    pub fn deliver_logged(&self, msg: &StoredMessage, origin: Option<MemberId>) {
        let Some(event) = msg.to_event() else { return };
        let mut guard = self.lock();
        let st = &mut *guard;
        let Some(room) = st.rooms.get_mut(&msg.room) else {
            return;
        };
        if msg.seq <= room.last_seq {
            return;
        }
        room.last_seq = msg.seq;
        let env = Envelope::new(event);
        if let Some(history) = self.history.as_ref().filter(|h| h.replay > 0) {
            if room.recent.len() >= history.replay {
                room.recent.pop_front();
            }
            room.recent.push_back(env.clone());
        }
        st.fan_out(&msg.room, origin, &env);
        self.settle(st);
    }
}

/// Where a cluster's node re-registers from when Redis has lost its data:
/// the rooms live here and who is in them.
#[derive(Debug, Clone, Default)]
pub struct NodeRoster {
    /// Each live room's key and the seq its members were last told.
    pub rooms: Vec<(String, u64)>,
    /// Each (room, member) pair.
    pub memberships: Vec<(RoomName, Nick)>,
}

impl Hub {
    /// The rooms live here and their members, for a re-registration.
    pub fn roster(&self) -> NodeRoster {
        let st = self.lock();
        let rooms = st
            .rooms
            .iter()
            .map(|(key, room)| (key.clone(), room.last_seq))
            .collect();
        let memberships = st
            .members
            .values()
            .flat_map(|m| {
                m.rooms
                    .iter()
                    .filter_map(|key| st.rooms.get(key))
                    .map(|room| (room.name.clone(), m.nick.clone()))
            })
            .collect();
        NodeRoster { rooms, memberships }
    }

    /// Tells every member here `notice`.
    pub fn notice_all(&self, notice: &str) {
        let mut guard = self.lock();
        let st = &mut *guard;
        let env = Envelope::new(Event::Notice(notice.into()));
        let targets: Vec<_> = st
            .members
            .iter()
            .map(|(id, m)| (*id, m.outbox.clone()))
            .collect();
        for (id, outbox) in targets {
            st.deliver(id, &outbox, &env);
        }
        self.settle(st);
    }

    /// Disconnects the members holding these nicks (keys, case-folded),
    /// telling each `notice` first; `None` disconnects everyone. The
    /// members' rooms here see them dropped; new members are still let in.
    pub fn drop_members(&self, nicks: Option<&[String]>, notice: &str) -> usize {
        let mut guard = self.lock();
        let st = &mut *guard;
        let targets: Vec<MemberId> = match nicks {
            None => st.members.keys().copied().collect(),
            Some(keys) => keys
                .iter()
                .filter_map(|k| st.nicks.get(k).copied())
                .collect(),
        };
        let env = Envelope::new(Event::Notice(notice.into()));
        for &id in &targets {
            if let Some(member) = st.members.get(&id) {
                member.outbox.push(Outgoing::Event(env.clone()));
            }
            st.remove_member(id, LeaveReason::Dropped(notice.into()));
        }
        self.settle(st);
        targets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(room: &str, seq: u64, text: &str) -> StoredMessage {
        StoredMessage {
            room: room.to_ascii_lowercase(),
            room_name: room.to_string(),
            seq,
            ts_ms: 1,
            nick: "far".into(),
            text: text.into(),
            action: false,
        }
    }

    #[tokio::test]
    async fn logged_messages_reach_local_members_once_in_order_but_not_their_author() {
        let hub = Hub::default();
        let (a_box, b_box) = (Outbox::new(1 << 20), Outbox::new(1 << 20));
        let (a, _) = hub
            .connect(a_box.clone(), |_| Outgoing::Raw("hi\n".into()))
            .unwrap();
        let (b, _) = hub
            .connect_as(b_box.clone(), None, Nick::parse("Bob").unwrap(), |_| {
                Outgoing::Raw("hi\n".into())
            })
            .unwrap();
        // A nick claimed elsewhere cannot be taken twice here either.
        assert!(matches!(
            hub.connect_as(Outbox::new(10), None, Nick::parse("BOB").unwrap(), |_| {
                Outgoing::Raw("hi\n".into())
            }),
            Err(HubError::NickInUse(_))
        ));
        let confirm = |_: &super::super::Seated<'_>| Outgoing::Raw("in\n".into());
        hub.join(a, "Dev", confirm).unwrap();
        hub.join(b, "dev", confirm).unwrap();
        let seqs = |hub: &Hub| -> Vec<(String, u64)> {
            hub.live_rooms()
                .into_iter()
                .map(|r| (r.key, r.last_seq))
                .collect()
        };
        assert_eq!(seqs(&hub), vec![("dev".to_string(), 0)]);
        assert!(hub.speaker_of(a, "DEV").is_ok());
        assert!(matches!(
            hub.speaker_of(a, "other"),
            Err(HubError::NotInRoom(_))
        ));

        hub.deliver_logged(&msg("Dev", 1, "one"), Some(a));
        hub.deliver_logged(&msg("Dev", 2, "two"), None);
        hub.deliver_logged(&msg("Dev", 2, "two again"), None);
        hub.deliver_logged(&msg("Dev", 1, "one again"), None);
        hub.deliver_logged(&msg("elsewhere", 3, "not here"), None);
        assert_eq!(seqs(&hub), vec![("dev".to_string(), 2)]);

        let texts = |outbox: &Outbox| -> Vec<String> {
            outbox
                .drain_now()
                .into_iter()
                .filter_map(|item| match item {
                    Outgoing::Event(env) => match &env.event {
                        crate::event::Event::Message { text, seq, .. } => {
                            Some(format!("{seq}:{text}"))
                        }
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        };
        assert_eq!(texts(&a_box), vec!["2:two"], "the author is skipped");
        assert_eq!(texts(&b_box), vec!["1:one", "2:two"]);
    }
}
