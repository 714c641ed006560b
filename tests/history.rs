//! Message history end to end: replay on joining (text and JSON), the seam
//! between replay and live traffic, paging, `/history`, retention, restarts
//! and the data directory lock. Real servers on 127.0.0.1:0, real sockets.

mod common;

use std::net::SocketAddr;

use common::{Client, TestServer};
use rchat::config::{HistoryMode, ServerConfig};
use rchat::proto::json::{decode_server, ErrorCode, HistoryEntry, ServerMsg};
use rchat::server::Server;

fn with_history(mode: HistoryMode, replay: usize) -> ServerConfig {
    ServerConfig {
        history: mode,
        history_replay: replay,
        ..ServerConfig::default()
    }
}

/// A raw JSON client: one hello, then lines decoded as server messages.
struct Json {
    c: Client,
}

impl Json {
    /// Connects as `nick` into `lobby` and reads up to the room state.
    /// Whatever comes after (the replay) is left for the test.
    async fn join(addr: SocketAddr, nick: &str) -> Json {
        let mut c = Client::connect(addr).await;
        c.nick = nick.to_string();
        c.send(&format!(
            r#"{{"type":"hello","proto":"rchat","version":1,"nick":"{nick}"}}"#
        ))
        .await;
        let mut j = Json { c };
        j.until("room state", |m| matches!(m, ServerMsg::RoomState { .. }))
            .await;
        j
    }

    async fn next(&mut self) -> ServerMsg {
        let line = self.c.line().await;
        decode_server(line.as_bytes()).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    async fn until(&mut self, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            let m = self.next().await;
            if pred(&m) {
                return m;
            }
            assert!(
                !matches!(m, ServerMsg::Bye { .. }),
                "bye while waiting for {what}"
            );
        }
    }

    async fn send(&mut self, json: &str) {
        self.c.send(json).await;
    }

    /// Posts `text` and returns its seq from the ack.
    async fn say(&mut self, id: &str, text: &str) -> u64 {
        self.send(&format!(
            r#"{{"type":"say","id":"{id}","room":"lobby","text":"{text}"}}"#
        ))
        .await;
        match self
            .until(
                "ack",
                |m| matches!(m, ServerMsg::Ack { id: i, .. } if i == id),
            )
            .await
        {
            ServerMsg::Ack { seq: Some(seq), .. } => seq,
            other => panic!("ack without seq: {other:?}"),
        }
    }

    /// The next `history` message.
    async fn history(&mut self) -> (Vec<HistoryEntry>, bool) {
        match self
            .until("history", |m| matches!(m, ServerMsg::History { .. }))
            .await
        {
            ServerMsg::History { messages, more, .. } => (messages, more),
            _ => unreachable!(),
        }
    }

