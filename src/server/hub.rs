//! The hub: nicknames, rooms, membership, per-room sequencing and fan-out.
//!
//! It knows nothing of sockets or wire formats. A session registers a member
//! with an [`Outbox`] and calls the hub's methods; the hub answers the caller
//! directly and tells everyone else by pushing shared [`Envelope`]s into their
//! outboxes. All state sits behind one short-held lock, which is what makes a
//! room's order total: a message is sequenced and pushed to every member's
//! queue before the next one is looked at. Pushing never waits, so the lock is
//! never held across I/O; a member whose queue overflows is evicted.
//!
//! The writes a fan-out calls for happen after the lock is released: the
//! outboxes that were idle are collected while it is held and *kicked* when
//! it is dropped ([`Locked`]), each written straight to its socket when the
//! socket allows (see `outbox.rs`). A room bigger than `direct_fanout` is
//! kicked in parts, a task each, while traffic is quiet, and has its
//! members' writer tasks woken when it is busier; a summary told to
//! thousands at once is written by a task of its own, a slice at a time,
//! so it does not queue ahead of every other room's traffic (`kicks.rs`).
//!
//! This file holds the hub's types, its lock and the calls about members
//! themselves; the calls by kind live beside it (`joins.rs`, `talk.rs`,
//! `operators.rs`, `history.rs`), and what happens under the lock in
//! `state.rs`.
//!
//! A member may be in several rooms at once (structured clients need this);
//! the text protocol simply uses one at a time.
//!
//! Big rooms are kept cheap to join and leave: a room's roster is kept in
//! nick order, so telling a joiner who is there is a walk, not a sort; and a
//! room of `BIG_ROOM` (32) members or more holds its join and leave notices for
//! up to [`NOTICE_DELAY`] and tells them folded into a summary of how the
//! roster changed (`crowd.rs`), always before the next message of anyone
//! they are about, so a wave of joins costs each member a few short lines
//! rather than one per join, and a busy room's chat does not cut the
//! summaries short. The server drives the delay
//! ([`Hub::notices_held`], [`Hub::tell_held`]); the hub has no timers.
//!
//! With [`History`], the hub also hands every room message to the store, in
//! the same lock hold that sequences it (appending only queues, it never
//! waits for the disk), and keeps each live room's newest messages in memory
//! for the replay a joiner gets. Replay is queued in the lock hold that adds
//! the joiner, so live traffic continues exactly after it. A room's numbering
//! is taken from the store when the room is created, so it survives the room
//! emptying and the server restarting.
//!
//! # What may happen under the lock
//!
//! Only work on memory that cannot wait: map lookups, sequencing, pushing
//! to outboxes (which never block; an overflow marks the member for
//! eviction), queueing an append to the store (which never blocks; a full
//! queue fails the receipt), and logging. Never a socket, a disk read, a
//! network round trip, an `.await` or a sleep: one slow call there would
//! stall every room. So a room that comes back to life is read from the
//! store *before* the lock is taken ([`Hub::prepare_join`], or the blocking
//! read in [`Hub::join`] done with the lock released), and the read is
//! checked against the rooms retired meanwhile, so numbering never goes
//! back. Private messages' numbering is read the same way.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

use tracing::{debug, error, info, warn};

use crate::event::{Bundle, Envelope, Event, LeaveReason};
use crate::names::{key_of, NameError, Nick, RoomName};
use crate::server::access::Access;
use crate::server::bans::Bans;
use crate::server::outbox::{Outbox, Outgoing, Push};
use crate::server::pace::Pacer;
use crate::store::{Receipt, RoomLog, Store, StoredMessage};

/// Store key under which private messages are kept with `--store-private`.
/// It cannot collide with a room's key: room names have no `~`.
pub const PRIVATE_KEY: &str = "~private";

