//! What an IRC client's user reaches for in the first minute, tried on the
//! real full-screen client under tmux: Tab completion, the room keys,
//! mentions (highlight, bell, status bar), `/ignore` kept across restarts,
//! the unread marker, the config file and a narrow status bar.

mod common;

use common::tmux::{line_with, Tmux};
use common::{Client, TestServer};

/// A config directory with `client.toml` holding `toml`, and the command
/// that runs `rchat connect ARGS` with it.
struct Profile {
    dir: tempfile::TempDir,
}

impl Profile {
    fn new(toml: &str) -> Profile {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.toml"), toml).unwrap();
        Profile { dir }
    }

    fn cmd(&self, args: &str) -> String {
        format!(
            "env TERM=xterm-256color RCHAT_CONFIG_DIR={dir} RCHAT_KNOWN_HOSTS={dir}/known_hosts {bin} connect {args}",
            dir = self.dir.path().display(),
            bin = env!("CARGO_BIN_EXE_rchat"),
        )
    }
}

fn tmux_or_skip() -> Option<Tmux> {
    let tmux = Tmux::new();
    if tmux.is_none() {
        assert!(std::env::var_os("CI").is_none(), "tmux is required in CI");
        eprintln!("SKIPPED: tmux is not installed");
    }
    tmux
}

