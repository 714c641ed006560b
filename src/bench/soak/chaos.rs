//! The misbehaving clients of a soak. Each chaos slot plays one persona for
//! a short lifetime (2–15 s), then another, until the soak stops:
//!
//! - **wanderer**: text commands at random: joins (the steady rooms too),
//!   nick changes, `/who`, `/rooms`, `/me`, `/history`, private messages,
//!   invalid names, unknown commands; quits or just goes;
//! - **json**: the JSON protocol with bad and good requests alike;
//! - **garbage**: invalid UTF-8, NUL and escape bytes, lone CRs, lines far
//!   over the limit, binary noise, a last line without its newline;
//! - **flooder**: joins a steady room and sends far more than the flood
//!   limit allows; it should be refused, then disconnected;
//! - **slow**: joins a steady room, asks for `/history 500` as often as
//!   flood control allows and never reads; the server should evict it;
//! - **abrupt**: resets the connection mid-line, sometimes before the TLS
//!   handshake is done;
//! - **stall**: over TLS, opens a connection and never finishes the
//!   handshake; the server should close it (over plain TCP: half a line,
//!   then silence).
//!
//! Nothing chaos clients send contains `#`, so none of it can be taken for
//! a steady client's token. What the slot saw goes into the [`Tally`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio::time::Instant as Deadline;
use tokio_util::sync::CancellationToken;

use super::steady::Plan;
use crate::bench::conn::{Connector, Reader, Writer};
use crate::bench::frame::{Frame, Framer};

/// The personas, in the order of [`Tally::started`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persona {
    Wanderer,
    Json,
    Garbage,
    Flooder,
    Slow,
    Abrupt,
    Stall,
}

const PERSONAS: usize = 7;
const PERSONA_NAMES: [&str; PERSONAS] = [
    "wanderer", "json", "garbage", "flooder", "slow", "abrupt", "stall",
];
/// Relative weights of the personas, in the same order.
const WEIGHTS: [u32; PERSONAS] = [30, 15, 15, 10, 10, 10, 10];

/// Lines a flooder sends at once: well past the burst (20) plus the
/// refusals that get it disconnected (50).
const FLOOD_LINES: usize = 150;
/// How long a flooder waits to be disconnected.
const FLOOD_WAIT: Duration = Duration::from_secs(15);
/// The receive buffer of a slow reader (as in `--slow`).
const SLOW_RECV_BUFFER: u32 = 8 * 1024;
/// How often a slow reader asks for a page of 500 messages: as often as
/// the default flood limit allows (a page of 500 costs 10 tokens, which
/// come back at 5 a second), so that it is never refused and draws the
/// most it can, about 20 KB/s once the room's history is full.
const SLOW_ASK_EVERY: Duration = Duration::from_millis(2100);
/// Longest a slow reader waits to be evicted. The server holds up to
/// `max_sendq` (1 MiB) for it, and the kernel its socket buffers (the
/// server's send buffer is 512 KiB by default, `socket_send_buffer`
/// doubled); a slow reader draws about 20 KB/s once its room's history is
/// full, so eviction takes about 80 s then, and three minutes leaves room
/// for one that starts while the history is still short.
pub(crate) const SLOW_LIFETIME: Duration = Duration::from_secs(180);

/// What every chaos slot shares.
pub(crate) struct Chaos {
    pub(crate) connector: Connector,
    pub(crate) plan: Arc<Plan>,
    /// The server's longest line, to go past it.
    pub(crate) max_line: usize,
    /// Longest the server may take to close a stalled TLS handshake before
    /// it counts as overdue.
    pub(crate) stall_limit: Duration,
    pub(crate) tally: Tally,
}

