//! Chat behaviour over real sockets: broadcast, rooms, every command and its
//! errors, framing limits, sanitising, disconnects.

mod common;

use common::{Client, TestServer};
use rchat::config::ServerConfig;

#[tokio::test]
async fn broadcast_reaches_everyone_else_without_echo() {
    let srv = TestServer::start().await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(srv.client().await);
    }
    // Drain join notices so each client's next line is chat.
    for i in 0..clients.len() {
        for j in (i + 1)..clients.len() {
            let nick = clients[j].nick.clone();
            clients[i].expect(&format!("* {nick} joined lobby")).await;
        }
    }
    clients[0].send("hello everyone").await;
    let from = clients[0].nick.clone();
    for c in clients.iter_mut().skip(1) {
        c.expect(&format!("{from}> hello everyone")).await;
    }
    clients[0].expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test]
async fn rooms_are_isolated() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    let mut c = srv.named("carol").await;
    c.send("/join dev").await;
    c.expect("* you are now in dev (just you); /who lists them")
        .await;
    b.wait_for("carol's part", |l| l == "* carol left lobby")
        .await;
    a.wait_for("carol's part", |l| l == "* carol left lobby")
        .await;

    a.send("lobby only").await;
    b.expect("alice> lobby only").await;
    c.expect_nothing_pending().await;

    c.send("dev only").await;
    b.expect_nothing_pending().await;
    a.expect_nothing_pending().await;

    b.send("/join #DEV").await;
    b.expect("* you are now in dev (2 members); /who lists them")
        .await;
    c.expect("* bob joined dev").await;
    b.send("hi carol").await;
    c.expect("bob> hi carol").await;
    a.expect("* bob left lobby").await;
    a.expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test]
async fn nick_command_and_errors() {
    let srv = TestServer::start().await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    let old = a.nick.clone();
    a.expect(&format!("* {} joined lobby", b.nick)).await;

    a.send("/nick Alice").await;
    a.expect(&format!("* {old} is now known as Alice")).await;
    b.expect(&format!("* {old} is now known as Alice")).await;

    b.send("/nick alice").await;
    b.expect("* error: the nick alice is already in use; pick another")
        .await;
    b.send("/nick server").await;
    b.expect("* error: invalid name: the name 'server' is reserved")
        .await;
    b.send("/nick bad!name").await;
    b.expect("* error: invalid name: a name may contain only letters, digits, '_' and '-'")
        .await;
    b.send(&format!("/nick {}", "x".repeat(33))).await;
    b.expect("* error: invalid name: a name is at most 32 characters")
        .await;
    b.send("/nick").await;
    b.expect("* error: usage: /nick NAME").await;
    // Case change of one's own nick is fine.
    a.send("/nick ALICE").await;
    a.expect("* Alice is now known as ALICE").await;
    b.expect("* Alice is now known as ALICE").await;
    srv.stop().await;
}

#[tokio::test]
async fn join_rooms_and_who() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.wait_for("bob", |l| l == "* guest2 is now known as bob")
        .await;
    a.send("/join lobby").await;
    a.expect("* error: you are already in lobby").await;
    a.send("/join no good").await;
    a.expect("* error: usage: /join ROOM").await;
    a.send("/join bad.room").await;
    a.expect("* error: invalid name: a name may contain only letters, digits, '_' and '-'")
        .await;
    a.send("/who").await;
    a.expect("* lobby (2): alice, bob").await;
    a.send("/part").await;
    a.expect("* error: here you are always in exactly one room; /join another to leave this one")
        .await;
    b.send("/join rust").await;
    b.expect("* you are now in rust (just you); /who lists them")
        .await;
    a.expect("* bob left lobby").await;
    a.send("/rooms").await;
    a.expect("* rooms: lobby (1), rust (1)").await;
    b.send("/who").await;
    b.expect("* rust (1): bob").await;
    srv.stop().await;
}

