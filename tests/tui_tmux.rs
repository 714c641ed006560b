//! The real full-screen client in a real terminal: `rchat connect` sessions
//! under tmux, typed at with send-keys and read with capture-pane.
//! Needs tmux; CI installs it (see .ci/run). Without tmux the test fails in
//! CI and is skipped, loudly, elsewhere.

mod common;

use common::tmux::{line_with, Tmux};

use std::time::{Duration, Instant};

use common::served::gen_cert;
use common::TestServer;
use rchat::config::{HistoryMode, ServerConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_chat_and_half_typed_text_survives_incoming_messages() {
    let Some(tmux) = Tmux::new() else {
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI");
        eprintln!("SKIPPED: tmux is not installed");
        return;
    };
    let srv = TestServer::start().await;
    let mut watcher = srv.named("watcher").await;
    let kh = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rchat");
    let cmd = |nick: &str| {
        format!(
            "env TERM=xterm-256color RCHAT_CONFIG_DIR=/nonexistent/rchat-test RCHAT_KNOWN_HOSTS={} {bin} connect {} --nick {nick}",
            kh.path().join("known_hosts").display(),
            srv.addr
        )
    };
    let tmux = tokio::task::block_in_place(|| {
        tmux.start("alice", &cmd("alice"));
        tmux.start("bob", &cmd("bob"));
        tmux
    });
    // The two clients start at once: their joins come in either order.
    let mut joined = std::collections::BTreeSet::new();
    while joined.len() < 2 {
        let l = watcher
            .wait_for("joins", |l| {
                l == "* alice joined lobby" || l == "* bob joined lobby"
            })
            .await;
        joined.insert(l);
    }

    tokio::task::block_in_place(|| {
        // Both see each other in the member list.
        tmux.wait_screen("alice", "bob in the member list", |s| s.contains("bob"));
        tmux.wait_screen("bob", "alice in the member list", |s| s.contains("alice"));

        // Alice types half a line and stops; bob talks.
        tmux.type_text("alice", "half typed reply");
        tmux.wait_screen("alice", "the typed text", |s| {
            s.contains("half typed reply")
        });
        tmux.type_text("bob", "hello alice, 你好 👋");
        tmux.keys("bob", &["Enter"]);
        let screen = tmux.wait_screen("alice", "bob's message", |s| s.contains("hello alice"));
        // The message arrived, and what alice was typing is intact on its line.
        let input = line_with(&screen, "half typed reply").expect("input survives");
        assert!(
            !input.contains("hello alice"),
            "input line was disturbed: {input:?}"
        );
        assert!(screen.contains("你好"), "wide characters shown:\n{screen}");

        // Alice finishes her line; bob receives it.
        tmux.type_text("alice", " done");
        tmux.keys("alice", &["Enter"]);
        tmux.wait_screen("bob", "alice's reply", |s| {
            s.contains("half typed reply done")
        });
    });
    watcher
        .wait_for("bob's line", |l| l.starts_with("bob> hello alice"))
        .await;
    watcher
        .wait_for("alice's line", |l| l == "alice> half typed reply done")
        .await;

    tokio::task::block_in_place(|| {
        // /quit from one, Ctrl-C from the other: both exit cleanly.
        tmux.type_text("alice", "/quit");
        tmux.keys("alice", &["Enter"]);
        tmux.keys("bob", &["C-c"]);
        tmux.wait_exit("alice");
        tmux.wait_exit("bob");
    });
    // The two quits race; accept them in either order.
    let mut quit = std::collections::BTreeSet::new();
    while quit.len() < 2 {
        let l = watcher
            .wait_for("quits", |l| {
                l.starts_with("* alice quit") || l.starts_with("* bob quit")
            })
            .await;
        quit.insert(l);
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_use_of_a_self_signed_server_asks_and_remembers() {
    let Some(tmux) = Tmux::new() else {
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI");
        eprintln!("SKIPPED: tmux is not installed");
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rchat");
    let fp = gen_cert(certs.path());
    let srv = TestServer::with(rchat::config::ServerConfig {
        tls_cert: Some(certs.path().join("cert.pem")),
        tls_key: Some(certs.path().join("key.pem")),
        ..Default::default()
    })
    .await;
    let kh_dir = tempfile::tempdir().unwrap();
    let kh = kh_dir.path().join("known_hosts");
    let addr = format!("localhost:{}", srv.addr.port());
    let cmd = |nick: &str| {
        format!(
            "env TERM=xterm-256color RCHAT_CONFIG_DIR=/nonexistent/rchat-test RCHAT_KNOWN_HOSTS={} {bin} connect {addr} --tls --nick {nick}",
            kh.display()
        )
    };
    tokio::task::block_in_place(|| {
        // First use: the fingerprint is shown and the user is asked.
        tmux.start("first", &cmd("first"));
        let screen = tmux.wait_screen("first", "the trust prompt", |s| s.contains("[y/N]"));
        // The fingerprint may wrap at the pane's edge.
        assert!(
            screen.replace('\n', "").contains(&fp),
            "fingerprint shown:\n{screen}"
        );
        tmux.type_text("first", "y");
        tmux.keys("first", &["Enter"]);
        tmux.wait_screen("first", "the chat", |s| {
            s.contains("TLS on") || s.contains("TLS")
        });
        tmux.wait_screen("first", "the lobby", |s| s.contains("lobby"));
        let remembered = std::fs::read_to_string(&kh).expect("known_hosts written");
        assert!(remembered.contains(&addr), "{remembered}");
        tmux.keys("first", &["C-c"]);
        tmux.wait_exit("first");

        // Second use: no question asked.
        tmux.start("second", &cmd("second"));
        let screen = tmux.wait_screen("second", "the chat", |s| s.contains("lobby"));
        assert!(!screen.contains("[y/N]"), "asked again:\n{screen}");
        tmux.keys("second", &["C-c"]);
        tmux.wait_exit("second");

        // Saying no refuses to connect.
        std::fs::remove_file(&kh).unwrap();
        tmux.start("third", &cmd("third"));
        tmux.wait_screen("third", "the trust prompt", |s| s.contains("[y/N]"));
        tmux.keys("third", &["Enter"]);
        tmux.wait_exit("third");
        assert!(!kh.exists() || !std::fs::read_to_string(&kh).unwrap().contains(&addr));
    });
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_sees_the_replay_and_scrolls_back_to_the_beginning() {
    let Some(tmux) = Tmux::new() else {
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI");
        eprintln!("SKIPPED: tmux is not installed");
        return;
    };
    // As `rchat serve --history memory --history-replay 5`.
    let srv = TestServer::with(ServerConfig {
        history: HistoryMode::Memory,
        history_replay: 5,
        ..ServerConfig::default()
    })
    .await;
    let mut poster = srv.named("poster").await;
    let mut watcher = srv.named("watcher").await;
    for i in 1..=30 {
        poster.send(&format!("numbered line {i:02}")).await;
    }
    // Stored as posted: once the room has seen the last, it is all stored.
    watcher
        .wait_for("the last line", |l| l == "poster> numbered line 30")
        .await;

    let kh = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rchat");
    let cmd = format!(
        "env TERM=xterm-256color RCHAT_CONFIG_DIR=/nonexistent/rchat-test RCHAT_KNOWN_HOSTS={} {bin} connect {} --nick reader",
        kh.path().join("known_hosts").display(),
        srv.addr
    );
    tokio::task::block_in_place(|| {
        tmux.start("reader", &cmd);
        // The replay: the last five, and a hint that there is more.
        let screen = tmux.wait_screen("reader", "the replay", |s| {
            s.contains("numbered line 30") && s.contains("older messages: scroll up to load")
        });
        for i in 26..=30 {
            assert!(
                screen.contains(&format!("<poster> numbered line {i:02}")),
                "{screen}"
            );
        }
        assert!(!screen.contains("numbered line 25"), "{screen}");

        // PageUp until the first line and the beginning are on screen. A
        // press may find a page still loading, so each waits a little for
        // the screen to change and the whole has a deadline.
        let start = Instant::now();
        let mut screen = screen;
        while !(screen.contains("<poster> numbered line 01")
            && screen.contains("beginning of history"))
        {
            assert!(
                start.elapsed() < common::DEADLINE,
                "never reached the beginning; screen:\n{screen}"
            );
            tmux.keys("reader", &["PageUp"]);
            let pressed = Instant::now();
            loop {
                let now = tmux.screen("reader");
                if now != screen || pressed.elapsed() > Duration::from_secs(2) {
                    screen = now;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Each line once, in order.
        let order: Vec<usize> = (1..=30)
            .filter_map(|i| screen.find(&format!("numbered line {i:02}")))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{screen}");
        assert_eq!(screen.matches("numbered line 01").count(), 1, "{screen}");
        let beginning = screen.find("beginning of history").unwrap();
        assert!(
            beginning < screen.find("numbered line 01").unwrap(),
            "{screen}"
        );

        tmux.keys("reader", &["C-c"]);
        tmux.wait_exit("reader");
    });
    watcher
        .wait_for("reader quits", |l| l.starts_with("* reader quit"))
        .await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_password_is_asked_for_without_echo() {
    let Some(tmux) = Tmux::new() else {
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI");
        eprintln!("SKIPPED: tmux is not installed");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "sesame 42\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let srv = TestServer::with(ServerConfig {
        password_file: Some(file),
        ..ServerConfig::default()
    })
    .await;
    let bin = env!("CARGO_BIN_EXE_rchat");
    let cmd = format!(
        "env TERM=xterm-256color RCHAT_CONFIG_DIR=/nonexistent/rchat-test RCHAT_KNOWN_HOSTS={} {bin} connect {} --nick pat",
        dir.path().join("known_hosts").display(),
        srv.addr
    );
    tokio::task::block_in_place(|| {
        tmux.start("pat", &cmd);
        tmux.wait_screen("pat", "the prompt", |s| s.contains("password for"));
        // A wrong one first: asked again, with the server's reason.
        tmux.type_text("pat", "guess");
        tmux.keys("pat", &["Enter"]);
        tmux.wait_screen("pat", "the second prompt", |s| {
            s.contains("wrong password") && s.matches("password for").count() >= 2
        });
        tmux.type_text("pat", "sesame 42");
        let typed = tmux.screen("pat");
        assert!(
            !typed.contains("sesame"),
            "the password was echoed:\n{typed}"
        );
        tmux.keys("pat", &["Enter"]);
        tmux.wait_screen("pat", "the chat screen", |s| {
            s.contains("pat") && s.contains("lobby") && !s.contains("password for")
        });
    });
    let mut watcher = common::Client::connect(srv.addr).await;
    watcher.line().await; // the server's password prompt
    watcher.send("/pass sesame 42").await;
    watcher.greeted().await;
    watcher.send("/who").await;
    watcher
        .wait_for("pat in the lobby", |l| {
            l.starts_with("* lobby (2): ") && l.contains("pat")
        })
        .await;
    tokio::task::block_in_place(|| {
        tmux.keys("pat", &["C-c"]);
        tmux.wait_exit("pat");
    });
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_nick_stays_on_screen_until_another_is_chosen() {
    let Some(tmux) = Tmux::new() else {
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI");
        eprintln!("SKIPPED: tmux is not installed");
        return;
    };
    let srv = TestServer::with(ServerConfig {
        history: HistoryMode::Memory,
        ..ServerConfig::default()
    })
    .await;
    let mut alice = srv.named("alice").await;
    // Enough history that the replay would push a plain error line away.
    for i in 0..40 {
        alice.send(&format!("backlog line {i}")).await;
    }
    alice.expect_nothing_pending().await;
    let kh = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_rchat");
    let cmd = format!(
        "env TERM=xterm-256color RCHAT_CONFIG_DIR=/nonexistent/rchat-test RCHAT_KNOWN_HOSTS={} {bin} connect {} --nick alice",
        kh.path().join("known_hosts").display(),
        srv.addr
    );
    tokio::task::block_in_place(|| {
        tmux.start("imposter", &cmd);
        let screen = tmux.wait_screen("imposter", "the replay and the alert", |s| {
            s.contains("backlog line 39") && s.contains("already in use")
        });
        let alert = line_with(&screen, "already in use").unwrap();
        assert!(alert.contains("choose a nick with /nick"), "{alert}");
        tmux.type_text("imposter", "/nick alice2");
        tmux.keys("imposter", &["Enter"]);
        tmux.wait_screen("imposter", "the alert gone", |s| {
            !s.contains("already in use") && s.contains("alice2")
        });
        tmux.keys("imposter", &["C-c"]);
        tmux.wait_exit("imposter");
    });
    alice
        .wait_for("the rename", |l| l.ends_with("is now known as alice2"))
        .await;
    srv.stop().await;
}
