//! Line mode: lines from stdin are sent (commands included), events are
//! printed as readable lines. For scripts and pipes:
//! `echo hi | rchat connect --plain --nick bot` sends one line, waits until
//! the server has acknowledged it, and exits 0.
//!
//! Stored history (the replay on joining, and the answer to `/history [N]`,
//! which asks for the room's last N messages) is printed as a delimited
//! block, each message with its time, and its date when it is not from
//! today. After a reconnect, replayed messages already printed are skipped.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};
use tokio::sync::mpsc;

use crate::client::conn::{Handle, Status, Update};
use crate::client::input::{self, Action};
use crate::client::view::now_ms;
use crate::clock;
use crate::proto::json::{ClientMsg, ErrorCode, HistoryEntry, ServerMsg};
use crate::proto::sanitize::clean;
use crate::proto::text::HELP;
use crate::proto::wording;

/// Colours for nicks, chosen by a stable hash so a nick keeps its colour.
const PALETTE: &[u8] = &[31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96];

/// Formats events for a terminal or a pipe.
pub struct Printer {
    pub color: bool,
    /// The user asked for a nick (`--nick`): if the server refuses it,
    /// nothing is sent under another name.
    pub nick_required: bool,
}

impl Printer {
    fn nick(&self, nick: &str) -> String {
        let nick = clean(nick);
        if !self.color {
            return nick.into_owned();
        }
        let hash = nick.bytes().fold(0x811c9dc5u32, |h, b| {
            (h ^ b as u32).wrapping_mul(0x0100_0193)
        });
        let code = PALETTE[hash as usize % PALETTE.len()];
        format!("\x1b[{code}m{nick}\x1b[0m")
    }

