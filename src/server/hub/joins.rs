//! Members entering and leaving rooms: a join (or a switch, which leaves
//! the rooms the text protocol shows one at a time), with the replay and
//! the roster the joiner is told, and a part. Reading a room back from the
//! store before the lock is taken is in `history.rs`.

use super::*;

impl Hub {
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

    pub(super) fn join_leaving(
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
}
