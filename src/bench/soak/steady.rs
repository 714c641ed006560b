//! The well-behaved clients of a soak: who they are, how they join, what
//! they send, and how each one checks what it receives.
//!
//! Steady client `i` has the nick `s<RUN>x<i>` and sits in room
//! `soak<RUN>r<i mod rooms>`, where `RUN` is a random id of the run, so that
//! history from an earlier run (replayed on joining) can never be mistaken
//! for this run's messages. Even clients speak the text protocol, odd ones
//! JSON. Once every steady client is in its room, each one sends a room
//! message every [`ROOM_EVERY`] and a private message to the next client
//! (`i + 1`, wrapping) every [`PM_EVERY`]: 1.5 lines a second, well inside
//! the server's default flood limit of 5 a second with a burst of 20.
//!
//! Every message carries a bench token ([`crate::bench::token`]). Room
//! messages use stream `i`, private messages stream `steady + i`, so each
//! receiver can tell, from the token alone, whether a message was meant for
//! it, and check each stream's sequence numbers for gaps, duplicates and
//! reordering. What the checking does not own: deciding whether the run
//! passed (the [`Ledger`] totals go to the report in `mod.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::{Instant as Deadline, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::bench::conn::{ConnectFailure, Connector, Reader, Writer};
use crate::bench::frame::{Arrival, Frame, Framer, OrderTracker};
use crate::bench::token::{self, Parsed, Token};

/// How often a steady client posts to its room.
pub(crate) const ROOM_EVERY: Duration = Duration::from_secs(1);
/// How often a steady client sends its partner a private message.
pub(crate) const PM_EVERY: Duration = Duration::from_secs(2);
/// Bytes of each message's text (token plus filler).
const MESSAGE_SIZE: usize = 64;
/// Longest line a steady client frames; longer ones (none are expected)
/// are skipped.
const MAX_LINE: usize = 64 * 1024;
/// How [`join`] starts the reason when the server answered with an error.
pub(crate) const REFUSED: &str = "refused: ";
/// Error lines kept per client, to show in the report.
const ERROR_SAMPLES: usize = 3;

/// The shape of one soak run's steady population.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Random id of this run, in every nick and room name.
    pub(crate) run: String,
    pub(crate) steady: usize,
    pub(crate) rooms: usize,
}

impl Plan {
    pub(crate) fn nick(&self, i: usize) -> String {
        format!("s{}x{i}", self.run)
    }

    pub(crate) fn room(&self, i: usize) -> String {
        format!("soak{}r{}", self.run, i % self.rooms)
    }

    /// The room numbered `k` (what chaos clients join).
    pub(crate) fn room_named(&self, k: usize) -> String {
        self.room(k % self.rooms)
    }

    fn json(&self, i: usize) -> bool {
        i % 2 == 1
    }

    fn partner(&self, i: usize) -> usize {
        (i + 1) % self.steady
    }

    /// Streams steady client `r` must receive: the room streams of everyone
    /// else in its room, and the private stream of the client whose partner
    /// it is.
    fn expected_streams(&self, r: usize) -> Vec<usize> {
        let mut streams: Vec<usize> = (0..self.steady)
            .filter(|&s| s != r && s % self.rooms == r % self.rooms)
            .collect();
        if self.steady > 1 {
            streams.push(self.steady + (r + self.steady - 1) % self.steady);
        }
        streams
    }
}

/// Messages sent, per stream: written by the senders, read by every
/// receiver once sending has stopped.
pub(crate) struct Ledger {
    sent: Vec<AtomicU64>,
    origin: Instant,
}

impl Ledger {
    pub(crate) fn new(plan: &Plan, origin: Instant) -> Ledger {
        Ledger {
            sent: (0..2 * plan.steady).map(|_| AtomicU64::new(0)).collect(),
            origin,
        }
    }

    pub(crate) fn sent(&self, stream: usize) -> u64 {
        self.sent[stream].load(Ordering::Acquire)
    }