#[tokio::test]
async fn private_messages_reach_only_their_target() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    let mut c = srv.named("carol").await;
    a.send("/msg BOB the password is swordfish").await;
    b.wait_for("private", |l| l.starts_with("[private]")).await;
    c.expect_nothing_pending().await;
    a.send("/msg nobody hi").await;
    a.wait_for("error", |l| l.starts_with("* error:")).await;
    a.send("/msg nobody hi").await;
    a.expect("* error: no one called nobody is connected").await;
    a.send("/msg bob").await;
    a.expect("* error: usage: /msg NICK TEXT").await;
    // Works across rooms too.
    c.send("/join elsewhere").await;
    c.wait_for("join", |l| l.starts_with("* you are now in elsewhere"))
        .await;
    b.send("/msg carol psst").await;
    c.expect("[private] bob> psst").await;
    srv.stop().await;
}

#[tokio::test]
async fn private_message_text_is_exact() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.send("/msg bob the password is swordfish").await;
    b.expect("[private] alice> the password is swordfish").await;
    a.expect_suffix("is now known as bob").await;
    a.expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test]
async fn me_help_unknown_and_slash_escape() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.send("/me waves").await;
    b.expect("* alice waves").await;
    a.send("/me").await;
    a.wait_for("usage", |l| l == "* error: usage: /me ACTION")
        .await;
    a.send("//etc/motd is a file").await;
    b.expect("alice> /etc/motd is a file").await;
    a.send("/frobnicate now").await;
    a.expect("* error: unknown command /frobnicate; /help lists commands")
        .await;
    a.send("/help").await;
    let first = a.line().await;
    assert_eq!(first, "* commands:");
    let mut help = vec![first];
    loop {
        let l = a.line().await;
        assert!(l.starts_with("* "), "{l:?}");
        let last = l.starts_with("* anything else");
        help.push(l);
        if last {
            break;
        }
    }
    for cmd in [
        "/nick", "/join", "/rooms", "/who", "/msg", "/me", "/quit", "//",
    ] {
        assert!(help.iter().any(|l| l.contains(cmd)), "help mentions {cmd}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn quit_with_reason_and_classic_bang_quit() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    let mut c = srv.named("carol").await;
    b.send("/quit see you tomorrow").await;
    assert_eq!(
        b.until_eof().await.last().map(String::as_str),
        Some("* goodbye")
    );
    a.wait_for("bob's quit", |l| l == "* bob quit (see you tomorrow)")
        .await;
    c.send("!quit").await;
    assert_eq!(
        c.until_eof().await.last().map(String::as_str),
        Some("* goodbye")
    );
    a.expect("* carol quit").await;
    // The nick is free again.
    let mut d = srv.client().await;
    d.send("/nick bob").await;
    d.expect_suffix("is now known as bob").await;
    srv.stop().await;
}

#[tokio::test]
async fn oversize_line_is_rejected_and_connection_survives() {
    let srv = TestServer::with(ServerConfig {
        max_line: 100,
        ..ServerConfig::default()
    })
    .await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    let mut big = vec![b'x'; 5000];
    big.extend_from_slice(b"\nstill here\n");
    a.send_raw(&big).await;
    a.expect_suffix("is now known as bob").await;
    a.expect("* error: line too long (the limit is 100 bytes); it was not sent")
        .await;
    b.expect("alice> still here").await;
    // Exactly at the limit is accepted.
    a.send(&"y".repeat(100)).await;
    b.expect(&format!("alice> {}", "y".repeat(100))).await;
    srv.stop().await;
}

#[tokio::test]
async fn invalid_utf8_is_replaced_not_fatal() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.send_raw(b"caf\xc3 \xff\xfe ok\n").await;
    b.expect("alice> caf\u{fffd} \u{fffd}\u{fffd} ok").await;
    a.send("still connected").await;
    b.expect("alice> still connected").await;
    srv.stop().await;
}