/// Rooms with at least this many members hold their join and leave notices
/// briefly and tell them folded into summaries. A wave of a thousand joins
/// into a room of five thousand is five million pushes one by one, all
/// under the hub's lock; held, it is a few thousand. Even a room of 100
/// that thousands pass through (every text client starts in the lobby)
/// would be told two lines per passer-by, a million deliveries for 10,000:
/// held, those who came and went within one summary are not told at all.
/// Small rooms keep their notices immediate, one line each.
const BIG_ROOM: usize = 32;
/// Most notices a room holds while members have joined since the first:
/// the next one tells them all at once. Each such member is told only the
/// notices after it, folded apart, which costs the lock hold time in the
/// square of the notices held.
const MAX_HELD: usize = 256;
/// Most notices a room holds when nobody joined meanwhile (a wave of
/// leaves): one fold for everyone, so far more can wait for their due time,
/// by when most of those leaving are gone and are told nothing.
const MAX_HELD_UNSEATED: usize = 16 * 1024;
/// Shortest a room holds its notices: they are due this long after the
/// first, in a room of up to 500.
pub const NOTICE_DELAY: Duration = Duration::from_millis(50);
/// Longer in bigger rooms, by this much per member: each summary costs a
/// line to every member, so a room of 10,000 told twenty summaries a
/// second during a wave of joins would be told 200,000 lines a second
/// about it. Scaled, the lines a wave costs stay about the same whatever
/// the room's size (10 per millisecond).
const NOTICE_DELAY_PER_MEMBER: Duration = Duration::from_micros(100);
/// Longest a notice is held, in the biggest rooms.
const MAX_NOTICE_DELAY: Duration = Duration::from_secs(1);

/// How long a room of `members` holds its notices.
fn notice_delay(members: usize) -> Duration {
    let scaled = NOTICE_DELAY_PER_MEMBER.saturating_mul(u32::try_from(members).unwrap_or(u32::MAX));
    scaled.clamp(NOTICE_DELAY, MAX_NOTICE_DELAY)
}
/// Rooms remembered as retired, to check a store read made with the lock
/// released; a read older than this many retirements is simply redone.
const RETIRED_KEPT: usize = 1024;

#[path = "hub/crowd.rs"]
mod crowd;
#[path = "hub/kicks.rs"]
mod kicks;
#[path = "hub/logged.rs"]
mod logged;
#[path = "hub/roster.rs"]
mod roster;
use roster::Roster;
#[path = "hub/history.rs"]
mod history;
#[path = "hub/joins.rs"]
mod joins;
#[path = "hub/operators.rs"]
mod operators;
#[path = "hub/state.rs"]
mod state;
#[path = "hub/talk.rs"]
mod talk;
use kicks::{Kicks, Load, Locked};
pub use logged::{LiveRoom, Membership, NodeRoster, MEMBERSHIP_QUEUE};

/// Identifies one registered member for the lifetime of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId(u64);

/// Hub-wide limits, set from the server configuration.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// Rooms one member may be in at once.
    pub max_rooms_per_member: usize,
    /// Largest fan-out written by kicks; 0 for none (see `Load`).
    pub direct_fanout: usize,
    /// Sessions taken out per second after a burst of `leave_burst`
    /// (see [`Hub::leave_turn`]); 0 for no pacing.
    pub leave_rate: u32,
    pub leave_burst: u32,
}

impl HubLimits {
    /// The hub's share of the server configuration.
    pub fn from_config(config: &crate::config::ServerConfig) -> HubLimits {
        HubLimits {
            max_rooms_per_member: config.max_rooms_per_member,
            direct_fanout: config.direct_fanout,
            leave_rate: config.leave_rate,
            leave_burst: config.leave_burst,
        }
    }
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits::from_config(&crate::config::ServerConfig::default())
    }
}

/// The history the hub keeps, if any.
pub struct History {
    pub store: Arc<dyn Store>,
    /// Messages a joiner is sent before live traffic; 0 for none.
    pub replay: usize,
    /// Store private messages too, under [`PRIVATE_KEY`].
    pub store_private: bool,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History")
            .field("replay", &self.replay)
            .field("store_private", &self.store_private)
            .finish_non_exhaustive()
    }
}

/// A room's log read from the store with the hub's lock released, to bring
/// the room back to life: see [`Hub::prepare_join`].
#[derive(Debug)]
pub struct RoomSeed {
    key: String,
    /// How many rooms had been retired when the read began.
    retired: u64,
    log: RoomLog,
    /// The room's members on other cluster nodes and the events position
    /// read with them, if any.
    remote: Option<(String, Vec<Nick>)>,
}

impl RoomSeed {
    /// This seed, for a room whose members on other nodes (`members`) were
    /// read along with the cluster events position `from`: a new room
    /// starts its mirror of them from that list and follows the events
    /// from there, so that no join after the list goes untold.
    pub fn with_remote(mut self, from: String, members: Vec<Nick>) -> RoomSeed {
        self.remote = Some((from, members));
        self
    }
}

