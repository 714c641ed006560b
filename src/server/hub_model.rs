//! A model-based test of the hub: random sequences of connects, nick
//! changes, joins, parts, chat, private messages, quits, reads and
//! evictions, checked after every step against a small model of what each
//! member must have received.
//!
//! The properties: each room's sequence numbers are dense and increasing;
//! every member of a room receives exactly that room's messages from its
//! join on, in the room's order, and nobody outside it receives them; a
//! private message reaches exactly its target; nicks are unique regardless
//! of case; a member that quits leaves nothing behind (its nick is free,
//! the member count drops); a reader that never reads is evicted, and only
//! it. Failures shrink, and proptest keeps them in
//! `proptest-regressions/server/hub_model.txt`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::server::outbox::{Outbox, Outgoing};

/// Members the test juggles; the last one reads slowly (a small queue).
const SLOTS: usize = 4;
const SLOW: usize = SLOTS - 1;
const ROOMS: [&str; 3] = ["alpha", "beta", "Gamma"];
/// Nicks tried, with case variants of each other.
const NICKS: [&str; 5] = ["ann", "ANN", "bob", "Bob", "carl"];
/// The slow member's queue: a few messages, then it overflows. It reads
/// only at the end of a run.
const SLOW_QUEUE: usize = 400;
const NORMAL_QUEUE: usize = 1 << 30;

#[derive(Debug, Clone)]
enum Op {
    Connect(usize),
    Nick(usize, usize),
    Join(usize, usize),
    Part(usize, usize),
    Say(usize, usize),
    Private(usize, usize),
    Quit(usize),
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let room = 0..ROOMS.len();
    prop_oneof![
        2 => slot.clone().prop_map(Op::Connect),
        1 => (slot.clone(), 0..NICKS.len()).prop_map(|(s, n)| Op::Nick(s, n)),
        3 => (slot.clone(), room.clone()).prop_map(|(s, r)| Op::Join(s, r)),
        1 => (slot.clone(), room.clone()).prop_map(|(s, r)| Op::Part(s, r)),
        6 => (slot.clone(), room).prop_map(|(s, r)| Op::Say(s, r)),
        1 => (slot.clone(), 0..SLOTS).prop_map(|(s, t)| Op::Private(s, t)),
        1 => slot.clone().prop_map(Op::Quit),
        3 => slot.prop_map(Op::Read),
    ]
}

/// What one live member is, in the model.
struct Live {
    id: MemberId,
    outbox: Arc<Outbox>,
    nick: String,
    rooms: BTreeSet<usize>,
    /// Messages it must have received since its last read, in order:
    /// `(room key, seq, text)` or `("@private", 0, text)`.
    expected: VecDeque<(String, u64, String)>,
}

struct Model {
    hub: Hub,
    slots: Vec<Option<Live>>,
    /// Last seq per room key while the room lives.
    last_seq: BTreeMap<String, u64>,
    said: u64,
}

fn key(room: usize) -> String {
    ROOMS[room].to_ascii_lowercase()
}

/// Takes what is queued for a member, releasing it as a writer would.
fn read(outbox: &Outbox) -> Vec<Outgoing> {
    let batch = outbox.drain_now();
    outbox.release(batch.iter().map(Outgoing::cost).sum());
    batch
}

/// The chat a member was sent, in order.
fn messages(items: &[Outgoing]) -> Vec<(String, u64, String)> {
    let mut out = Vec::new();
    let mut one = |event: &Event| match event {
        Event::Message {
            room, seq, text, ..
        } => out.push((room.key(), *seq, text.to_string())),
        Event::Private { text, .. } => out.push(("@private".into(), 0, text.to_string())),
        _ => {}
    };
    for item in items {
        match item {
            Outgoing::Event(env) => one(&env.event),
            Outgoing::Bundle(bundle) => bundle.envelopes().iter().for_each(|e| one(&e.event)),
            Outgoing::Raw(_) => {}
        }
    }
    out
}