    async fn page(&mut self, before: Option<u64>, limit: usize) -> (Vec<u64>, bool) {
        let before = before.map_or(String::new(), |b| format!(r#","before":{b}"#));
        self.send(&format!(
            r#"{{"type":"history","id":"p","room":"lobby","limit":{limit}{before}}}"#
        ))
        .await;
        let (messages, more) = self.history().await;
        (messages.iter().map(|m| m.seq).collect(), more)
    }
}

fn seqs(entries: &[HistoryEntry]) -> Vec<u64> {
    entries.iter().map(|m| m.seq).collect()
}

#[tokio::test]
async fn a_text_joiner_gets_a_delimited_replay_with_original_senders() {
    let srv = TestServer::with(with_history(HistoryMode::Memory, 50)).await;
    let mut alice = srv.named("alice").await;
    alice.send("first words").await;
    alice.send("/me waves").await;
    alice.send("/nick alicia").await;
    alice.expect_suffix("is now known as alicia").await;
    alice.send("renamed now").await;
    alice.expect_nothing_pending().await;

    let mut bob = Client::connect(srv.addr).await;
    bob.greeted().await;
    let header = bob.line().await;
    assert_eq!(
        header,
        "* history of lobby: last 3 messages (times are UTC)"
    );
    let lines = [bob.line().await, bob.line().await, bob.line().await];
    let expected = [
        "] alice> first words",
        "] * alice waves",
        "] alicia> renamed now",
    ];
    for (line, want) in lines.iter().zip(expected) {
        assert!(line.starts_with("[20"), "{line:?}");
        assert!(line.ends_with(want), "{line:?} should end with {want:?}");
    }
    bob.expect("* end of history").await;
    // Then live traffic, and nothing replayed twice.
    bob.expect_nothing_pending().await;
    alice.send("live").await;
    bob.expect("alicia> live").await;
    srv.stop().await;
}

#[tokio::test]
async fn nothing_is_replayed_when_history_is_off_or_empty() {
    let srv = TestServer::with(with_history(HistoryMode::Memory, 50)).await;
    let mut first = srv.client().await;
    // An empty room: no block at all.
    first.expect_nothing_pending().await;
    srv.stop().await;

    let srv = TestServer::with(with_history(HistoryMode::Off, 50)).await;
    let mut alice = srv.named("alice").await;
    alice.send("not kept").await;
    let mut bob = srv.client().await;
    bob.expect_nothing_pending().await;
    bob.send("/history").await;
    bob.expect("* error: this server keeps no history").await;
    let mut j = Json::join(srv.addr, "carol").await;
    j.send(r#"{"type":"history","id":"h","room":"lobby"}"#)
        .await;
    let err = j
        .until("error", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(
        matches!(err, ServerMsg::Error { code: ErrorCode::NoHistory, id: Some(ref i), .. } if i == "h"),
        "{err:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn replay_is_bounded_and_json_clients_page_back_to_the_start() {
    let srv = TestServer::with(with_history(HistoryMode::Memory, 5)).await;
    let mut alice = Json::join(srv.addr, "alice").await;
    let (replayed, more) = alice.history().await;
    assert!(replayed.is_empty() && !more);
    for i in 1..=12 {
        assert_eq!(alice.say(&format!("s{i}"), &format!("m{i}")).await, i);
    }

    let mut bob = Json::join(srv.addr, "bob").await;
    let (replayed, more) = bob.history().await;
    assert_eq!(seqs(&replayed), vec![8, 9, 10, 11, 12]);
    assert!(more);
    assert_eq!(replayed[0].from, "alice");
    assert_eq!(replayed[0].text, "m8");
    assert_eq!(bob.page(Some(8), 5).await, (vec![3, 4, 5, 6, 7], true));
    assert_eq!(bob.page(Some(3), 5).await, (vec![1, 2], false));
    assert_eq!(bob.page(Some(1), 5).await, (vec![], false));
    assert_eq!(bob.page(None, 2).await, (vec![11, 12], true));

    // Only the rooms one is in.
    bob.send(r#"{"type":"history","id":"x","room":"elsewhere"}"#)
        .await;
    let err = bob
        .until("error", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(
        matches!(
            err,
            ServerMsg::Error {
                code: ErrorCode::NotInRoom,
                ..
            }
        ),
        "{err:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn text_history_command_shows_the_last_n() {
    let srv = TestServer::with(with_history(HistoryMode::Memory, 0)).await;
    let mut alice = srv.named("alice").await;
    for i in 1..=4 {
        alice.send(&format!("line {i}")).await;
    }
    alice.send("/history 2").await;
    alice
        .expect("* history of lobby: last 2 messages (times are UTC)")
        .await;
    assert!(alice.line().await.ends_with("] alice> line 3"));
    assert!(alice.line().await.ends_with("] alice> line 4"));
    alice.expect("* end of history").await;
    alice.send("/history 0").await;
    alice.expect("* error: usage: /history [N]").await;
    alice.send("/join empty").await;
    alice.expect_suffix("/who lists them").await;
    alice.send("/history").await;
    alice.expect("* no history in empty yet").await;
    srv.stop().await;
}

/// Many joiners arrive while a sender posts without pause. Each one's replay
/// and the live messages after it must be one unbroken run of seqs: nothing
/// missing at the seam, nothing twice.
#[tokio::test]
async fn the_seam_between_replay_and_live_traffic_has_no_gap_and_no_duplicate() {
    const MESSAGES: u64 = 600;
    const JOINERS: u64 = 8;
    let srv = TestServer::with(with_history(HistoryMode::Memory, 50)).await;
    let mut sender = Json::join(srv.addr, "sender").await;
    sender.history().await;
    let addr = srv.addr;
    let joiner = move |j: u64| {
        tokio::spawn(async move {
            let mut c = Json::join(addr, &format!("j{j}")).await;
            let (replayed, _) = c.history().await;
            let mut seen = seqs(&replayed);
            if replayed.iter().any(|m| m.text == "done") {
                return seen;
            }
            loop {
                match c.next().await {
                    ServerMsg::Message { seq, text, .. } => {
                        seen.push(seq);
                        if text == "done" {
                            return seen;
                        }
                    }
                    ServerMsg::History { .. } => panic!("a second replay"),
                    _ => {}
                }
            }
        })
    };
    let posting = tokio::spawn(async move {
        let mut joiners = Vec::new();
        for i in 1..=MESSAGES {
            // No waiting for acks, and joiners start along the way, so they
            // land while earlier lines are still being handled.
            sender
                .send(&format!(r#"{{"type":"say","room":"lobby","text":"n{i}"}}"#))
                .await;
            if i % (MESSAGES / JOINERS) == 0 {
                joiners.push(joiner(i));
            }
        }
        let last = sender.say("last", "done").await;
        (last, joiners)
    });
    let (last, joiners) = posting.await.unwrap();
    assert_eq!(last, MESSAGES + 1);
    for joiner in joiners {
        let seen = joiner.await.unwrap();
        let first = seen[0];
        let expected: Vec<u64> = (first..=last).collect();
        assert_eq!(seen, expected, "one unbroken run from {first}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn numbering_and_history_survive_an_empty_room_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || ServerConfig {
        data_dir: Some(dir.path().to_path_buf()),
        history_replay: 10,
        ..ServerConfig::default()
    };
    let srv = TestServer::with(config()).await;
    let mut alice = Json::join(srv.addr, "alice").await;
    alice.history().await;
    for i in 1..=3 {
        assert_eq!(alice.say(&format!("a{i}"), &format!("before {i}")).await, i);
    }
    drop(alice);
    srv.wait_members(0).await;
    // The room is gone from memory; its numbering is not.
    let mut alice = Json::join(srv.addr, "alice").await;
    assert_eq!(seqs(&alice.history().await.0), vec![1, 2, 3]);
    assert_eq!(alice.say("a4", "before 4").await, 4);
    srv.stop().await;

    let srv = TestServer::with(config()).await;
    let mut bob = Json::join(srv.addr, "bob").await;
    let (replayed, more) = bob.history().await;
    assert_eq!(seqs(&replayed), vec![1, 2, 3, 4]);
    assert!(!more);
    assert_eq!(replayed[3].text, "before 4");
    assert_eq!(bob.say("b1", "after restart").await, 5);
    srv.stop().await;
}

#[tokio::test]
async fn retention_keeps_each_rooms_newest_messages() {
    let srv = TestServer::with(ServerConfig {
        history: HistoryMode::Memory,
        history_replay: 50,
        history_max_per_room: Some(3),
        ..ServerConfig::default()
    })
    .await;
    let mut alice = Json::join(srv.addr, "alice").await;
    alice.history().await;
    for i in 1..=10 {
        alice.say(&format!("s{i}"), &format!("m{i}")).await;
    }
    assert_eq!(alice.page(None, 50).await, (vec![8, 9, 10], false));
    srv.stop().await;
}

#[tokio::test]
async fn a_second_server_cannot_use_the_same_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = || ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        data_dir: Some(dir.path().to_path_buf()),
        ..ServerConfig::default()
    };
    let first = Server::bind(config()).await.expect("first server binds");
    let err = Server::bind(config())
        .await
        .err()
        .expect("second server refused");
    let text = err.to_string();
    assert!(text.contains("another rchat server"), "{text}");
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    drop(first);
    Server::bind(config())
        .await
        .expect("the directory is free again once the first server is gone");
}