/// Counts of what the chaos clients did and saw.
#[derive(Default)]
pub(crate) struct Tally {
    started: [AtomicU64; PERSONAS],
    connections: AtomicU64,
    connect_failures: AtomicU64,
    refusals: AtomicU64,
    kicks: AtomicU64,
    errors: AtomicU64,
    evictions: AtomicU64,
    slow_not_evicted: AtomicU64,
    slow_cut_short: AtomicU64,
    slow_evicted_max_ms: AtomicU64,
    stalls_closed: AtomicU64,
    stalls_overdue: AtomicU64,
    stall_close_max_ms: AtomicU64,
    garbage_bytes: AtomicU64,
}

/// A snapshot of the [`Tally`], for the report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosCounts {
    /// Lifetimes started, by persona.
    pub personas: Vec<(String, u64)>,
    /// Connections opened (TCP), and those that failed.
    pub connections: u64,
    pub connect_failures: u64,
    /// `flood control` refusals received.
    pub flood_refusals: u64,
    /// `excess flood` disconnections received.
    pub flood_kicks: u64,
    /// Other error replies received (bad names, bad requests, long lines…).
    pub errors: u64,
    /// Slow readers the server disconnected, the longest it took, those
    /// still connected after `SLOW_LIFETIME` (a failure), and those the end
    /// of the soak cut short.
    pub evictions: u64,
    pub slow_evicted_max_ms: u64,
    pub slow_not_evicted: u64,
    pub slow_cut_short: u64,
    /// Stalled TLS handshakes the server closed, the slowest close, and
    /// those it left open longer than allowed.
    pub stalls_closed: u64,
    pub stall_close_max_ms: u64,
    pub stalls_overdue: u64,
    /// Bytes of garbage sent.
    pub garbage_bytes: u64,
}

impl Tally {
    pub(crate) fn snapshot(&self) -> ChaosCounts {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ChaosCounts {
            personas: PERSONA_NAMES
                .iter()
                .zip(&self.started)
                .map(|(n, c)| (n.to_string(), get(c)))
                .collect(),
            connections: get(&self.connections),
            connect_failures: get(&self.connect_failures),
            flood_refusals: get(&self.refusals),
            flood_kicks: get(&self.kicks),
            errors: get(&self.errors),
            evictions: get(&self.evictions),
            slow_not_evicted: get(&self.slow_not_evicted),
            slow_cut_short: get(&self.slow_cut_short),
            slow_evicted_max_ms: get(&self.slow_evicted_max_ms),
            stalls_closed: get(&self.stalls_closed),
            stall_close_max_ms: get(&self.stall_close_max_ms),
            stalls_overdue: get(&self.stalls_overdue),
            garbage_bytes: get(&self.garbage_bytes),
        }
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Plays personas one after another until `stop`.
pub(crate) async fn slot(chaos: Arc<Chaos>, seed: u64, stop: CancellationToken) {
    let mut rng = fastrand::Rng::with_seed(seed);
    // Spread the first connections over a second rather than all at once.
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))) => {}
    }
    while !stop.is_cancelled() {
        let persona = pick(&mut rng);
        Tally::add(&chaos.tally.started[persona as usize], 1);
        let lifetime = Duration::from_millis(rng.u64(2_000..15_000));
        let until = Deadline::now() + lifetime;
        let seed = rng.u64(..);
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = play(&chaos, persona, until, seed) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(rng.u64(20..300))) => {}
        }
    }
}

fn pick(rng: &mut fastrand::Rng) -> Persona {
    let total: u32 = WEIGHTS.iter().sum();
    let mut roll = rng.u32(0..total);
    for (persona, weight) in ALL.into_iter().zip(WEIGHTS) {
        if roll < weight {
            return persona;
        }
        roll -= weight;
    }
    Persona::Wanderer
}

const ALL: [Persona; PERSONAS] = [
    Persona::Wanderer,
    Persona::Json,
    Persona::Garbage,
    Persona::Flooder,
    Persona::Slow,
    Persona::Abrupt,
    Persona::Stall,
];

