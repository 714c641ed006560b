//! What happens in the chat, as the hub reports it to members: the
//! format-neutral [`Event`], and the shared [`Envelope`] that carries one event
//! to all of its recipients.
//!
//! The hub never encodes. A session encodes an event into its own wire format
//! the first time any session of that format needs it; the bytes are cached in
//! the envelope and every other recipient writes the same `Bytes`.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::names::{Nick, RoomName};

/// Why a member left a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaveReason {
    /// Left the room but stayed connected (`/join` elsewhere).
    Part,
    /// Closed the session on purpose, with an optional message.
    Quit(Option<Arc<str>>),
    /// The connection was lost or cut by the server; the text says why.
    Dropped(Arc<str>),
    /// An operator removed the member.
    Kicked { by: Nick, reason: Option<Arc<str>> },
}

/// One chat line (or `/me` action) a member posts; a read of several lines
/// posts them as one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub text: Arc<str>,
    pub action: bool,
}

/// Something a member is told about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A chat line or `/me` action in a room, sequenced by the room.
    Message {
        room: RoomName,
        /// Position in the room's total order, starting at 1.
        seq: u64,
        /// Server time, milliseconds since the Unix epoch.
        ts_ms: u64,
        from: Nick,
        text: Arc<str>,
        action: bool,
    },
    /// A private message to one member.
    Private {
        from: Nick,
        to: Nick,
        ts_ms: u64,
        text: Arc<str>,
    },
    Joined {
        room: RoomName,
        nick: Nick,
    },
    Left {
        room: RoomName,
        nick: Nick,
        reason: LeaveReason,
    },
    Renamed {
        old: Nick,
        new: Nick,
    },
    /// Several joins and leaves in a big room told as one: how its roster
    /// changed since the member was last told. Someone who came and went
    /// in that time is in no list. Kicks are never folded in here.
    Crowd {
        room: RoomName,
        joined: Vec<Nick>,
        /// Parted or quit.
        left: Vec<Nick>,
        /// Lost or cut by the server.
        disconnected: Vec<Nick>,
    },
    /// A notice from the server itself, such as the shutdown warning.
    Notice(Arc<str>),
    /// A room's stored messages (each an [`Event::Message`]), oldest first,
    /// replayed to a member who joins it.
    History {
        room: RoomName,
        messages: Arc<[Event]>,
        /// Older messages may be stored.
        more: bool,
    },
}

impl Event {
    /// Rough size of the event once encoded, for send-queue accounting before
    /// any encoding has happened. Overestimates slightly on purpose.
    pub fn approx_size(&self) -> usize {
        const OVERHEAD: usize = 48;
        OVERHEAD
            + match self {
                Event::Message {
                    room, from, text, ..
                } => room.as_str().len() + from.as_str().len() + text.len(),
                Event::Private { from, to, text, .. } => {
                    from.as_str().len() + to.as_str().len() + text.len()
                }
                Event::Joined { room, nick } => room.as_str().len() + nick.as_str().len(),
                Event::Left { room, nick, reason } => {
                    room.as_str().len()
                        + nick.as_str().len()
                        + match reason {
                            LeaveReason::Part | LeaveReason::Quit(None) => 0,
                            LeaveReason::Quit(Some(r)) | LeaveReason::Dropped(r) => r.len(),
                            LeaveReason::Kicked { by, reason } => {
                                by.as_str().len() + reason.as_ref().map_or(0, |r| r.len())
                            }
                        }
                }
                Event::Renamed { old, new } => old.as_str().len() + new.as_str().len(),
                Event::Crowd {
                    room,
                    joined,
                    left,
                    disconnected,
                } => {
                    room.as_str().len()
                        + [joined, left, disconnected]
                            .iter()
                            .flat_map(|nicks| nicks.iter())
                            .map(|n| n.as_str().len() + 4)
                            .sum::<usize>()
                }
                Event::Notice(text) => text.len(),
                Event::History { room, messages, .. } => {
                    room.as_str().len() + messages.iter().map(Event::approx_size).sum::<usize>()
                }
            }
    }
}

