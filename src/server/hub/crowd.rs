//! Folding a big room's held join and leave notices into what a member
//! needs to know: how the roster changed.
//!
//! A wave of joins into a room of thousands would otherwise tell every
//! member every join: the millionth line costs as much as the first, and
//! members' chat queues behind them. Folded, a member is told one
//! [`Event::Crowd`] per held bundle. Only plain joins and leaves fold;
//! kicks and renames are told as they are, in their place, so a moderator's
//! action is never lost in a summary.
//!
//! This module only transforms a list of events; when notices are held and
//! to whom they are told is the hub's business.

use std::collections::HashMap;
use std::sync::Arc;

use crate::event::{Envelope, Event, LeaveReason};

/// No earlier notice about the same nick in the run.
const NONE: usize = usize::MAX;

/// A room's held notices, with the links that let any suffix of them be
/// folded in one pass: a bundle's late joiners are each told only what
/// came after them, so a wave of `n` joins asks for `n` different folds.
pub(super) struct Held<'a> {
    held: &'a [Arc<Envelope>],
    /// For each notice that folds: the previous notice about the same nick
    /// in its run, or [`NONE`].
    prev: Vec<usize>,
    /// For each notice that folds: the last notice about the same nick in
    /// its run.
    last: Vec<usize>,
    /// For each notice: where its run ends (itself + 1 for one that does
    /// not fold).
    run_end: Vec<usize>,
}