/// The status bar: the line just above the input line.
fn status_bar(screen: &str) -> String {
    let lines: Vec<&str> = screen.lines().collect();
    let input = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .unwrap_or(0);
    lines
        .get(input.saturating_sub(1))
        .unwrap_or(&"")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tab_completes_nicks_commands_and_rooms_and_alt_keys_switch_rooms() {
    let Some(tmux) = tmux_or_skip() else { return };
    let srv = TestServer::start().await;
    let mut alfred = srv.named("alfred").await;
    let mut albert = srv.named("albert").await;
    albert.send("anyone here?").await;
    let profile = Profile::new("");
    let cmd = profile.cmd(&format!("{} --nick alice", srv.addr));
    tokio::task::block_in_place(|| {
        tmux.start("alice", &cmd);
        tmux.wait_screen("alice", "the room", |s| s.contains("alfred"));
    });
    alfred.expect_suffix("alice joined lobby").await;
    // albert spoke last: he comes first; Tab again, alfred; Shift-Tab back.
    albert.send("still here").await;
    tokio::task::block_in_place(|| {
        tmux.wait_screen("alice", "albert's line", |s| s.contains("still here"));
        tmux.type_text("alice", "al");
        tmux.keys("alice", &["Tab"]);
        tmux.wait_screen("alice", "albert completed", |s| {
            line_with(s, "[lobby]").is_some_and(|l| l.trim_end().ends_with("[lobby] albert:"))
        });
        tmux.keys("alice", &["Tab"]);
        tmux.wait_screen("alice", "alfred next", |s| {
            line_with(s, "[lobby] al").is_some_and(|l| l.trim_end().ends_with("alfred:"))
        });
        tmux.keys("alice", &["BTab"]);
        tmux.wait_screen("alice", "back to albert", |s| {
            line_with(s, "[lobby] al").is_some_and(|l| l.trim_end().ends_with("albert:"))
        });
        tmux.type_text("alice", "hi");
        tmux.keys("alice", &["Enter"]);
    });
    alfred
        .wait_for("alice's line", |l| l == "alice> albert: hi")
        .await;
    tokio::task::block_in_place(|| {
        // A command, then a room name after /join (one already joined).
        tmux.type_text("alice", "/jo");
        tmux.keys("alice", &["Tab"]);
        tmux.type_text("alice", "dev");
        tmux.keys("alice", &["Enter"]);
        tmux.wait_screen("alice", "dev joined", |s| status_bar(s).contains("[dev]"));
        tmux.type_text("alice", "/join lo");
        tmux.keys("alice", &["Tab", "Enter"]);
        tmux.wait_screen("alice", "back in the lobby", |s| {
            status_bar(s).contains("[lobby]")
        });
        // Alt+2 is the second room, Alt+Left/Right walk them.
        tmux.keys("alice", &["M-2"]);
        tmux.wait_screen("alice", "Alt-2", |s| status_bar(s).contains("[dev]"));
        tmux.keys("alice", &["M-Left"]);
        tmux.wait_screen("alice", "Alt-Left", |s| status_bar(s).contains("[lobby]"));
        tmux.keys("alice", &["M-Right"]);
        tmux.wait_screen("alice", "Alt-Right", |s| status_bar(s).contains("[dev]"));
        tmux.keys("alice", &["C-p"]);
        tmux.wait_screen("alice", "Ctrl-P", |s| status_bar(s).contains("[lobby]"));
        // /help lists the keys too.
        tmux.type_text("alice", "/help");
        tmux.keys("alice", &["Enter"]);
        tmux.wait_screen("alice", "the keys in /help", |s| {
            s.contains("Alt-1..9") && s.contains("Tab / Shift-Tab")
        });
        tmux.keys("alice", &["C-c"]);
        tmux.wait_exit("alice");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mentions_ring_and_stand_out_and_the_unread_marker_shows_what_is_new() {
    let Some(tmux) = tmux_or_skip() else { return };
    let srv = TestServer::start().await;
    let mut bob = srv.named("bob").await;
    let profile = Profile::new("highlight = [\"deploy\"]\n");
    let cmd = profile.cmd(&format!("{} --nick alice", srv.addr));
    let log = profile.dir.path().join("output.log");
    tokio::task::block_in_place(|| {
        tmux.start("alice", &cmd);
        tmux.record("alice", &log);
        tmux.wait_screen("alice", "the lobby", |s| s.contains("bob"));
    });
    bob.expect_suffix("alice joined lobby").await;
    bob.send("read before leaving").await;
    tokio::task::block_in_place(|| {
        tmux.wait_screen("alice", "bob's line", |s| s.contains("read before leaving"));
        tmux.type_text("alice", "/join dev");
        tmux.keys("alice", &["Enter"]);
        tmux.wait_screen("alice", "dev", |s| status_bar(s).contains("[dev]"));
    });
    let before = std::fs::read(&log).unwrap_or_default();
    assert!(!before.contains(&0x07), "no bell yet");
    bob.send("nothing special").await;
    bob.send("Alice, the deploy is done").await;
    tokio::task::block_in_place(|| {
        // The lobby is marked: two unread, one naming me.
        tmux.wait_screen("alice", "the mention mark", |s| {
            status_bar(s).contains("lobby(2!)")
        });
        let start = std::time::Instant::now();
        while !std::fs::read(&log).unwrap_or_default().contains(&0x07) {
            assert!(start.elapsed() < common::DEADLINE, "the bell never rang");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // Back in the lobby: a rule under what was read, the mention in
        // bold light yellow.
        tmux.keys("alice", &["M-1"]);
        let screen = tmux.wait_screen("alice", "the lobby again", |s| {
            status_bar(s).contains("[lobby]")
        });
        let lines: Vec<&str> = screen.lines().collect();
        let read = lines
            .iter()
            .position(|l| l.contains("read before leaving"))
            .expect("the old line");
        assert!(lines[read + 1].contains(" new "), "{screen}");
        assert!(lines[read + 2].contains("nothing special"), "{screen}");
        assert!(!status_bar(&screen).contains('!'), "the mark is cleared");
        let styled = tmux.styled_screen("alice");
        let mention = line_with(&styled, "the deploy is done").expect("the mention");
        // Light yellow is colour 11 of 256 (or SGR 93).
        let yellow = |l: &str| l.contains("38;5;11m") || l.contains("[93m");
        assert!(
            mention.contains("\u{1b}[1m") && yellow(mention),
            "not highlighted: {mention:?}"
        );
        let plain = line_with(&styled, "nothing special").expect("the plain line");
        assert!(!yellow(plain), "highlighted: {plain:?}");
        tmux.keys("alice", &["C-c"]);
        tmux.wait_exit("alice");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_and_ignore_list_are_used_and_kept_across_restarts() {
    let Some(tmux) = tmux_or_skip() else { return };
    let srv = TestServer::start().await;
    let mut troll = srv.named("troll").await;
    let mut bob = srv.named("bob").await;
    // No address and no nick on the command line: both from the file, and
    // timestamps as the file says.
    let profile = Profile::new(&format!(
        "server = \"{}\"\nnick = \"alice\"\ntimestamp_format = \"<%H:%M:%S>\"\ntime_zone = \"utc\"\n",
        srv.addr
    ));
    let cmd = profile.cmd("");
    tokio::task::block_in_place(|| {
        tmux.start("alice", &cmd);
        tmux.wait_screen("alice", "alice in the lobby", |s| {
            status_bar(s).contains("alice") && s.contains("troll")
        });
        tmux.type_text("alice", "/ignore troll");
        tmux.keys("alice", &["Enter"]);
        tmux.wait_screen("alice", "the confirmation", |s| {
            s.contains("ignoring troll")
        });
    });
    troll.send("spam spam").await;
    bob.send("first marker").await;
    tokio::task::block_in_place(|| {
        let screen = tmux.wait_screen("alice", "bob's marker", |s| s.contains("first marker"));
        assert!(!screen.contains("spam spam"), "{screen}");
        let stamp = line_with(&screen, "first marker").unwrap();
        let at = stamp.find('<').expect("the file's format");
        assert_eq!(&stamp[at + 3..at + 4], ":", "{stamp}");
        assert_eq!(&stamp[at + 9..at + 10], ">", "{stamp}");
        tmux.keys("alice", &["C-c"]);
        tmux.wait_exit("alice");
    });
    let saved = std::fs::read_to_string(profile.dir.path().join("ignored")).unwrap();
    assert!(saved.lines().any(|l| l == "troll"), "{saved}");

    // Started again: troll is still ignored; /unignore lets him back.
    tokio::task::block_in_place(|| {
        tmux.start("again", &cmd);
        tmux.wait_screen("again", "back in the lobby", |s| s.contains("troll"));
    });
    bob.expect_suffix("alice joined lobby").await;
    troll.send("more spam").await;
    bob.send("second marker").await;
    tokio::task::block_in_place(|| {
        let screen = tmux.wait_screen("again", "bob's marker", |s| s.contains("second marker"));
        assert!(!screen.contains("more spam"), "{screen}");
        tmux.type_text("again", "/unignore troll");
        tmux.keys("again", &["Enter"]);
        tmux.wait_screen("again", "the confirmation", |s| {
            s.contains("no longer ignoring troll")
        });
    });
    troll.send("hello again").await;
    tokio::task::block_in_place(|| {
        tmux.wait_screen("again", "troll's line", |s| s.contains("hello again"));
        tmux.keys("again", &["C-c"]);
        tmux.wait_exit("again");
    });
    let saved = std::fs::read_to_string(profile.dir.path().join("ignored")).unwrap();
    assert!(!saved.lines().any(|l| l == "troll"), "{saved}");
    drop(troll);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrow_status_bar_abbreviates_but_keeps_the_current_room() {
    let Some(tmux) = tmux_or_skip() else { return };
    let srv = TestServer::start().await;
    let profile = Profile::new("");
    let cmd = profile.cmd(&format!("{} --nick alice", srv.addr));
    let mut bob: Client = srv.named("bob").await;
    tokio::task::block_in_place(|| {
        tmux.start_sized("alice", 40, &cmd);
        tmux.wait_screen("alice", "the lobby", |s| status_bar(s).contains("[lobby]"));
        for room in ["design", "operations", "music"] {
            tmux.type_text("alice", &format!("/join {room}"));
            tmux.keys("alice", &["Enter"]);
            tmux.wait_screen("alice", room, |s| status_bar(s).contains(room));
        }
    });
    bob.send("news in the lobby").await;
    tokio::task::block_in_place(|| {
        let screen = tmux.wait_screen("alice", "the lobby's count", |s| {
            status_bar(s).contains("1(1)")
        });
        let bar = status_bar(&screen);
        assert!(bar.contains("[4:music]"), "{bar:?}");
        assert!(bar.contains("+2"), "{bar:?}");
        tmux.keys("alice", &["C-c"]);
        tmux.wait_exit("alice");
    });
}