    pub(crate) fn total_sent(&self) -> u64 {
        (0..self.sent.len()).map(|s| self.sent(s)).sum()
    }

    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

/// The moments every steady client follows, shared by all of them.
#[derive(Clone)]
pub(crate) struct Phases {
    /// Everyone is in; start sending.
    pub(crate) go: CancellationToken,
    /// Stop sending, say so on `stopped`.
    pub(crate) stop_send: CancellationToken,
    /// Every sender has stopped: the ledger is final; say on `complete`
    /// once everything expected has arrived.
    pub(crate) all_sent: CancellationToken,
    /// Close and report.
    pub(crate) finish: CancellationToken,
    pub(crate) stopped: mpsc::UnboundedSender<usize>,
    pub(crate) complete: mpsc::UnboundedSender<usize>,
    /// Steady connections the server closed or broke, so far.
    pub(crate) down: Arc<AtomicU64>,
}

/// What one steady client saw.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// Distinct messages received, per stream.
    pub(crate) unique: Vec<u64>,
    pub(crate) duplicates: u64,
    pub(crate) late: u64,
    /// Tokens from streams this client should not receive.
    pub(crate) misrouted: u64,
    pub(crate) malformed: u64,
    pub(crate) errors: u64,
    pub(crate) error_samples: Vec<String>,
    /// Why its connection ended before the run did, if it did.
    pub(crate) lost_connection: Option<String>,
    /// Latency of each received message, in microseconds.
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) expected: Vec<usize>,
}

impl Outcome {
    /// Nothing received yet from `streams` streams, of which `expected`
    /// are this client's; also which streams those are, by stream number.
    fn new(streams: usize, expected: Vec<usize>) -> (Outcome, Vec<bool>) {
        let mut wanted = vec![false; streams];
        for &s in &expected {
            wanted[s] = true;
        }
        let out = Outcome {
            unique: vec![0; streams],
            duplicates: 0,
            late: 0,
            misrouted: 0,
            malformed: 0,
            errors: 0,
            error_samples: Vec::new(),
            lost_connection: None,
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                .expect("static histogram bounds are valid"),
            expected,
        };
        (out, wanted)
    }
}