/// Rooms removed (emptied) lately, numbered, so that a store read made
/// without the lock can tell whether the room lived and died meanwhile.
#[derive(Debug, Default)]
struct Retired {
    count: u64,
    /// `(number, room key)` of the last [`RETIRED_KEPT`] retirements.
    recent: VecDeque<(u64, String)>,
}

impl Retired {
    fn push(&mut self, key: &str) {
        self.count += 1;
        if self.recent.len() >= RETIRED_KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.count, key.to_string()));
    }

    /// Whether a read of room `key` begun when `since` rooms had been
    /// retired still holds: the room was not retired since.
    fn unchanged_since(&self, key: &str, since: u64) -> bool {
        if self.count == since {
            return true;
        }
        match self.recent.front() {
            // Retirements since the read are not all remembered.
            Some((first, _)) if *first > since + 1 => false,
            None => false,
            Some(_) => !self
                .recent
                .iter()
                .any(|(n, k)| *n > since && k.as_str() == key),
        }
    }
}

/// A page of stored messages, read by [`Hub::history`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub room: RoomName,
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
    /// Older messages may be stored.
    pub more: bool,
}

/// Why the hub refused a request. The messages are shown to users as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    #[error("invalid name: {0}")]
    InvalidName(#[from] NameError),
    #[error("the nick {0} is already in use; pick another")]
    NickInUse(String),
    #[error("no one called {0} is connected")]
    NoSuchNick(String),
    #[error("there is no room called {0}; /rooms lists them")]
    NoSuchRoom(String),
    #[error("you are not in {0}; /join it first")]
    NotInRoom(String),
    #[error("you are already in {0}")]
    AlreadyInRoom(String),
    #[error("you are already in the most rooms allowed ({0}); leave one first")]
    TooManyRooms(usize),
    #[error("this server keeps no history")]
    NoHistory,
    #[error("the history could not be read; try again later")]
    HistoryUnreadable,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("your session is no longer registered")]
    Gone,
    #[error("not an operator")]
    NotOperator,
}

/// What a successful join tells the joiner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    pub room: RoomName,
}

/// The room a member was just seated in, as the joiner's confirmation sees
/// it: under the hub's lock, so what it says agrees with the notices that
/// follow. The member list is only built when asked for, since a wave of
/// joins into a room of thousands would otherwise copy thousands of nicks
/// per join under the lock for clients (text ones) that show only a count.
pub struct Seated<'a> {
    st: &'a State,
    key: &'a str,
    pub room: &'a RoomName,
}

impl Seated<'_> {
    /// How many are in the room, the joiner included.
    pub fn count(&self) -> usize {
        let Some(room) = self.st.rooms.get(self.key) else {
            return 0;
        };
        let remote = room
            .remote
            .keys()
            .filter(|key| !self.st.nicks.contains_key(*key))
            .count();
        room.members.len() + remote
    }

    /// Everyone in the room, the joiner included, sorted case-insensitively.
    pub fn members(&self) -> Vec<Nick> {
        self.st.member_nicks(self.key)
    }
}

pub use crate::event::ChatLine;

/// Where a message was placed in its room's order.
#[derive(Debug)]
pub struct Posted {
    /// The room as the server spells it.
    pub room: RoomName,
    pub seq: u64,
    pub ts_ms: u64,
    /// Completes once the message is durably stored; `None` without
    /// history.
    pub stored: Option<Receipt>,
}

#[derive(Debug)]
struct Member {
    nick: Nick,
    outbox: Arc<Outbox>,
    /// Keys of the rooms this member is in.
    rooms: Vec<String>,
    /// Where it connects from, for bans; `None` for members made in tests.
    addr: Option<IpAddr>,
    /// Gave the operator token.
    operator: bool,
    /// Wrong operator tokens given so far.
    oper_failures: u32,
}

#[derive(Debug)]
struct Room {
    name: RoomName,
    members: Roster,
    /// Sequence number of the last message posted here.
    last_seq: u64,
    /// The newest messages, for replay; at most `History::replay`.
    recent: VecDeque<Arc<Envelope>>,
    /// Join and leave notices not yet told (big rooms only).
    held: Held,
    /// Where in the room's cluster events a node tells its members of
    /// other nodes' joins and leaves from: the position read with the
    /// room's members on other nodes when it came to life here, or else
    /// that moment (`MS-0`).
    events_from: String,
    /// The room's members on other nodes of a cluster (nick key → nick):
    /// read with `events_from`, then kept by their joins, leaves and
    /// renames, so that a joiner's member list and the notices after it
    /// agree. Empty without a cluster.
    remote: std::collections::BTreeMap<String, Nick>,
}