async fn play(chaos: &Arc<Chaos>, persona: Persona, until: Deadline, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    match persona {
        Persona::Wanderer => wanderer(chaos, &mut rng, until).await,
        Persona::Json => json(chaos, &mut rng, until).await,
        Persona::Garbage => garbage(chaos, &mut rng).await,
        Persona::Flooder => flooder(chaos, &mut rng).await,
        Persona::Slow => slow(chaos, &mut rng).await,
        Persona::Abrupt => abrupt(chaos, &mut rng).await,
        Persona::Stall => stall(chaos, &mut rng, until).await,
    }
}

/// Connects (TCP and TLS), counting the attempt.
async fn open(chaos: &Chaos, recv_buffer: Option<u32>) -> Option<(Reader, Writer)> {
    Tally::add(&chaos.tally.connections, 1);
    match chaos.connector.connect_with(recv_buffer).await {
        Ok(halves) => Some(halves),
        Err(_) => {
            Tally::add(&chaos.tally.connect_failures, 1);
            None
        }
    }
}

/// Reads everything the server sends a chaos client, counting refusals,
/// kicks and errors, until the connection ends (the task's result is then
/// `true`) or the task is aborted (when the handle is dropped by
/// [`Listener`]).
struct Listener(JoinHandle<bool>);

impl Listener {
    fn start(reader: Reader, chaos: &Arc<Chaos>) -> Listener {
        let chaos = chaos.clone();
        Listener(tokio::spawn(async move {
            let mut reader = reader;
            let mut framer = Framer::new(64 * 1024);
            let mut buf = vec![0u8; 8 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(n) => framer.feed(&buf[..n], |frame| {
                        if let Frame::Line(line) = frame {
                            chaos.tally.classify(line);
                        }
                    }),
                }
            }
        }))
    }

    /// Whether the server ended the connection within `wait`.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        matches!(tokio::time::timeout(wait, &mut self.0).await, Ok(Ok(true)))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Tally {
    /// Counts one line the server sent a chaos client. Only lines addressed
    /// to the client itself count: `* NICK was disconnected (excess flood)`
    /// about someone else is not a kick of this one.
    fn classify(&self, line: &[u8]) {
        let has = |s: &[u8]| line.windows(s.len()).any(|w| w == s);
        if line.starts_with(b"* error: flood control") || has(b"\"code\":\"rate_limited\"") {
            Tally::add(&self.refusals, 1);
        } else if line.starts_with(b"* error: excess flood")
            || (has(b"\"type\":\"bye\"") && has(b"excess flood"))
        {
            Tally::add(&self.kicks, 1);
        } else if line.starts_with(b"* error") || has(b"\"type\":\"error\"") {
            Tally::add(&self.errors, 1);
        }
    }
}

/// Writes `bytes`; `false` once the connection is gone.
async fn send(writer: &mut Writer, bytes: &[u8]) -> bool {
    writer.write_all(bytes).await.is_ok()
}

