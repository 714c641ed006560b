//! The limits an operator sets, seen from both sides: the refused client is
//! told why, in its own protocol; everyone else keeps chatting, loses
//! nothing and is not held up.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::served::gen_cert;
use common::{Client, TestServer, DEADLINE};
use rchat::config::ServerConfig;
use rchat::proto::json::{self, ErrorCode, ServerMsg};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const HELLO: &str = r#"{"type":"hello","proto":"rchat","version":1}"#;

/// Connects as a JSON client and returns the first message the server
/// sends, checking that the connection then closes.
async fn json_first(addr: SocketAddr) -> ServerMsg {
    let mut c = Client::connect(addr).await;
    c.send(HELLO).await;
    let line = c.line().await;
    let msg = json::decode_server(line.as_bytes()).expect("a JSON line");
    assert!(c.try_line().await.is_none(), "closed after the refusal");
    msg
}

/// Connects until the server admits a text client (a freed slot is
/// released a moment after its client's session ends); bounded.
async fn admitted(addr: SocketAddr) -> Client {
    let started = Instant::now();
    loop {
        let mut c = Client::connect(addr).await;
        let first = c.line().await;
        if !first.starts_with("* error:") {
            assert!(first.contains("/help"), "{first:?}");
            let nick = first.split_whitespace().find(|w| w.starts_with("guest"));
            c.nick = nick
                .expect("welcome names the nick")
                .trim_end_matches('!')
                .to_string();
            c.line().await; // the lobby confirmation
            return c;
        }
        assert!(started.elapsed() < DEADLINE, "never admitted: {first}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn too_many_connections_from_one_address_are_told_why_and_no_one_else_notices() {
    let srv = TestServer::with(ServerConfig {
        max_per_ip: 2,
        ..ServerConfig::default()
    })
    .await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    a.expect(&format!("* {} joined lobby", b.nick)).await;

    let mut refused = Client::connect(srv.addr).await;
    assert_eq!(
        refused.line().await,
        "* error: too many connections from your address (limit 2)"
    );
    assert!(
        refused.try_line().await.is_none(),
        "closed after the refusal"
    );
    match json_first(srv.addr).await {
        ServerMsg::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::TooManyConnections);
            assert!(message.contains("limit 2"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    // The two inside noticed nothing and chat on.
    a.send("still here").await;
    b.expect(&format!("{}> still here", a.nick)).await;
    b.expect_nothing_pending().await;
    assert_eq!(srv.hub.member_count(), 2);

    // A slot comes back when its connection ends.
    a.send("/quit").await;
    a.until_eof().await;
    let c = admitted(srv.addr).await;
    b.expect_suffix(&format!("* {} joined lobby", c.nick)).await;
    srv.stop().await;
}

#[tokio::test]
async fn a_full_server_refuses_in_words_even_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    let ca = dir.path().join("cert.pem");
    let srv = TestServer::with(ServerConfig {
        max_clients: 1,
        tls_cert: Some(dir.path().join("cert.pem")),
        tls_key: Some(dir.path().join("key.pem")),
        ..ServerConfig::default()
    })
    .await;
    let mut inside = common::tls_text_client(srv.addr, &ca, "localhost")
        .await
        .expect("first client admitted");
    // The refusal comes after the handshake, so the client can read it.
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let tls = common::tls_connector(&ca).connect(name, tcp).await.unwrap();
    let mut refused = Client::over(Box::new(tls));
    assert_eq!(
        refused.line().await,
        "* error: the server is full (1 clients); try again later"
    );
    assert!(refused.try_line().await.is_none());
    inside.expect_nothing_pending().await;
    srv.stop().await;

    let srv = TestServer::with(ServerConfig {
        max_clients: 1,
        ..ServerConfig::default()
    })
    .await;
    let _inside = srv.client().await;
    match json_first(srv.addr).await {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::ServerFull),
        other => panic!("{other:?}"),
    }
    srv.stop().await;
}

fn flood(rate: u32, burst: u32, kick: u32) -> ServerConfig {
    ServerConfig {
        flood_rate: rate,
        flood_burst: burst,
        flood_kick_refusals: kick,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn a_wave_of_connections_is_taken_in_at_the_accept_rate_and_nobody_is_refused() {
    let srv = TestServer::with(ServerConfig {
        accept_rate: 20,
        accept_burst: 5,
        ..ServerConfig::default()
    })
    .await;
    let mut chatter = srv.client().await;
    let started = Instant::now();
    // Fifteen at once: the first five (less the chatter's slot) come in
    // at once, the other ten at 20 a second: not before 0.45 s.
    let wave: Vec<_> = (0..15).map(|_| Client::connect(srv.addr)).collect();
    let mut wave = futures::future::join_all(wave).await;
    for c in &mut wave {
        let first = c.line().await;
        assert!(first.starts_with("* welcome to rchat"), "{first:?}");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "{took:?}");
    // The one already in kept its place and its voice meanwhile.
    // Every one of the wave was let in, none refused: the chatter's room
    // holds them all.
    chatter.send("/who").await;
    let who = chatter
        .wait_for("the member list", |l| l.starts_with("* lobby ("))
        .await;
    assert!(who.starts_with("* lobby (16): "), "{who}");
    srv.stop().await;
}

#[tokio::test]
async fn a_paste_within_the_burst_goes_through_and_the_rest_is_refused_in_order() {
    let srv = TestServer::with(flood(1, 5, 0)).await;
    let mut sender = srv.client().await;
    let mut listener = srv.client().await;
    sender
        .expect(&format!("* {} joined lobby", listener.nick))
        .await;
    // One write: a paste of seven lines; the burst is five.
    let paste: String = (1..=7).map(|i| format!("line {i}\n")).collect();
    sender.send_raw(paste.as_bytes()).await;
    for i in 1..=5 {
        listener.expect(&format!("{}> line {i}", sender.nick)).await;
    }
    for _ in 0..2 {
        let refusal = sender.line().await;
        assert!(
            refusal.starts_with("* error: flood control: you are sending too fast")
                && refusal.contains("retry in"),
            "{refusal}"
        );
    }
    // Nothing of the refused lines reached anyone: they were refused (and
    // the refusals read above) before the listener's marker is handled.
    listener.expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test]
async fn a_flooder_is_disconnected_and_its_room_sees_an_ordinary_leave() {
    let srv = TestServer::with(flood(1, 2, 5)).await;
    let mut flooder = srv.client().await;
    let mut other = srv.client().await;
    flooder
        .expect(&format!("* {} joined lobby", other.nick))
        .await;
    let lines: String = (0..20).map(|i| format!("spam {i}\n")).collect();
    flooder.send_raw(lines.as_bytes()).await;
    let seen = flooder.until_eof().await;
    assert!(
        seen.iter()
            .any(|l| l == "* error: excess flood: too many lines refused; disconnected"),
        "{seen:?}"
    );
    other.expect(&format!("{}> spam 0", flooder.nick)).await;
    other.expect(&format!("{}> spam 1", flooder.nick)).await;
    other
        .expect(&format!(
            "* {} was disconnected (excess flood)",
            flooder.nick
        ))
        .await;
    srv.wait_members(1).await;
    srv.stop().await;
}

#[tokio::test]
async fn json_requests_over_the_limit_get_rate_limited_with_their_id_and_when_to_retry() {
    let srv = TestServer::with(flood(2, 1, 0)).await;
    let mut c = Client::connect(srv.addr).await;
    c.send(HELLO).await;
    c.wait_for("room state", |l| l.contains("\"room_state\""))
        .await;
    c.send(r#"{"type":"say","id":"a","room":"lobby","text":"one"}"#)
        .await;
    c.send(r#"{"type":"say","id":"b","room":"lobby","text":"two"}"#)
        .await;
    let mut acked = false;
    let mut limited = None;
    while !(acked && limited.is_some()) {
        match json::decode_server(c.line().await.as_bytes()).unwrap() {
            ServerMsg::Ack { id, .. } if id == "a" => acked = true,
            ServerMsg::Error {
                id,
                code: ErrorCode::RateLimited,
                retry_after_ms,
                ..
            } => limited = Some((id, retry_after_ms)),
            _ => {}
        }
    }
    let (id, retry) = limited.unwrap();
    assert_eq!(id.as_deref(), Some("b"));
    let retry = retry.expect("retry_after_ms");
    assert!((1..=500).contains(&retry), "{retry}");
    // Waiting as told is enough.
    tokio::time::sleep(Duration::from_millis(retry)).await;
    c.send(r#"{"type":"say","id":"c","room":"lobby","text":"three"}"#)
        .await;
    c.wait_for("ack of c", |l| l.contains("\"ack\"") && l.contains("\"c\""))
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn a_connection_that_does_not_register_in_time_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    let srv = TestServer::with(ServerConfig {
        tls_cert: Some(dir.path().join("cert.pem")),
        tls_key: Some(dir.path().join("key.pem")),
        handshake_timeout_secs: 60,
        register_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    let started = Instant::now();
    let mut silent = TcpStream::connect(srv.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(DEADLINE, silent.read(&mut buf))
        .await
        .expect("closed before the deadline")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a word");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_silent_text_connection_is_closed_after_the_idle_timeout() {
    let srv = TestServer::with(ServerConfig {
        idle_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut idle = srv.client().await;
    let mut other = srv.client().await;
    idle.expect(&format!("* {} joined lobby", other.nick)).await;
    // Input keeps `other` alive past the timeout while it waits.
    let leave = format!("* {} was disconnected (idle timeout)", idle.nick);
    let started = Instant::now();
    let mut polls = 0;
    loop {
        other.send("/rooms").await;
        let l = other.line().await;
        if l == leave {
            break;
        }
        assert!(l.starts_with("* rooms: "), "{l}");
        polls += 1;
        assert!(polls < 50, "no leave seen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(800));
    let rest = idle.until_eof().await;
    assert_eq!(
        rest,
        ["* error: no input for 1 s; disconnected (idle timeout)"]
    );
    assert_eq!(srv.hub.member_count(), 1);
    srv.stop().await;
}

/// The kernel's timers on the server's end of connections to `port`, as
/// `ss` shows them (`keepalive` when TCP keepalive is on).
fn server_socket_timers(port: u16) -> String {
    let out = std::process::Command::new("ss")
        .args(["-tnoH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2) is installed; .ci/run installs it");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn tcp_keepalive_is_on_for_text_connections_and_can_be_turned_off() {
    for (secs, want) in [(60, true), (0, false)] {
        let srv = TestServer::with(ServerConfig {
            tcp_keepalive_secs: secs,
            ..ServerConfig::default()
        })
        .await;
        let _client = srv.client().await;
        let timers = server_socket_timers(srv.addr.port());
        assert!(!timers.trim().is_empty(), "no server socket listed");
        assert_eq!(timers.contains("keepalive"), want, "{secs}: {timers}");
        srv.stop().await;
    }
}

/// Bytes of ~1 KB chat lines alice sends to a room with a reader that
/// never reads, until bob (who reads everything) sees it evicted.
async fn bytes_until_evicted(socket_send_buffer: usize) -> usize {
    let srv = TestServer::with(ServerConfig {
        max_sendq: 64 * 1024,
        socket_send_buffer,
        flood_rate: 0,
        max_per_ip: 0,
        ..ServerConfig::default()
    })
    .await;
    let mut alice = srv.named("alice").await;
    let mut bob = srv.named("bob").await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = Client::over(Box::new(sock.connect(srv.addr).await.unwrap()));
    slow.greeted().await;
    let notice = format!(
        "* {} was disconnected (send queue full: client too slow)",
        slow.nick
    );
    let pad = "x".repeat(1000);
    let mut sent = 0;
    // Bounded: 8 MiB, past any kernel's autotuned buffer.
    for i in 0..8192 {
        let line = format!("{i} {pad}");
        alice.send(&line).await;
        sent += line.len() + 1;
        // Bob reads up to alice's line: lock-step, so only the slow reader
        // falls behind.
        loop {
            let l = bob.line().await;
            if l == notice {
                srv.stop().await;
                return sent;
            }
            if l == format!("alice> {line}") {
                break;
            }
        }
    }
    panic!("never evicted after {sent} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_is_evicted_once_its_queue_and_a_bounded_socket_buffer_fill() {
    // 64 KiB of queue, 32 KiB of send buffer (the kernel doubles it), 4 KiB
    // of receive buffer (doubled too), plus what is in flight: well under
    // 256 KiB. Left to the kernel's autotuning (`socket_send_buffer = 0`),
    // the same client holds several MiB on a stock Linux (tcp_wmem's
    // maximum is 4 MiB) before the queue even starts to fill.
    let bounded = bytes_until_evicted(32 * 1024).await;
    assert!(bounded < 256 * 1024, "evicted only after {bounded} bytes");
}

/// A history page costs a token per 50 messages: `/history 500` is ten
/// lines' worth, so a client cannot have the server read and send
/// thousands of messages a second for a few short lines.
#[tokio::test]
async fn big_history_pages_cost_more_of_the_flood_budget_in_both_protocols() {
    // Rate 1 per second: nothing refills noticeably during the test.
    let srv = TestServer::with(ServerConfig {
        history: rchat::config::HistoryMode::Memory,
        ..flood(1, 20, 0)
    })
    .await;
    let mut text = srv.client().await;
    // Twenty tokens: two pages of 500 (ten each) pass, a third is refused.
    text.send_raw(b"/history 500\n/history 500\n/history 500\n")
        .await;
    for _ in 0..2 {
        text.expect("* no history in lobby yet").await;
    }
    let refusal = text.line().await;
    assert!(
        refusal.starts_with("* error: flood control: you are sending too fast"),
        "{refusal}"
    );
    // The default page of 20 costs one token, like any line.
    let mut cheap = srv.client().await;
    let pages: String = (0..20).map(|_| "/history\n").collect();
    cheap.send_raw(pages.as_bytes()).await;
    for _ in 0..20 {
        cheap.expect("* no history in lobby yet").await;
    }

    let mut json = Client::connect(srv.addr).await;
    json.send(HELLO).await;
    json.wait_for("the room", |l| l.contains("\"room_state\""))
        .await;
    let page = |id: &str| format!(r#"{{"type":"history","id":"{id}","room":"lobby","limit":500}}"#);
    json.send(&page("h1")).await;
    json.send(&page("h2")).await;
    json.send(&page("h3")).await;
    let mut answers = Vec::new();
    while answers.len() < 3 {
        let line = json.line().await;
        match json::decode_server(line.as_bytes()).expect("JSON") {
            ServerMsg::History { id: Some(id), .. } => answers.push(format!("ok {id}")),
            ServerMsg::Error {
                id: Some(id),
                code: ErrorCode::RateLimited,
                retry_after_ms: Some(_),
                ..
            } => answers.push(format!("refused {id}")),
            _ => {}
        }
    }
    // Pages are answered when read; the refusal at once.
    answers.sort();
    assert_eq!(answers, ["ok h1", "ok h2", "refused h3"]);
    srv.stop().await;
}

#[tokio::test]
async fn a_wave_of_quits_is_taken_out_at_the_leave_rate_each_with_its_goodbye() {
    let srv = TestServer::with(ServerConfig {
        leave_rate: 10,
        leave_burst: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut watcher = srv.client().await;
    let mut wave = Vec::new();
    for _ in 0..6 {
        let c = srv.client().await;
        watcher.expect(&format!("* {} joined lobby", c.nick)).await;
        wave.push(c);
    }
    let started = Instant::now();
    futures::future::join_all(wave.iter_mut().map(|c| c.send("/quit"))).await;
    // The room hears of them one at a time: one at once, then one every
    // 100 ms, so the sixth not before half a second.
    let mut heard = Vec::new();
    for _ in 0..6 {
        watcher
            .wait_for("a quit", |l| {
                l.starts_with("* guest") && l.ends_with(" quit")
            })
            .await;
        heard.push(started.elapsed());
    }
    assert!(heard[0] < Duration::from_millis(300), "{heard:?}");
    assert!(heard[5] >= Duration::from_millis(450), "{heard:?}");
    // Each was told goodbye in its turn, then closed.
    for c in &mut wave {
        let rest = c.until_eof().await;
        assert_eq!(
            rest.last().map(String::as_str),
            Some("* goodbye"),
            "{rest:?}"
        );
    }
    srv.stop().await;
}

#[tokio::test]
async fn a_shutdown_does_not_wait_for_the_pace_of_leaves() {
    let srv = TestServer::with(ServerConfig {
        leave_rate: 1,
        leave_burst: 1,
        ..ServerConfig::default()
    })
    .await;
    let mut watcher = srv.client().await;
    let mut wave = Vec::new();
    for _ in 0..5 {
        let c = srv.client().await;
        watcher.expect(&format!("* {} joined lobby", c.nick)).await;
        wave.push(c);
    }
    // At one a second, the last of these would be taken out after 4 s.
    for c in &mut wave {
        c.send("/quit").await;
    }
    // The second goes a second after the first: by then every quit has
    // long been read, and three are waiting for their turn.
    for _ in 0..2 {
        watcher
            .wait_for("a quit", |l| {
                l.starts_with("* guest") && l.ends_with(" quit")
            })
            .await;
    }
    let started = Instant::now();
    srv.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "{took:?}");
}