/// A big room's notices waiting to be told in one bundle.
#[derive(Debug, Default)]
struct Held {
    notices: Vec<Arc<Envelope>>,
    /// The members of this node the notices are about: a message from one
    /// of them has the notices told first, so nobody is heard from before
    /// being seen to join.
    about: Vec<MemberId>,
    /// Members seated while notices were held, with how many were held by
    /// then: they are told only the later ones, as they would have been.
    late: Vec<(MemberId, usize)>,
}

#[derive(Debug, Default)]
struct State {
    members: HashMap<MemberId, Member>,
    /// Case-folded nick to its owner.
    nicks: HashMap<String, MemberId>,
    /// Case-folded room name to room. Empty rooms are removed.
    rooms: HashMap<String, Room>,
    next_member: u64,
    next_guest: u64,
    shutting_down: bool,
    /// Members whose outbox overflowed during a fan-out, to be evicted once
    /// the fan-out is over.
    overflowed: Vec<MemberId>,
    /// Keys of the rooms holding notices, with when they are due.
    holding: Vec<(String, Instant)>,
    /// A room started holding since the server was last told.
    started_holding: bool,
    /// Outboxes that were idle when something was queued to them: each is
    /// kicked (written to) once the lock is released; see [`Locked`].
    kicks: Vec<Arc<Outbox>>,
    /// Largest fan-out written by kicks ([`HubLimits::direct_fanout`]).
    direct_fanout: usize,
    /// Lines pushed to other members in this lock hold.
    fanned: usize,
    /// Lines pushed lately, which decide who writes them.
    load: Load,
    /// Last seq used for a stored private message; read from the store on
    /// first use.
    private_seq: Option<u64>,
    /// Rooms emptied and removed, for checking reads made without the lock.
    retired: Retired,
    /// Told of every join, leave and rename, when this node is part of a
    /// cluster (see `logged.rs`); never waited on.
    observer: Option<tokio::sync::mpsc::Sender<logged::Membership>>,
}

/// The shared chat state. Cheap to share: wrap in an `Arc`.
#[derive(Debug)]
pub struct Hub {
    state: Mutex<State>,
    /// Notified when a room starts holding notices.
    held: Notify,
    /// Notified when a room comes to life (a cluster's reader then reads
    /// it too).
    created: Notify,
    limits: HubLimits,
    history: Option<History>,
    /// The operator token (checked by the dispatcher, never here).
    access: Arc<Access>,
    /// Who may not connect; its own lock, never taken under the hub's.
    bans: Arc<Bans>,
    /// The pace of leaves; its own lock, never taken under the hub's.
    leaving: Option<Pacer>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Default for Hub {
    fn default() -> Hub {
        Hub::new(HubLimits::default())
    }
}

impl Hub {
    /// A hub that keeps no history.
    pub fn new(limits: HubLimits) -> Hub {
        Hub::with_history(limits, None)
    }

    pub fn with_history(limits: HubLimits, history: Option<History>) -> Hub {
        let leaving = Pacer::new(limits.leave_rate, limits.leave_burst);
        Hub {
            state: Mutex::new(State {
                direct_fanout: limits.direct_fanout,
                ..State::default()
            }),
            held: Notify::new(),
            created: Notify::new(),
            limits,
            history,
            access: Arc::default(),
            bans: Arc::default(),
            leaving,
        }
    }

    /// Waits for this session's turn to be taken out (`leave_rate`), so
    /// that a wave of thousands ending at once (a mass quit, a network
    /// blip) is spread out instead of holding everyone else's lines back.
    /// Called before [`Hub::disconnect`] by a session that ends of its own
    /// accord, not by one the hub let go (a shutdown is never paced).
    pub async fn leave_turn(&self) {
        if let Some(pacer) = &self.leaving {
            pacer.wait().await;
        }
    }

