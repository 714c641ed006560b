//! Operators, end to end: the token, kick, ban by nick, address and block
//! with expiry, unban, bans that survive a restart, refusals for everyone
//! else, and no token in the log.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::served::Logged;
use common::{Client, TestServer, DEADLINE};
use rchat::config::{HistoryMode, ServerConfig};
use rchat::proto::json::{self, ErrorCode, ServerMsg};
use tokio::net::TcpSocket;

const TOKEN: &str = "op-token-5d1c9e";

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("admin-token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        admin_token_file: Some(token_file(dir)),
        ..ServerConfig::default()
    }
}

/// A connection from `src`, one of the many loopback addresses, so that
/// bans can tell clients apart.
async fn connect_from(addr: SocketAddr, src: &str) -> Client {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.expect("connect");
    Client::over(Box::new(stream))
}

async fn member_from(addr: SocketAddr, src: &str) -> Client {
    let mut c = connect_from(addr, src).await;
    c.greeted().await;
    c
}

async fn operator(srv: &TestServer) -> Client {
    let mut op = member_from(srv.addr, "127.0.0.1").await;
    op.send(&format!("/oper {TOKEN}")).await;
    op.expect("* you are now an operator; /help lists what you can do")
        .await;
    op
}

#[tokio::test]
async fn everyone_else_is_refused_and_three_wrong_tokens_close() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::with(config(dir.path())).await;
    let mut a = srv.client().await;
    let mut b = srv.client().await;
    a.expect(&format!("* {} joined lobby", b.nick)).await;
    for cmd in ["/kick x", "/ban 10.0.0.1", "/unban 10.0.0.1", "/bans"] {
        a.send(cmd).await;
        a.expect("* error: not an operator").await;
    }
    let mut j = Client::connect(srv.addr).await;
    j.send(r#"{"type":"hello","proto":"rchat","version":1}"#)
        .await;
    j.wait_for("room state", |l| l.contains("room_state")).await;
    j.send(r#"{"type":"kick","id":"k1","nick":"x"}"#).await;
    let err = j.wait_for("error", |l| l.contains("\"error\"")).await;
    match json::decode_server(err.as_bytes()).unwrap() {
        ServerMsg::Error { id, code, .. } => {
            assert_eq!(code, ErrorCode::NotOperator);
            assert_eq!(id.as_deref(), Some("k1"));
        }
        other => panic!("{other:?}"),
    }

    a.send("/oper guess").await;
    a.wait_for("1 of 3", |l| {
        l == "* error: wrong operator token (attempt 1 of 3)"
    })
    .await;
    a.send("/oper guess2").await;
    a.expect("* error: wrong operator token (attempt 2 of 3)")
        .await;
    a.send("/oper guess3").await;
    assert_eq!(
        a.until_eof().await,
        ["* error: wrong operator token; disconnected"]
    );
    b.wait_for("the leave", |l| {
        l == format!(
            "* {} was disconnected (too many wrong operator tokens)",
            a.nick
        )
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn an_operator_kicks_with_a_reason_everyone_sees() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::with(config(dir.path())).await;
    let mut op = operator(&srv).await;
    let mut bob = srv.named("bob").await;
    let mut carol = srv.named("carol").await;
    op.send("/kick bob flooding the room").await;
    let seen = bob.until_eof().await;
    assert_eq!(
        seen.last(),
        Some(&format!(
            "* you were kicked by {}: flooding the room",
            op.nick
        )),
        "{seen:?}"
    );
    carol
        .wait_for("the kick", |l| {
            l == format!("* bob was kicked by {}: flooding the room", op.nick)
        })
        .await;
    op.wait_for("confirmation", |l| l == "* bob was kicked")
        .await;
    op.send("/kick nobody").await;
    op.wait_for("error", |l| l.starts_with("* error: no one called nobody"))
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn bans_by_nick_and_by_block_expire_or_are_lifted() {
    let dir = tempfile::tempdir().unwrap();
    let srv = TestServer::with(config(dir.path())).await;
    let mut op = operator(&srv).await;
    let mut bob = member_from(srv.addr, "127.0.0.2").await;
    bob.send("/nick bob").await;
    op.wait_for("bob", |l| l.ends_with("is now known as bob"))
        .await;

    // By nick, for a second: bob's address is banned and bob kicked.
    op.send("/ban bob 1s spamming").await;
    let seen = bob.until_eof().await;
    assert!(
        seen.iter().any(|l| l.starts_with(&format!(
            "* you were kicked by {}: banned: spamming (until ",
            op.nick
        ))),
        "{seen:?}"
    );
    op.wait_for("confirmation", |l| {
        l.starts_with("* 127.0.0.2 banned: spamming (until ") && l.ends_with("kicked: bob")
    })
    .await;
    let mut refused = connect_from(srv.addr, "127.0.0.2").await;
    let line = refused.line().await;
    assert!(
        line.starts_with("* error: banned: spamming (until ") && line.ends_with(" UTC)"),
        "{line}"
    );
    assert!(refused.try_line().await.is_none());
    // Others are not affected by a ban on someone else's address.
    let _other = member_from(srv.addr, "127.0.0.3").await;
    // It expires.
    let started = Instant::now();
    loop {
        let mut c = connect_from(srv.addr, "127.0.0.2").await;
        if c.line().await.contains("/help") {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the ban never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A block, until unbanned; listed; lifted.
    op.send("/ban 127.0.0.8/29").await;
    op.wait_for("confirmation", |l| {
        l.starts_with("* 127.0.0.8/29 banned (until unbanned)")
    })
    .await;
    let mut refused = connect_from(srv.addr, "127.0.0.9").await;
    assert_eq!(refused.line().await, "* error: banned (until unbanned)");
    op.send("/bans").await;
    let me = op.nick.clone();
    op.wait_for("the list", |l| {
        l == format!("* ban: 127.0.0.8/29 by {me} until unbanned")
    })
    .await;
    op.send("/unban 127.0.0.8/29").await;
    op.wait_for("unbanned", |l| l == "* 127.0.0.8/29 is no longer banned")
        .await;
    let mut back = connect_from(srv.addr, "127.0.0.9").await;
    assert!(back.line().await.contains("/help"));
    op.send("/bans").await;
    op.wait_for("empty list", |l| l == "* no bans").await;
    // The operator's own address is never kicked by its own ban.
    op.send("/ban 127.0.0.1 oops").await;
    op.wait_for("confirmation", |l| {
        l.contains("no one was connected from there")
    })
    .await;
    op.send("/unban 127.0.0.1").await;
    op.wait_for("unbanned", |l| l == "* 127.0.0.1 is no longer banned")
        .await;
    srv.stop().await;
}

#[tokio::test]
async fn a_ban_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let with_data = || ServerConfig {
        history: HistoryMode::Sqlite,
        data_dir: Some(data.path().to_owned()),
        ..config(dir.path())
    };
    let srv = TestServer::with(with_data()).await;
    let mut op = operator(&srv).await;
    op.send("/ban 127.0.0.5 come back tomorrow").await;
    op.wait_for("confirmation", |l| l.starts_with("* 127.0.0.5 banned"))
        .await;
    drop(op);
    srv.stop().await;

    let srv = TestServer::with(with_data()).await;
    let mut refused = connect_from(srv.addr, "127.0.0.5").await;
    assert_eq!(
        refused.line().await,
        "* error: banned: come back tomorrow (until unbanned)"
    );
    let _ok = member_from(srv.addr, "127.0.0.6").await;
    srv.stop().await;
}

#[tokio::test]
async fn the_token_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = token_file(dir.path());
    let server = Logged::start(&["--admin-token-file".as_ref(), file.as_os_str()]);
    let wrong = "not-the-token-81b2";
    let mut c = Client::connect(server.addr).await;
    c.greeted().await;
    c.send(&format!("/oper {wrong}")).await;
    c.line().await;
    c.send(&format!("/oper {TOKEN}")).await;
    c.expect("* you are now an operator; /help lists what you can do")
        .await;
    server.wait_for("operator logged in").await;
    drop(c);
    let log = server.stop();
    assert!(
        log.contains("wrong operator token"),
        "the failure is logged"
    );
    for secret in [TOKEN, wrong] {
        assert!(!log.contains(secret), "{secret:?} in the log");
    }
}