/// Letters and digits, for names and filler.
fn word(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

fn chaos_room(rng: &mut fastrand::Rng, plan: &Plan) -> String {
    match rng.u8(0..10) {
        0..=3 => plan.room_named(rng.usize(..plan.rooms)),
        4..=7 => format!("cz{}", rng.u8(0..8)),
        8 => format!("#Cz{}", rng.u8(0..8)),
        _ => ["bad room!", "", "x".repeat(40).as_str(), "caf\u{e9}"][rng.usize(0..4)].to_string(),
    }
}

fn chaos_nick(rng: &mut fastrand::Rng) -> String {
    match rng.u8(0..10) {
        0 => "server".into(),
        1 => "no!pe".into(),
        2 => "n".repeat(40),
        3 => "guest1".into(),
        _ => {
            let len = rng.usize(4..12);
            format!("c{}", word(rng, len))
        }
    }
}

/// Random text commands, a few a second (inside the flood limit most of
/// the time, so that the server handles them rather than refusing them).
async fn wanderer(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng, until: Deadline) {
    let Some((reader, mut writer)) = open(chaos, None).await else {
        return;
    };
    let _listener = Listener::start(reader, chaos);
    let plan = &chaos.plan;
    while Deadline::now() < until {
        let line = match rng.u8(0..16) {
            0..=2 => format!("/join {}", chaos_room(rng, plan)),
            3 | 4 => format!("/nick {}", chaos_nick(rng)),
            5 => "/who".into(),
            6 => "/rooms".into(),
            7 => "/me wanders about".into(),
            8 => format!("/history {}", rng.u16(0..600)),
            9 => format!(
                "/msg {} hello from a wanderer",
                plan.nick(rng.usize(..plan.steady))
            ),
            10 => format!("/msg nobody{} are you there", rng.u16(..)),
            11 => "/part".into(),
            12 => "/frobnicate now".into(),
            13 => "//slashed chat".into(),
            14 => "   ".into(),
            _ => format!("chaos chatter {}", word(rng, 12)),
        };
        if !send(&mut writer, format!("{line}\n").as_bytes()).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(150..700))).await;
    }
    if rng.bool() {
        let _ = send(&mut writer, b"/quit wandering off\n").await;
    }
}

/// The JSON protocol: a hello (sometimes a bad one), then good and bad
/// requests mixed.
async fn json(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng, until: Deadline) {
    let Some((reader, mut writer)) = open(chaos, None).await else {
        return;
    };
    let _listener = Listener::start(reader, chaos);
    let plan = &chaos.plan;
    let hello = match rng.u8(0..10) {
        0 => serde_json::json!({"type": "hello", "proto": "rchat", "version": 2}),
        1 => serde_json::json!({"type": "hello", "proto": "rchat", "version": 1,
                                "nick": chaos_nick(rng), "rooms": [chaos_room(rng, plan), "bad room"]}),
        _ => serde_json::json!({"type": "hello", "proto": "rchat", "version": 1,
                                "nick": chaos_nick(rng), "rooms": [chaos_room(rng, plan)]}),
    };
    if !send(&mut writer, format!("{hello}\n").as_bytes()).await {
        return;
    }
    let long = "y".repeat(chaos.max_line * 2);
    while Deadline::now() < until {
        let id = format!("c{}", rng.u16(..));
        let line = match rng.u8(0..14) {
            0 | 1 => serde_json::json!({"type": "join", "id": id, "room": chaos_room(rng, plan)})
                .to_string(),
            2 => serde_json::json!({"type": "part", "room": chaos_room(rng, plan)}).to_string(),
            3 | 4 => serde_json::json!({"type": "say", "id": id, "room": chaos_room(rng, plan),
                                        "text": format!("json chaos {}", word(rng, 8))})
            .to_string(),
            5 => serde_json::json!({"type": "msg", "to": plan.nick(rng.usize(..plan.steady)),
                                    "text": "hello from json chaos"})
            .to_string(),
            6 => serde_json::json!({"type": "nick", "id": id, "nick": chaos_nick(rng)}).to_string(),
            7 => serde_json::json!({"type": "rooms", "id": id}).to_string(),
            8 => serde_json::json!({"type": "who", "room": chaos_room(rng, plan)}).to_string(),
            9 => serde_json::json!({"type": "history", "room": chaos_room(rng, plan), "limit": 50})
                .to_string(),
            10 => serde_json::json!({"type": "frobnicate", "id": id}).to_string(),
            11 => "{\"type\":\"say\",\"room\":".into(),
            12 => serde_json::json!({"type": "say", "room": "lobby", "text": long}).to_string(),
            _ => "[1, 2, 3]".into(),
        };
        if !send(&mut writer, format!("{line}\n").as_bytes()).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(150..700))).await;
    }
    if rng.bool() {
        let _ = send(&mut writer, b"{\"type\":\"quit\",\"reason\":\"done\"}\n").await;
    }
}

