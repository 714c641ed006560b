//! The text protocol's password prompt, before a person is registered.
//!
//! Until the right `/pass PASSWORD` arrives the connection is no member:
//! it is in no room, has no nick, and nothing it sends reaches anyone. It
//! is told once that a password is needed, and every other line gets
//! `* error: password required: /pass PASSWORD`. Three wrong passwords, a
//! flood, or the register deadline close it. What was typed is never
//! logged; a wrong attempt is logged with the peer's address.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Frames;
use crate::config::ServerConfig;
use crate::proto::line::Frame;
use crate::proto::sanitize;
use crate::proto::text;
use crate::server::access::{Secret, MAX_ATTEMPTS};
use crate::server::flood::{Flood, Verdict};

/// The first line a text client sees on a server with a password.
pub const PROMPT: &str = "this server needs a password: /pass PASSWORD";

/// Asks for the password until it is given (`true`) or the connection is
/// to be closed (`false`; the client has been told why). `first` is a
/// frame the protocol detector already read.
pub(super) async fn password<W: AsyncWrite + Unpin>(
    frames: &mut Frames,
    first: Option<Frame>,
    writer: &mut W,
    secret: &Secret,
    peer: SocketAddr,
    config: &ServerConfig,
    deadline: Instant,
) -> bool {
    let within = config.close_timeout();
    if !say(writer, &text::notice(PROMPT), within).await {
        return false;
    }
    let mut flood = Flood::from_config(config, Instant::now());
    let mut attempts = 0;
    let mut next = first;
    loop {
        let frame = match next.take() {
            Some(frame) => frame,
            None => match tokio::time::timeout_at(deadline, frames.next()).await {
                Err(_) => {
                    let secs = config.register_timeout_secs;
                    let line = text::error(&format!("no password within {secs} s; disconnected"));
                    say(writer, &line, within).await;
                    return false;
                }
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(_)) | None) => return false,
            },
        };
        if let Some(flood) = &mut flood {
            match flood.check(Instant::now()) {
                Verdict::Pass => {}
                Verdict::Refuse { retry_after } => {
                    let line = text::error(&format!(
                        "flood control: you are sending too fast; that line was not read \
                         (retry in {} ms)",
                        retry_after.as_millis()
                    ));
                    if !say(writer, &line, within).await {
                        return false;
                    }
                    continue;
                }
                Verdict::Kick => {
                    say(writer, &text::error("excess flood; disconnected"), within).await;
                    return false;
                }
            }
        }
        let Frame::Line(bytes) = frame else {
            if !say(writer, &required(), within).await {
                return false;
            }
            continue;
        };
        let decoded = String::from_utf8_lossy(&bytes);
        let line = sanitize::clean(&decoded);
        match attempt(&line) {
            Typed::Password(given) if secret.matches(given) => {
                info!(%peer, "password accepted");
                return true;
            }
            Typed::Password(_) => {
                attempts += 1;
                // The address only: never what was typed.
                warn!(%peer, attempt = attempts, "wrong password");
                if attempts >= MAX_ATTEMPTS {
                    let line = text::error("wrong password; disconnected");
                    say(writer, &line, within).await;
                    return false;
                }
                let line = text::error(&format!(
                    "wrong password (attempt {attempts} of {MAX_ATTEMPTS})"
                ));
                if !say(writer, &line, within).await {
                    return false;
                }
            }
            Typed::Quit => {
                say(writer, &text::notice("goodbye"), within).await;
                return false;
            }
            Typed::Other => {
                if !say(writer, &required(), within).await {
                    return false;
                }
            }
        }
    }
}

fn required() -> bytes::Bytes {
    text::error("password required: /pass PASSWORD")
}

/// What a line typed before the password is.
#[derive(Debug, PartialEq, Eq)]
enum Typed<'a> {
    Password(&'a str),
    Quit,
    Other,
}

fn attempt(line: &str) -> Typed<'_> {
    if line == "!quit" {
        return Typed::Quit;
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Typed::Other;
    };
    let (name, args) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    match name.to_ascii_lowercase().as_str() {
        // The password is everything after the command and one space, so
        // it may contain spaces of its own.
        "pass" => Typed::Password(args),
        "quit" => Typed::Quit,
        _ => Typed::Other,
    }
}

/// Writes one line; `false` if the client is gone.
async fn say<W: AsyncWrite + Unpin>(writer: &mut W, line: &[u8], within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, writer.write_all(line)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_before_the_password() {
        assert_eq!(attempt("/pass hunter2"), Typed::Password("hunter2"));
        assert_eq!(attempt("/PASS two words"), Typed::Password("two words"));
        assert_eq!(attempt("/pass"), Typed::Password(""));
        assert_eq!(attempt("/quit"), Typed::Quit);
        assert_eq!(attempt("!quit"), Typed::Quit);
        assert_eq!(attempt("hello"), Typed::Other);
        assert_eq!(attempt("/join dev"), Typed::Other);
    }
}
