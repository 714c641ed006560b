//! The README's quick start, TLS and line-mode examples, run as written
//! against a real server, so that the page a newcomer follows cannot drift
//! from what the program does.
//!
//! The blocks are read from README.md itself. Only what cannot be the same
//! in a test is changed: `rchat` is this build's binary, servers listen on
//! a free port, files go to a temporary directory, and clock times are
//! compared as `HH:MM`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Client, TestServer};
use rchat::config::{HistoryMode, ServerConfig};

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

/// The fenced blocks of language `lang` in the section under `heading`
/// (up to the next heading of the same level), in order.
fn blocks(readme: &str, heading: &str, lang: &str) -> Vec<Vec<String>> {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README has no {heading:?}"));
    let level = heading.split(' ').next().unwrap();
    let body = &readme[start + heading.len() + 2..];
    let end = body.find(&format!("\n{level} ")).unwrap_or(body.len());
    let mut out = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in body[..end].lines() {
        match &mut current {
            None if line == format!("```{lang}") => current = Some(Vec::new()),
            Some(_) if line == "```" => out.push(current.take().unwrap()),
            Some(lines) => lines.push(line.to_string()),
            None => {}
        }
    }
    out
}

/// `06:13 alice> hi` and `05:59 alice> hi` compare equal.
fn without_times(line: &str) -> String {
    let b = line.as_bytes();
    if b.len() >= 5
        && b[..2].iter().all(u8::is_ascii_digit)
        && b[2] == b':'
        && b[3..5].iter().all(u8::is_ascii_digit)
    {
        format!("HH:MM{}", &line[5..])
    } else {
        line.to_string()
    }
}

#[tokio::test]
async fn the_quick_start_transcript_is_what_nc_shows() {
    let readme = readme();
    let transcript = blocks(&readme, "## Quick start", "text")
        .into_iter()
        .next()
        .expect("a transcript");
    let srv = TestServer::start().await;
    // "This example assumes bob is already connected."
    let mut bob = srv.named("bob").await;
    let mut you = Client::connect(srv.addr).await;
    for line in &transcript {
        if line.starts_with("* ") {
            you.expect(line).await;
        } else if let Some(said) = line.strip_prefix("bob> ") {
            bob.send(said).await;
            you.expect(line).await;
        } else {
            you.send(line).await;
        }
    }
    bob.wait_for("alice's line", |l| l == "alice> hello bob")
        .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_line_mode_example_prints_what_the_readme_shows() {
    let readme = readme();
    let client = blocks(&readme, "## Client", "sh");
    let command = client
        .iter()
        .flatten()
        .find(|l| l.contains("--plain"))
        .expect("the line-mode command")
        .clone();
    let expected = blocks(&readme, "## Client", "text")
        .into_iter()
        .find(|b| b.iter().any(|l| l.starts_with("* connected as")))
        .expect("the line-mode output");
    // `echo hi | rchat connect --plain --nick bot`
    let (input, args) = command.split_once(" | ").unwrap();
    let input = format!("{}\n", input.strip_prefix("echo ").unwrap());
    let args: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(args[0], "rchat");

    let srv = TestServer::with(ServerConfig {
        history: HistoryMode::Memory,
        ..ServerConfig::default()
    })
    .await;
    // "alice, already in lobby, had said hello everyone"
    let mut alice = srv.named("alice").await;
    alice.send("hello everyone").await;
    alice.expect_nothing_pending().await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    // After `rchat connect`: the flags; the address is added.
    assert_eq!(args[1], "connect");
    let args: Vec<String> = args[2..].iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || {
            let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
            args.push(&addr);
            common::rchat_connect(&args, &input, &kh)
        }
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(without_times)
        .collect();
    let want: Vec<String> = expected.iter().map(|l| without_times(l)).collect();
    assert_eq!(got, want);
    alice.wait_for("bot's line", |l| l == "bot> hi").await;
    srv.stop().await;
}

#[test]
fn the_tls_section_runs_as_written() {
    let readme = readme();
    let tls = blocks(&readme, "## TLS", "sh");
    let setup = &tls[0];
    let join = &tls[1];
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rchat");
    let in_dir = |arg: &str| arg.replace("certs/", &format!("{}/", dir.path().display()));

    // rchat gen-cert --out-dir certs
    let gen: Vec<&str> = setup[0].split_whitespace().collect();
    assert_eq!(&gen[..2], ["rchat", "gen-cert"], "{}", setup[0]);
    let out = Command::new(bin)
        .args(gen[1..].iter().map(|a| {
            if *a == "certs" {
                dir.path().display().to_string()
            } else {
                a.to_string()
            }
        }))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // rchat serve --tls-cert certs/cert.pem --tls-key certs/key.pem
    let serve: Vec<String> = setup[1].split_whitespace().map(in_dir).collect();
    assert_eq!(&serve[..2], ["rchat", "serve"], "{}", setup[1]);
    let mut child = Command::new(bin)
        .args(&serve[1..])
        .args(["--listen", "127.0.0.1:0", "--history", "off"])
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let addr = common::served::listening_addr(&mut stderr);

    // openssl s_client -quiet -connect 127.0.0.1:1234 -CAfile certs/cert.pem -verify_return_error
    let openssl: Vec<String> = join[0]
        .split_whitespace()
        .map(|a| {
            if a == "127.0.0.1:1234" {
                addr.to_string()
            } else {
                in_dir(a)
            }
        })
        .collect();
    assert_eq!(openssl[0], "openssl");
    let mut s_client = Command::new("openssl")
        .args(&openssl[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed; .ci/run installs it");
    s_client
        .stdin
        .take()
        .unwrap()
        .write_all(b"/quit\n")
        .unwrap();
    let out = s_client.wait_with_output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(
        seen.contains("* welcome to rchat") && seen.contains("* goodbye"),
        "stdout: {seen}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