/// Bytes no well-behaved client sends.
async fn garbage(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng) {
    let Some((reader, mut writer)) = open(chaos, None).await else {
        return;
    };
    let _listener = Listener::start(reader, chaos);
    let mut first = true;
    for _ in 0..rng.usize(3..10) {
        let mut chunk: Vec<u8> = match rng.u8(0..9) {
            // A JSON hello cut short, as the first line: not a hello.
            0 if first => b"{\"type\":\"hello\",\"proto\":\"rchat\"\n".to_vec(),
            0 | 1 => b"bad \xff\xfe utf-8 \xc0\x80 and \xed\xa0\x80\n".to_vec(),
            2 => b"nul \0 in \0 the middle\n".to_vec(),
            3 => b"\x1b[2J\x1b[H\x1b]0;title\x07 escapes\n".to_vec(),
            4 => b"lone\rcarriage\rreturns\r\n".to_vec(),
            5 => {
                let mut long = vec![b'z'; chaos.max_line * rng.usize(2..5)];
                long.push(b'\n');
                long
            }
            6 => {
                let len = rng.usize(16..2048);
                let mut noise: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
                noise.push(b'\n');
                noise
            }
            7 => b"/nick \xff\xfe\n/join \x00room\n".to_vec(),
            _ => b"\t\t  \x7f\x08 backspace and tabs\n".to_vec(),
        };
        // No `#` ever: it could start something that looks like a token.
        chunk.retain(|&b| b != b'#');
        first = false;
        Tally::add(&chaos.tally.garbage_bytes, chunk.len() as u64);
        if !send(&mut writer, &chunk).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(50..400))).await;
    }
    // A last, long line that never ends, then gone.
    let tail = vec![b'q'; rng.usize(100..10_000)];
    Tally::add(&chaos.tally.garbage_bytes, tail.len() as u64);
    let _ = send(&mut writer, &tail).await;
}

/// Joins a steady room and sends far too much at once.
async fn flooder(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng) {
    let Some((reader, mut writer)) = open(chaos, None).await else {
        return;
    };
    let mut listener = Listener::start(reader, chaos);
    let room = chaos.plan.room_named(rng.usize(..chaos.plan.rooms));
    let mut flood = format!("/join {room}\n");
    for n in 0..FLOOD_LINES {
        flood.push_str(&format!("flooding {n}\n"));
    }
    if !send(&mut writer, flood.as_bytes()).await {
        return;
    }
    listener.closed_within(FLOOD_WAIT).await;
}

/// Joins a steady room, asks for a lot, never reads; gone once the server
/// evicts it (a write then fails), or after [`SLOW_LIFETIME`].
async fn slow(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng) {
    let Some((_reader, mut writer)) = open(chaos, Some(SLOW_RECV_BUFFER)).await else {
        return;
    };
    let mut verdict = SlowVerdict {
        tally: &chaos.tally,
        began: Deadline::now(),
        done: false,
    };
    let room = chaos.plan.room_named(rng.usize(..chaos.plan.rooms));
    let mut line = format!("/join {room}\n");
    let mut ask = tokio::time::interval(SLOW_ASK_EVERY);
    while verdict.began.elapsed() < SLOW_LIFETIME {
        // A write to a connection the server has closed fails (the first
        // may still succeed and draw the reset).
        if !send(&mut writer, line.as_bytes()).await {
            verdict.evicted();
            return;
        }
        line = "/history 500\n".into();
        ask.tick().await;
    }
    verdict.done = true;
    Tally::add(&chaos.tally.slow_not_evicted, 1);
}

/// How a slow reader's life ended; cut short by the end of the soak unless
/// told otherwise.
struct SlowVerdict<'a> {
    tally: &'a Tally,
    began: Deadline,
    done: bool,
}