#[tokio::test]
async fn control_characters_never_reach_others() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.send_raw(b"\x1b[2J\x1b[Hred \x1b[31malert\x1b[0m\x07\x08 title\x1b]0;owned\x07 end\r\n")
        .await;
    b.expect("alice> red alert title end").await;
    a.send_raw("c1\u{9b}31m bidi\u{202e}txt tab\tok\n".as_bytes())
        .await;
    b.expect("alice> c131m biditxt tab\tok").await;
    // A line that is nothing but escapes sends nothing.
    a.send_raw(b"\x1b[2J\n").await;
    a.send("after").await;
    b.expect("alice> after").await;
    srv.stop().await;
}

#[tokio::test]
async fn unterminated_line_at_eof_is_delivered_then_leave() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    b.send_raw(b"half a line").await;
    b.io_shutdown().await;
    a.wait_for("bob's line", |l| l == "bob> half a line").await;
    a.expect("* bob was disconnected (connection closed)").await;
    srv.wait_members(1).await;
    srv.stop().await;
}

#[tokio::test]
async fn reset_connection_becomes_leave_event() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = Client::connect_resetting(srv.addr).await;
    b.greeted().await;
    b.send("/nick bob").await;
    a.wait_for("bob", |l| l == "* guest2 is now known as bob")
        .await;
    drop(b);
    let l = a.line().await;
    assert!(
        l == "* bob was disconnected (connection reset)"
            || l == "* bob was disconnected (connection closed)",
        "{l:?}"
    );
    srv.wait_members(1).await;
    srv.stop().await;
}

#[tokio::test]
async fn ipv6_loopback_works() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipping");
        return;
    };
    drop(probe);
    let srv = TestServer::with(ServerConfig {
        listen: vec!["[::1]:0".parse().unwrap()],
        ..ServerConfig::default()
    })
    .await;
    assert!(srv.addr.is_ipv6());
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    b.send("over v6").await;
    a.wait_for("message", |l| l == "bob> over v6").await;
    srv.stop().await;
}

#[tokio::test]
async fn server_full_is_refused_with_a_reason() {
    let srv = TestServer::with(ServerConfig {
        max_clients: 2,
        ..ServerConfig::default()
    })
    .await;
    let _a = srv.client().await;
    let mut b = srv.client().await;
    let mut c = Client::connect(srv.addr).await;
    assert_eq!(
        c.until_eof().await,
        vec!["* error: the server is full (2 clients); try again later"]
    );
    b.send("/quit").await;
    b.until_eof().await;
    srv.wait_members(1).await;
    // A slot is free again; admission is released when the task ends, so
    // retry briefly until it is.
    let mut admitted = false;
    for _ in 0..100 {
        let mut d = Client::connect(srv.addr).await;
        let first = d.line().await;
        if first.starts_with("* welcome") {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(admitted, "a freed slot admits a new client");
    srv.stop().await;
}

#[tokio::test]
async fn lines_and_commands_in_one_write_keep_their_order() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.expect_suffix(" is now known as bob").await;
    // One write: the server reads these lines together and batches the
    // chat between commands, which must still take effect in order.
    a.send_raw(b"one\n/nick ann\ntwo\nthree\n/join dev\nfour\n")
        .await;
    b.expect("alice> one").await;
    b.expect("* alice is now known as ann").await;
    b.expect("ann> two").await;
    b.expect("ann> three").await;
    b.expect("* ann left lobby").await;
    a.expect("* alice is now known as ann").await;
    a.expect("* you are now in dev (just you); /who lists them")
        .await;
    b.expect_nothing_pending().await;
    a.expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test]
async fn a_burst_of_lines_arrives_whole_and_in_order() {
    let srv = TestServer::start().await;
    let mut a = srv.named("alice").await;
    let mut b = srv.named("bob").await;
    a.expect_suffix(" is now known as bob").await;
    let burst: String = (0..500).map(|i| format!("line {i}\n")).collect();
    a.send_raw(burst.as_bytes()).await;
    for i in 0..500 {
        b.expect(&format!("alice> line {i}")).await;
    }
    b.expect_nothing_pending().await;
    srv.stop().await;
}