    /// This hub with the server's secrets and bans.
    pub fn with_guard(mut self, access: Arc<Access>, bans: Arc<Bans>) -> Hub {
        self.access = access;
        self.bans = bans;
        self
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn bans(&self) -> &Bans {
        &self.bans
    }

    /// A new room, numbered on from the store's log of it (read before the
    /// lock was taken) and primed with its newest stored messages.
    fn new_room(&self, name: RoomName, log: Option<RoomLog>) -> Room {
        let mut room = Room {
            name,
            members: Roster::default(),
            last_seq: 0,
            recent: VecDeque::new(),
            held: Held::default(),
            events_from: format!("{}-0", now_ms()),
            remote: Default::default(),
        };
        let Some(log) = log else {
            return room;
        };
        room.last_seq = log.last_seq;
        // Spelled as it was when it was last used.
        if let Some(name) = log
            .recent
            .last()
            .and_then(|m| RoomName::parse(&m.room_name).ok())
        {
            room.name = name;
        }
        room.recent.extend(
            log.recent
                .iter()
                .filter_map(StoredMessage::to_event)
                .map(Envelope::new),
        );
        room
    }

    /// Ends a change: evicts members whose queue overflowed, and has the
    /// notices now held told soon.
    fn settle(&self, st: &mut State) {
        st.evict_overflowed();
        if std::mem::take(&mut st.started_holding) {
            self.held.notify_one();
        }
    }

    fn lock(&self) -> Locked<'_> {
        Locked {
            state: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            kicks: Kicks::spare(),
        }
    }

    /// Registers a new member under a fresh guest nick. It is in no room yet.
    /// `greet` makes the first item of its outbox, queued before anything
    /// else can be, so a welcome always comes first.
    pub fn connect(
        &self,
        outbox: Arc<Outbox>,
        greet: impl FnOnce(&Nick) -> Outgoing,
    ) -> Result<(MemberId, Nick), HubError> {
        self.connect_from(outbox, None, greet)
    }

    /// [`Hub::connect`] for a connection from `addr`, which bans match.
    pub fn connect_from(
        &self,
        outbox: Arc<Outbox>,
        addr: Option<IpAddr>,
        greet: impl FnOnce(&Nick) -> Outgoing,
    ) -> Result<(MemberId, Nick), HubError> {
        self.admit(outbox, addr, None, greet)
    }

    /// Registers a member under `nick`, or under a fresh guest nick.
    fn admit(
        &self,
        outbox: Arc<Outbox>,
        addr: Option<IpAddr>,
        nick: Option<Nick>,
        greet: impl FnOnce(&Nick) -> Outgoing,
    ) -> Result<(MemberId, Nick), HubError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        if st.shutting_down {
            return Err(HubError::ShuttingDown);
        }
        let nick = match nick {
            Some(nick) if st.nicks.contains_key(&nick.key()) => {
                return Err(HubError::NickInUse(nick.to_string()))
            }
            Some(nick) => nick,
            None => loop {
                st.next_guest += 1;
                let candidate = format!("guest{}", st.next_guest);
                if !st.nicks.contains_key(&candidate) {
                    break Nick::parse(&candidate)?;
                }
            },
        };
        st.next_member += 1;
        let id = MemberId(st.next_member);
        st.nicks.insert(nick.key(), id);
        outbox.push(greet(&nick));
        st.members.insert(
            id,
            Member {
                nick: nick.clone(),
                outbox,
                rooms: Vec::new(),
                addr,
                operator: false,
                oper_failures: 0,
            },
        );
        Ok((id, nick))
    }

    /// The member's current nick.
    pub fn nick(&self, id: MemberId) -> Result<Nick, HubError> {
        let guard = self.lock();
        let st = &*guard;
        st.members
            .get(&id)
            .map(|m| m.nick.clone())
            .ok_or(HubError::Gone)
    }

