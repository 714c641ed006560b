//! `rchat connect` as a script or user runs it: the real binary in line
//! mode against a real server, with TLS trust on first use.

mod common;

use std::path::Path;
use std::process::Output;

use common::served::gen_cert;
use common::TestServer;
use rchat::config::ServerConfig;

fn connect(args: &[&str], stdin: &str, known_hosts: &Path) -> Output {
    common::rchat_connect(args, stdin, known_hosts)
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_lines_are_sent_acknowledged_and_exit_zero() {
    let srv = TestServer::start().await;
    let mut watcher = srv.named("watcher").await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || connect(&[&addr, "--nick", "bot"], "hi there\n/me beeps\n", &kh)
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    watcher
        .wait_for("bot's line", |l| l == "bot> hi there")
        .await;
    watcher.expect("* bot beeps").await;
    watcher.expect("* bot quit").await;
    assert!(stdout.contains("* you are now in lobby"), "{stdout}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_makes_the_exit_code_nonzero() {
    let srv = TestServer::start().await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || connect(&[&addr, "--plain"], "/msg nobody hello\n", &kh)
    })
    .await
    .unwrap();
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("* error: no one called nobody is connected"),
        "{stdout}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_without_reconnect_fails() {
    // Bind and drop to find a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        let addr = port.to_string();
        move || connect(&[&addr, "--no-reconnect"], "hi\n", &kh)
    })
    .await
    .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("cannot connect to"), "{stderr}");
}