/// The wire formats a session may speak; one cache slot each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text = 0,
    Json = 1,
}

const FORMATS: usize = 2;

/// One event on its way to many members, with its encodings cached.
#[derive(Debug)]
pub struct Envelope {
    pub event: Event,
    encoded: [OnceLock<Bytes>; FORMATS],
    /// The event's [`Event::approx_size`], worked out once for all its
    /// recipients' queues.
    approx_size: usize,
}

impl Envelope {
    pub fn new(event: Event) -> Arc<Envelope> {
        Arc::new(Envelope {
            approx_size: event.approx_size(),
            event,
            encoded: Default::default(),
        })
    }

    /// The event's [`Event::approx_size`].
    pub fn approx_size(&self) -> usize {
        self.approx_size
    }

    /// The event's bytes in `format`, encoding at most once per format no
    /// matter how many recipients ask.
    pub fn encoded(&self, format: Format, encode: fn(&Event) -> Bytes) -> Bytes {
        self.wire(format, encode).clone()
    }

    /// Like [`Envelope::encoded`], but borrowed: a writer holding the
    /// envelope writes these bytes without touching a shared count.
    pub fn wire(&self, format: Format, encode: fn(&Event) -> Bytes) -> &Bytes {
        self.encoded[format as usize].get_or_init(|| encode(&self.event))
    }
}

/// Several events for the same recipients, delivered as one: the lines a
/// sender's read brought in cost each recipient one queue entry and one
/// write between them, and are encoded once per format into one buffer.
#[derive(Debug)]
pub struct Bundle {
    envelopes: Vec<Arc<Envelope>>,
    encoded: [OnceLock<Bytes>; FORMATS],
    approx_size: usize,
}

impl Bundle {
    pub fn new(envelopes: Vec<Arc<Envelope>>) -> Arc<Bundle> {
        let approx_size = envelopes.iter().map(|e| e.approx_size()).sum();
        Arc::new(Bundle {
            envelopes,
            encoded: Default::default(),
            approx_size,
        })
    }

    pub fn envelopes(&self) -> &[Arc<Envelope>] {
        &self.envelopes
    }

    /// The sum of the events' [`Event::approx_size`].
    pub fn approx_size(&self) -> usize {
        self.approx_size
    }

    /// Every event's bytes in `format`, in order, in one buffer encoded at
    /// most once per format. The envelopes' own caches are left empty, so
    /// the bytes are not held twice.
    pub fn wire(&self, format: Format, encode: fn(&Event) -> Bytes) -> &Bytes {
        self.encoded[format as usize].get_or_init(|| {
            let parts: Vec<Bytes> = self.envelopes.iter().map(|e| encode(&e.event)).collect();
            let mut all = Vec::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in &parts {
                all.extend_from_slice(part);
            }
            Bytes::from(all)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counting_encoder(_: &Event) -> Bytes {
        CALLS.fetch_add(1, Ordering::SeqCst);
        Bytes::from_static(b"x\n")
    }

    fn numbered(e: &Event) -> Bytes {
        match e {
            Event::Notice(t) => Bytes::from(format!("{t}\n")),
            _ => Bytes::new(),
        }
    }

    #[test]
    fn bundle_encodes_its_events_in_order() {
        let bundle = Bundle::new(
            ["a", "bb", "c"]
                .into_iter()
                .map(|t| Envelope::new(Event::Notice(t.into())))
                .collect(),
        );
        assert_eq!(bundle.wire(Format::Text, numbered), "a\nbb\nc\n");
        assert_eq!(
            bundle.approx_size(),
            3 * Event::Notice("".into()).approx_size() + 4
        );
        // Encoded for the bundle, not cached in each envelope as well.
        assert!(bundle.envelopes()[0].encoded[Format::Text as usize]
            .get()
            .is_none());
    }

    #[test]
    fn encodes_once_per_format() {
        let env = Envelope::new(Event::Notice("hi".into()));
        for _ in 0..10 {
            assert_eq!(env.encoded(Format::Text, counting_encoder), "x\n");
        }
        assert_eq!(CALLS.load(Ordering::SeqCst), 1);
    }
}
