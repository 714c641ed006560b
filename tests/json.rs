//! The JSON protocol end to end: the real client connection
//! (`rchat::client::conn`) against a real server, and raw JSON lines on a
//! socket for the wire details.

mod common;

use std::time::Duration;

use common::{Client, TestServer, DEADLINE};
use rchat::client::conn::{self, Handle, Options, Status, Update};
use rchat::config::ServerConfig;
use rchat::proto::json::{ClientMsg, ErrorCode, LeaveKind, ServerMsg};
use tokio::sync::mpsc::Receiver;

struct JsonClient {
    handle: Handle,
    updates: Receiver<Update>,
}

impl JsonClient {
    fn start(
        srv_addr: std::net::SocketAddr,
        nick: &str,
        room: Option<&str>,
        reconnect: bool,
    ) -> Self {
        let (handle, updates) = conn::start(Options {
            addr: srv_addr.to_string(),
            nick: Some(nick.to_string()),
            room: room.map(str::to_string),
            tls: None,
            reconnect,
            password: None,
        });
        JsonClient { handle, updates }
    }

    /// Connects and waits until the client is in its room under its nick.
    async fn ready(srv_addr: std::net::SocketAddr, nick: &str) -> Self {
        let mut c = Self::start(srv_addr, nick, None, false);
        c.wait_msg("room state", |m| matches!(m, ServerMsg::RoomState { .. }))
            .await;
        c
    }

    async fn next(&mut self) -> Update {
        tokio::time::timeout(DEADLINE, self.updates.recv())
            .await
            .expect("an update in time")
            .expect("connection task alive")
    }

    async fn wait_msg(&mut self, what: &str, pred: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
        loop {
            match self.next().await {
                Update::Msg(m) if pred(&m) => return m,
                Update::Status(Status::Lost {
                    retry_in: None,
                    reason,
                }) => {
                    panic!("connection lost for good while waiting for {what}: {reason}")
                }
                _ => {}
            }
        }
    }

    async fn wait_status(&mut self, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        loop {
            if let Update::Status(s) = self.next().await {
                if pred(&s) {
                    return s;
                }
            }
            let _ = what;
        }
    }

    async fn send(&self, msg: ClientMsg) {
        self.handle.send(msg).await.expect("send");
    }
}

fn say(id: &str, room: &str, text: &str) -> ClientMsg {
    ClientMsg::Say {
        id: Some(id.into()),
        room: room.into(),
        text: text.into(),
        action: false,
    }
}

#[tokio::test]
async fn own_messages_are_acknowledged_with_id_and_sequence() {
    let srv = TestServer::start().await;
    let mut alice = JsonClient::ready(srv.addr, "alice").await;
    let mut bob = JsonClient::ready(srv.addr, "bob").await;
    alice.send(say("m1", "lobby", "hello")).await;
    alice.send(say("m2", "lobby", "again")).await;
    let ack1 = alice
        .wait_msg(
            "ack",
            |m| matches!(m, ServerMsg::Ack { id, .. } if id == "m1"),
        )
        .await;
    let ack2 = alice
        .wait_msg(
            "ack",
            |m| matches!(m, ServerMsg::Ack { id, .. } if id == "m2"),
        )
        .await;
    let (
        ServerMsg::Ack {
            seq: Some(s1),
            ts: Some(t1),
            room: Some(r),
            ..
        },
        ServerMsg::Ack { seq: Some(s2), .. },
    ) = (ack1, ack2)
    else {
        panic!("acks for say carry room, seq and ts");
    };
    assert_eq!(r, "lobby");
    assert_eq!(s2, s1 + 1);
    assert!(t1 > 1_600_000_000_000, "a real timestamp");
    let got = bob
        .wait_msg("message", |m| matches!(m, ServerMsg::Message { .. }))
        .await;
    assert_eq!(
        got,
        ServerMsg::Message {
            room: "lobby".into(),
            seq: s1,
            ts: t1,
            from: "alice".into(),
            text: "hello".into(),
            action: false
        }
    );
    srv.stop().await;
}