async fn tls_server(dir: &Path, addr: Option<std::net::SocketAddr>) -> TestServer {
    let mut cfg = ServerConfig {
        tls_cert: Some(dir.join("cert.pem")),
        tls_key: Some(dir.join("key.pem")),
        ..ServerConfig::default()
    };
    if let Some(addr) = addr {
        cfg.listen = vec![addr];
    }
    TestServer::with(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_on_first_use_pins_and_refuses_a_changed_certificate() {
    let certs = tempfile::tempdir().unwrap();
    let fp = gen_cert(certs.path());
    let srv = tls_server(certs.path(), None).await;
    let addr = format!("localhost:{}", srv.addr.port());
    let kh_dir = tempfile::tempdir().unwrap();
    let kh = kh_dir.path().join("known_hosts");
    let run = |args: Vec<String>, input: &'static str| {
        let kh = kh.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            connect(&args, input, &kh)
        })
    };

    // First use, no terminal to ask on: refused, with the fingerprint and
    // how to proceed.
    let out = run(vec![addr.clone(), "--tls".into()], "hi\n")
        .await
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains(&fp), "fingerprint shown: {stderr}");
    assert!(stderr.contains("--trust"), "says how to proceed: {stderr}");
    assert!(!kh.exists() || std::fs::read_to_string(&kh).unwrap().trim().is_empty());

    // With --trust: connects, and the fingerprint is remembered.
    let mut watcher =
        common::tls_text_client(srv.addr, &certs.path().join("cert.pem"), "localhost")
            .await
            .unwrap();
    let out = run(
        vec![
            addr.clone(),
            "--trust".into(),
            fp.to_lowercase().replace(':', ""),
            "--nick".into(),
            "tofu".into(),
        ],
        "pinned hello\n",
    )
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    watcher
        .wait_for("message", |l| l == "tofu> pinned hello")
        .await;
    let remembered = std::fs::read_to_string(&kh).unwrap();
    assert!(remembered.contains(&addr), "{remembered}");

    // Next time, known_hosts alone is enough.
    let out = run(
        vec![
            addr.clone(),
            "--tls".into(),
            "--nick".into(),
            "again".into(),
        ],
        "known hello\n",
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    watcher
        .wait_for("message", |l| l == "again> known hello")
        .await;

    // The server's certificate changes: refused loudly.
    let port = srv.addr;
    srv.stop().await;
    let other = tempfile::tempdir().unwrap();
    let new_fp = gen_cert(other.path());
    let srv = tls_server(other.path(), Some(port)).await;
    let out = run(vec![addr.clone(), "--tls".into()], "should not arrive\n")
        .await
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("CHANGED"), "{stderr}");
    assert!(stderr.contains(&new_fp), "{stderr}");
    assert!(stderr.contains(&fp), "{stderr}");

    // --ca with the server's own certificate verifies without any pin.
    let ca = other.path().join("cert.pem");
    let out = run(
        vec![
            addr.clone(),
            "--ca".into(),
            ca.to_string_lossy().into_owned(),
        ],
        "via ca\n",
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));

    // --insecure connects and warns.
    let out = run(vec![addr.clone(), "--insecure".into()], "insecure\n")
        .await
        .unwrap();
    let (_, stderr) = text(&out);
    assert!(out.status.success());
    assert!(stderr.contains("WARNING"), "{stderr}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_after_a_join_go_to_the_new_room() {
    let srv = TestServer::start().await;
    let mut watcher = srv.named("watcher").await;
    watcher.send("/join dev").await;
    watcher
        .wait_for("joined", |l| l.starts_with("* you are now in dev"))
        .await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || connect(&[&addr, "--nick", "mover"], "/join dev\nin dev now\n", &kh)
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    watcher.expect("* mover joined dev").await;
    watcher.expect("mover> in dev now").await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_mode_prints_the_replay_and_answers_history() {
    let srv = TestServer::with(ServerConfig {
        history: rchat::config::HistoryMode::Memory,
        history_replay: 5,
        ..ServerConfig::default()
    })
    .await;
    let mut poster = srv.named("poster").await;
    let mut watcher = srv.named("watcher").await;
    for i in 1..=8 {
        poster.send(&format!("numbered line {i:02}")).await;
    }
    watcher
        .wait_for("the last line", |l| l == "poster> numbered line 08")
        .await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || connect(&[&addr, "--nick", "late"], "/history 3\n", &kh)
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    // Today's messages show the time only (HH:MM, UTC).
    let said = |i: u32| format!(" poster> numbered line {i:02}");
    let lines: Vec<&str> = stdout.lines().collect();
    let block = |header: &str, first: u32, last: u32| {
        let at = lines
            .iter()
            .position(|l| *l == header)
            .unwrap_or_else(|| panic!("no {header:?} in:\n{stdout}"));
        for (k, i) in (first..=last).enumerate() {
            let l = lines[at + 1 + k];
            assert!(l.ends_with(&said(i)), "{l:?} in:\n{stdout}");
            assert_eq!(l.len(), "HH:MM".len() + said(i).len(), "{l:?}");
        }
        assert_eq!(lines[at + 2 + (last - first) as usize], "* end of history");
        at
    };
    let replay = block("* history of lobby: last 5 messages (times are UTC)", 4, 8);
    let answer = block("* history of lobby: last 3 messages (times are UTC)", 6, 8);
    assert!(replay < answer, "{stdout}");
    assert!(!stdout.contains("numbered line 03"), "{stdout}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_mode_passes_operator_commands_through_and_shows_kicks() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken-line-mode\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let srv = TestServer::with(ServerConfig {
        admin_token_file: Some(token),
        ..ServerConfig::default()
    })
    .await;
    let mut bob = srv.named("bob").await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || {
            connect(
                &[&addr, "--nick", "op"],
                "/oper t0ken-line-mode\n/kick bob spamming\n/bans\n",
                &kh,
            )
        }
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("* bob was kicked by op: spamming"),
        "stdout: {stdout}"
    );
    assert!(stdout.contains("* no bans"), "stdout: {stdout}");
    let seen = bob.until_eof().await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("* you were kicked by op: spamming"),
        "{seen:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_nick_sends_nothing_under_another_name() {
    let srv = TestServer::start().await;
    let mut alice = srv.named("alice").await;
    let addr = srv.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || connect(&[&addr, "--nick", "ALICE"], "hello as someone else\n", &kh)
    })
    .await
    .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("the nick ALICE is already in use") && stdout.contains("nothing was sent"),
        "stdout: {stdout}"
    );
    // The line never reached the room under a guest name.
    let seen = alice
        .wait_for("the guest leaving", |l| {
            l.contains("hello")
                || (l.starts_with("* guest") && (l.contains(" quit") || l.contains("disconnected")))
        })
        .await;
    assert!(!seen.contains("hello"), "{seen}");
    alice.expect_nothing_pending().await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_mismatch_says_which_flag_to_use() {
    let certs = tempfile::tempdir().unwrap();
    gen_cert(certs.path());
    let tls_srv = TestServer::with(ServerConfig {
        tls_cert: Some(certs.path().join("cert.pem")),
        tls_key: Some(certs.path().join("key.pem")),
        ..ServerConfig::default()
    })
    .await;
    let plain_srv = TestServer::start().await;
    let kh = tempfile::tempdir().unwrap();
    let (tls_addr, plain_addr) = (tls_srv.addr.to_string(), plain_srv.addr.to_string());
    let (without, with) = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || {
            (
                connect(&[&tls_addr], "", &kh),
                connect(&[&plain_addr, "--tls", "--insecure"], "", &kh),
            )
        }
    })
    .await
    .unwrap();
    let (out, err) = text(&without);
    assert!(!without.status.success());
    assert!(format!("{out}{err}").contains("--tls"), "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("is it an rchat server"),
        "{out}{err}"
    );
    let (out, err) = text(&with);
    assert!(!with.status.success());
    assert!(
        format!("{out}{err}").contains("does not speak TLS; connect without --tls"),
        "{out}{err}"
    );
    tls_srv.stop().await;
    plain_srv.stop().await;
}
