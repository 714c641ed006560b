//! What the hub does to its state under the lock: lines fanned out to a
//! room, notices announced or held and then told, members seated in rooms
//! and taken out of them, and members whose queues overflowed evicted.
//!
//! Everything here runs with the hub's lock held, so it only touches
//! memory: outboxes are pushed to (never written), and the idle ones are
//! collected for the kicks that follow the lock's release (`kicks.rs`).
//! The public calls that lead here, and the locking, are in `hub.rs`.

use super::*;

impl State {
    /// The nick of a member about to post to the room `key` (`shown` as
    /// the member wrote it), and the room, if the member is in it.
    pub(super) fn speaker(
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
    pub(super) fn fan_out(
        &mut self,
        room_key: &str,
        except: Option<MemberId>,
        env: &Arc<Envelope>,
    ) {
        self.fan_out_item(room_key, except, &Outgoing::Event(env.clone()));
    }

    /// Pushes `item` from `except` (if it comes from a member here) to
    /// every other member of a room. Notices the room holds about `except`
    /// are told first; others keep waiting for their due time, so a busy
    /// room's chat does not cut every summary short (one from elsewhere
    /// tells them all, to be safe).
    pub(super) fn fan_out_item(
        &mut self,
        room_key: &str,
        except: Option<MemberId>,
        item: &Outgoing,
    ) {
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

    pub(super) fn deliver(&mut self, id: MemberId, outbox: &Arc<Outbox>, env: &Arc<Envelope>) {
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
    pub(super) fn announce(&mut self, room_key: &str, env: Arc<Envelope>, about: Option<MemberId>) {
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
    pub(super) fn seat(&mut self, room_key: &str, nick: &Nick, id: MemberId, outbox: Arc<Outbox>) {
        if let Some(room) = self.rooms.get_mut(room_key) {
            room.members.insert(nick, id, outbox);
            if !room.held.notices.is_empty() {
                room.held.late.push((id, room.held.notices.len()));
            }
        }
    }

    /// Tells the notices a room holds, as one bundle to everyone seated
    /// before them and the rest to those seated since.
    pub(super) fn tell_held(&mut self, room_key: &str) {
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
    pub(super) fn member_nicks(&self, room_key: &str) -> Vec<Nick> {
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

    pub(super) fn leave_room(&mut self, id: MemberId, room_key: &str, reason: LeaveReason) {
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
    pub(super) fn kick_member(&mut self, id: MemberId, by: &Nick, reason: Option<&str>) -> Nick {
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

    pub(super) fn remove_member(&mut self, id: MemberId, reason: LeaveReason) {
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
    pub(super) fn evict_overflowed(&mut self) {
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
