//! The server password, end to end: strangers see nothing and are seen by
//! no one, three wrong tries close, the right one chats, a password never
//! crosses a network in clear text unless allowed, and nothing secret
//! reaches the log even at trace level.

mod common;

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::served::{listening_addr, Logged};
use common::{Client, TestServer};
use rchat::config::ServerConfig;
use rchat::proto::json::{self, ErrorCode, ServerMsg};

const PASSWORD: &str = "correct horse battery";
const PROMPT: &str = "* this server needs a password: /pass PASSWORD";

/// Writes `text` to a file only its owner can read.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

async fn server(dir: &Path) -> TestServer {
    TestServer::with(ServerConfig {
        password_file: Some(secret_file(dir, "password", PASSWORD)),
        ..ServerConfig::default()
    })
    .await
}

/// Connects, gives the right password and reads the greeting.
async fn member(srv: &TestServer) -> Client {
    let mut c = Client::connect(srv.addr).await;
    c.expect(PROMPT).await;
    c.send(&format!("/pass {PASSWORD}")).await;
    c.greeted().await;
    c
}

#[tokio::test]
async fn strangers_see_nothing_and_are_seen_by_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let mut a = Client::connect(srv.addr).await;
    let mut b = Client::connect(srv.addr).await;
    a.expect(PROMPT).await;
    b.expect(PROMPT).await;
    for line in ["hello from a", "/join lobby", "/nick alice", "/who"] {
        a.send(line).await;
        a.expect("* error: password required: /pass PASSWORD").await;
    }
    b.send("/rooms").await;
    b.expect("* error: password required: /pass PASSWORD").await;
    assert_eq!(srv.hub.member_count(), 0, "no stranger is a member");

    // A member sees nothing of them either.
    let mut m = member(&srv).await;
    m.expect_nothing_pending().await;
    a.send("anyone?").await;
    a.expect("* error: password required: /pass PASSWORD").await;
    m.expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test]
async fn three_wrong_passwords_close_and_the_right_one_chats() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let mut wrong = Client::connect(srv.addr).await;
    wrong.expect(PROMPT).await;
    wrong.send("/pass guess").await;
    wrong
        .expect("* error: wrong password (attempt 1 of 3)")
        .await;
    wrong.send("/pass hunter2").await;
    wrong
        .expect("* error: wrong password (attempt 2 of 3)")
        .await;
    wrong.send("/pass letmein").await;
    assert_eq!(
        wrong.until_eof().await,
        ["* error: wrong password; disconnected"]
    );

    let mut a = member(&srv).await;
    let mut b = member(&srv).await;
    a.expect(&format!("* {} joined lobby", b.nick)).await;
    b.send("we are in").await;
    a.expect(&format!("{}> we are in", b.nick)).await;
    srv.stop().await;
}

#[tokio::test]
async fn json_clients_give_the_password_in_the_hello() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path()).await;
    let hello = |password: Option<&str>| {
        let mut v = serde_json::json!({"type": "hello", "proto": "rchat", "version": 1});
        if let Some(p) = password {
            v["password"] = p.into();
        }
        v.to_string()
    };
    for (given, want) in [
        (None, "needs a password"),
        (Some("wrong"), "wrong password"),
    ] {
        let mut c = Client::connect(srv.addr).await;
        c.send(&hello(given)).await;
        match json::decode_server(c.line().await.as_bytes()).unwrap() {
            ServerMsg::Error { code, message, .. } => {
                assert_eq!(code, ErrorCode::AuthFailed);
                assert!(message.contains(want), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(c.try_line().await.is_none(), "closed after auth_failed");
    }
    let mut c = Client::connect(srv.addr).await;
    c.send(&hello(Some(PASSWORD))).await;
    let welcome = json::decode_server(c.line().await.as_bytes()).unwrap();
    assert!(matches!(welcome, ServerMsg::Welcome { .. }), "{welcome:?}");
    srv.stop().await;
}

#[test]
fn a_password_in_clear_text_on_a_network_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "password", PASSWORD);
    let out = Command::new(env!("CARGO_BIN_EXE_rchat"))
        .args(["serve", "--history", "off", "--listen", "0.0.0.0:0"])
        .arg("--password-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clear text") && err.contains("--allow-plaintext-password"),
        "{err}"
    );

    // With the override it starts (and says where it listens).
    let mut child = Command::new(env!("CARGO_BIN_EXE_rchat"))
        .args(["serve", "--history", "off", "--listen", "0.0.0.0:0"])
        .arg("--password-file")
        .arg(&file)
        .arg("--allow-plaintext-password")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let addr = listening_addr(&mut stderr);
    assert_eq!(addr.ip().to_string(), "0.0.0.0");
    let _ = child.kill();
    let _ = child.wait();

    // A file others can read is refused, and says how to fix it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rchat"))
            .args(["serve", "--history", "off", "--listen", "127.0.0.1:0"])
            .arg("--password-file")
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
    }
}

#[tokio::test]
async fn no_secret_reaches_the_log_even_at_trace_level() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "password", PASSWORD);
    let server = Logged::start(&["--password-file".as_ref(), file.as_os_str()]);
    let wrong = "wrong-guess-7f3a";
    let mut c = Client::connect(server.addr).await;
    c.expect(PROMPT).await;
    c.send(&format!("/pass {wrong}")).await;
    c.line().await;
    c.send(&format!("/pass {PASSWORD}")).await;
    c.greeted().await;
    let mut j = Client::connect(server.addr).await;
    j.send(&format!(
        r#"{{"type":"hello","proto":"rchat","version":1,"password":"{PASSWORD}"}}"#
    ))
    .await;
    j.line().await;
    // The failed attempt is logged, with the address only.
    server.wait_for("wrong password").await;
    drop(c);
    drop(j);
    server.wait_for("connection closed").await;
    let log = server.stop();
    assert!(log.contains("127.0.0.1"), "the peer's address is logged");
    for secret in [PASSWORD, "correct horse", wrong] {
        assert!(!log.contains(secret), "{secret:?} in the log");
    }
}

#[test]
fn the_client_sends_the_password_file_and_a_wrong_one_is_final() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let srv = rt.block_on(server(dir.path()));
    let right = secret_file(dir.path(), "right", PASSWORD);
    let wrong = secret_file(dir.path(), "wrong", "nope");
    let kh = dir.path().join("known_hosts");
    let addr = srv.addr.to_string();
    let run = |file: &Path, input: &str| {
        let file = file.to_str().unwrap();
        let started = Instant::now();
        let args = ["--plain", &addr, "--password-file", file];
        let out = common::rchat_connect(&args, input, &kh);
        (out, started.elapsed())
    };
    let (out, _) = run(&right, "/quit\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("* connected as guest"), "{stdout}");

    let (out, took) = run(&wrong, "");
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("did not accept the password"), "{all}");
    assert!(took < Duration::from_secs(10), "a retry loop? {took:?}");
    rt.block_on(srv.stop());
}
