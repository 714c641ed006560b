//! The terminal client, `rchat connect`: a connection that survives server
//! restarts ([`conn`]), the full-screen interface ([`tui`]) over a display
//! model ([`view`]), a line mode for scripts ([`plain`]), what typed lines
//! mean ([`input`]), how times are shown ([`clock`]), and whom to trust
//! over TLS ([`trust`]).

pub mod app;
pub mod conn;
pub mod input;
pub mod plain;
pub mod settings;
pub mod trust;
pub mod tui;
pub mod view;
