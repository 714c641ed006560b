//! TLS: chat over a certificate made by `rchat gen-cert`, verified by the
//! client; plaintext and stalled handshakes on the TLS port hurt no one.

mod common;

use std::path::Path;
use std::time::Duration;

use common::served::gen_cert;
use common::{Client, TestServer, DEADLINE};
use rchat::config::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn tls_server(dir: &Path, handshake_timeout_secs: u64) -> TestServer {
    TestServer::with(ServerConfig {
        tls_cert: Some(dir.join("cert.pem")),
        tls_key: Some(dir.join("key.pem")),
        handshake_timeout_secs,
        ..ServerConfig::default()
    })
    .await
}

async fn tls_client(srv: &TestServer, ca: &Path, name: &str) -> std::io::Result<Client> {
    common::tls_text_client(srv.addr, ca, name).await
}

#[tokio::test]
async fn chat_over_verified_tls() {
    let dir = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    let ca = dir.path().join("cert.pem");
    let srv = tls_server(dir.path(), 10).await;
    let mut a = tls_client(&srv, &ca, "localhost")
        .await
        .expect("verified by name");
    let mut b = tls_client(&srv, &ca, "127.0.0.1")
        .await
        .expect("verified by IP");
    a.expect(&format!("* {} joined lobby", b.nick)).await;
    b.send("secret hello").await;
    a.expect(&format!("{}> secret hello", b.nick)).await;
    srv.stop().await;
}

#[tokio::test]
async fn client_rejects_a_certificate_it_does_not_trust() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    gen_cert(other.path());
    let srv = tls_server(dir.path(), 10).await;
    let wrong_ca = other.path().join("cert.pem");
    let err = tls_client(&srv, &wrong_ca, "localhost").await.err();
    assert!(
        err.is_some(),
        "an untrusted certificate must fail verification"
    );
    let right_ca = dir.path().join("cert.pem");
    let err = tls_client(&srv, &right_ca, "example.org").await.err();
    assert!(err.is_some(), "a name the certificate lacks must fail");
    srv.stop().await;
}

#[tokio::test]
async fn plaintext_and_stalled_handshakes_hurt_no_one() {
    let dir = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    let ca = dir.path().join("cert.pem");
    let srv = tls_server(dir.path(), 1).await;
    let mut a = tls_client(&srv, &ca, "localhost").await.unwrap();

    // Someone types plaintext at the TLS port: they are cut off.
    let mut plain = TcpStream::connect(srv.addr).await.unwrap();
    plain.write_all(b"hello is this chat?\n").await.unwrap();
    let mut junk = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut junk)).await;
    assert!(closed.is_ok(), "plaintext client was not disconnected");
    assert!(!String::from_utf8_lossy(&junk).contains("welcome"));

    // Someone connects and says nothing: the handshake times out, and in the
    // meantime others connect and chat.
    let mut stalled = TcpStream::connect(srv.addr).await.unwrap();
    let mut b = tls_client(&srv, &ca, "localhost").await.unwrap();
    a.expect(&format!("* {} joined lobby", b.nick)).await;
    b.send("not blocked").await;
    a.expect(&format!("{}> not blocked", b.nick)).await;
    let started = tokio::time::Instant::now();
    let n = tokio::time::timeout(DEADLINE, stalled.read(&mut [0u8; 64]))
        .await
        .expect("stalled handshake was never timed out");
    assert!(matches!(n, Ok(0) | Err(_)), "stalled client got data");
    assert!(started.elapsed() < Duration::from_secs(10));
    srv.stop().await;
}
