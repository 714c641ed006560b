//! Lines posted to a room and private messages: sequenced, handed to the
//! store, fanned out (`state.rs`), and answered with what the sender is
//! told. Flood limits are the session's; this only delivers.

use super::*;

impl Hub {
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
    pub(super) fn post(
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
}
