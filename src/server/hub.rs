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
//! socket allows (see `outbox.rs`). A room bigger than `direct_fanout` has
//! its members' writer tasks woken instead; a summary told to thousands at
//! once is written by a task of its own, a slice at a time, so it does not
//! queue ahead of every other room's traffic (`kicks.rs`).
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

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
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
/// Most notices a room holds; the next one tells them all at once.
const MAX_HELD: usize = 256;
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
}

impl HubLimits {
    /// The hub's share of the server configuration.
    pub fn from_config(config: &crate::config::ServerConfig) -> HubLimits {
        HubLimits {
            max_rooms_per_member: config.max_rooms_per_member,
            direct_fanout: config.direct_fanout,
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

/// A nick ordered case-insensitively, without allocating to compare: the
/// key of a [`Roster`]. The hub keeps nicks unique case-insensitively, so
/// this orders a room's members totally.
#[derive(Debug, Clone)]
struct Folded(Nick);

impl Folded {
    fn bytes(&self) -> impl Iterator<Item = u8> + '_ {
        self.0.as_str().bytes().map(|b| b.to_ascii_lowercase())
    }
}

impl PartialEq for Folded {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Folded {}

impl PartialOrd for Folded {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Folded {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.bytes().cmp(other.bytes())
    }
}

/// Who is in a room, with each member's outbox for fan-out, kept in nick
/// order: every joiner is told who is there, and in a big room sorting the
/// list for each of a wave of joins would stall the hub.
#[derive(Debug, Default)]
struct Roster {
    seats: BTreeMap<Folded, (MemberId, Arc<Outbox>)>,
}

impl Roster {
    fn insert(&mut self, nick: &Nick, id: MemberId, outbox: Arc<Outbox>) {
        self.seats.insert(Folded(nick.clone()), (id, outbox));
    }

    fn remove(&mut self, nick: &Nick) {
        self.seats.remove(&Folded(nick.clone()));
    }

    /// Re-seats a member under its new nick, even a change of case only.
    fn rename(&mut self, old: &Nick, new: &Nick) {
        if let Some(seat) = self.seats.remove(&Folded(old.clone())) {
            self.seats.insert(Folded(new.clone()), seat);
        }
    }

    fn len(&self) -> usize {
        self.seats.len()
    }

    fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    fn iter(&self) -> impl Iterator<Item = (MemberId, &Arc<Outbox>)> {
        self.seats.values().map(|(id, outbox)| (*id, outbox))
    }

    /// The members' nicks, sorted case-insensitively.
    fn nicks(&self) -> Vec<Nick> {
        self.seats.keys().map(|k| k.0.clone()).collect()
    }
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

    /// Reads a room's log from the store, blocking. Never called with the
    /// lock held. A failed read numbers the room from 0: the store refuses
    /// the colliding appends, so chat goes on but is not stored.
    fn read_log(history: &History, key: &str) -> RoomLog {
        RoomLog::read(&*history.store, key, history.replay).unwrap_or_else(|e| {
            error!(room = %key, error = %e, "cannot read the room's history");
            RoomLog::default()
        })
    }

    /// Whether joining `room` needs a store read first: history is on and
    /// the room is not live. Then call [`Hub::prepare_join`].
    pub fn needs_prepare(&self, room: &str) -> bool {
        self.history.is_some() && !self.lock().rooms.contains_key(&key_of(room))
    }

    /// Reads from the store what joining `room` will need if the room is
    /// not live (it is empty, or was never used since the start), without
    /// blocking a thread and without the hub's lock. Pass the result to
    /// [`Hub::join_seeded`] or [`Hub::switch_seeded`]; `None` when nothing
    /// needs reading.
    pub async fn prepare_join(&self, room: &str) -> Option<RoomSeed> {
        let history = self.history.as_ref()?;
        let key = key_of(room);
        let retired = {
            let st = self.lock();
            if st.rooms.contains_key(&key) {
                return None;
            }
            st.retired.count
        };
        let log = history
            .store
            .clone()
            .room_log(key.clone(), history.replay)
            .await
            .unwrap_or_else(|e| {
                error!(room = %key, error = %e, "cannot read the room's history");
                RoomLog::default()
            });
        Some(RoomSeed {
            key,
            retired,
            log,
            remote: None,
        })
    }

    /// The replay a joiner of `room` gets, if history is on.
    fn replay(&self, room: &Room) -> Option<Arc<Envelope>> {
        let history = self.history.as_ref().filter(|h| h.replay > 0)?;
        let messages: Vec<Event> = room.recent.iter().map(|e| e.event.clone()).collect();
        let more = messages.len() >= history.replay
            && matches!(messages.first(), Some(Event::Message { seq, .. }) if *seq > 1);
        Some(Envelope::new(Event::History {
            room: room.name.clone(),
            messages: messages.into(),
            more,
        }))
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

    /// Makes a member an operator (its token was checked by the caller).
    pub fn grant_operator(&self, id: MemberId) -> Result<Nick, HubError> {
        let mut st = self.lock();
        let member = st.members.get_mut(&id).ok_or(HubError::Gone)?;
        member.operator = true;
        info!(operator = %member.nick, action = "oper", "operator logged in");
        Ok(member.nick.clone())
    }

    /// Counts a wrong operator token; returns how many there have been.
    pub fn operator_refused(&self, id: MemberId) -> Result<u32, HubError> {
        let mut st = self.lock();
        let member = st.members.get_mut(&id).ok_or(HubError::Gone)?;
        member.oper_failures += 1;
        // Who and from where, never what was typed.
        let peer = member.addr.map(|a| a.to_string()).unwrap_or_default();
        warn!(nick = %member.nick, %peer, attempt = member.oper_failures, "wrong operator token");
        Ok(member.oper_failures)
    }

    /// The operator's nick, or `NotOperator`.
    fn operator(st: &State, id: MemberId) -> Result<Nick, HubError> {
        let member = st.members.get(&id).ok_or(HubError::Gone)?;
        if !member.operator {
            return Err(HubError::NotOperator);
        }
        Ok(member.nick.clone())
    }

    /// Removes a member by nick on an operator's word: it is told why, and
    /// its rooms see it kicked.
    pub fn kick(&self, by: MemberId, nick: &str, reason: Option<&str>) -> Result<Nick, HubError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let operator = Self::operator(st, by)?;
        let target = *st
            .nicks
            .get(&nick.to_ascii_lowercase())
            .ok_or_else(|| HubError::NoSuchNick(nick.to_string()))?;
        let name = st.kick_member(target, &operator, reason);
        self.settle(st);
        info!(operator = %operator, action = "kick", target = %name, reason = reason.unwrap_or(""), "kicked");
        Ok(name)
    }

    /// Kicks every member connected from an address `banned` matches, on
    /// an operator's word; returns their nicks.
    pub fn kick_where(
        &self,
        by: MemberId,
        banned: impl Fn(IpAddr) -> bool,
        reason: Option<&str>,
    ) -> Result<Vec<Nick>, HubError> {
        let mut guard = self.lock();
        let st = &mut *guard;
        let operator = Self::operator(st, by)?;
        let targets: Vec<MemberId> = st
            .members
            .iter()
            // Operators stay: banning one's own address by mistake must
            // not lock out the one who can undo it.
            .filter(|(_, m)| !m.operator && m.addr.is_some_and(&banned))
            .map(|(id, _)| *id)
            .collect();
        let kicked = targets
            .into_iter()
            .map(|id| st.kick_member(id, &operator, reason))
            .collect();
        self.settle(st);
        Ok(kicked)
    }

    /// The address a nick connects from, for an operator's ban.
    pub fn address_of(&self, by: MemberId, nick: &str) -> Result<Option<IpAddr>, HubError> {
        let st = self.lock();
        Self::operator(&st, by)?;
        let id = st
            .nicks
            .get(&nick.to_ascii_lowercase())
            .ok_or_else(|| HubError::NoSuchNick(nick.to_string()))?;
        Ok(st.members.get(id).and_then(|m| m.addr))
    }

    /// Checks that `id` is an operator, for actions outside the hub (bans).
    pub fn check_operator(&self, id: MemberId) -> Result<Nick, HubError> {
        Self::operator(&self.lock(), id)
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

    /// Adds the member to a room, creating the room if needed, and tells the
    /// room's other members. `confirm` makes the joiner's confirmation,
    /// queued before any traffic of the room can reach it.
    pub fn join(
        &self,
        id: MemberId,
        room: &str,
        confirm: impl FnOnce(&Seated<'_>) -> Outgoing,
    ) -> Result<Joined, HubError> {
        self.join_leaving(id, room, None, None, confirm)
    }

    /// [`Hub::join`] with what [`Hub::prepare_join`] read, so the store is
    /// not read again on this thread (unless the room lived and died since).
    pub fn join_seeded(
        &self,
        id: MemberId,
        room: &str,
        seed: Option<RoomSeed>,
        confirm: impl FnOnce(&Seated<'_>) -> Outgoing,
    ) -> Result<Joined, HubError> {
        self.join_leaving(id, room, None, seed, confirm)
    }

    /// [`Hub::switch`] with what [`Hub::prepare_join`] read.
    pub fn switch_seeded(
        &self,
        id: MemberId,
        from: &str,
        to: &str,
        seed: Option<RoomSeed>,
        confirm: impl FnOnce(&Seated<'_>) -> Outgoing,
    ) -> Result<Joined, HubError> {
        self.join_leaving(id, to, Some(key_of(from)), seed, confirm)
    }

    /// Moves a member from one room to another in one step, as the text
    /// protocol's `/join` does: the old room does not count against the room
    /// limit, and it is left only once the new one is joined.
    pub fn switch(
        &self,
        id: MemberId,
        from: &str,
        to: &str,
        confirm: impl FnOnce(&Seated<'_>) -> Outgoing,
    ) -> Result<Joined, HubError> {
        self.join_leaving(id, to, Some(key_of(from)), None, confirm)
    }

    fn join_leaving(
        &self,
        id: MemberId,
        room: &str,
        leaving: Option<String>,
        mut seed: Option<RoomSeed>,
        confirm: impl FnOnce(&Seated<'_>) -> Outgoing,
    ) -> Result<Joined, HubError> {
        let name = RoomName::parse(room)?;
        let key = name.key();
        // A room that is not live is read from the store with the lock
        // released, then the read is checked under the lock: if the room
        // lived and died in between, its numbering moved on, so read again.
        let mut guard = loop {
            let guard = self.lock();
            let Some(history) = &self.history else {
                break guard;
            };
            if guard.rooms.contains_key(&key) {
                break guard;
            }
            if let Some(s) = &seed {
                if s.key == key && guard.retired.unchanged_since(&key, s.retired) {
                    break guard;
                }
            }
            let retired = guard.retired.count;
            drop(guard);
            let remote = seed.as_mut().and_then(|s| s.remote.take());
            seed = Some(RoomSeed {
                key: key.clone(),
                retired,
                log: Self::read_log(history, &key),
                remote,
            });
        };
        let st = &mut *guard;
        let member = st.members.get(&id).ok_or(HubError::Gone)?;
        if member.rooms.contains(&key) {
            let shown = st.rooms.get(&key).map_or(name.clone(), |r| r.name.clone());
            return Err(HubError::AlreadyInRoom(shown.to_string()));
        }
        let freed = leaving
            .as_ref()
            .is_some_and(|old| member.rooms.contains(old)) as usize;
        if member.rooms.len() - freed >= self.limits.max_rooms_per_member {
            return Err(HubError::TooManyRooms(self.limits.max_rooms_per_member));
        }
        let nick = member.nick.clone();
        let outbox = member.outbox.clone();
        let room = st.rooms.entry(key.clone()).or_insert_with(|| {
            self.created.notify_one();
            let mut seed = seed.take();
            let remote = seed.as_mut().and_then(|s| s.remote.take());
            let mut room = self.new_room(name, seed.map(|s| s.log));
            if let Some((from, members)) = remote {
                room.events_from = from;
                room.remote = members.into_iter().map(|n| (n.key(), n)).collect();
            }
            room
        });
        let room_name = room.name.clone();
        let replay = self.replay(room);
        let env = Envelope::new(Event::Joined {
            room: room_name.clone(),
            nick: nick.clone(),
        });
        st.announce(&key, env, Some(id));
        st.observe(logged::Membership::Joined {
            room: room_name.clone(),
            nick: nick.clone(),
        });
        st.seat(&key, &nick, id, outbox);
        if let Some(m) = st.members.get_mut(&id) {
            m.rooms.push(key.clone());
        }
        if let Some(old) = leaving.filter(|old| *old != key) {
            st.leave_room(id, &old, LeaveReason::Part);
        }
        let confirmation = confirm(&Seated {
            st,
            key: &key,
            room: &room_name,
        });
        let joined = Joined { room: room_name };
        if let Some(m) = st.members.get(&id) {
            let outbox = m.outbox.clone();
            let mut overflow = outbox.push(confirmation) == Push::Overflow;
            if let Some(replay) = replay {
                overflow |= outbox.push(Outgoing::Event(replay)) == Push::Overflow;
            }
            if overflow {
                st.overflowed.push(id);
            }
        }
        self.settle(st);
        debug!(nick = %nick, room = %joined.room, "joined");
        Ok(joined)
    }

    /// Removes the member from a room and tells those who remain.
    pub fn part(&self, id: MemberId, room: &str) -> Result<(), HubError> {
        let key = key_of(room);
        let mut guard = self.lock();
        let st = &mut *guard;
        let member = st.members.get(&id).ok_or(HubError::Gone)?;
        if !member.rooms.contains(&key) {
            return Err(HubError::NotInRoom(room.to_string()));
        }
        st.leave_room(id, &key, LeaveReason::Part);
        self.settle(st);
        Ok(())
    }

    /// Posts a chat line (or `/me` action) to a room. Everyone in the room but
    /// the sender receives it, in the room's one order.
    pub fn say(
        &self,
        id: MemberId,
        room: &str,
        text: &str,
        action: bool,
    ) -> Result<Posted, HubError> {
        let key = key_of(room);
        let mut guard = self.lock();
        let st = &mut *guard;
        let (from, target) = st.speaker(id, &key, room)?;
        let (posted, env) = self.post(target, from, text.into(), action);
        st.fan_out(&key, Some(id), &env);
        self.settle(st);
        Ok(posted)
    }

    /// Posts several lines of one member to a room in one lock hold, as
    /// the lines of one read arrive: each is sequenced (and stored) exactly
    /// as [`Hub::say`] would, and the room's members get them as one
    /// bundle, so that each costs them one queue entry and one write.
    pub fn say_many(
        &self,
        id: MemberId,
        room: &str,
        lines: &[ChatLine],
    ) -> Result<Vec<Posted>, HubError> {
        let key = key_of(room);
        let mut guard = self.lock();
        let st = &mut *guard;
        let (from, target) = st.speaker(id, &key, room)?;
        let mut posted = Vec::with_capacity(lines.len());
        let mut envelopes = Vec::with_capacity(lines.len());
        for line in lines {
            let (p, env) = self.post(target, from.clone(), line.text.clone(), line.action);
            posted.push(p);
            envelopes.push(env);
        }
        match envelopes.len() {
            0 => {}
            1 => st.fan_out(&key, Some(id), &envelopes[0]),
            _ => st.fan_out_item(&key, Some(id), &Outgoing::Bundle(Bundle::new(envelopes))),
        }
        self.settle(st);
        Ok(posted)
    }

    /// Places one message in its room's order: every room message passes
    /// here, under the hub's lock, so this is where it gets its `seq` and
    /// is handed to the history. Telling the members is the caller's job.
    fn post(
        &self,
        room: &mut Room,
        from: Nick,
        text: Arc<str>,
        action: bool,
    ) -> (Posted, Arc<Envelope>) {
        room.last_seq += 1;
        let mut posted = Posted {
            room: room.name.clone(),
            seq: room.last_seq,
            ts_ms: now_ms(),
            stored: None,
        };
        let env = Envelope::new(Event::Message {
            room: room.name.clone(),
            seq: posted.seq,
            ts_ms: posted.ts_ms,
            from,
            text,
            action,
        });
        if let Some(history) = &self.history {
            // Appended in seq order: the lock is held. Appending only queues.
            posted.stored = StoredMessage::from_event(&env.event).map(|m| history.store.append(m));
            if history.replay > 0 {
                if room.recent.len() >= history.replay {
                    room.recent.pop_front();
                }
                room.recent.push_back(env.clone());
            }
        }
        (posted, env)
    }

    /// Sends a private message to one member, found by nick.
    pub fn private(&self, id: MemberId, to: &str, text: &str) -> Result<Nick, HubError> {
        self.load_private_seq();
        let mut guard = self.lock();
        let st = &mut *guard;
        let from = st.members.get(&id).ok_or(HubError::Gone)?.nick.clone();
        let target = *st
            .nicks
            .get(&to.to_ascii_lowercase())
            .ok_or_else(|| HubError::NoSuchNick(to.to_string()))?;
        let (to_nick, outbox) = match st.members.get(&target) {
            Some(m) => (m.nick.clone(), m.outbox.clone()),
            None => return Err(HubError::NoSuchNick(to.to_string())),
        };
        let ts_ms = now_ms();
        if let Some(history) = self.history.as_ref().filter(|h| h.store_private) {
            // Read by `load_private_seq` before the lock was taken.
            let last = st.private_seq.unwrap_or(0);
            st.private_seq = Some(last + 1);
            // Kept for the operator; nothing reads them back, so the receipt
            // is not awaited. `room_name` holds the recipient.
            drop(history.store.append(StoredMessage {
                room: PRIVATE_KEY.to_string(),
                room_name: to_nick.to_string(),
                seq: last + 1,
                ts_ms,
                nick: from.to_string(),
                text: text.to_string(),
                action: false,
            }));
        }
        let env = Envelope::new(Event::Private {
            from,
            to: to_nick.clone(),
            ts_ms,
            text: text.into(),
        });
        st.deliver(target, &outbox, &env);
        self.settle(st);
        Ok(to_nick)
    }

    /// Reads where stored private messages are numbered from, once, with
    /// the lock released: nothing appends them until it is known.
    fn load_private_seq(&self) {
        let Some(history) = self.history.as_ref().filter(|h| h.store_private) else {
            return;
        };
        if self.lock().private_seq.is_some() {
            return;
        }
        let last = history.store.last_seq(PRIVATE_KEY).unwrap_or_else(|e| {
            error!(error = %e, "cannot read the private messages' last seq");
            0
        });
        let mut st = self.lock();
        // Another caller may have read it and stored messages meanwhile.
        st.private_seq = Some(st.private_seq.map_or(last, |seen| seen.max(last)));
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

    /// Up to `limit` stored messages of a room the member is in, with `seq`
    /// below `before` (the newest without it), oldest first. Reads the
    /// store outside the hub's lock, so it may block on the disk briefly:
    /// call it off the async threads, or use [`Hub::read_history`].
    pub fn history(
        &self,
        id: MemberId,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HubError> {
        let history = self.history.as_ref().ok_or(HubError::NoHistory)?;
        let (key, name) = self.history_room(id, room)?;
        let messages = history.store.page(&key, before, limit);
        Self::history_page(name, messages, limit)
    }

    /// [`Hub::history`] for async callers: the store is read through its
    /// async face, without blocking a runtime thread.
    pub async fn read_history(
        &self,
        id: MemberId,
        room: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, HubError> {
        let history = self.history.as_ref().ok_or(HubError::NoHistory)?;
        let (key, name) = self.history_room(id, room)?;
        let messages = history.store.clone().page_async(key, before, limit).await;
        Self::history_page(name, messages, limit)
    }

    /// The key and name of a room whose history the member may read: one
    /// it is in.
    fn history_room(&self, id: MemberId, room: &str) -> Result<(String, RoomName), HubError> {
        let key = key_of(room);
        let guard = self.lock();
        let member = guard.members.get(&id).ok_or(HubError::Gone)?;
        if !member.rooms.contains(&key) {
            return Err(HubError::NotInRoom(room.to_string()));
        }
        let name = guard
            .rooms
            .get(&key)
            .map(|r| r.name.clone())
            .ok_or_else(|| HubError::NotInRoom(room.to_string()))?;
        Ok((key, name))
    }

    fn history_page(
        room: RoomName,
        messages: Result<Vec<StoredMessage>, crate::store::StoreError>,
        limit: usize,
    ) -> Result<HistoryPage, HubError> {
        let messages = messages.map_err(|e| {
            error!(%room, error = %e, "cannot read history");
            HubError::HistoryUnreadable
        })?;
        let more = messages.len() >= limit && messages.first().is_some_and(|m| m.seq > 1);
        Ok(HistoryPage {
            room,
            messages,
            more,
        })
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

impl State {
    /// The nick of a member about to post to the room `key` (`shown` as
    /// the member wrote it), and the room, if the member is in it.
    fn speaker(
        &mut self,
        id: MemberId,
        key: &str,
        shown: &str,
    ) -> Result<(Nick, &mut Room), HubError> {
        let member = self.members.get(&id).ok_or(HubError::Gone)?;
        if !member.rooms.iter().any(|k| k == key) {
            return Err(HubError::NotInRoom(shown.to_string()));
        }
        let from = member.nick.clone();
        let room = self
            .rooms
            .get_mut(key)
            .ok_or_else(|| HubError::NoSuchRoom(shown.to_string()))?;
        Ok((from, room))
    }

    /// Pushes `env` to every member of a room except `except`.
    fn fan_out(&mut self, room_key: &str, except: Option<MemberId>, env: &Arc<Envelope>) {
        self.fan_out_item(room_key, except, &Outgoing::Event(env.clone()));
    }

    /// Pushes `item` from `except` (if it comes from a member here) to
    /// every other member of a room. Notices the room holds about `except`
    /// are told first; others keep waiting for their due time, so a busy
    /// room's chat does not cut every summary short (one from elsewhere
    /// tells them all, to be safe).
    fn fan_out_item(&mut self, room_key: &str, except: Option<MemberId>, item: &Outgoing) {
        let held_about_sender = self.rooms.get(room_key).is_some_and(|room| match except {
            Some(id) => room.held.about.contains(&id),
            None => !room.held.notices.is_empty(),
        });
        if held_about_sender {
            self.tell_held(room_key);
        }
        let Some(room) = self.rooms.get(room_key) else {
            return;
        };
        let lines = match item {
            Outgoing::Bundle(bundle) => bundle.envelopes().len(),
            _ => 1,
        };
        self.fanned += lines * room.members.len();
        // A big room, or heavy traffic, will not be kicked: its writer
        // tasks are woken as it goes, with nothing to collect.
        let kick = room.members.len() <= self.direct_fanout && self.load.is_light();
        for (id, outbox) in room.members.iter() {
            if Some(id) == except {
                continue;
            }
            let pushed = if kick {
                outbox.push_deferred(item.clone(), &mut self.kicks)
            } else {
                outbox.push(item.clone())
            };
            if pushed == Push::Overflow {
                self.overflowed.push(id);
            }
        }
    }

    fn deliver(&mut self, id: MemberId, outbox: &Arc<Outbox>, env: &Arc<Envelope>) {
        self.fanned += 1;
        let item = Outgoing::Event(env.clone());
        let pushed = if self.direct_fanout > 0 {
            outbox.push_deferred(item, &mut self.kicks)
        } else {
            outbox.push(item)
        };
        if pushed == Push::Overflow {
            self.overflowed.push(id);
        }
    }

    /// Tells a room's members of a join or leave: at once in a small room,
    /// held to be told with others in a big one.
    fn announce(&mut self, room_key: &str, env: Arc<Envelope>, about: Option<MemberId>) {
        let Some(room) = self.rooms.get_mut(room_key) else {
            return;
        };
        if room.members.len() < BIG_ROOM && room.held.notices.is_empty() {
            self.fan_out(room_key, None, &env);
            return;
        }
        room.held.notices.push(env);
        room.held.about.extend(about);
        if room.held.notices.len() >= MAX_HELD {
            self.tell_held(room_key);
        } else if room.held.notices.len() == 1 {
            let due = Instant::now() + notice_delay(room.members.len());
            self.holding.retain(|(key, _)| key != room_key);
            self.holding.push((room_key.to_string(), due));
            self.started_holding = true;
        }
    }

    /// Adds a member to a room's roster. One seated while the room holds
    /// notices is not told those, only later ones.
    fn seat(&mut self, room_key: &str, nick: &Nick, id: MemberId, outbox: Arc<Outbox>) {
        if let Some(room) = self.rooms.get_mut(room_key) {
            room.members.insert(nick, id, outbox);
            if !room.held.notices.is_empty() {
                room.held.late.push((id, room.held.notices.len()));
            }
        }
    }

    /// Tells the notices a room holds, as one bundle to everyone seated
    /// before them and the rest to those seated since.
    fn tell_held(&mut self, room_key: &str) {
        let Some(room) = self.rooms.get_mut(room_key) else {
            return;
        };
        if room.held.notices.is_empty() {
            return;
        }
        let Held { notices, late, .. } = std::mem::take(&mut room.held);
        let folding = crowd::Held::new(&notices);
        let told = |from: usize| -> Option<Outgoing> {
            let mut folded = folding.told_from(from);
            match folded.len() {
                0 => None,
                1 => folded.pop().map(Outgoing::Event),
                _ => Some(Outgoing::Bundle(Bundle::new(folded))),
            }
        };
        let skip: HashSet<MemberId> = late.iter().map(|(id, _)| *id).collect();
        let mut overflowed = Vec::new();
        if let Some(all) = told(0) {
            for (id, outbox) in room.members.iter() {
                if !skip.contains(&id)
                    && outbox.push_deferred(all.clone(), &mut self.kicks) == Push::Overflow
                {
                    overflowed.push(id);
                }
            }
        }
        for (id, from) in late {
            if from >= notices.len() {
                continue;
            }
            let Some(member) = self.members.get(&id) else {
                continue;
            };
            if !member.rooms.iter().any(|k| k == room_key) {
                continue;
            }
            if let Some(item) = told(from) {
                if member.outbox.push_deferred(item, &mut self.kicks) == Push::Overflow {
                    overflowed.push(id);
                }
            }
        }
        self.overflowed.extend(overflowed);
    }

    /// Everyone in the room, on this node and (in a cluster) the others,
    /// sorted case-insensitively.
    fn member_nicks(&self, room_key: &str) -> Vec<Nick> {
        let Some(room) = self.rooms.get(room_key) else {
            return Vec::new();
        };
        let mut nicks = room.members.nicks();
        if !room.remote.is_empty() {
            nicks.extend(
                room.remote
                    .iter()
                    .filter(|(key, _)| !self.nicks.contains_key(*key))
                    .map(|(_, nick)| nick.clone()),
            );
            nicks.sort_by_key(|n| n.key());
        }
        nicks
    }

    fn leave_room(&mut self, id: MemberId, room_key: &str, reason: LeaveReason) {
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        member.rooms.retain(|k| k != room_key);
        let nick = member.nick.clone();
        let Some(room) = self.rooms.get_mut(room_key) else {
            return;
        };
        room.members.remove(&nick);
        if let Some(observer) = &self.observer {
            logged::tell(
                observer,
                logged::Membership::Left {
                    room: room.name.clone(),
                    nick: nick.clone(),
                    reason: reason.clone(),
                },
            );
        }
        if room.members.is_empty() {
            self.rooms.remove(room_key);
            self.retired.push(room_key);
            return;
        }
        room.held.late.retain(|(late, _)| *late != id);
        let env = Envelope::new(Event::Left {
            room: room.name.clone(),
            nick,
            reason,
        });
        self.announce(room_key, env, Some(id));
    }

    /// Tells a member it is kicked, then removes it; its rooms see why.
    fn kick_member(&mut self, id: MemberId, by: &Nick, reason: Option<&str>) -> Nick {
        let Some(member) = self.members.get(&id) else {
            return by.clone();
        };
        let nick = member.nick.clone();
        let told = match reason {
            Some(why) => format!("you were kicked by {by}: {why}"),
            None => format!("you were kicked by {by}"),
        };
        let notice = Envelope::new(Event::Notice(told.into()));
        member.outbox.push(Outgoing::Event(notice));
        self.remove_member(
            id,
            LeaveReason::Kicked {
                by: by.clone(),
                reason: reason.map(Into::into),
            },
        );
        nick
    }

    fn remove_member(&mut self, id: MemberId, reason: LeaveReason) {
        let Some(member) = self.members.get(&id) else {
            return;
        };
        let rooms = member.rooms.clone();
        for key in rooms {
            self.leave_room(id, &key, reason.clone());
        }
        if let Some(member) = self.members.remove(&id) {
            self.nicks.remove(&member.nick.key());
            member.outbox.close();
            debug!(nick = %member.nick, ?reason, "member left");
        }
    }

    /// Evicts members whose queue overflowed. Their leave notices may
    /// overflow others in turn, so this runs until nothing is left.
    fn evict_overflowed(&mut self) {
        while let Some(id) = self.overflowed.pop() {
            if let Some(m) = self.members.get(&id) {
                info!(nick = %m.nick, "evicting slow reader: send queue full");
            }
            self.remove_member(
                id,
                LeaveReason::Dropped("send queue full: client too slow".into()),
            );
        }
    }
}

#[cfg(test)]
#[path = "hub_model.rs"]
mod model;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Format;
    use crate::server::outbox::Drain;
    use kicks::{LOAD_WINDOW, MAX_KICKED_PER_WINDOW};
    use std::collections::BTreeSet;
    use std::time::Instant;

    /// A member as a test sees it: its id and the text lines it was sent.
    struct Probe {
        id: MemberId,
        outbox: Arc<Outbox>,
    }

    impl Probe {
        fn join(hub: &Hub, room: &str) -> Probe {
            let outbox = Outbox::new(1 << 20);
            let (id, _) = hub
                .connect(outbox.clone(), |_| Outgoing::Raw("hi\n".into()))
                .unwrap();
            hub.join(id, room, ack).unwrap();
            let probe = Probe { id, outbox };
            assert_eq!(probe.lines(), vec!["hi", "joined"]);
            probe
        }

        /// Lines queued so far, rendered as the text protocol would.
        fn lines(&self) -> Vec<String> {
            self.outbox
                .drain_now()
                .iter()
                .map(|o| {
                    let b = o.bytes(Format::Text, crate::proto::text::render);
                    String::from_utf8_lossy(&b).trim_end().to_string()
                })
                .collect()
        }
    }

    fn ack(_: &Seated<'_>) -> Outgoing {
        Outgoing::Raw("joined\n".into())
    }

    /// A socket that, on every write, looks whether the hub's lock is
    /// free: a fan-out must write only once it has released it.
    struct LockWatch {
        hub: std::sync::OnceLock<Arc<Hub>>,
        written: Mutex<Vec<u8>>,
        under_lock: std::sync::atomic::AtomicUsize,
    }

    impl crate::server::outbox::Direct for LockWatch {
        fn try_write_vectored(&self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            if let Some(hub) = self.hub.get() {
                if hub.state.try_lock().is_err() {
                    self.under_lock
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            let mut out = self.written.lock().unwrap();
            bufs.iter().for_each(|b| out.extend_from_slice(b));
            Ok(bufs.iter().map(|b| b.len()).sum())
        }
    }

    fn watched(hub: &Arc<Hub>, room: &str) -> (Arc<LockWatch>, MemberId) {
        let watch = Arc::new(LockWatch {
            hub: std::sync::OnceLock::new(),
            written: Mutex::new(Vec::new()),
            under_lock: Default::default(),
        });
        let _ = watch.hub.set(hub.clone());
        let encoding = crate::server::outbox::Encoding {
            format: Format::Text,
            encode: crate::proto::text::render,
        };
        let outbox = Outbox::with_direct(1 << 20, watch.clone(), encoding);
        let (id, _) = hub.connect(outbox.clone(), greet).unwrap();
        hub.join(id, room, ack).unwrap();
        // Play the writer task for the greeting and the join (queued with
        // a wake, not a kick); asking again says that batch is written, so
        // the connection is idle and the next fan-out kicks it.
        assert_eq!(outbox.drain_now().len(), 2);
        assert!(outbox.drain_now().is_empty());
        (watch, id)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_summary_to_thousands_is_written_a_slice_at_a_time_by_a_task_of_its_own() {
        let hub = Arc::new(Hub::default());
        let members: Vec<_> = (0..kicks::SLICED_KICKS)
            .map(|_| watched(&hub, "huge"))
            .collect();
        hub.tell_held();
        // Play every writer task for the room's own joins (asking twice
        // says the batch is written), so that all are idle; start afresh.
        most_queued(&hub);
        most_queued(&hub);
        for (watch, _) in &members {
            watch.written.lock().unwrap().clear();
        }
        let (_late, _) = watched(&hub, "huge");
        // The join is held; telling it kicks every member at once.
        hub.tell_held();
        let written = |members: &[(Arc<LockWatch>, MemberId)]| {
            members
                .iter()
                .filter(|(w, _)| !w.written.lock().unwrap().is_empty())
                .count()
        };
        assert_eq!(written(&members), 0, "not written by the caller");
        // One turn of the runtime writes one slice, then lets others run.
        tokio::task::yield_now().await;
        let first = written(&members);
        assert!(first > 0 && first < members.len(), "{first}");
        for _ in 0..members.len() {
            if written(&members) == members.len() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(written(&members), members.len());
        for (watch, _) in &members {
            assert_eq!(
                watch.under_lock.load(std::sync::atomic::Ordering::SeqCst),
                0
            );
            let line = watch.written.lock().unwrap().clone();
            assert!(String::from_utf8_lossy(&line).ends_with(" joined huge\n"));
        }
    }

    /// The most items any member has queued for its writer task.
    fn most_queued(hub: &Hub) -> Option<usize> {
        let st = hub.lock();
        st.members
            .values()
            .map(|m| m.outbox.drain_now().len())
            .max()
    }

    #[test]
    fn direct_fanout_zero_turns_kicks_off() {
        let hub = Arc::new(Hub::new(HubLimits {
            direct_fanout: 0,
            ..HubLimits::default()
        }));
        let (watch, _) = watched(&hub, "dev");
        let speaker = Probe::join(&hub, "dev");
        watch.written.lock().unwrap().clear();
        hub.say(speaker.id, "dev", "hello", false).unwrap();
        hub.private(speaker.id, "guest1", "psst").unwrap();
        assert!(watch.written.lock().unwrap().is_empty());
        // The speaker's join, the line and the private message.
        assert_eq!(most_queued(&hub), Some(3));
    }

    #[test]
    fn heavy_traffic_is_left_to_the_writer_tasks() {
        let start = Instant::now();
        let mut load = Load::default();
        // Everyday chat: a line at a time into a room of 100.
        for _ in 0..MAX_KICKED_PER_WINDOW / 100 {
            assert!(load.direct_after(100, start));
        }
        // One line more within the same window is too many.
        assert!(!load.direct_after(1, start + LOAD_WINDOW / 2));
        // A new window starts light again.
        assert!(load.direct_after(100, start + LOAD_WINDOW));
    }

    #[test]
    fn a_busy_window_wakes_writer_tasks_instead_of_writing() {
        let hub = Arc::new(Hub::default());
        let (watch, _) = watched(&hub, "dev");
        let speaker = Probe::join(&hub, "dev");
        let lines = vec![
            ChatLine {
                text: "x".into(),
                action: false,
            };
            MAX_KICKED_PER_WINDOW + 1
        ];
        watch.written.lock().unwrap().clear();
        // Far over the window's traffic in one go: written by no kick.
        hub.say_many(speaker.id, "dev", &lines).unwrap();
        assert!(watch.written.lock().unwrap().is_empty());
        // Left queued for the member's writer task.
        assert_eq!(most_queued(&hub), Some(1));
    }

    #[test]
    fn fan_outs_write_to_sockets_only_after_the_lock_is_released() {
        let hub = Arc::new(Hub::default());
        let (watch, _) = watched(&hub, "dev");
        let speaker = Probe::join(&hub, "dev");
        hub.say(speaker.id, "dev", "hello", false).unwrap();
        hub.private(speaker.id, "guest1", "psst").ok();
        let written = String::from_utf8(watch.written.lock().unwrap().clone()).unwrap();
        assert!(
            written.contains("hello"),
            "the line was written directly: {written:?}"
        );
        assert_eq!(
            watch.under_lock.load(std::sync::atomic::Ordering::SeqCst),
            0
        );
    }

    #[test]
    fn a_big_rooms_fan_out_wakes_writer_tasks_instead() {
        let hub = Arc::new(Hub::default());
        let watches: Vec<_> = (0..HubLimits::default().direct_fanout + 1)
            .map(|_| watched(&hub, "big").0)
            .collect();
        let speaker = Probe::join(&hub, "big");
        // Joins into the room while it was small were told directly.
        for watch in &watches {
            watch.written.lock().unwrap().clear();
        }
        hub.say(speaker.id, "big", "to all", false).unwrap();
        for watch in &watches {
            assert!(watch.written.lock().unwrap().is_empty(), "written directly");
        }
        // Left queued, for each member's writer task.
        let st = hub.lock();
        let queued = st
            .members
            .iter()
            .filter(|(id, m)| **id != speaker.id && !m.outbox.drain_now().is_empty())
            .count();
        assert_eq!(queued, HubLimits::default().direct_fanout + 1);
    }

    fn greet(_: &Nick) -> Outgoing {
        Outgoing::Raw("hi\n".into())
    }

    fn with_store(store_private: bool) -> (Hub, Arc<crate::store::MemoryStore>) {
        let store = crate::store::memory(crate::store::Retention::KEEP_ALL);
        let hub = Hub::with_history(
            HubLimits::default(),
            Some(History {
                store: store.clone(),
                replay: 10,
                store_private,
            }),
        );
        (hub, store)
    }

    /// A store whose reads wait at a gate, to show what the hub does while
    /// a read is under way.
    struct GatedStore {
        inner: Arc<crate::store::MemoryStore>,
        entered: Mutex<std::sync::mpsc::Sender<()>>,
        gate: Mutex<std::sync::mpsc::Receiver<()>>,
    }

    impl Store for GatedStore {
        fn append(&self, msg: StoredMessage) -> Receipt {
            self.inner.append(msg)
        }
        fn last_seq(&self, room_key: &str) -> Result<u64, crate::store::StoreError> {
            let _ = self.entered.lock().unwrap().send(());
            let _ = self
                .gate
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10));
            self.inner.last_seq(room_key)
        }
        fn page(
            &self,
            room_key: &str,
            before: Option<u64>,
            limit: usize,
        ) -> Result<Vec<StoredMessage>, crate::store::StoreError> {
            self.inner.page(room_key, before, limit)
        }
        fn close(&self) {}
        fn stats(&self) -> crate::store::StoreStats {
            self.inner.stats()
        }
    }

    #[test]
    fn a_store_read_for_a_new_room_does_not_hold_the_lock() {
        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (open, gate) = std::sync::mpsc::channel();
        let store = Arc::new(GatedStore {
            inner: crate::store::memory(crate::store::Retention::KEEP_ALL),
            entered: Mutex::new(entered_tx),
            gate: Mutex::new(gate),
        });
        let hub = Arc::new(Hub::with_history(
            HubLimits::default(),
            Some(History {
                store,
                replay: 10,
                store_private: false,
            }),
        ));
        let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        let (b, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        let joiner = {
            let hub = hub.clone();
            std::thread::spawn(move || hub.join(a, "quiet", ack).map(|j| j.room))
        };
        // The joiner is inside the store read, the gate still shut.
        entered.recv_timeout(Duration::from_secs(10)).unwrap();
        let (done_tx, done) = std::sync::mpsc::channel();
        {
            let hub = hub.clone();
            std::thread::spawn(move || {
                let _ = done_tx.send(hub.rooms().len());
                let _ = done_tx.send(hub.rename(b, "bob").is_ok() as usize);
            });
        }
        assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(0));
        assert_eq!(done.recv_timeout(Duration::from_secs(5)), Ok(1));
        open.send(()).unwrap();
        assert_eq!(joiner.join().unwrap().unwrap().as_str(), "quiet");
    }

    #[test]
    fn a_read_made_stale_by_a_room_living_and_dying_is_read_again() {
        let (hub, store) = with_store(false);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Read while the room is not live...
        let seed = rt.block_on(hub.prepare_join("dev"));
        assert!(seed.is_some());
        // ...then the room lives (three messages) and empties meanwhile.
        let (b, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        hub.join(b, "dev", ack).unwrap();
        for text in ["one", "two", "three"] {
            hub.say(b, "dev", text, false).unwrap();
        }
        hub.part(b, "dev").unwrap();
        assert_eq!(store.last_seq("dev").unwrap(), 3);
        let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        hub.join_seeded(a, "dev", seed, ack).unwrap();
        let posted = hub.say(a, "dev", "four", false).unwrap();
        assert_eq!(posted.seq, 4, "numbering went back");
        // A live room needs no read at all.
        assert!(!hub.needs_prepare("dev"));
        assert!(rt.block_on(hub.prepare_join("dev")).is_none());
    }

    #[test]
    fn retired_rooms_tell_which_reads_still_hold() {
        let mut retired = Retired::default();
        assert!(retired.unchanged_since("a", 0));
        retired.push("a");
        retired.push("b");
        assert!(!retired.unchanged_since("a", 0));
        assert!(retired.unchanged_since("a", 1));
        assert!(!retired.unchanged_since("b", 1));
        assert!(retired.unchanged_since("c", 0));
        for _ in 0..RETIRED_KEPT {
            retired.push("x");
        }
        // Too old to check: read again.
        assert!(!retired.unchanged_since("c", 0));
        assert!(retired.unchanged_since("c", retired.count - 1));
    }

    #[test]
    fn private_messages_are_stored_only_when_asked() {
        for store_private in [false, true] {
            let (hub, store) = with_store(store_private);
            let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
            let (_, b) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
            hub.private(a, b.as_str(), "between us").unwrap();
            hub.private(a, b.as_str(), "again").unwrap();
            let kept = store.page(PRIVATE_KEY, None, 10).unwrap();
            if store_private {
                assert_eq!(kept.len(), 2);
                assert_eq!((kept[0].seq, kept[1].seq), (1, 2));
                assert_eq!(kept[0].nick, "guest1");
                assert_eq!(kept[0].room_name, "guest2");
                assert_eq!(kept[1].text, "again");
            } else {
                assert!(kept.is_empty(), "{kept:?}");
            }
        }
    }

    #[test]
    fn rooms_are_numbered_on_from_the_store_and_replay_what_it_holds() {
        let (hub, store) = with_store(false);
        for seq in 1..=3 {
            store
                .append(StoredMessage {
                    room: "dev".into(),
                    room_name: "Dev".into(),
                    seq,
                    ts_ms: seq,
                    nick: "old".into(),
                    text: format!("stored {seq}"),
                    action: false,
                })
                .wait()
                .unwrap();
        }
        let outbox = Outbox::new(1 << 20);
        let (id, _) = hub.connect(outbox.clone(), greet).unwrap();
        hub.join(id, "dev", ack).unwrap();
        let probe = Probe { id, outbox };
        let lines: Vec<String> = probe
            .lines()
            .iter()
            .flat_map(|item| item.lines().map(str::to_string).collect::<Vec<_>>())
            .collect();
        assert_eq!(lines[..2], ["hi", "joined"]);
        assert_eq!(
            lines[2],
            "* history of Dev: last 3 messages (times are UTC)"
        );
        assert!(lines[3].ends_with("] old> stored 1"), "{lines:?}");
        let posted = hub.say(id, "dev", "new", false).unwrap();
        assert_eq!(posted.seq, 4);
        assert_eq!(posted.room.as_str(), "Dev");
        assert!(posted.stored.is_some());
        assert_eq!(store.last_seq("dev").unwrap(), 4);
    }

    #[test]
    fn guests_get_unique_nicks() {
        let hub = Hub::default();
        let (_, a) = hub.connect(Outbox::new(100), greet).unwrap();
        let (b_id, _) = hub.connect(Outbox::new(100), greet).unwrap();
        hub.rename(b_id, "guest3").unwrap();
        let (_, c) = hub.connect(Outbox::new(100), greet).unwrap();
        assert_eq!(a.as_str(), "guest1");
        assert_eq!(c.as_str(), "guest4");
    }

    #[test]
    fn message_reaches_room_but_not_sender_or_other_rooms() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        let b = Probe::join(&hub, "lobby");
        let c = Probe::join(&hub, "other");
        a.lines();
        b.lines();
        let posted = hub.say(a.id, "lobby", "hello", false).unwrap();
        assert_eq!(posted.seq, 1);
        assert_eq!(b.lines(), vec!["guest1> hello"]);
        assert!(a.lines().is_empty());
        assert!(c.lines().is_empty());
    }

    #[test]
    fn join_leave_and_rename_notices() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        let b = Probe::join(&hub, "lobby");
        assert_eq!(a.lines(), vec!["* guest2 joined lobby"]);
        hub.rename(b.id, "bob").unwrap();
        assert_eq!(a.lines(), vec!["* guest2 is now known as bob"]);
        assert_eq!(b.lines(), vec!["* guest2 is now known as bob"]);
        hub.part(b.id, "lobby").unwrap();
        assert_eq!(a.lines(), vec!["* bob left lobby"]);
        hub.join(b.id, "lobby", ack).unwrap();
        hub.disconnect(b.id, LeaveReason::Quit(Some("bye".into())));
        assert_eq!(a.lines(), vec!["* bob joined lobby", "* bob quit (bye)"]);
        assert_eq!(hub.who("lobby").unwrap().1.len(), 1);
    }

    #[test]
    fn nick_rules() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        let b = Probe::join(&hub, "lobby");
        hub.rename(a.id, "Alice").unwrap();
        assert_eq!(
            hub.rename(b.id, "alice"),
            Err(HubError::NickInUse("alice".into()))
        );
        assert!(matches!(
            hub.rename(b.id, "server"),
            Err(HubError::InvalidName(NameError::Reserved(_)))
        ));
        // Changing only the case of one's own nick is allowed.
        assert_eq!(hub.rename(a.id, "ALICE").unwrap().as_str(), "ALICE");
    }

    #[test]
    fn who_stays_in_nick_order_through_renames_and_leaves() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        let b = Probe::join(&hub, "lobby");
        let c = Probe::join(&hub, "lobby");
        hub.rename(a.id, "bob").unwrap();
        hub.rename(b.id, "Alice").unwrap();
        hub.rename(c.id, "carol").unwrap();
        let who = |hub: &Hub| -> Vec<String> {
            let (_, nicks) = hub.who("lobby").unwrap();
            nicks.iter().map(|n| n.to_string()).collect()
        };
        assert_eq!(who(&hub), vec!["Alice", "bob", "carol"]);
        hub.rename(b.id, "zed").unwrap();
        hub.rename(a.id, "BOB").unwrap();
        assert_eq!(who(&hub), vec!["BOB", "carol", "zed"]);
        hub.part(c.id, "lobby").unwrap();
        assert_eq!(who(&hub), vec!["BOB", "zed"]);
        // Fan-out follows the roster: the renamed members still get traffic.
        a.lines();
        b.lines();
        hub.say(a.id, "lobby", "hi", false).unwrap();
        assert_eq!(b.lines(), vec!["BOB> hi"]);
    }

    /// A room of exactly [`BIG_ROOM`] members, all told everything so far.
    fn big_room(hub: &Hub) -> Vec<Probe> {
        let probes: Vec<Probe> = (0..BIG_ROOM).map(|_| Probe::join(hub, "big")).collect();
        for p in &probes {
            p.lines();
        }
        probes
    }

    #[test]
    fn big_rooms_tell_held_notices_together_before_their_subjects_speak() {
        let hub = Hub::default();
        let probes = big_room(&hub);
        let x = Probe::join(&hub, "big");
        let y = Probe::join(&hub, "big");
        hub.part(probes[1].id, "big").unwrap();
        assert!(probes[0].lines().is_empty(), "held, not yet told");
        // Chat from someone the notices are not about does not wait for
        // them, nor cut them short.
        hub.say(probes[2].id, "big", "hello", false).unwrap();
        assert_eq!(probes[0].lines(), vec!["guest3> hello"]);
        assert_eq!(x.lines(), vec!["guest3> hello"]);
        // A joiner who speaks is seen joining first.
        hub.say(y.id, "big", "hi all", false).unwrap();
        let (xn, yn) = (BIG_ROOM + 1, BIG_ROOM + 2);
        // Told as a summary, one line per kind of change.
        assert_eq!(
            probes[0].lines(),
            vec![
                format!("* 2 joined big: guest{xn}, guest{yn}\n* 1 left big: guest2"),
                format!("guest{yn}> hi all"),
            ]
        );
        // Each joiner is told only what happened after it was seated.
        assert_eq!(
            x.lines(),
            vec![
                format!("* 1 joined big: guest{yn}\n* 1 left big: guest2"),
                format!("guest{yn}> hi all"),
            ]
        );
        // A single change reads as it always does.
        assert_eq!(y.lines(), vec!["guest3> hello", "* guest2 left big"]);
        // The one who left is told nothing more.
        assert!(probes[1].lines().is_empty());
    }

    #[test]
    fn held_notices_are_told_when_due_and_before_a_rename() {
        let hub = Hub::default();
        let probes = big_room(&hub);
        let x = Probe::join(&hub, "big");
        hub.tell_held();
        let xn = BIG_ROOM + 1;
        assert_eq!(probes[0].lines(), vec![format!("* guest{xn} joined big")]);
        hub.part(x.id, "big").unwrap();
        hub.rename(probes[3].id, "dora").unwrap();
        assert_eq!(
            probes[0].lines(),
            vec![
                format!("* guest{xn} left big"),
                "* guest4 is now known as dora".to_string(),
            ]
        );
    }

    #[test]
    fn bigger_rooms_hold_their_notices_longer_and_are_told_when_due() {
        assert_eq!(notice_delay(40), NOTICE_DELAY);
        assert_eq!(notice_delay(2_000), Duration::from_millis(200));
        assert_eq!(notice_delay(1_000_000), MAX_NOTICE_DELAY);
        let hub = Hub::default();
        let probes = big_room(&hub);
        let small = Probe::join(&hub, "small");
        let x = Probe::join(&hub, "big");
        let now = Instant::now();
        // Nothing is due yet; the big room is due after 50 ms.
        let next = hub.tell_due(now).expect("a room holds notices");
        assert!(
            next > now && next <= now + notice_delay(BIG_ROOM + 1),
            "{next:?}"
        );
        assert!(probes[0].lines().is_empty());
        assert!(small.lines().is_empty());
        assert_eq!(hub.tell_due(next), None);
        assert_eq!(
            probes[0].lines(),
            vec![format!("* guest{} joined big", BIG_ROOM + 2)]
        );
        drop(x);
    }

    #[test]
    fn a_wave_of_joins_costs_each_member_a_few_queue_entries() {
        let hub = Hub::default();
        let probes = big_room(&hub);
        let wave: Vec<Probe> = (0..1000).map(|_| Probe::join(&hub, "big")).collect();
        hub.tell_held();
        let lines: Vec<String> = probes[0].lines();
        // One summary line per MAX_HELD notices, not one line per join.
        assert_eq!(lines.len(), 1000usize.div_ceil(MAX_HELD));
        assert!(lines.iter().all(|l| l.lines().count() == 1), "{lines:?}");
        let told: usize = lines
            .iter()
            .map(|l| {
                let n = l.strip_prefix("* ").and_then(|l| l.split_once(' '));
                n.and_then(|(n, _)| n.parse::<usize>().ok()).unwrap_or(0)
            })
            .sum();
        assert_eq!(told, 1000);
        // A joiner of the wave is told of those after it, the last of
        // nobody.
        let last = wave.last().map(|p| p.lines());
        assert_eq!(last, Some(Vec::new()));
        let first = wave[0].lines();
        assert!(first[0].starts_with(&format!("* {} joined big: ", MAX_HELD - 1)));
    }

    /// Follows one member's view of a room's roster through what it is
    /// told: joins, leaves and crowds, alone or bundled; and checks that
    /// every message it is told comes from someone it knows is there.
    fn follow(roster: &mut BTreeSet<String>, items: &[Outgoing]) {
        let mut one = |event: &Event| match event {
            Event::Message { from, .. } => {
                assert!(
                    roster.contains(&from.key()),
                    "{from} heard before seen joining"
                )
            }
            Event::Joined { nick, .. } => assert!(roster.insert(nick.key()), "{nick} twice"),
            Event::Left { nick, .. } => assert!(roster.remove(&nick.key()), "{nick} absent"),
            Event::Crowd {
                joined,
                left,
                disconnected,
                ..
            } => {
                for nick in left.iter().chain(disconnected) {
                    assert!(roster.remove(&nick.key()), "{nick} absent");
                }
                for nick in joined {
                    assert!(roster.insert(nick.key()), "{nick} twice");
                }
            }
            _ => {}
        };
        for item in items {
            match item {
                Outgoing::Event(env) => one(&env.event),
                Outgoing::Bundle(bundle) => bundle.envelopes().iter().for_each(|e| one(&e.event)),
                Outgoing::Raw(_) => {}
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Whoever joins, leaves or is dropped, and whenever held notices
        /// are told, every member of a big room who applies what it was
        /// told to the list it got on joining knows who is there.
        #[test]
        fn members_who_follow_the_notices_know_the_roster(
            ops in proptest::collection::vec((0u8..5, 0usize..1000), 0..80)
        ) {
            let hub = Hub::default();
            let who = |hub: &Hub| -> BTreeSet<String> {
                hub.who("big").map(|(_, n)| n.iter().map(Nick::key).collect()).unwrap_or_default()
            };
            let mut inside: Vec<(MemberId, Arc<Outbox>, BTreeSet<String>)> = big_room(&hub)
                .into_iter()
                .map(|p| (p.id, p.outbox, who(&hub)))
                .collect();
            for (op, pick) in ops {
                match op {
                    0 => {
                        let outbox = Outbox::new(1 << 20);
                        let (id, _) = hub.connect(outbox.clone(), |_| Outgoing::Raw("hi\n".into())).unwrap();
                        let mut roster = BTreeSet::new();
                        hub.join(id, "big", |seated| {
                            roster = seated.members().iter().map(Nick::key).collect();
                            ack(seated)
                        })
                        .unwrap();
                        outbox.drain_now();
                        inside.push((id, outbox, roster));
                    }
                    3 => {
                        let (id, _, _) = &inside[pick % inside.len()];
                        hub.say(*id, "big", "hi", false).unwrap();
                    }
                    1 | 2 if inside.len() > 1 => {
                        let (id, _, _) = inside.swap_remove(pick % inside.len());
                        if op == 1 {
                            hub.part(id, "big").unwrap();
                        } else {
                            hub.disconnect(id, LeaveReason::Dropped("gone".into()));
                        }
                    }
                    _ => hub.tell_held(),
                }
            }
            hub.tell_held();
            let now = who(&hub);
            for (_, outbox, roster) in &mut inside {
                follow(roster, &outbox.drain_now());
                proptest::prop_assert_eq!(&*roster, &now);
            }
        }
    }

    #[test]
    fn member_in_several_rooms() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "one");
        hub.join(a.id, "two", ack).unwrap();
        let b = Probe::join(&hub, "one");
        let c = Probe::join(&hub, "two");
        hub.say(a.id, "two", "x", false).unwrap();
        assert!(b.lines().is_empty());
        assert_eq!(c.lines(), vec!["guest1> x"]);
        assert_eq!(
            hub.join(a.id, "ONE", ack).unwrap_err(),
            HubError::AlreadyInRoom("one".into())
        );
        let rooms: Vec<_> = hub
            .rooms()
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect();
        assert_eq!(rooms, vec![("one".into(), 2), ("two".into(), 2)]);
    }

    #[test]
    fn room_limit_per_member() {
        let hub = Hub::new(HubLimits {
            max_rooms_per_member: 2,
            ..HubLimits::default()
        });
        let a = Probe::join(&hub, "one");
        hub.join(a.id, "two", ack).unwrap();
        assert_eq!(hub.join(a.id, "three", ack), Err(HubError::TooManyRooms(2)));
        // Switching rooms frees one, so it works even at the limit.
        hub.switch(a.id, "two", "three", ack).unwrap();
        let names: Vec<_> = hub
            .rooms()
            .into_iter()
            .map(|(n, _)| n.to_string())
            .collect();
        assert_eq!(names, vec!["one", "three"]);
    }

    #[test]
    fn private_message_only_to_target() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        let b = Probe::join(&hub, "lobby");
        let c = Probe::join(&hub, "lobby");
        a.lines();
        b.lines();
        c.lines();
        hub.private(a.id, "GUEST2", "psst").unwrap();
        assert_eq!(b.lines(), vec!["[private] guest1> psst"]);
        assert!(c.lines().is_empty());
        assert_eq!(
            hub.private(a.id, "nobody", "x"),
            Err(HubError::NoSuchNick("nobody".into()))
        );
    }

    #[test]
    fn sequence_numbers_are_per_room_and_dense() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "r1");
        hub.join(a.id, "r2", ack).unwrap();
        let seqs: Vec<u64> = (0..3)
            .map(|_| hub.say(a.id, "r1", "m", false).unwrap().seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(hub.say(a.id, "r2", "m", false).unwrap().seq, 1);
        assert_eq!(
            hub.say(a.id, "r3", "m", false).err(),
            Some(HubError::NotInRoom("r3".into()))
        );
    }

    fn chat(lines: &[(&str, bool)]) -> Vec<ChatLine> {
        lines
            .iter()
            .map(|(t, action)| ChatLine {
                text: (*t).into(),
                action: *action,
            })
            .collect()
    }

    #[test]
    fn a_batch_is_sequenced_line_by_line_and_delivered_as_one() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        let b = Probe::join(&hub, "lobby");
        a.lines();
        b.lines();
        hub.say(a.id, "lobby", "first", false).unwrap();
        let posted = hub
            .say_many(a.id, "lobby", &chat(&[("two", false), ("waves", true)]))
            .unwrap();
        let seqs: Vec<u64> = posted.iter().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![2, 3]);
        // One queue entry (one write) for the two lines, after the first.
        assert_eq!(
            b.lines(),
            vec!["guest1> first", "guest1> two\n* guest1 waves"]
        );
        assert!(a.lines().is_empty());
        assert_eq!(
            hub.say_many(a.id, "elsewhere", &chat(&[("x", false)]))
                .err(),
            Some(HubError::NotInRoom("elsewhere".into()))
        );
    }

    #[test]
    fn every_line_of_a_batch_is_stored() {
        let store = crate::store::memory(crate::store::Retention::default());
        let hub = Hub::with_history(
            HubLimits::default(),
            Some(History {
                store: store.clone(),
                replay: 10,
                store_private: false,
            }),
        );
        let (a, _) = hub.connect(Outbox::new(1 << 20), greet).unwrap();
        hub.join(a, "lobby", ack).unwrap();
        hub.say_many(a, "lobby", &chat(&[("one", false), ("two", false)]))
            .unwrap();
        hub.say(a, "lobby", "three", false).unwrap();
        let stored: Vec<(u64, String)> = store
            .page("lobby", None, 10)
            .unwrap()
            .into_iter()
            .map(|m| (m.seq, m.text))
            .collect();
        assert_eq!(
            stored,
            vec![(1, "one".into()), (2, "two".into()), (3, "three".into())]
        );
    }

    #[tokio::test]
    async fn slow_member_is_evicted_and_room_told() {
        let hub = Hub::default();
        let fast = Probe::join(&hub, "lobby");
        let slow_box = Outbox::new(300);
        let (slow, _) = hub.connect(slow_box.clone(), greet).unwrap();
        hub.join(slow, "lobby", ack).unwrap();
        fast.lines();
        for _ in 0..10 {
            hub.say(
                fast.id,
                "lobby",
                "0123456789012345678901234567890123456789",
                false,
            )
            .unwrap();
        }
        assert!(slow_box.is_aborted());
        let mut batch = Vec::new();
        assert_eq!(slow_box.drain(&mut batch).await, Drain::Abort);
        assert_eq!(
            fast.lines(),
            vec!["* guest2 was disconnected (send queue full: client too slow)"]
        );
        assert_eq!(hub.member_count(), 1);
        assert!(hub.nick(slow).is_err());
    }

    #[tokio::test]
    async fn shutdown_notifies_and_closes_everyone() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "lobby");
        a.lines();
        hub.shutdown("server shutting down");
        let mut batch = Vec::new();
        assert_eq!(a.outbox.drain(&mut batch).await, Drain::Finish);
        assert_eq!(batch.len(), 1);
        assert_eq!(
            hub.connect(Outbox::new(10), greet).unwrap_err(),
            HubError::ShuttingDown
        );
    }

    #[test]
    fn empty_rooms_disappear() {
        let hub = Hub::default();
        let a = Probe::join(&hub, "temp");
        hub.part(a.id, "temp").unwrap();
        assert!(hub.rooms().is_empty());
        assert_eq!(
            hub.who("temp").unwrap_err(),
            HubError::NoSuchRoom("temp".into())
        );
    }
}
