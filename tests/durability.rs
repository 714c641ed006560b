//! Durability with the real binary: `kill -9` the server while JSON clients
//! post as fast as acks allow, restart it on the same data directory, and
//! check that every acknowledged message is there, in order, that numbering
//! goes on after the highest stored seq, and that the database is sound.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

use common::served::Served;
use rchat::proto::json::{decode_server, ServerMsg};

const ROOMS: [&str; 2] = ["lobby", "ops"];
const WRITERS: usize = 4;
/// Says each writer keeps unacknowledged at once.
const WINDOW: usize = 32;
/// Posting stops at this many acks in all, or after `POST_FOR`.
const ENOUGH_ACKS: usize = 3000;
const POST_FOR: Duration = Duration::from_secs(3);
const DEADLINE: Duration = Duration::from_secs(15);

/// A raw JSON connection in both rooms.
struct Conn {
    reader: AsyncBufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr, nick: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (r, w) = stream.into_split();
        let mut c = Conn {
            reader: AsyncBufReader::new(r),
            writer: w,
        };
        let rooms = ROOMS.map(|r| format!("\"{r}\"")).join(",");
        c.send(&format!(
            r#"{{"type":"hello","proto":"rchat","version":1,"nick":"{nick}","rooms":[{rooms}]}}"#
        ))
        .await
        .expect("hello");
        c
    }

    async fn send(&mut self, line: &str) -> std::io::Result<()> {
        self.writer.write_all(format!("{line}\n").as_bytes()).await
    }

    /// The next message, or None at EOF or on a reset.
    async fn next(&mut self) -> Option<ServerMsg> {
        let mut line = String::new();
        let n = tokio::time::timeout(DEADLINE, self.reader.read_line(&mut line))
            .await
            .expect("a line in time")
            .unwrap_or(0);
        (n > 0).then(|| decode_server(line.as_bytes()).expect("valid JSON from the server"))
    }
}

/// What one writer saw acknowledged: (room, seq) to text.
type Acked = HashMap<(String, u64), String>;

/// Posts to both rooms, `WINDOW` unacknowledged at most, until told to stop
/// or the connection dies; returns the acks it received.
async fn writer(addr: SocketAddr, w: usize, stop_at: Instant) -> Acked {
    let mut c = Conn::open(addr, &format!("w{w}")).await;
    let mut acked = Acked::new();
    let mut texts: HashMap<String, String> = HashMap::new();
    let mut sent = 0usize;
    let mut in_flight = 0usize;
    loop {
        while in_flight < WINDOW && Instant::now() < stop_at {
            sent += 1;
            let room = ROOMS[sent % ROOMS.len()];
            let id = format!("{w}-{sent}");
            let text = format!("w{w} message {sent}");
            let line = format!(r#"{{"type":"say","id":"{id}","room":"{room}","text":"{text}"}}"#);
            if c.send(&line).await.is_err() {
                return acked;
            }
            texts.insert(id, text);
            in_flight += 1;
        }
        if in_flight == 0 {
            return acked;
        }
        match c.next().await {
            None => return acked,
            Some(ServerMsg::Ack {
                id,
                room: Some(room),
                seq: Some(seq),
                ..
            }) => {
                in_flight -= 1;
                let text = texts.remove(&id).expect("an ack for a say I sent");
                acked.insert((room, seq), text);
            }
            Some(ServerMsg::Error { id: Some(_), .. }) => in_flight -= 1,
            Some(_) => {}
        }
    }
}

/// Every stored message of `room`, oldest first, paged with `history`.
async fn read_all(c: &mut Conn, room: &str) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    let mut before = String::new();
    loop {
        c.send(&format!(
            r#"{{"type":"history","id":"h","room":"{room}","limit":500{before}}}"#
        ))
        .await
        .unwrap();
        let (messages, more) = loop {
            match c.next().await.expect("server alive") {
                ServerMsg::History {
                    id: Some(_),
                    messages,
                    more,
                    ..
                } => break (messages, more),
                _ => continue,
            }
        };
        let page: Vec<(u64, String)> = messages.into_iter().map(|m| (m.seq, m.text)).collect();
        let first = page.first().map(|(seq, _)| *seq);
        all.splice(0..0, page);
        match first {
            Some(first) if more => before = format!(r#","before":{first}"#),
            _ => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().expect("a UTF-8 temporary path");
    let mut server = Served::start(&["--data-dir", data_dir]);
    let addr = server.addr;

    let stop_at = Instant::now() + POST_FOR;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(addr, w, stop_at)))
        .collect();
    // Kill in mid-stream: once enough is acknowledged, while writers still
    // have messages in flight.
    let mut probe = Conn::open(addr, "probe").await;
    let mut seen = 0;
    while seen < ENOUGH_ACKS && Instant::now() < stop_at {
        if let Some(ServerMsg::Message { .. }) = probe.next().await {
            seen += 1;
        }
    }
    server.child.kill().expect("SIGKILL");
    server.child.wait().unwrap();
    let mut acked = Acked::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() >= 100,
        "only {} acks before the kill",
        acked.len()
    );

    // The file is sound before anyone else opens it.
    let db = rusqlite::Connection::open(dir.path().join("history.sqlite3")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(db);

    let server = Served::start(&["--data-dir", data_dir]);
    let mut c = Conn::open(server.addr, "checker").await;
    for room in ROOMS {
        let stored = read_all(&mut c, room).await;
        let seqs: Vec<u64> = stored.iter().map(|(seq, _)| *seq).collect();
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "{room}: stored seqs run 1..=n with no hole");
        let by_seq: HashMap<u64, &String> = stored.iter().map(|(s, t)| (*s, t)).collect();
        let mut checked = 0;
        for ((r, seq), text) in &acked {
            if r == room {
                assert_eq!(
                    by_seq.get(seq).copied(),
                    Some(text),
                    "{room}: acknowledged message {seq} lost or changed"
                );
                checked += 1;
            }
        }
        assert!(checked > 0, "{room}: no acks to check");
        eprintln!("{room}: stored {} acked {checked}", seqs.len());
        // Numbering goes on after the highest stored seq.
        c.send(&format!(
            r#"{{"type":"say","id":"after","room":"{room}","text":"after the crash"}}"#
        ))
        .await
        .unwrap();
        let seq = loop {
            if let Some(ServerMsg::Ack {
                id, seq: Some(seq), ..
            }) = c.next().await
            {
                if id == "after" {
                    break seq;
                }
            }
        };
        assert_eq!(seq, seqs.len() as u64 + 1, "{room}: numbering continues");
    }
}
