//! Speaking IRC to an IRC server, so that `rchat bench --irc` measures one
//! (InspIRCd, Ergo, …) with the same clients, the same tokens and the same
//! clocks as rchat itself: a side-by-side comparison needs one load
//! generator.
//!
//! The dialect is only what a measurement needs: register (`NICK`, `USER`),
//! join one channel, send each message as a `PRIVMSG` to it, answer a `PING`
//! while registering. What owns this: the wire lines and the reading of a
//! server's replies. Not here: when to read or write (the client and the
//! sender), what a token is (`token`).

use super::notice::Notice;

/// The channel every client joins.
pub(crate) const CHANNEL: &str = "#bench";

/// What goes before each message's token: IRC servers relay the trailing
/// parameter whole, token and filler included.
pub(crate) const PRIVMSG: &[u8] = b"PRIVMSG #bench :";

/// Registration. The join waits for the welcome: a server may finish
/// registering a client later than it reads these (after its lookups), and
/// refuses a `JOIN` before then.
pub(crate) fn hello(idx: usize, generation: u32) -> Vec<u8> {
    // The generation (1 for a client's first connection) keeps a
    // reconnected client's nick apart from the old connection's, which the
    // server may not have dropped yet.
    let nick = if generation <= 1 {
        format!("rb{idx}")
    } else {
        format!("rb{idx}g{generation}")
    };
    format!("NICK {nick}\r\nUSER {nick} 0 * :rchat bench\r\n").into_bytes()
}

/// The join, once welcomed.
pub(crate) fn join() -> Vec<u8> {
    format!("JOIN {CHANNEL}\r\n").into_bytes()
}

/// What a line from the server means while registering and joining.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// `001`: registered; the client may join now.
    Welcome,
    /// `366` (end of the channel's names): the join is complete, messages
    /// to the channel now reach this client.
    Joined,
    /// `PING :cookie`: answer with `PONG :cookie` or be dropped.
    Ping(&'a [u8]),
    /// A numeric error (400–599) or `ERROR :…`: registration or the join
    /// was refused.
    Refused,
    /// Anything else: notices, the MOTD, other members' joins.
    Other,
}

/// Reads one line (without its line ending) as a [`Reply`].
pub(crate) fn reply(line: &[u8]) -> Reply<'_> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // Past the optional `:source` prefix: the command, then its arguments.
    let line = match line.strip_prefix(b":") {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b' ')
            .map_or(&b""[..], |at| rest[at + 1..].trim_ascii_start()),
        None => line,
    };
    let (command, args) = match line.iter().position(|&b| b == b' ') {
        Some(at) => (&line[..at], &line[at + 1..]),
        None => (line, &b""[..]),
    };
    match command {
        b"001" => Reply::Welcome,
        b"366" => Reply::Joined,
        b"PING" => Reply::Ping(args),
        b"ERROR" => Reply::Refused,
        [a, b, c] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            if matches!(a, b'4' | b'5') {
                Reply::Refused
            } else {
                Reply::Other
            }
        }
        _ => Reply::Other,
    }
}

/// `PONG` for a `PING`'s argument.
pub(crate) fn pong(arg: &[u8]) -> Vec<u8> {
    let mut out = b"PONG ".to_vec();
    out.extend_from_slice(arg);
    out.extend_from_slice(b"\r\n");
    out
}

/// Someone else joining, parting or quitting: `:nick!user@host JOIN
/// #bench`. A part or a quit is a leave; IRC does not tell a dropped
/// connection from a quit apart in a form worth parsing.
pub(crate) fn classify(line: &[u8]) -> Option<Notice<'_>> {
    let line = line.strip_prefix(b":")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let source = words.next()?;
    let nick = source.split(|&b| b == b'!').next()?;
    if nick.is_empty() {
        return None;
    }
    match words.next()? {
        b"JOIN" => Some(Notice::Joined(nick)),
        b"PART" | b"QUIT" => Some(Notice::Left(nick)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_read_by_their_command() {
        assert_eq!(
            reply(b":irc.local 366 rb1 #bench :End of /NAMES list.\r"),
            Reply::Joined
        );
        assert_eq!(reply(b"PING :abc123"), Reply::Ping(b":abc123"));
        assert_eq!(
            reply(b":irc.local PING irc.local"),
            Reply::Ping(b"irc.local")
        );
        assert_eq!(
            reply(b":irc.local 433 * rb1 :Nickname is already in use."),
            Reply::Refused
        );
        assert_eq!(
            reply(b"ERROR :Closing link: (rb1@127.0.0.1) [Too many connections]"),
            Reply::Refused
        );
        assert_eq!(reply(b":irc.local 001 rb1 :Welcome"), Reply::Welcome);
        assert_eq!(reply(b":irc.local 002 rb1 :Your host"), Reply::Other);
        assert_eq!(reply(b":rb2!rb2@127.0.0.1 JOIN :#bench"), Reply::Other);
        assert_eq!(reply(b""), Reply::Other);
        assert_eq!(pong(b":abc123"), b"PONG :abc123\r\n");
    }

    #[test]
    fn membership_lines_are_notices() {
        assert_eq!(
            classify(b":rb2!rb2@127.0.0.1 JOIN :#bench\r"),
            Some(Notice::Joined(b"rb2"))
        );
        assert_eq!(
            classify(b":rb2!u@h PART #bench :bye"),
            Some(Notice::Left(b"rb2"))
        );
        assert_eq!(
            classify(b":rb2!u@h QUIT :Quit: x"),
            Some(Notice::Left(b"rb2"))
        );
        assert_eq!(classify(b":rb2!u@h PRIVMSG #bench :#b:1:2:3:"), None);
        assert_eq!(classify(b"* ann joined lobby"), None);
        assert_eq!(classify(b":"), None);
    }

    #[test]
    fn a_reconnected_client_registers_under_another_nick() {
        assert_eq!(hello(3, 1), b"NICK rb3\r\nUSER rb3 0 * :rchat bench\r\n");
        assert_eq!(join(), b"JOIN #bench\r\n");
        assert!(String::from_utf8(hello(3, 2))
            .unwrap()
            .starts_with("NICK rb3g2\r\n"));
    }
}
