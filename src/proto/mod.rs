//! Pure wire codecs: bytes in, values out, and back. Nothing here touches a
//! socket, a clock or the hub, so every function can be unit-tested, fuzzed
//! and property-tested on its own.
//!
//! - [`line`] frames a byte stream into bounded lines.
//! - [`sanitize`] neutralises control characters before text reaches anyone.
//! - [`json`] is the structured protocol for programs, shared by server and client.
//! - [`text`] parses the human text protocol's commands and renders events.
//! - [`wording`] words joins, leaves and nick changes for every reader.
//! - [`request`] is what both protocols' input becomes: one [`request::Request`].

/// Most stored messages one history page carries, in either protocol, and
/// the most a joiner is replayed: the one bound on a history answer's size.
pub const MAX_HISTORY_PAGE: usize = 500;

pub mod json;
pub mod line;
pub mod request;
pub mod sanitize;
pub mod text;
pub mod wording;