#[tokio::test]
async fn member_list_follows_joins_renames_and_leaves() {
    let srv = TestServer::start().await;
    let mut alice = JsonClient::start(srv.addr, "alice", Some("dev"), false);
    let state = alice
        .wait_msg("room state", |m| matches!(m, ServerMsg::RoomState { .. }))
        .await;
    assert_eq!(
        state,
        ServerMsg::RoomState {
            room: "dev".into(),
            members: vec!["alice".into()]
        }
    );
    let mut bob = JsonClient::start(srv.addr, "bob", Some("dev"), false);
    let bob_state = bob
        .wait_msg("room state", |m| matches!(m, ServerMsg::RoomState { .. }))
        .await;
    assert_eq!(
        bob_state,
        ServerMsg::RoomState {
            room: "dev".into(),
            members: vec!["alice".into(), "bob".into()]
        }
    );
    alice
        .wait_msg("join", |m| {
            *m == ServerMsg::Joined {
                room: "dev".into(),
                nick: "bob".into(),
            }
        })
        .await;
    bob.send(ClientMsg::Nick {
        id: Some("n".into()),
        nick: "robert".into(),
    })
    .await;
    alice
        .wait_msg("rename", |m| {
            *m == ServerMsg::Renamed {
                old: "bob".into(),
                new: "robert".into(),
            }
        })
        .await;
    bob.send(ClientMsg::Quit {
        reason: Some("lunch".into()),
    })
    .await;
    let left = alice
        .wait_msg("leave", |m| matches!(m, ServerMsg::Left { .. }))
        .await;
    assert_eq!(
        left,
        ServerMsg::Left {
            room: "dev".into(),
            nick: "robert".into(),
            kind: LeaveKind::Quit,
            reason: Some("lunch".into()),
            by: None,
        }
    );
    alice
        .send(ClientMsg::Who {
            id: Some("w".into()),
            room: "dev".into(),
        })
        .await;
    let who = alice
        .wait_msg("who", |m| matches!(m, ServerMsg::Who { .. }))
        .await;
    assert_eq!(
        who,
        ServerMsg::Who {
            id: Some("w".into()),
            room: "dev".into(),
            members: vec!["alice".into()]
        }
    );
    srv.stop().await;
}

