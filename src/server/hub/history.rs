//! The hub's side of stored history: rooms read back from the store
//! before the lock is taken (a join into a room not live, private
//! numbering), the replay a joiner is sent, and pages a member asks for.
//! The store itself, and its queue of appends, live in `store/`.

use super::*;

impl Hub {
    /// Reads a room's log from the store, blocking. Never called with the
    /// lock held. A failed read numbers the room from 0: the store refuses
    /// the colliding appends, so chat goes on but is not stored.
    pub(super) fn read_log(history: &History, key: &str) -> RoomLog {
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
    pub(super) fn replay(&self, room: &Room) -> Option<Arc<Envelope>> {
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

    /// Reads where stored private messages are numbered from, once, with
    /// the lock released: nothing appends them until it is known.
    pub(super) fn load_private_seq(&self) {
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
    pub(super) fn history_room(
        &self,
        id: MemberId,
        room: &str,
    ) -> Result<(String, RoomName), HubError> {
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

    pub(super) fn history_page(
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
}