impl Model {
    fn new() -> Model {
        Model {
            hub: Hub::default(),
            slots: (0..SLOTS).map(|_| None).collect(),
            last_seq: BTreeMap::new(),
            said: 0,
        }
    }

    fn members_of(&self, room: usize) -> impl Iterator<Item = usize> + '_ {
        (0..SLOTS).filter(move |&s| {
            self.slots[s]
                .as_ref()
                .is_some_and(|l| l.rooms.contains(&room))
        })
    }

    /// A member leaves the model; a room left empty is forgotten, as the
    /// hub forgets it (and numbers it afresh).
    fn forget(&mut self, slot: usize) {
        if let Some(live) = self.slots[slot].take() {
            for room in live.rooms {
                if self.members_of(room).next().is_none() {
                    self.last_seq.remove(&key(room));
                }
            }
        }
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Connect(s) => {
                if self.slots[s].is_some() {
                    return Ok(());
                }
                let limit = if s == SLOW { SLOW_QUEUE } else { NORMAL_QUEUE };
                let outbox = Outbox::new(limit);
                let (id, nick) = self
                    .hub
                    .connect(outbox.clone(), |_| Outgoing::Raw("hi\n".into()))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                self.slots[s] = Some(Live {
                    id,
                    outbox,
                    nick: nick.to_string(),
                    rooms: BTreeSet::new(),
                    expected: VecDeque::new(),
                });
            }
            Op::Nick(s, n) => {
                let Some(live) = &self.slots[s] else {
                    return Ok(());
                };
                let wanted = NICKS[n];
                let taken = self.slots.iter().enumerate().any(|(o, l)| {
                    o != s
                        && l.as_ref()
                            .is_some_and(|l| l.nick.eq_ignore_ascii_case(wanted))
                });
                let got = self.hub.rename(live.id, wanted);
                prop_assert_eq!(got.is_err(), taken, "rename to {} -> {:?}", wanted, got);
                if let Ok(nick) = got {
                    if let Some(live) = &mut self.slots[s] {
                        live.nick = nick.to_string();
                    }
                }
            }
            Op::Join(s, r) => {
                let Some(live) = &self.slots[s] else {
                    return Ok(());
                };
                let inside = live.rooms.contains(&r);
                let got = self
                    .hub
                    .join(live.id, ROOMS[r], |_| Outgoing::Raw("joined\n".into()));
                prop_assert_eq!(got.is_err(), inside, "join -> {:?}", got);
                if got.is_ok() {
                    if self.members_of(r).next().is_none() {
                        self.last_seq.insert(key(r), 0);
                    }
                    if let Some(live) = &mut self.slots[s] {
                        live.rooms.insert(r);
                    }
                }
            }
            Op::Part(s, r) => {
                let Some(live) = &self.slots[s] else {
                    return Ok(());
                };
                let inside = live.rooms.contains(&r);
                let got = self.hub.part(live.id, ROOMS[r]);
                prop_assert_eq!(got.is_ok(), inside, "part -> {:?}", got);
                if inside {
                    if let Some(live) = &mut self.slots[s] {
                        live.rooms.remove(&r);
                    }
                    if self.members_of(r).next().is_none() {
                        self.last_seq.remove(&key(r));
                    }
                }
            }
            Op::Say(s, r) => {
                let Some(live) = &self.slots[s] else {
                    return Ok(());
                };
                self.said += 1;
                let text = format!("m{}", self.said);
                let inside = live.rooms.contains(&r);
                let got = self.hub.say(live.id, ROOMS[r], &text, false);
                prop_assert_eq!(got.is_ok(), inside, "say -> {:?}", got);
                let Ok(posted) = got else {
                    return Ok(());
                };
                let last = self.last_seq.entry(key(r)).or_insert(0);
                prop_assert_eq!(posted.seq, *last + 1, "seq not dense in {}", ROOMS[r]);
                *last = posted.seq;
                let audience: Vec<usize> = self.members_of(r).filter(|&o| o != s).collect();
                for o in audience {
                    if let Some(other) = &mut self.slots[o] {
                        other.expected.push_back((key(r), posted.seq, text.clone()));
                    }
                }
            }
            Op::Private(s, t) => {
                let (Some(live), Some(target)) = (&self.slots[s], &self.slots[t]) else {
                    return Ok(());
                };
                self.said += 1;
                let text = format!("p{}", self.said);
                let got = self.hub.private(live.id, &target.nick, &text);
                prop_assert!(got.is_ok(), "private -> {:?}", got);
                if let Some(target) = &mut self.slots[t] {
                    target.expected.push_back(("@private".into(), 0, text));
                }
            }
            Op::Quit(s) => {
                let Some(live) = &self.slots[s] else {
                    return Ok(());
                };
                let (id, nick) = (live.id, live.nick.clone());
                self.hub.disconnect(id, LeaveReason::Quit(None));
                prop_assert_eq!(self.hub.nick(id), Err(HubError::Gone));
                self.forget(s);
                // Its nick is free for anyone now. (Asked of a member that
                // reads: the rename notices could evict the slow one.)
                if let Some(other) = self.slots[..SLOW].iter().flatten().next() {
                    let probe = self.hub.rename(other.id, &nick);
                    prop_assert!(probe.is_ok(), "{} still taken: {:?}", nick, probe);
                    let back = self.hub.rename(other.id, &other.nick.clone());
                    prop_assert!(back.is_ok());
                }
            }
            Op::Read(SLOW) => {}
            Op::Read(s) => self.read(s)?,
        }
        self.check_evictions()?;
        self.check_nicks()
    }

    /// A member reads everything queued for it: exactly what the model
    /// expects, in order.
    fn read(&mut self, s: usize) -> Result<(), TestCaseError> {
        let Some(live) = &mut self.slots[s] else {
            return Ok(());
        };
        let got = messages(&read(&live.outbox));
        let want: Vec<_> = live.expected.drain(..).collect();
        prop_assert_eq!(got, want, "what slot {} received", s);
        Ok(())
    }

    /// Only the slow reader is ever evicted; an evicted member is gone
    /// from the hub and from its rooms.
    fn check_evictions(&mut self) -> Result<(), TestCaseError> {
        for s in 0..SLOTS {
            let Some(live) = &self.slots[s] else {
                continue;
            };
            if self.hub.nick(live.id).is_err() {
                prop_assert_eq!(s, SLOW, "a member that reads was evicted");
                prop_assert!(
                    live.outbox.is_aborted(),
                    "evicted without its queue overflowing"
                );
                self.forget(s);
            }
        }
        let live = self.slots.iter().flatten().count();
        prop_assert_eq!(self.hub.member_count(), live);
        Ok(())
    }

    /// Nicks unique regardless of case, in the model and in every room.
    fn check_nicks(&self) -> Result<(), TestCaseError> {
        let nicks: Vec<String> = self
            .slots
            .iter()
            .flatten()
            .map(|l| l.nick.to_ascii_lowercase())
            .collect();
        let unique: BTreeSet<&String> = nicks.iter().collect();
        prop_assert_eq!(unique.len(), nicks.len(), "{:?}", nicks);
        for (r, room) in ROOMS.iter().enumerate() {
            let want: BTreeSet<String> = self
                .members_of(r)
                .filter_map(|s| self.slots[s].as_ref())
                .map(|l| l.nick.to_ascii_lowercase())
                .collect();
            let got: BTreeSet<String> = match self.hub.who(room) {
                Ok((_, members)) => members
                    .iter()
                    .map(|n| n.as_str().to_ascii_lowercase())
                    .collect(),
                Err(_) => BTreeSet::new(),
            };
            prop_assert_eq!(got, want, "members of {}", room);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_hub_behaves_like_its_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut model = Model::new();
        for op in &ops {
            model.step(op)?;
        }
        // Everyone still connected reads what is left: nothing missing,
        // nothing extra.
        for s in 0..SLOTS {
            model.read(s)?;
        }
    }
}
