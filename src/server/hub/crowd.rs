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

/// The notices to tell for `held`, in order: each run of plain joins and
/// leaves becomes its net change (nothing, when everyone who came also
/// went; the notice itself, when it comes down to one), everything else
/// stays as it was.
pub(super) fn fold(held: &[Arc<Envelope>]) -> Vec<Arc<Envelope>> {
    let mut told = Vec::new();
    let mut run: Vec<&Arc<Envelope>> = Vec::new();
    for env in held {
        if folds(&env.event) {
            run.push(env);
        } else {
            fold_run(&run, &mut told);
            run.clear();
            told.push(env.clone());
        }
    }
    fold_run(&run, &mut told);
    told
}

/// Whether an event may be told as part of a summary.
fn folds(event: &Event) -> bool {
    match event {
        Event::Joined { .. } => true,
        Event::Left { reason, .. } => !matches!(reason, LeaveReason::Kicked { .. }),
        _ => false,
    }
}

/// One nick's fate over a run: whether it was in the room before the run,
/// and the run's last event about it.
struct Fate<'a> {
    before: bool,
    last: &'a Arc<Envelope>,
}

fn fold_run(run: &[&Arc<Envelope>], told: &mut Vec<Arc<Envelope>>) {
    let first = match run {
        [] => return,
        [one] => {
            told.push((*one).clone());
            return;
        }
        [first, ..] => first,
    };
    let mut order: Vec<String> = Vec::new();
    let mut fates: HashMap<String, Fate> = HashMap::new();
    for env in run {
        let (nick, joined) = match &env.event {
            Event::Joined { nick, .. } => (nick, true),
            Event::Left { nick, .. } => (nick, false),
            _ => continue,
        };
        let key = nick.key();
        match fates.get_mut(&key) {
            Some(fate) => fate.last = env,
            None => {
                // Someone's first notice in the run says where they were
                // before it: a leave means they were in.
                fates.insert(
                    key.clone(),
                    Fate {
                        before: !joined,
                        last: env,
                    },
                );
                order.push(key);
            }
        }
    }
    let mut changes: Vec<&Arc<Envelope>> = Vec::new();
    let (mut joined, mut left, mut disconnected) = (Vec::new(), Vec::new(), Vec::new());
    for key in &order {
        let Some(fate) = fates.get(key) else {
            continue;
        };
        match &fate.last.event {
            Event::Joined { nick, .. } if !fate.before => joined.push(nick.clone()),
            Event::Left { nick, reason, .. } if fate.before => match reason {
                LeaveReason::Dropped(_) => disconnected.push(nick.clone()),
                _ => left.push(nick.clone()),
            },
            // Came and went, or went and came back: no change.
            _ => continue,
        }
        changes.push(fate.last);
    }
    match changes.as_slice() {
        [] => {}
        [one] => told.push((*one).clone()),
        _ => {
            let room = match &first.event {
                Event::Joined { room, .. } | Event::Left { room, .. } => room.clone(),
                _ => return,
            };
            told.push(Envelope::new(Event::Crowd {
                room,
                joined,
                left,
                disconnected,
            }));
        }
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
    }
}