    /// Changes a member's nick and tells everyone who shares a room with it,
    /// and the member itself, once each.
    pub fn rename(&self, id: MemberId, wanted: &str) -> Result<Nick, HubError> {
        let new = Nick::parse(wanted)?;
        let mut guard = self.lock();
        let st = &mut *guard;
        let member = st.members.get(&id).ok_or(HubError::Gone)?;
        let old = member.nick.clone();
        if old.as_str() == new.as_str() {
            return Ok(new);
        }
        match st.nicks.get(&new.key()) {
            Some(owner) if *owner != id => return Err(HubError::NickInUse(new.to_string())),
            _ => {}
        }
        st.nicks.remove(&old.key());
        st.nicks.insert(new.key(), id);
        // Notices held in the member's rooms come before the rename.
        if let Some(member) = st.members.get(&id) {
            for key in member.rooms.clone() {
                st.tell_held(&key);
            }
        }
        let rooms = {
            let member = st.members.get_mut(&id).ok_or(HubError::Gone)?;
            member.nick = new.clone();
            member.rooms.clone()
        };
        for key in &rooms {
            if let Some(room) = st.rooms.get_mut(key) {
                room.members.rename(&old, &new);
            }
        }
        // Everyone sharing a room, plus the member: each exactly once.
        let mut audience: HashMap<MemberId, Arc<Outbox>> = HashMap::new();
        for key in &rooms {
            if let Some(room) = st.rooms.get(key) {
                audience.extend(room.members.iter().map(|(i, o)| (i, o.clone())));
            }
        }
        if let Some(m) = st.members.get(&id) {
            audience.insert(id, m.outbox.clone());
        }
        let env = Envelope::new(Event::Renamed {
            old: old.clone(),
            new: new.clone(),
        });
        st.observe(logged::Membership::Renamed {
            old: old.clone(),
            new: new.clone(),
            rooms: rooms
                .iter()
                .filter_map(|k| st.rooms.get(k).map(|r| r.name.clone()))
                .collect(),
        });
        for (to, outbox) in audience {
            st.deliver(to, &outbox, &env);
        }
        self.settle(st);
        info!(old = %old, new = %new, "nick changed");
        Ok(new)
    }

    /// Every room with its member count, sorted by name.
    pub fn rooms(&self) -> Vec<(RoomName, usize)> {
        let guard = self.lock();
        let st = &*guard;
        let mut rooms: Vec<_> = st
            .rooms
            .values()
            .map(|r| (r.name.clone(), r.members.len()))
            .collect();
        rooms.sort_by_key(|(name, _)| name.key());
        rooms
    }

    /// The members of a room, sorted case-insensitively.
    pub fn who(&self, room: &str) -> Result<(RoomName, Vec<Nick>), HubError> {
        let key = key_of(room);
        let guard = self.lock();
        let st = &*guard;
        let name = st
            .rooms
            .get(&key)
            .map(|r| r.name.clone())
            .ok_or_else(|| HubError::NoSuchRoom(room.to_string()))?;
        Ok((name, st.member_nicks(&key)))
    }

    /// Unregisters a member: it leaves every room (the rooms are told why),
    /// its nick is freed and its outbox closes after flushing.
    pub fn disconnect(&self, id: MemberId, reason: LeaveReason) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.remove_member(id, reason);
        self.settle(st);
    }

    /// Tells every member `notice`, closes every outbox after it is flushed,
    /// and refuses new members from now on.
    pub fn shutdown(&self, notice: &str) {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.shutting_down = true;
        let env = Envelope::new(Event::Notice(notice.into()));
        for member in st.members.values() {
            member.outbox.push(Outgoing::Event(env.clone()));
            member.outbox.close();
        }
        st.members.clear();
        st.nicks.clear();
        st.rooms.clear();
    }

    /// Tells every notice the rooms hold, due or not.
    pub fn tell_held(&self) {
        let mut guard = self.lock();
        let st = &mut *guard;
        for (key, _) in std::mem::take(&mut st.holding) {
            st.tell_held(&key);
        }
        self.settle(st);
    }

    /// Tells the notices of the rooms due by `now`; returns when the next
    /// of the others is due. The server calls this then (and after
    /// [`Hub::notices_held`] completes, to learn the first due time).
    pub fn tell_due(&self, now: Instant) -> Option<Instant> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let holding = std::mem::take(&mut st.holding);
        let (due, later): (Vec<_>, Vec<_>) = holding.into_iter().partition(|(_, at)| *at <= now);
        st.holding = later;
        for (key, _) in due {
            st.tell_held(&key);
        }
        let next = st.holding.iter().map(|(_, at)| *at).min();
        self.settle(st);
        next
    }

    /// Completes when some room has started holding notices.
    pub async fn notices_held(&self) {
        self.held.notified().await
    }

    /// How many members are registered.
    pub fn member_count(&self) -> usize {
        self.lock().members.len()
    }
}

#[cfg(test)]
#[path = "hub_model.rs"]
mod model;

#[cfg(test)]
#[path = "hub/tests.rs"]
mod tests;
