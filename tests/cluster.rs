//! Several real `rchat serve --cluster` nodes on one real `redis-server`,
//! started by each test on a unix socket (or a free TCP port) in a scratch
//! directory, and stopped by it. `.ci/run` installs `redis-server`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::redis::*;
use common::Client;
use rchat::proto::json::{ErrorCode, ServerMsg};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_crosses_nodes_both_ways_and_a_late_joiner_is_replayed_it() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut alice = named(&a, "alice").await;
    let mut bob = named(&b, "bob").await;
    alice.send("hello from node A").await;
    assert_eq!(next_chat(&mut bob).await, "alice> hello from node A");
    bob.send("hello from node B").await;
    assert_eq!(next_chat(&mut alice).await, "bob> hello from node B");
    // Neither got its own line back.
    bob.send("marker").await;
    assert_eq!(next_chat(&mut alice).await, "bob> marker");

    // A newcomer on B is replayed what was said on both nodes, then live.
    let mut carol = Client::connect(b.addr).await;
    carol.greeted().await;
    carol
        .expect("* history of lobby: last 3 messages (times are UTC)")
        .await;
    for want in [
        "alice> hello from node A",
        "bob> hello from node B",
        "bob> marker",
    ] {
        let line = carol.line().await;
        assert!(line.ends_with(want), "{line:?} should end with {want:?}");
    }
    carol.expect("* end of history").await;
    alice.send("and live").await;
    assert_eq!(next_chat(&mut carol).await, "alice> and live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_clients_get_the_clusters_seq_in_acks_and_messages() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut bob = named(&b, "bob").await;
    let (mut js, _) = json_jo_in_lobby(&a).await;
    js.send(r#"{"type":"say","id":"s1","room":"lobby","text":"from json on A"}"#)
        .await;
    let ServerMsg::Ack {
        seq: Some(first), ..
    } = json_next(&mut js, |m| matches!(m, ServerMsg::Ack { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(next_chat(&mut bob).await, "jo> from json on A");
    bob.send("from text on B").await;
    let ServerMsg::Message {
        seq, from, text, ..
    } = json_next(&mut js, |m| matches!(m, ServerMsg::Message { .. })).await
    else {
        unreachable!()
    };
    assert_eq!((from.as_str(), text.as_str()), ("bob", "from text on B"));
    assert_eq!(seq, first + 1, "one numbering for the room, across nodes");
    // A JSON nick claim across nodes: bob's nick is taken.
    js.send(r#"{"type":"nick","id":"n1","nick":"BOB"}"#).await;
    let err = json_next(&mut js, |m| matches!(m, ServerMsg::Error { .. })).await;
    assert!(
        matches!(
            err,
            ServerMsg::Error {
                code: ErrorCode::NickInUse,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_and_join_leave_and_rename_notices_are_cluster_wide() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut alice = named(&a, "alice").await;
    let mut bob = Client::connect(b.addr).await;
    bob.greeted().await;
    let guest = bob.nick.clone();
    alice.expect(&format!("* {guest} joined lobby")).await;
    bob.send("/nick bob").await;
    bob.expect_suffix("is now known as bob").await;
    alice
        .expect(&format!("* {guest} is now known as bob"))
        .await;
    for c in [&mut alice, &mut bob] {
        c.send("/who").await;
        c.wait_for("the member list", |l| l == "* lobby (2): alice, bob")
            .await;
    }
    // A JSON client joining on B is told the members of both nodes.
    let (_js, members) = json_jo_in_lobby(&b).await;
    assert_eq!(members, ["alice", "bob", "jo"]);
    alice.expect("* jo joined lobby").await;
    bob.wait_for("jo's join", |l| l == "* jo joined lobby")
        .await;
    bob.send("/join dev").await;
    alice.expect("* bob left lobby").await;
    alice.send("/join dev").await;
    alice
        .wait_for("the room", |l| l.starts_with("* you are now in dev"))
        .await;
    bob.wait_for("alice's join", |l| l == "* alice joined dev")
        .await;
    bob.send("/quit see you").await;
    bob.until_eof().await;
    alice.expect("* bob quit (see you)").await;
    alice.send("/who").await;
    alice
        .wait_for("the member list", |l| l == "* dev (1): alice")
        .await;
    // Rooms and their counts, from every node: jo is in lobby on B.
    alice.send("/rooms").await;
    alice
        .wait_for("the room list", |l| l == "* rooms: dev (1), lobby (1)")
        .await;
}

/// Redis's connections killed from its side (`CLIENT KILL`), twice, while
/// a JSON client on node A posts line after line: every node reconnects
/// and goes on from the last message it delivered. Each line is either
/// acknowledged, and then reaches the member on node B once and in order,
/// or refused to its sender, and then reaches no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_killed_from_redis_lose_and_double_nothing() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut bob = named(&b, "bob").await;
    let (mut jo, _) = json_jo_in_lobby(&a).await;
    bob.wait_for("jo's join", |l| l == "* jo joined lobby")
        .await;
    let socket = redis.url.trim_start_matches("redis+unix://").to_string();
    let kill = || {
        let out = Command::new("redis-cli")
            .args(["-s", &socket, "CLIENT", "KILL", "TYPE", "normal"])
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(out.status.success(), "{out:?}");
    };
    let mut acked = Vec::new();
    let mut refused = 0;
    for i in 0..40 {
        if i == 5 || i == 20 {
            kill();
        }
        let text = format!("line {i}");
        jo.send(&format!(
            r#"{{"type":"say","id":"{i}","room":"lobby","text":"{text}"}}"#
        ))
        .await;
        match json_next(&mut jo, |m| {
            matches!(m, ServerMsg::Ack { .. } | ServerMsg::Error { .. })
        })
        .await
        {
            ServerMsg::Ack { .. } => acked.push(format!("jo> {text}")),
            ServerMsg::Error { code, .. } => {
                assert_eq!(code, ErrorCode::Unavailable);
                refused += 1;
            }
            _ => unreachable!(),
        }
    }
    assert!(
        acked.len() >= 20,
        "most lines got through: {refused} refused"
    );
    let mut got = Vec::new();
    while got.len() < acked.len() {
        got.push(next_chat(&mut bob).await);
    }
    assert_eq!(got, acked, "every acknowledged line once, in order");
    // And nothing else: a marker comes next.
    jo.send(r#"{"type":"say","id":"m","room":"lobby","text":"marker"}"#)
        .await;
    assert_eq!(next_chat(&mut bob).await, "jo> marker");
}

/// `rchat connect` (line mode, piped) against one node reaches a member of
/// another, and exits zero: the client needs nothing new for a cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rchat_connect_works_against_any_node() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut watcher = named(&b, "watcher").await;
    let addr = a.addr.to_string();
    let kh = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let kh = kh.path().join("known_hosts");
        move || {
            common::rchat_connect(
                &[&addr, "--nick", "bot"],
                "hi from node A\n/msg watcher psst\n",
                &kh,
            )
        }
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("watcher"),
        "the member list names B's member: {stdout}"
    );
    watcher
        .wait_for("bot's line", |l| l == "bot> hi from node A")
        .await;
    watcher
        .wait_for("bot's message", |l| l == "[private] bot> psst")
        .await;
    watcher.wait_for("bot's leave", |l| l == "* bot quit").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_messages_reach_a_nick_on_any_node_and_an_unknown_nick_is_an_error() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut alice = named(&a, "alice").await;
    let mut bob = named(&b, "bob").await;
    alice.send("/msg BOB psst, across nodes").await;
    bob.wait_for("the private message", |l| {
        l == "[private] alice> psst, across nodes"
    })
    .await;
    bob.send("/msg alice right back").await;
    alice
        .wait_for("the reply", |l| l == "[private] bob> right back")
        .await;
    alice.send("/msg zed anyone?").await;
    alice
        .wait_for("the error", |l| {
            l == "* error: no one called zed is connected"
        })
        .await;
    // Once bob has left, his nick is free (someone else can take it and
    // move on) and reaches no one.
    bob.send("/quit").await;
    bob.until_eof().await;
    let mut carol = Client::connect(a.addr).await;
    carol.greeted().await;
    take_once_free(&mut carol, "bob").await;
    carol.send("/nick carol").await;
    carol.expect_suffix("is now known as carol").await;
    // The claim on "bob" is released just after carol moves on: until
    // then a message to bob goes to node A and finds no one. A message to
    // herself marks the end of each try.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        alice.send("/msg bob still there?").await;
        alice.send("/msg alice marker").await;
        let l = alice
            .wait_for("an answer", |l| {
                l == "* error: no one called bob is connected" || l == "[private] alice> marker"
            })
            .await;
        if l.starts_with("* error") {
            break;
        }
        assert!(Instant::now() < deadline, "bob's nick was never freed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_on_two_nodes_are_seen_in_one_order_everywhere() {
    const EACH: usize = 200;
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let mut watchers = vec![named(&a, "wa").await, named(&b, "wb").await];
    let mut sa = named(&a, "sa").await;
    let mut sb = named(&b, "sb").await;
    let send = |mut c: Client, tag: &'static str| {
        tokio::spawn(async move {
            let mut burst = String::new();
            for i in 0..EACH {
                burst.push_str(&format!("{tag} {i}\n"));
            }
            c.send_raw(burst.as_bytes()).await;
            c
        })
    };
    let (ta, tb) = (send(sa, "from-a"), send(sb, "from-b"));
    let mut seen = Vec::new();
    for w in &mut watchers {
        let mut lines = Vec::with_capacity(2 * EACH);
        while lines.len() < 2 * EACH {
            let line = next_chat(w).await;
            if line.starts_with("sa> ") || line.starts_with("sb> ") {
                lines.push(line);
            }
        }
        seen.push(lines);
    }
    sa = ta.await.unwrap();
    sb = tb.await.unwrap();
    assert_eq!(seen[0], seen[1], "both nodes deliver one order");
    // Each sender's lines in its own order, none missing.
    for (nick, tag) in [("sa", "from-a"), ("sb", "from-b")] {
        let mine: Vec<&String> = seen[0]
            .iter()
            .filter(|l| l.starts_with(&format!("{nick}> ")))
            .collect();
        let want: Vec<String> = (0..EACH).map(|i| format!("{nick}> {tag} {i}")).collect();
        assert_eq!(mine.len(), EACH);
        assert!(mine.iter().zip(&want).all(|(a, b)| *a == b), "{nick}");
    }
    // The senders, too, get each other's lines, in the same order.
    let from_b = chat_from(&mut sa, "sb", EACH).await;
    let expected: Vec<String> = seen[0]
        .iter()
        .filter(|l| l.starts_with("sb> "))
        .cloned()
        .collect();
    assert_eq!(from_b, expected);
    drop(sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nick_claimed_at_once_on_two_nodes_goes_to_exactly_one() {
    let redis = Redis::on_tcp();
    let (a, b) = (redis.node(), redis.node());
    let mut x = Client::connect(a.addr).await;
    let mut y = Client::connect(b.addr).await;
    x.greeted().await;
    y.greeted().await;
    // Apart, so that neither sees the other's renames (which are told
    // across nodes) and mistakes them for its own.
    y.send("/join elsewhere").await;
    y.wait_for("the move", |l| l.starts_with("* you are now in elsewhere"))
        .await;
    for round in 0..10 {
        let (lower, upper) = (format!("alice{round}"), format!("ALICE{round}"));
        let (to_x, to_y) = (format!("/nick {lower}"), format!("/nick {upper}"));
        tokio::join!(x.send(&to_x), y.send(&to_y));
        let renamed_or_refused =
            |l: &str| l.contains("is now known as") || l.contains("already in use");
        let gx = x.wait_for("an answer", renamed_or_refused).await;
        let gy = y.wait_for("an answer", renamed_or_refused).await;
        let won = [&gx, &gy]
            .iter()
            .filter(|l| l.contains("is now known as"))
            .count();
        assert_eq!(won, 1, "round {round}: {gx:?} / {gy:?}");
        // The winner moves on, freeing the name for the next round's test
        // of release: the loser can now take it.
        let (winner, loser, name) = if gx.contains("is now known as") {
            (&mut x, &mut y, upper)
        } else {
            (&mut y, &mut x, lower)
        };
        winner.send(&format!("/nick w{round}")).await;
        winner
            .wait_for("the move", |l| {
                l.ends_with(&format!("is now known as w{round}"))
            })
            .await;
        take_once_free(loser, &name).await;
        loser.send(&format!("/nick l{round}")).await;
        loser
            .wait_for("the move", |l| {
                l.ends_with(&format!("is now known as l{round}"))
            })
            .await;
    }
    // A nick held on A is refused on B, and freed when its owner leaves.
    let mut held = named(&a, "Holder").await;
    y.send("/nick holder").await;
    y.expect_suffix("already in use; pick another").await;
    held.send("/quit").await;
    held.until_eof().await;
    take_once_free(&mut y, "holder").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_redis_refuses_to_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nobody.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_rchat"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cluster"])
        .arg(format!("redis+unix://{}", missing.display()))
        .output()
        .expect("rchat serve runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the cluster's Redis"), "{err}");
    let _ = Path::new(&missing);
}

/// `rchat bench` spreads its clients over every node given, so lines cross
/// nodes, and reports every process watched (the nodes and Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_spreads_clients_over_the_nodes_and_watches_each_process() {
    let redis = Redis::on_socket();
    let (a, b) = (redis.node(), redis.node());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report.json");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_rchat"))
        .arg("bench")
        .arg(a.addr.to_string())
        .arg(b.addr.to_string())
        .args([
            "--clients",
            "6",
            "--senders",
            "2",
            "--rate",
            "100",
            "--window",
            "0",
        ])
        .args(["--duration", "1", "--warmup", "0.2", "--quiet"])
        .args(["--server-pid", &a.pid().to_string()])
        .args(["--server-pid", &b.pid().to_string()])
        .args(["--server-pid", &redis.pid().to_string()])
        .arg("--out")
        .arg(&out)
        .status()
        .await
        .expect("rchat bench runs");
    assert!(status.success(), "{status:?}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["settings"]["other_addrs"][0], b.addr.to_string());
    assert_eq!(report["loss"], 0);
    assert!(report["deliveries"].as_u64().unwrap() > 0, "{report}");
    let others = report["others"].as_array().expect("the other processes");
    assert_eq!(others.len(), 2);
    assert_eq!(others[1]["pid"], redis.pid());
    // Both nodes had members: each told the cluster of its own joins.
    let events = redis.cli(&["XRANGE", "rchat:room:lobby:events", "-", "+"]);
    let origins: std::collections::HashSet<&str> = events
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "o")
        .map(|w| w[1])
        .collect();
    assert_eq!(origins.len(), 2, "joins came from {origins:?}");
}

/// Clients joining at once on two nodes: each one's member count plus the
/// joins it is told afterwards add up to everyone, with no one missed or
/// told twice (the room's mirror of the other node's members starts from
/// the list read with its events position).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_at_once_on_two_nodes_are_each_counted_or_told_exactly_once() {
    const EVERYONE: usize = 12;
    let redis = Redis::on_socket();
    let nodes = [redis.node(), redis.node()];
    let mut tasks = Vec::new();
    for i in 0..EVERYONE {
        let addr = nodes[i % 2].addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            let confirm = c
                .wait_for("the room", |l| l.starts_with("* you are now in lobby"))
                .await;
            let count = if confirm.contains("(just you)") {
                1
            } else {
                confirm
                    .split('(')
                    .nth(1)
                    .and_then(|r| r.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .expect("a member count")
            };
            c.nick = format!("client {i}");
            (c, count)
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    for (c, count) in &mut clients {
        let mut known = *count;
        while known < EVERYONE {
            c.wait_for("a join", |l| l.ends_with(" joined lobby")).await;
            known += 1;
        }
        // And no join told twice: none comes before the answer to /who.
        c.send("/who").await;
        let who = loop {
            let l = c.line().await;
            assert!(!l.ends_with(" joined lobby"), "{}: extra {l:?}", c.nick);
            if l.starts_with("* lobby (") {
                break l;
            }
        };
        assert!(who.starts_with(&format!("* lobby ({EVERYONE})")), "{who}");
    }
}