impl SlowVerdict<'_> {
    fn evicted(&mut self) {
        self.done = true;
        Tally::add(&self.tally.evictions, 1);
        let ms = self.began.elapsed().as_millis() as u64;
        self.tally
            .slow_evicted_max_ms
            .fetch_max(ms, Ordering::Relaxed);
    }
}

impl Drop for SlowVerdict<'_> {
    fn drop(&mut self) {
        if !self.done {
            Tally::add(&self.tally.slow_cut_short, 1);
        }
    }
}

/// Resets the connection, mid-line, sometimes before the TLS handshake.
async fn abrupt(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng) {
    Tally::add(&chaos.tally.connections, 1);
    let Ok(stream) = chaos.connector.connect_tcp(None, true).await else {
        Tally::add(&chaos.tally.connect_failures, 1);
        return;
    };
    if chaos.connector.is_tls() && rng.bool() {
        drop(stream);
        return;
    }
    let Ok((_reader, mut writer)) = chaos.connector.wrap(stream).await else {
        return;
    };
    let room = chaos.plan.room_named(rng.usize(..chaos.plan.rooms));
    let _ = send(&mut writer, format!("/join {room}\nhalf a li").as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(rng.u64(0..1000))).await;
    // Dropping both halves resets the connection (zero linger).
}

/// Over TLS: opens a connection and never finishes the handshake, and
/// waits for the server to close it. Over plain TCP: half a line, then
/// silence until the end of its lifetime.
async fn stall(chaos: &Arc<Chaos>, rng: &mut fastrand::Rng, until: Deadline) {
    Tally::add(&chaos.tally.connections, 1);
    let Ok(mut stream) = chaos.connector.connect_tcp(None, false).await else {
        Tally::add(&chaos.tally.connect_failures, 1);
        return;
    };
    if !chaos.connector.is_tls() {
        let _ = stream.write_all(b"stalled half a li").await;
        tokio::time::sleep_until(until).await;
        return;
    }
    if rng.bool() {
        // The start of a TLS record header: a ClientHello that never comes.
        let _ = stream.write_all(&[0x16, 0x03, 0x01, 0x02]).await;
    }
    let began = Deadline::now();
    let mut buf = [0u8; 1024];
    let waited = tokio::time::timeout(chaos.stall_limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    match waited {
        Ok(()) => {
            Tally::add(&chaos.tally.stalls_closed, 1);
            let ms = began.elapsed().as_millis() as u64;
            chaos
                .tally
                .stall_close_max_ms
                .fetch_max(ms, Ordering::Relaxed);
        }
        Err(_) => Tally::add(&chaos.tally.stalls_overdue, 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_about_this_client_count_as_refusals_and_kicks() {
        let t = Tally::default();
        t.classify(b"* error: flood control: you are sending too fast; that line was not sent (retry in 200 ms)");
        t.classify(
            br#"{"type":"error","code":"rate_limited","message":"slow down","retry_after_ms":200}"#,
        );
        t.classify(b"* error: excess flood: too many lines refused; disconnected");
        t.classify(br#"{"type":"bye","reason":"excess flood"}"#);
        t.classify(b"* cxyz was disconnected (excess flood)");
        t.classify(b"* error: no one called nobody1 is connected");
        t.classify(b"bob> * error: flood control is fun");
        let s = t.snapshot();
        assert_eq!((s.flood_refusals, s.flood_kicks, s.errors), (2, 2, 1));
    }

    #[test]
    fn every_persona_gets_picked_and_nothing_chaotic_has_a_hash() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut seen = [0u32; PERSONAS];
        for _ in 0..10_000 {
            seen[pick(&mut rng) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
        let plan = Plan {
            run: "ab12".into(),
            steady: 4,
            rooms: 2,
        };
        for _ in 0..1000 {
            assert!(!chaos_room(&mut rng, &plan).contains("#b:"));
            assert!(!chaos_nick(&mut rng).contains('#'));
        }
    }
}