/// Where a steady message goes.
#[derive(Clone, Copy)]
enum Addressee<'a> {
    Room(&'a str),
    Nick(&'a str),
}

/// Writes token `t` as a chat line to a room or a private message to a
/// nick, in the client's protocol.
async fn send(
    writer: &mut Writer,
    json: bool,
    to: Addressee<'_>,
    t: &Token,
) -> std::io::Result<()> {
    let text = t.line(MESSAGE_SIZE);
    let text = text.trim_end();
    let mut line = match (json, to) {
        (true, Addressee::Room(room)) => {
            serde_json::json!({"type": "say", "room": room, "text": text}).to_string()
        }
        (true, Addressee::Nick(nick)) => {
            serde_json::json!({"type": "msg", "to": nick, "text": text}).to_string()
        }
        (false, Addressee::Room(_)) => text.to_string(),
        (false, Addressee::Nick(nick)) => format!("/msg {nick} {text}"),
    };
    line.push('\n');
    writer.write_all(line.as_bytes()).await
}

/// A steady client that is in its room, waiting for the start.
pub(crate) struct Joined {
    reader: Reader,
    writer: Writer,
    framer: Framer,
}

/// Connects steady client `i`, names it and puts it in its room; the error
/// is a sentence for the operator.
pub(crate) async fn join(
    connector: &Connector,
    plan: &Plan,
    i: usize,
    deadline: Deadline,
) -> Result<Joined, String> {
    let work = async {
        let (mut reader, mut writer) = connector.connect().await.map_err(|e| match e {
            ConnectFailure::Tcp(e) => format!("cannot connect: {e}"),
            ConnectFailure::Tls(why) => format!("TLS handshake failed: {why}"),
        })?;
        let (nick, room) = (plan.nick(i), plan.room(i));
        let hello = if plan.json(i) {
            let hello = serde_json::json!({
                "type": "hello", "proto": "rchat", "version": 1,
                "nick": nick, "rooms": [room],
            });
            format!("{hello}\n")
        } else {
            format!("/nick {nick}\n/join {room}\n")
        };
        writer
            .write_all(hello.as_bytes())
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut framer = Framer::new(MAX_LINE);
        let mut buf = vec![0u8; 16 * 1024];
        let text_done = format!("* you are now in {room} ");
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| format!("connection failed while joining: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection while it was joining".into());
            }
            let mut verdict: Option<Result<(), String>> = None;
            framer.feed(&buf[..n], |frame| {
                let Frame::Line(line) = frame else { return };
                if verdict.is_some() {
                    return;
                }
                let line = String::from_utf8_lossy(line);
                if is_error(&line) {
                    verdict = Some(Err(format!("{REFUSED}{line}")));
                } else if line.starts_with(&text_done)
                    || (line.contains("\"room_state\"") && json_room_is(&line, &room))
                {
                    verdict = Some(Ok(()));
                }
            });
            match verdict {
                Some(Ok(())) => {
                    return Ok(Joined {
                        reader,
                        writer,
                        framer,
                    })
                }
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
    };
    tokio::time::timeout_at(deadline, work)
        .await
        .unwrap_or_else(|_| Err("timed out while joining".into()))
}

fn json_room_is(line: &str, room: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .is_some_and(|v| v["type"] == "room_state" && v["room"] == room)
}

fn is_error(line: &str) -> bool {
    line.starts_with("* error") || (line.starts_with('{') && line.contains("\"type\":\"error\""))
}

/// Runs steady client `i` from the start to `finish`: sends on schedule,
/// checks everything it receives.
pub(crate) async fn run(
    joined: Joined,
    plan: Arc<Plan>,
    i: usize,
    ledger: Arc<Ledger>,
    phases: Phases,
    phase_offset: (Duration, Duration),
) -> Outcome {
    let Joined {
        mut reader,
        mut writer,
        mut framer,
    } = joined;
    let expected = plan.expected_streams(i);
    let (mut out, wanted) = Outcome::new(2 * plan.steady, expected);
    let mut tracker = OrderTracker::new(2 * plan.steady);
    let partner_nick = plan.nick(plan.partner(i));
    let room = plan.room(i);
    let json = plan.json(i);
    let mut seq = [0u64; 2];
    let mut buf = vec![0u8; 16 * 1024];

    phases.go.cancelled().await;
    let now = Deadline::now();
    let mut room_tick = tokio::time::interval_at(now + phase_offset.0, ROOM_EVERY);
    let mut pm_tick = tokio::time::interval_at(now + phase_offset.1, PM_EVERY);
    room_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    pm_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sending = true;
    let mut awaiting_ledger = true;
    let mut said_complete = false;

    loop {
        let mut pongs: Vec<String> = Vec::new();
        tokio::select! {
            biased;
            _ = phases.finish.cancelled() => break,
            _ = phases.stop_send.cancelled(), if sending => {
                sending = false;
                let _ = phases.stopped.send(i);
            }
            _ = phases.all_sent.cancelled(), if awaiting_ledger => {
                awaiting_ledger = false;
            }
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) => {
                        out.lost_connection = Some("closed by the server".into());
                        break;
                    }
                    Err(e) => {
                        out.lost_connection = Some(e.to_string());
                        break;
                    }
                    Ok(n) => n,
                };
                let now_ns = ledger.now_ns();
                framer.feed(&buf[..n], |frame| {
                    let Frame::Line(line) = frame else { return };
                    match token::parse(line) {
                        Parsed::Token(t) => check(&mut out, &mut tracker, &wanted, t, now_ns),
                        Parsed::Malformed => out.malformed += 1,
                        Parsed::NoToken => {
                            let line = String::from_utf8_lossy(line);
                            if is_error(&line) {
                                out.errors += 1;
                                if out.error_samples.len() < ERROR_SAMPLES {
                                    out.error_samples.push(line.into_owned());
                                }
                            } else if json && line.contains("\"ping\"") {
                                if let Some(pong) = pong_for(&line) {
                                    pongs.push(pong);
                                }
                            }
                        }
                    }
                });
            }
            _ = room_tick.tick(), if sending => {
                let t = stamp(i, &mut seq[0], &ledger);
                let to = Addressee::Room(&room);
                if let Err(e) = send(&mut writer, json, to, &t).await {
                    out.lost_connection = Some(format!("cannot send: {e}"));
                    break;
                }
            }
            _ = pm_tick.tick(), if sending && plan.steady > 1 => {
                let t = stamp(plan.steady + i, &mut seq[1], &ledger);
                let to = Addressee::Nick(&partner_nick);
                if let Err(e) = send(&mut writer, json, to, &t).await {
                    out.lost_connection = Some(format!("cannot send: {e}"));
                    break;
                }
            }
        }
        for pong in pongs {
            if writer.write_all(pong.as_bytes()).await.is_err() {
                break;
            }
        }
        if !awaiting_ledger && !said_complete && complete(&out, &ledger) {
            said_complete = true;
            let _ = phases.complete.send(i);
        }
    }
    if out.lost_connection.is_some() {
        phases.down.fetch_add(1, Ordering::Relaxed);
        // Whoever waits for this client's signals need not wait longer.
        if sending {
            let _ = phases.stopped.send(i);
        }
        if !said_complete {
            let _ = phases.complete.send(i);
        }
    }
    out
}