#[tokio::test]
async fn private_messages_and_error_codes() {
    let srv = TestServer::start().await;
    let mut alice = JsonClient::ready(srv.addr, "alice").await;
    let mut bob = JsonClient::ready(srv.addr, "bob").await;
    let mut carol = Client::connect(srv.addr).await;
    carol.greeted().await;
    alice
        .send(ClientMsg::Msg {
            id: Some("p1".into()),
            to: "bob".into(),
            text: "psst".into(),
        })
        .await;
    alice
        .wait_msg(
            "ack",
            |m| matches!(m, ServerMsg::Ack { id, .. } if id == "p1"),
        )
        .await;
    let got = bob
        .wait_msg("private", |m| matches!(m, ServerMsg::Private { .. }))
        .await;
    let ServerMsg::Private { from, to, text, .. } = got else {
        unreachable!()
    };
    assert_eq!(
        (from.as_str(), to.as_str(), text.as_str()),
        ("alice", "bob", "psst")
    );
    carol.expect_nothing_pending().await;

    alice
        .send(ClientMsg::Msg {
            id: Some("p2".into()),
            to: "nobody".into(),
            text: "x".into(),
        })
        .await;
    let err = alice
        .wait_msg("error", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(
        matches!(err, ServerMsg::Error { id: Some(ref i), code: ErrorCode::NoSuchNick, .. } if i == "p2")
    );
    alice
        .send(ClientMsg::Nick {
            id: Some("n1".into()),
            nick: "BOB".into(),
        })
        .await;
    let err = alice
        .wait_msg("error", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(matches!(
        err,
        ServerMsg::Error {
            code: ErrorCode::NickInUse,
            ..
        }
    ));
    alice.send(say("s1", "elsewhere", "hi")).await;
    let err = alice
        .wait_msg("error", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(matches!(
        err,
        ServerMsg::Error {
            code: ErrorCode::NotInRoom,
            ..
        }
    ));
    alice.send(say("s2", "lobby", "\x1b[2J")).await;
    let err = alice
        .wait_msg("error", |m| matches!(m, ServerMsg::Error { .. }))
        .await;
    assert!(matches!(
        err,
        ServerMsg::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    srv.stop().await;
}

#[tokio::test]
async fn text_and_json_users_share_rooms() {
    let srv = TestServer::start().await;
    let mut text_user = srv.named("tom").await;
    let mut alice = JsonClient::ready(srv.addr, "alice").await;
    text_user
        .wait_for("alice", |l| l == "* alice joined lobby")
        .await;
    alice.send(say("1", "lobby", "from json")).await;
    text_user.expect("alice> from json").await;
    text_user.send("from text").await;
    let got = alice
        .wait_msg("message", |m| matches!(m, ServerMsg::Message { .. }))
        .await;
    assert!(
        matches!(got, ServerMsg::Message { ref from, ref text, .. } if from == "tom" && text == "from text")
    );
    srv.stop().await;
}

#[tokio::test]
async fn client_reconnects_after_server_restart_and_restores_nick_and_room() {
    let srv = TestServer::start().await;
    let addr = srv.addr;
    let mut alice = JsonClient::start(addr, "alice", Some("dev"), true);
    alice
        .wait_msg("room", |m| matches!(m, ServerMsg::RoomState { .. }))
        .await;
    alice
        .send(ClientMsg::Join {
            id: None,
            room: "ops".into(),
        })
        .await;
    alice
        .wait_msg(
            "ops",
            |m| matches!(m, ServerMsg::RoomState { room, .. } if room == "ops"),
        )
        .await;
    alice
        .send(ClientMsg::Nick {
            id: None,
            nick: "alice2".into(),
        })
        .await;
    alice
        .wait_msg("rename", |m| matches!(m, ServerMsg::Renamed { .. }))
        .await;
    srv.stop().await;
    alice
        .wait_status("lost", |s| {
            matches!(
                s,
                Status::Lost {
                    retry_in: Some(_),
                    ..
                }
            )
        })
        .await;

    let srv = TestServer::with(ServerConfig {
        listen: vec![addr],
        ..ServerConfig::default()
    })
    .await;
    alice
        .wait_status("connected", |s| matches!(s, Status::Connected { .. }))
        .await;
    let mut rooms = Vec::new();
    while rooms.len() < 2 {
        if let ServerMsg::RoomState { room, members } = alice
            .wait_msg("rooms restored", |m| {
                matches!(m, ServerMsg::RoomState { .. })
            })
            .await
        {
            assert_eq!(
                members,
                vec!["alice2".to_string()],
                "nick restored before joining"
            );
            rooms.push(room);
        }
    }
    rooms.sort();
    assert_eq!(rooms, vec!["dev", "ops"]);
    let mut observer = srv.client().await;
    observer.send("/join dev").await;
    observer
        .wait_for("who", |l| l.starts_with("* you are now in dev (2 members)"))
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn without_reconnect_the_loss_is_final() {
    let srv = TestServer::start().await;
    let mut alice = JsonClient::start(srv.addr, "alice", None, false);
    alice
        .wait_msg("room", |m| matches!(m, ServerMsg::RoomState { .. }))
        .await;
    srv.stop().await;
    alice
        .wait_status("lost", |s| matches!(s, Status::Lost { retry_in: None, .. }))
        .await;
    assert!(
        tokio::time::timeout(DEADLINE, alice.updates.recv())
            .await
            .expect("closes")
            .is_none(),
        "update channel closes"
    );
}

/// Raw socket helpers for wire-level checks.
async fn raw_json(srv: &TestServer, hello: &str) -> Client {
    let mut c = Client::connect(srv.addr).await;
    c.send(hello).await;
    c
}

#[tokio::test]
async fn wire_level_hello_errors_and_keepalive() {
    let srv = TestServer::with(ServerConfig {
        ping_interval_secs: 1,
        ping_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut watcher = srv.named("watcher").await;

    // Wrong version: an error with a code, then the connection closes.
    let mut old = raw_json(&srv, r#"{"type":"hello","proto":"rchat","version":99}"#).await;
    let lines = old.until_eof().await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains(r#""code":"unsupported_version""#),
        "{lines:?}"
    );

    // A client that never answers pings is dropped, and the room is told.
    let mut mute = raw_json(
        &srv,
        r#"{"type":"hello","proto":"rchat","version":1,"nick":"mute"}"#,
    )
    .await;
    let welcome = mute.line().await;
    assert!(
        welcome.starts_with(r#"{"type":"welcome","proto":"rchat","version":1,"nick":"guest"#),
        "{welcome}"
    );
    mute.send("this is not json").await;
    let lines = mute.until_eof().await;
    assert!(
        lines.iter().any(|l| l.contains(r#""code":"bad_request""#)),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(r#"{"type":"ping""#)),
        "{lines:?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some(r#"{"type":"bye","reason":"ping timeout"}"#)
    );
    watcher
        .wait_for("mute dropped", |l| {
            l == "* mute was disconnected (ping timeout)"
        })
        .await;

    // A client that does answer stays.
    let mut chatty = raw_json(
        &srv,
        r#"{"type":"hello","proto":"rchat","version":1,"nick":"chatty"}"#,
    )
    .await;
    let mut pongs = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        let l = tokio::time::timeout(Duration::from_secs(3), chatty.line())
            .await
            .expect("line");
        if let Some(rest) = l.strip_prefix(r#"{"type":"ping","token":""#) {
            let token = rest.trim_end_matches("\"}");
            chatty
                .send(&format!(r#"{{"type":"pong","token":"{token}"}}"#))
                .await;
            pongs += 1;
        }
    }
    assert!(pongs >= 2, "pinged repeatedly and kept: {pongs}");
    chatty.send(r#"{"type":"rooms","id":"r"}"#).await;
    chatty
        .wait_for("rooms", |l| l.starts_with(r#"{"type":"rooms","id":"r""#))
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn a_late_hello_in_text_mode_is_an_error_not_a_switch() {
    let srv = TestServer::start().await;
    let mut c = srv.client().await;
    c.send(r#"{"type":"hello","proto":"rchat","version":1}"#)
        .await;
    c.expect("* error: a JSON hello must be the first line, sent as soon as you connect")
        .await;
}

/// Applies one room event to a member list, as a JSON client keeps it.
fn follow(roster: &mut std::collections::BTreeSet<String>, msg: &ServerMsg) {
    match msg {
        ServerMsg::Joined { nick, .. } => {
            assert!(roster.insert(nick.to_lowercase()), "{nick} joined twice");
        }
        ServerMsg::Left { nick, .. } => {
            assert!(roster.remove(&nick.to_lowercase()), "{nick} was not there");
        }
        ServerMsg::Crowd {
            joined,
            left,
            disconnected,
            ..
        } => {
            for nick in left.iter().chain(disconnected) {
                assert!(roster.remove(&nick.to_lowercase()), "{nick} was not there");
            }
            for nick in joined {
                assert!(roster.insert(nick.to_lowercase()), "{nick} joined twice");
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn a_crowded_room_tells_json_clients_its_changes_in_crowd_events() {
    let srv = TestServer::start().await;
    let mut watcher = raw_json(
        &srv,
        r#"{"type":"hello","proto":"rchat","version":1,"nick":"watcher"}"#,
    )
    .await;
    let mut roster = std::collections::BTreeSet::new();
    loop {
        let line = watcher.line().await;
        if let Ok(ServerMsg::RoomState { members, .. }) =
            rchat::proto::json::decode_server(line.as_bytes())
        {
            roster.extend(members.iter().map(|m| m.to_lowercase()));
            break;
        }
    }
    // Forty join the watcher's room (past 32 it holds its notices and
    // tells them as crowds), then ten of them quit and five drop.
    // (At once: a text client is greeted only after the hello wait.)
    let mut people = futures::future::join_all((0..40).map(|_| srv.client())).await;
    for mut gone in people.drain(..10) {
        gone.send("/quit").await;
        gone.until_eof().await;
    }
    for gone in people.drain(..5) {
        drop(gone);
    }
    let mut expected: std::collections::BTreeSet<String> =
        people.iter().map(|p| p.nick.to_lowercase()).collect();
    expected.insert("watcher".into());
    let mut crowds = 0;
    while roster != expected {
        let line = watcher.line().await;
        let msg = rchat::proto::json::decode_server(line.as_bytes()).expect("JSON");
        if let ServerMsg::Crowd { room, .. } = &msg {
            assert_eq!(room, "lobby");
            crowds += 1;
        }
        follow(&mut roster, &msg);
    }
    assert!(crowds > 0, "some of it was told as crowds");
    srv.stop().await;
}