    fn dim(&self, text: &str) -> String {
        if self.color {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A chat line or action, after its time.
    fn said(&self, time: &str, from: &str, text: &str, action: bool) -> String {
        let time = self.dim(time);
        if action {
            format!("{time} * {} {}", self.nick(from), clean(text))
        } else {
            format!("{time} {}> {}", self.nick(from), clean(text))
        }
    }

    /// Stored messages of `room` as a block: a header, each message with
    /// its time (and date, if it is not from the day of `now_ms`), and an
    /// end line. An empty replay prints nothing; an empty answer to
    /// `/history` says there is nothing.
    pub fn history(
        &self,
        room: &str,
        messages: &[HistoryEntry],
        requested: bool,
        now_ms: u64,
    ) -> Vec<String> {
        let room = clean(room);
        if messages.is_empty() {
            return if requested {
                vec![format!("* no history in {room} yet")]
            } else {
                Vec::new()
            };
        }
        let n = messages.len();
        let s = if n == 1 { "" } else { "s" };
        let mut out = vec![format!(
            "* history of {room}: last {n} message{s} (times are UTC)"
        )];
        out.extend(
            messages
                .iter()
                .map(|m| self.said(&clock::stamp(m.ts, now_ms), &m.from, &m.text, m.action)),
        );
        out.push("* end of history".to_string());
        out
    }

    /// Readable lines for a server message; none for those not worth
    /// showing (acks, keepalives). `now_ms` decides which history messages
    /// show their date.
    pub fn lines(&self, msg: &ServerMsg, now_ms: u64) -> Vec<String> {
        if let ServerMsg::History {
            id, room, messages, ..
        } = msg
        {
            return self.history(room, messages, id.is_some(), now_ms);
        }
        if let ServerMsg::Crowd {
            room,
            joined,
            left,
            disconnected,
        } = msg
        {
            return self.crowd(room, joined, left, disconnected);
        }
        self.line(msg).into_iter().collect()
    }

    /// A line per kind of change in a summary of joins and leaves.
    fn crowd(
        &self,
        room: &str,
        joined: &[String],
        left: &[String],
        disconnected: &[String],
    ) -> Vec<String> {
        let room = clean(room);
        let shown =
            |nicks: &[String]| -> Vec<String> { nicks.iter().map(|n| self.nick(n)).collect() };
        let (joined, left, disconnected) = (shown(joined), shown(left), shown(disconnected));
        wording::crowd_lines(&room, &joined, &left, &disconnected)
            .map(|(_, line)| format!("* {line}"))
            .collect()
    }

    fn line(&self, msg: &ServerMsg) -> Option<String> {
        let line = match msg {
            ServerMsg::Welcome { nick, .. } => format!("* connected as {}", self.nick(nick)),
            ServerMsg::RoomState { room, members } => {
                let names: Vec<String> = members.iter().map(|m| clean(m).into_owned()).collect();
                format!(
                    "* you are now in {} ({}: {})",
                    clean(room),
                    names.len(),
                    names.join(", ")
                )
            }
            ServerMsg::Message {
                ts,
                from,
                text,
                action,
                ..
            } => self.said(&clock::hhmm(*ts), from, text, *action),
            ServerMsg::Private { ts, from, text, .. } => format!(
                "{} [private] {}> {}",
                self.dim(&clock(*ts)),
                self.nick(from),
                clean(text)
            ),
            ServerMsg::Joined { room, nick } => {
                format!("* {}", wording::joined(self.nick(nick), clean(room)))
            }
            ServerMsg::Left {
                room,
                nick,
                kind,
                reason,
                by,
            } => {
                let why = reason.as_deref().map(clean);
                let text = match by {
                    Some(by) => wording::kicked(self.nick(nick), self.nick(by), why.as_deref()),
                    None => wording::left(self.nick(nick), clean(room), kind, why.as_deref()),
                };
                format!("* {text}")
            }
            ServerMsg::Renamed { old, new } => {
                format!("* {}", wording::renamed(self.nick(old), self.nick(new)))
            }
            ServerMsg::Notice { text } => format!("* {}", clean(text)),
            ServerMsg::Error { message, .. } => format!("* error: {}", clean(message)),
            ServerMsg::Rooms { rooms, .. } => {
                let list: Vec<String> = rooms
                    .iter()
                    .map(|r| format!("{} ({})", clean(&r.name), r.members))
                    .collect();
                format!("* rooms: {}", list.join(", "))
            }
            ServerMsg::Who { room, members, .. } => {
                let names: Vec<String> = members.iter().map(|m| clean(m).into_owned()).collect();
                format!("* {} ({}): {}", clean(room), names.len(), names.join(", "))
            }
            ServerMsg::Bans { bans, .. } if bans.is_empty() => "* no bans".to_string(),
            ServerMsg::Bans { bans, .. } => bans
                .iter()
                .map(|b| format!("* ban: {}", clean(&wording::ban(b))))
                .collect::<Vec<_>>()
                .join("\n"),
            ServerMsg::Bye { reason } => format!("* {}", clean(reason)),
            ServerMsg::Ack { .. }
            | ServerMsg::History { .. }
            | ServerMsg::Crowd { .. }
            | ServerMsg::Ping { .. }
            | ServerMsg::Pong { .. } => return None,
        };
        Some(line)
    }
}

/// `HH:MM` (UTC) from milliseconds since the epoch.
pub fn clock(ts_ms: u64) -> String {
    clock::hhmm(ts_ms)
}

/// The newest `seq` printed per room (lower-cased), so that the replay
/// after a reconnect prints only what was missed.
#[derive(Debug, Default)]
struct Printed {
    newest: HashMap<String, u64>,
}

impl Printed {
    fn saw(&mut self, room: &str, seq: u64) {
        let n = self.newest.entry(room.to_ascii_lowercase()).or_insert(0);
        *n = (*n).max(seq);
    }

    /// The messages of a replay not printed yet. A replay ending below what
    /// was printed means the server numbers the room afresh (it restarted
    /// without keeping history): all of it is new.
    fn unseen(&mut self, room: &str, mut messages: Vec<HistoryEntry>) -> Vec<HistoryEntry> {
        let key = room.to_ascii_lowercase();
        let newest = self.newest.get(&key).copied().unwrap_or(0);
        if messages.last().is_some_and(|m| m.seq < newest) {
            self.newest.remove(&key);
        } else {
            messages.retain(|m| m.seq > newest);
        }
        messages
    }
}

/// Runs line mode until stdin ends and everything sent was answered, the
/// user quits, or the connection is gone for good. Returns the exit code:
/// 0 if every request was acknowledged, 1 otherwise.
pub async fn run<R, W>(
    handle: Handle,
    mut updates: mpsc::Receiver<Update>,
    stdin: R,
    mut out: W,
    printer: Printer,
) -> i32
where
    R: AsyncBufRead + Unpin,
    W: Write,
{
    let mut lines = stdin.lines();
    let mut room: Option<String> = None;
    let mut next_id = 0u64;
    let mut outstanding: HashSet<String> = HashSet::new();
    let mut printed = Printed::default();
    let mut failed = false;
    let mut stdin_open = true;
    let mut quitting = false;
    // A join in flight: later lines wait, so chat goes to the new room.
    let mut joining: Option<String> = None;
    // The hello's own requests were answered (a room, or an error saying
    // why not): from then on stdin is read even without a room.
    let mut settled = false;
    let mut max_text = usize::MAX;
    // After stdin ends, how long answers may take before giving up.
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let ready = settled || room.is_some();
        let can_read = stdin_open && !quitting && ready && joining.is_none();
        if !stdin_open && !quitting && ready && drain_deadline.is_none() {
            drain_deadline = Some(tokio::time::Instant::now() + DRAIN_TIMEOUT);
        }
        if !stdin_open && !quitting && ready && outstanding.is_empty() {
            quitting = true;
            if handle.send(ClientMsg::Quit { reason: None }).await.is_err() {
                break;
            }
        }
        tokio::select! {
            _ = sleep_until_opt(drain_deadline), if !quitting => {
                let _ = writeln!(out, "* error: no answer from the server for {} request(s); giving up", outstanding.len());
                failed = true;
                outstanding.clear();
                joining = None;
            }
            line = lines.next_line(), if can_read => match line {
                Ok(Some(line)) if line.len() > max_text => {
                    failed = true;
                    let _ = writeln!(out, "* error: line too long (the limit is {max_text} bytes); it was not sent");
                }
                Ok(Some(line)) => match input::parse(&line, room.as_deref(), &mut next_id) {
                    Action::None => {}
                    Action::Send(msg) => {
                        if let Some(id) = request_id(&msg) {
                            if matches!(msg, ClientMsg::Join { .. }) {
                                joining = Some(id.clone());
                            }
                            outstanding.insert(id);
                        }
                        if handle.send(msg).await.is_err() {
                            break;
                        }
                    }
                    Action::Help => {
                        for h in HELP {
                            let _ = writeln!(out, "* {h}");
                        }
                    }
                    Action::Quit(reason) => {
                        quitting = true;
                        if handle.send(ClientMsg::Quit { reason }).await.is_err() {
                            break;
                        }
                    }
                    Action::Error(e) => {
                        failed = true;
                        let _ = writeln!(out, "* error: {e}");
                    }
                },
                Ok(None) | Err(_) => stdin_open = false,
            },
            update = updates.recv() => {
                let Some(update) = update else { break };
                match update {
                    Update::Msg(msg) => {
                        let answered = match &msg {
                            ServerMsg::Ack { id, .. } | ServerMsg::Error { id: Some(id), .. } => Some(id),
                            _ => None,
                        };
                        if answered.is_some() && answered == joining.as_ref() {
                            joining = None;
                        }
                        match &msg {
                            ServerMsg::Welcome { max_text: m, .. } => {
                                max_text = *m;
                                settled = false;
                            }
                            ServerMsg::Error {
                                id: None,
                                code: ErrorCode::NickInUse | ErrorCode::InvalidName,
                                message,
                                ..
                            } if printer.nick_required => {
                                // Never speak under a name the user did not
                                // choose: say so, send nothing, leave.
                                let _ = writeln!(
                                    out,
                                    "* error: {}; nothing was sent (choose another with --nick)",
                                    clean(message)
                                );
                                let _ = handle.send(ClientMsg::Quit { reason: None }).await;
                                return 1;
                            }
                            ServerMsg::Error { id: None, .. } => {
                                settled = true;
                                failed = true;
                            }
                            ServerMsg::RoomState { room: r, .. } => room = Some(r.clone()),
                            ServerMsg::Ack { id, .. }
                            | ServerMsg::Rooms { id: Some(id), .. }
                            | ServerMsg::Who { id: Some(id), .. }
                            | ServerMsg::History { id: Some(id), .. }
                            | ServerMsg::Bans { id: Some(id), .. } => {
                                outstanding.remove(id);
                            }
                            ServerMsg::Error { id: Some(id), .. } if outstanding.remove(id) => {
                                failed = true;
                            }
                            _ => {}
                        }
                        let msg = match msg {
                            ServerMsg::History { id: None, room, messages, more } => {
                                let messages = printed.unseen(&room, messages);
                                ServerMsg::History { id: None, room, messages, more }
                            }
                            msg => msg,
                        };
                        match &msg {
                            ServerMsg::Message { room, seq, .. }
                            | ServerMsg::Ack { room: Some(room), seq: Some(seq), .. } => {
                                printed.saw(room, *seq);
                            }
                            ServerMsg::History { room, messages, .. } => {
                                for m in messages {
                                    printed.saw(room, m.seq);
                                }
                            }
                            _ => {}
                        }
                        for line in printer.lines(&msg, now_ms()) {
                            let _ = writeln!(out, "{line}");
                        }
                    }
                    Update::Status(Status::Lost { reason, retry_in }) => {
                        match retry_in {
                            Some(d) => {
                                eprintln!(
                                    "* connection lost: {}; retrying in {:.2}s",
                                    clean(&reason),
                                    d.as_secs_f32()
                                );
                                // Requests already written may never be
                                // answered: count them as failed.
                                if !outstanding.is_empty() {
                                    failed = true;
                                    outstanding.clear();
                                }
                                joining = None;
                            }
                            None => {
                                eprintln!("* connection lost: {}", clean(&reason));
                                if !quitting {
                                    failed = true;
                                }
                            }
                        }
                    }
                    Update::Status(_) => {}
                }
                let _ = out.flush();
            }
        }
    }
    let _ = out.flush();
    if failed || !outstanding.is_empty() {
        1
    } else {
        0
    }
}

/// How long line mode waits for answers after stdin has ended.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn request_id(msg: &ClientMsg) -> Option<String> {
    match msg {
        ClientMsg::Say { id, .. }
        | ClientMsg::Msg { id, .. }
        | ClientMsg::Join { id, .. }
        | ClientMsg::Part { id, .. }
        | ClientMsg::Nick { id, .. }
        | ClientMsg::Rooms { id }
        | ClientMsg::Who { id, .. }
        | ClientMsg::History { id, .. } => id.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sanitised_and_plain_without_colour() {
        let p = Printer {
            color: false,
            nick_required: false,
        };
        let msg = ServerMsg::Message {
            room: "lobby".into(),
            seq: 1,
            ts: 3_600_000 + 5 * 60_000,
            from: "ali\x1b[31mce".into(),
            text: "hi\x1b]0;x\x07 there".into(),
            action: false,
        };
        assert_eq!(p.lines(&msg, 0), ["01:05 alice> hi there"]);
        assert!(p
            .lines(
                &ServerMsg::Ack {
                    id: "c1".into(),
                    room: None,
                    seq: None,
                    ts: None
                },
                0
            )
            .is_empty());
    }

    #[test]
    fn a_crowd_is_a_line_per_kind_of_change() {
        let p = Printer {
            color: false,
            nick_required: false,
        };
        let msg = ServerMsg::Crowd {
            room: "lobby".into(),
            joined: vec![],
            left: vec!["ann".into(), "b\x1b[2Job".into()],
            disconnected: vec!["cat".into()],
        };
        assert_eq!(
            p.lines(&msg, 0),
            [
                "* 2 left lobby: ann, bob",
                "* 1 was disconnected from lobby: cat"
            ]
        );
    }

    #[test]
    fn colour_is_stable_per_nick() {
        let p = Printer {
            color: true,
            nick_required: false,
        };
        assert_eq!(p.nick("bob"), p.nick("bob"));
        assert!(p.nick("bob").starts_with("\x1b["));
    }

    fn entry(seq: u64, ts: u64, from: &str, text: &str, action: bool) -> HistoryEntry {
        HistoryEntry {
            seq,
            ts,
            from: from.into(),
            text: text.into(),
            action,
        }
    }

    #[test]
    fn history_is_a_block_with_dates_for_other_days() {
        let p = Printer {
            color: false,
            nick_required: false,
        };
        // 2026-11-24 11:02:13.5 UTC
        let t = 1_795_518_133_500;
        let replay = ServerMsg::History {
            id: None,
            room: "lobby".into(),
            messages: vec![
                entry(1, t - 86_400_000, "alice", "hello", false),
                entry(2, t, "bob", "waves", true),
                entry(3, t + 60_000, "ev\x1b[2Jil", "hi\x07", false),
            ],
            more: true,
        };
        assert_eq!(
            p.lines(&replay, t + 3_600_000),
            [
                "* history of lobby: last 3 messages (times are UTC)",
                "2026-11-23 11:02 alice> hello",
                "11:02 * bob waves",
                "11:03 evil> hi",
                "* end of history",
            ]
        );
        // An empty replay prints nothing; an empty answer says so.
        let empty = |id: Option<&str>| ServerMsg::History {
            id: id.map(str::to_string),
            room: "lobby".into(),
            messages: vec![],
            more: false,
        };
        assert!(p.lines(&empty(None), t).is_empty());
        assert_eq!(
            p.lines(&empty(Some("c1")), t),
            ["* no history in lobby yet"]
        );
        let one = ServerMsg::History {
            id: Some("c2".into()),
            room: "lobby".into(),
            messages: vec![entry(1, t, "alice", "hello", false)],
            more: false,
        };
        assert_eq!(
            p.lines(&one, t)[0],
            "* history of lobby: last 1 message (times are UTC)"
        );
    }

    #[test]
    fn a_replay_after_reconnecting_prints_only_what_was_missed() {
        let mut printed = Printed::default();
        let seqs = |m: Vec<HistoryEntry>| m.iter().map(|e| e.seq).collect::<Vec<_>>();
        let replay = |r: std::ops::RangeInclusive<u64>| {
            r.map(|i| entry(i, 0, "bob", "x", false))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(printed.unseen("lobby", replay(1..=5))),
            [1, 2, 3, 4, 5]
        );
        for i in 1..=5 {
            printed.saw("lobby", i);
        }
        printed.saw("Lobby", 7);
        assert_eq!(seqs(printed.unseen("LOBBY", replay(4..=9))), [8, 9]);
        assert_eq!(seqs(printed.unseen("dev", replay(4..=5))), [4, 5]);
        // Numbering afresh (a restart without history): all of it is new.
        assert_eq!(seqs(printed.unseen("lobby", replay(1..=2))), [1, 2]);
    }
}