/// Takes the next sequence number of `stream` and counts it as sent.
fn stamp(stream: usize, seq: &mut u64, ledger: &Ledger) -> Token {
    let t = Token {
        sender: stream as u64,
        seq: *seq,
        sent_ns: ledger.now_ns(),
    };
    *seq += 1;
    ledger.sent[stream].fetch_add(1, Ordering::AcqRel);
    t
}

fn check(out: &mut Outcome, tracker: &mut OrderTracker, wanted: &[bool], t: Token, now_ns: u64) {
    let stream = t.sender as usize;
    if !wanted.get(stream).copied().unwrap_or(false) {
        out.misrouted += 1;
        return;
    }
    match tracker.observe(stream, t.seq) {
        Arrival::InOrder => out.unique[stream] += 1,
        Arrival::Late => {
            out.unique[stream] += 1;
            out.late += 1;
        }
        Arrival::Duplicate => out.duplicates += 1,
    }
    let _ = out
        .latency_us
        .record((now_ns.saturating_sub(t.sent_ns) / 1000).max(1));
}

/// Whether everything sent to this client has arrived.
fn complete(out: &Outcome, ledger: &Ledger) -> bool {
    out.expected
        .iter()
        .all(|&s| out.unique[s] >= ledger.sent(s))
}

/// The answer to a JSON `ping` line, if it is one.
fn pong_for(line: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["type"] != "ping" {
        return None;
    }
    let pong = serde_json::json!({"type": "pong", "token": v["token"]});
    Some(format!("{pong}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(steady: usize, rooms: usize) -> Plan {
        Plan {
            run: "ab12".into(),
            steady,
            rooms,
        }
    }

    #[test]
    fn each_client_expects_its_roommates_and_one_private_stream() {
        let p = plan(6, 2);
        // Rooms: 0,2,4 and 1,3,5. Client 2's partner-sender is 1.
        assert_eq!(p.expected_streams(2), vec![0, 4, 6 + 1]);
        assert_eq!(p.expected_streams(0), vec![2, 4, 6 + 5]);
        assert_eq!(p.room(3), "soakab12r1");
        assert_eq!(p.nick(3), "sab12x3");
        assert!(p.nick(999_999).len() <= 32);
    }

    #[test]
    fn a_lone_client_expects_nothing() {
        assert!(plan(1, 1).expected_streams(0).is_empty());
    }

    #[test]
    fn misrouted_duplicate_and_late_tokens_are_told_apart() {
        let p = plan(4, 2);
        let expected = p.expected_streams(0); // stream 2 and private 4 + 3
        let (mut out, wanted) = Outcome::new(8, expected);
        let mut tracker = OrderTracker::new(8);
        let tok = |sender, seq| Token {
            sender,
            seq,
            sent_ns: 0,
        };
        for (sender, seq) in [(2, 0), (2, 2), (2, 1), (2, 2), (1, 0), (7, 0), (99, 0)] {
            check(&mut out, &mut tracker, &wanted, tok(sender, seq), 5_000);
        }
        assert_eq!(out.unique[2], 3);
        assert_eq!(out.late, 1);
        assert_eq!(out.duplicates, 1);
        assert_eq!(out.unique[7], 1);
        assert_eq!(
            out.misrouted, 2,
            "room 1's stream and a stream that does not exist"
        );

        let origin = Instant::now();
        let ledger = Ledger::new(&p, origin);
        ledger.sent[2].store(3, Ordering::Relaxed);
        ledger.sent[7].store(1, Ordering::Relaxed);
        assert!(complete(&out, &ledger));
        ledger.sent[7].store(2, Ordering::Relaxed);
        assert!(!complete(&out, &ledger));
    }

    #[test]
    fn answers_json_pings_only() {
        let pong = pong_for(r#"{"type":"ping","token":"t1"}"#).unwrap();
        assert_eq!(pong, "{\"token\":\"t1\",\"type\":\"pong\"}\n");
        assert!(pong_for(r#"{"type":"message","text":"ping"}"#).is_none());
        assert!(pong_for("* ping").is_none());
    }
}
