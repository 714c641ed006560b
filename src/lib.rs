//! rchat: a chat-room server and terminal client.
//!
//! The library holds everything; the `rchat` binary only parses its command
//! line and calls in here.

pub mod bench;
pub mod cert;
pub mod client;
pub mod clock;
pub mod config;
pub mod event;
pub mod names;
pub mod proto;
pub mod server;
pub mod store;
pub mod tls;