impl<'a> Held<'a> {
    pub(super) fn new(held: &'a [Arc<Envelope>]) -> Held<'a> {
        let n = held.len();
        let mut prev = vec![NONE; n];
        let mut last: Vec<usize> = (0..n).collect();
        let mut run_end = vec![n; n];
        let mut latest: HashMap<String, usize> = HashMap::new();
        let mut run_start = 0;
        for (i, env) in held.iter().enumerate() {
            let Some(nick) = nick_of(&env.event) else {
                // A kick or rename ends the run before it.
                for end in &mut run_end[run_start..i] {
                    *end = i;
                }
                run_end[i] = i + 1;
                run_start = i + 1;
                latest.clear();
                continue;
            };
            if let Some(p) = latest.insert(nick.key(), i) {
                prev[i] = p;
            }
        }
        // Each nick's last notice, passed back along its chain.
        for i in (0..n).rev() {
            if prev[i] != NONE {
                last[prev[i]] = last[i];
            }
        }
        Held {
            held,
            prev,
            last,
            run_end,
        }
    }

    /// The notices to tell someone who has seen the first `from`, in order:
    /// each run of plain joins and leaves becomes its net change (nothing,
    /// when everyone who came also went; the notice itself, when it comes
    /// down to one), everything else stays as it was.
    pub(super) fn told_from(&self, from: usize) -> Vec<Arc<Envelope>> {
        let mut told = Vec::new();
        let mut start = from;
        while start < self.held.len() {
            let end = self.run_end[start];
            if nick_of(&self.held[start].event).is_none() {
                told.push(self.held[start].clone());
            } else {
                self.fold_run(start, end, &mut told);
            }
            start = end;
        }
        told
    }

    /// Folds the notices `start..end`, all plain joins and leaves.
    fn fold_run(&self, start: usize, end: usize, told: &mut Vec<Arc<Envelope>>) {
        let mut changes: Vec<usize> = Vec::new();
        for i in start..end {
            // Only someone's first notice here says where they were before
            // (a leave means they were in); their last says where they are.
            if self.prev[i] != NONE && self.prev[i] >= start {
                continue;
            }
            let before = matches!(self.held[i].event, Event::Left { .. });
            let last = self.last[i];
            let after = matches!(self.held[last].event, Event::Joined { .. });
            // Came and went, or went and came back: no change.
            if before != after {
                changes.push(last);
            }
        }
        match changes.as_slice() {
            [] => {}
            [one] => told.push(self.held[*one].clone()),
            many => told.extend(self.crowd(many)),
        }
    }

    /// One summary of the changes whose last notices are at `changes`.
    fn crowd(&self, changes: &[usize]) -> Option<Arc<Envelope>> {
        let (mut joined, mut left, mut disconnected) = (Vec::new(), Vec::new(), Vec::new());
        for &i in changes {
            match &self.held[i].event {
                Event::Joined { nick, .. } => joined.push(nick.clone()),
                Event::Left {
                    nick,
                    reason: LeaveReason::Dropped(_),
                    ..
                } => disconnected.push(nick.clone()),
                Event::Left { nick, .. } => left.push(nick.clone()),
                _ => {}
            }
        }
        let room = match &self.held[*changes.first()?].event {
            Event::Joined { room, .. } | Event::Left { room, .. } => room.clone(),
            _ => return None,
        };
        Some(Envelope::new(Event::Crowd {
            room,
            joined,
            left,
            disconnected,
        }))
    }
}

/// The notices to tell for `held`, all of it folded (see [`Held::told_from`]).
#[cfg(test)]
pub(super) fn fold(held: &[Arc<Envelope>]) -> Vec<Arc<Envelope>> {
    Held::new(held).told_from(0)
}

/// The nick a notice that may be folded is about; `None` for kicks and
/// anything but joins and leaves, which are told as they are.
fn nick_of(event: &Event) -> Option<&crate::names::Nick> {
    match event {
        Event::Joined { nick, .. } => Some(nick),
        Event::Left { nick, reason, .. } if !matches!(reason, LeaveReason::Kicked { .. }) => {
            Some(nick)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{Nick, RoomName};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The nicks a told list adds to and removes from a roster, for tests.
    fn net(told: &[Arc<Envelope>]) -> (Vec<Nick>, Vec<Nick>) {
        let (mut added, mut removed) = (Vec::new(), Vec::new());
        for env in told {
            match &env.event {
                Event::Joined { nick, .. } => added.push(nick.clone()),
                Event::Left { nick, .. } => removed.push(nick.clone()),
                Event::Crowd {
                    joined,
                    left,
                    disconnected,
                    ..
                } => {
                    added.extend(joined.iter().cloned());
                    removed.extend(left.iter().chain(disconnected).cloned());
                }
                _ => {}
            }
        }
        (added, removed)
    }

    fn room() -> RoomName {
        RoomName::parse("lobby").unwrap()
    }

    fn nick(n: &str) -> Nick {
        Nick::parse(n).unwrap()
    }

    fn join(n: &str) -> Arc<Envelope> {
        Envelope::new(Event::Joined {
            room: room(),
            nick: nick(n),
        })
    }

    fn leave(n: &str, reason: LeaveReason) -> Arc<Envelope> {
        Envelope::new(Event::Left {
            room: room(),
            nick: nick(n),
            reason,
        })
    }

    fn part(n: &str) -> Arc<Envelope> {
        leave(n, LeaveReason::Part)
    }

    fn names(nicks: &[Nick]) -> Vec<&str> {
        nicks.iter().map(Nick::as_str).collect()
    }

    #[test]
    fn joins_and_leaves_fold_into_one_crowd_by_kind() {
        let told = fold(&[
            join("ann"),
            join("bob"),
            part("cat"),
            leave("dan", LeaveReason::Dropped("ping timeout".into())),
            leave("eve", LeaveReason::Quit(Some("bye".into()))),
        ]);
        let [one] = told.as_slice() else {
            panic!("one event, got {told:?}");
        };
        let Event::Crowd {
            joined,
            left,
            disconnected,
            ..
        } = &one.event
        else {
            panic!("a crowd, got {one:?}");
        };
        assert_eq!(names(joined), ["ann", "bob"]);
        assert_eq!(names(left), ["cat", "eve"]);
        assert_eq!(names(disconnected), ["dan"]);
    }

    #[test]
    fn a_lone_notice_is_told_as_it_was() {
        let alone = join("ann");
        let told = fold(std::slice::from_ref(&alone));
        assert!(Arc::ptr_eq(&told[0], &alone));
        // Ann came and went; only Bob's leave, with its reason, remains.
        let bob = leave("bob", LeaveReason::Quit(Some("bye".into())));
        let told = fold(&[join("ann"), bob.clone(), part("Ann")]);
        assert_eq!(told.len(), 1);
        assert!(Arc::ptr_eq(&told[0], &bob));
    }

    #[test]
    fn coming_and_going_in_one_bundle_tells_nothing() {
        assert!(fold(&[join("ann"), part("ann"), part("bob"), join("BOB")]).is_empty());
    }

    #[test]
    fn kicks_and_renames_keep_their_place_between_summaries() {
        let kick = leave(
            "cat",
            LeaveReason::Kicked {
                by: nick("root"),
                reason: None,
            },
        );
        let rename = Envelope::new(Event::Renamed {
            old: nick("dan"),
            new: nick("dave"),
        });
        let told = fold(&[
            join("ann"),
            join("bob"),
            kick.clone(),
            join("eve"),
            rename.clone(),
            part("fay"),
            part("gus"),
        ]);
        assert_eq!(told.len(), 5, "{told:?}");
        assert!(matches!(told[0].event, Event::Crowd { .. }));
        assert!(Arc::ptr_eq(&told[1], &kick));
        assert!(matches!(told[2].event, Event::Joined { .. }));
        assert!(Arc::ptr_eq(&told[3], &rename));
        assert!(matches!(told[4].event, Event::Crowd { .. }));
    }

    proptest! {
        /// A roster that follows the folded notices ends where one that
        /// follows every notice does.
        #[test]
        fn folding_keeps_the_roster(
            start in proptest::collection::btree_set(0u8..6, 0..6),
            steps in proptest::collection::vec(0u8..6, 0..40),
        ) {
            // Each step toggles one of six people, as the hub would tell it.
            let mut inside: BTreeSet<u8> = start.clone();
            let mut held = Vec::new();
            for p in steps {
                let n = format!("p{p}");
                if inside.remove(&p) {
                    held.push(if p % 2 == 0 { part(&n) } else {
                        leave(&n, LeaveReason::Dropped("gone".into()))
                    });
                } else {
                    inside.insert(p);
                    held.push(join(&n));
                }
            }
            let told = fold(&held);
            prop_assert!(told.len() <= held.len().min(1));
            let (added, removed) = net(&told);
            let mut roster: BTreeSet<String> = start.iter().map(|p| format!("p{p}")).collect();
            for n in &removed {
                prop_assert!(roster.remove(n.as_str()), "{n} removed but not there");
            }
            for n in &added {
                prop_assert!(roster.insert(n.to_string()), "{n} added twice");
            }
            let expected: BTreeSet<String> = inside.iter().map(|p| format!("p{p}")).collect();
            prop_assert_eq!(roster, expected);
        }

        /// Whoever has seen the first `from` notices and follows what
        /// [`Held::told_from`] gives them, one event after another, ends
        /// with the roster: for every `from`, with kicks breaking the runs.
        #[test]
        fn every_suffix_folds_to_the_roster(
            start in proptest::collection::btree_set(0u8..6, 0..6),
            steps in proptest::collection::vec((0u8..6, 0u8..4), 0..40),
        ) {
            let mut inside: BTreeSet<u8> = start.clone();
            let mut rosters = vec![inside.clone()];
            let mut held = Vec::new();
            for (p, how) in steps {
                let n = format!("p{p}");
                if inside.remove(&p) {
                    held.push(match how {
                        0 => part(&n),
                        1 => leave(&n, LeaveReason::Dropped("gone".into())),
                        2 => leave(&n, LeaveReason::Kicked { by: nick("op"), reason: None }),
                        _ => leave(&n, LeaveReason::Quit(None)),
                    });
                } else {
                    inside.insert(p);
                    held.push(join(&n));
                }
                rosters.push(inside.clone());
            }
            let folding = Held::new(&held);
            for (from, seen) in rosters.iter().enumerate() {
                let mut roster: BTreeSet<String> = seen.iter().map(|p| format!("p{p}")).collect();
                let told = folding.told_from(from);
                prop_assert!(told.len() <= held.len() - from);
                for env in &told {
                    let (added, removed) = net(std::slice::from_ref(env));
                    for n in &removed {
                        prop_assert!(roster.remove(n.as_str()), "{n} removed but not there");
                    }
                    for n in &added {
                        prop_assert!(roster.insert(n.to_string()), "{n} added twice");
                    }
                }
                let expected: BTreeSet<String> = inside.iter().map(|p| format!("p{p}")).collect();
                prop_assert_eq!(roster, expected, "from {}", from);
            }
        }
    }
}
