//! A room's roster: who is in it, in case-insensitive nick order, with
//! each member's outbox for fan-out. It owns the ordering, not the rules
//! for who may join (those are the hub's).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::MemberId;
use crate::names::Nick;
use crate::server::outbox::Outbox;

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
pub(super) struct Roster {
    seats: BTreeMap<Folded, (MemberId, Arc<Outbox>)>,
}

impl Roster {
    pub(super) fn insert(&mut self, nick: &Nick, id: MemberId, outbox: Arc<Outbox>) {
        self.seats.insert(Folded(nick.clone()), (id, outbox));
    }

    pub(super) fn remove(&mut self, nick: &Nick) {
        self.seats.remove(&Folded(nick.clone()));
    }

    /// Re-seats a member under its new nick, even a change of case only.
    pub(super) fn rename(&mut self, old: &Nick, new: &Nick) {
        if let Some(seat) = self.seats.remove(&Folded(old.clone())) {
            self.seats.insert(Folded(new.clone()), seat);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.seats.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.seats.is_empty()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (MemberId, &Arc<Outbox>)> {
        self.seats.values().map(|(id, outbox)| (*id, outbox))
    }

    /// The members' nicks, sorted case-insensitively.
    pub(super) fn nicks(&self) -> Vec<Nick> {
        self.seats.keys().map(|k| k.0.clone()).collect()
    }
}
