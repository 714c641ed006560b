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
        let Some(mut room) = self.rooms.get(room_key) else {
            return;
        };
        let held_about_sender = match except {
            Some(id) => room.held.about.contains(&id),
            None => !room.held.notices.is_empty(),
        };
        if held_about_sender {
            self.tell_held(room_key);
            room = match self.rooms.get(room_key) {
                Some(room) => room,
                None => return,
            };
        }
        let lines = match item {
            Outgoing::Bundle(bundle) => bundle.envelopes().len(),
            _ => 1,
        };
        self.fanned += lines * room.members.len();
        // A big room under busier traffic, a room of thousands, or any
        // under heavy traffic, will not be kicked: its writer tasks are
        // woken as it goes, with nothing to collect.
        let size = room.members.len();
        let kick = if size <= self.direct_fanout {
            self.load.is_light()
        } else {
            self.direct_fanout > 0 && size < kicks::SLICED_KICKS && self.load.is_quiet()
        };
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
        let held = room.held.notices.len();
        if held >= MAX_HELD_UNSEATED || (held >= MAX_HELD && !room.held.late.is_empty()) {
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
#[path = "hub/tests.rs"]
mod tests;
