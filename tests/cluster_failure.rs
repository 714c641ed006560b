//! A cluster when something breaks: a node killed (`kill -9`), a node
//! whose heartbeat lapses, and the cluster's Redis stopped and started
//! again without its data. Each test starts its own `redis-server` on a
//! unix socket and real `rchat serve --cluster` nodes, with a short node
//! TTL so that reaping happens within seconds.

mod common;

use std::time::{Duration, Instant};

use common::redis::*;
use common::served::Served;
use common::Client;
use rchat::proto::json::{ErrorCode, ServerMsg};

/// The node TTL these tests run with, and how soon after it a dead node's
/// members must be gone everywhere: one sweep (a third of the TTL) and
/// room for a loaded machine.
const TTL: &str = "1s";
const REAPED_WITHIN: Duration = Duration::from_millis(1000 + 334 + 1500);

/// Two nodes with the test TTL, alice on the first and bob on the second,
/// a line between them seen.
async fn alice_and_bob_chatting(redis: &Redis) -> (Served, Served, Client, Client) {
    let a = redis.node_with(&["--cluster-node-ttl", TTL]);
    let b = redis.node_with(&["--cluster-node-ttl", TTL]);
    let mut alice = named(&a, "alice").await;
    let mut bob = named(&b, "bob").await;
    alice.send("hi").await;
    assert_eq!(next_chat(&mut bob).await, "alice> hi");
    (a, b, alice, bob)
}

/// Sends a signal to a node (`kill -STOP`, `kill -CONT`).
fn signal(node: &Served, which: &str) {
    let status = std::process::Command::new("kill")
        .arg(which)
        .arg(node.pid().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

/// Lines `c` receives until `want` matches one; panics if another line
/// matching `unwanted` comes first.
async fn wait_without(
    c: &mut Client,
    want: impl Fn(&str) -> bool,
    unwanted: impl Fn(&str) -> bool,
) -> String {
    loop {
        let l = c.line().await;
        assert!(!unwanted(&l), "{}: unexpected {l:?}", c.nick);
        if want(&l) {
            return l;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_reaped_once_its_users_leave_everywhere_and_it_can_come_back() {
    let redis = Redis::on_socket();
    let a = redis.node_with(&["--cluster-node-ttl", TTL]);
    let b = redis.node_with(&["--cluster-node-ttl", TTL]);
    let mut c = redis.node_with(&["--cluster-node-ttl", TTL]);
    let mut alice = named(&a, "alice").await;
    let mut bob = named(&b, "bob").await;
    let mut carol = named(&c, "carol").await;
    carol.send("hello from C").await;
    assert_eq!(next_chat(&mut alice).await, "carol> hello from C");
    assert_eq!(next_chat(&mut bob).await, "carol> hello from C");

    let _ = c.child.kill();
    let _ = c.child.wait();
    let killed = Instant::now();
    let gone = |l: &str| l == "* carol was disconnected (their server stopped answering)";
    for survivor in [&mut alice, &mut bob] {
        survivor.wait_for("carol's departure", gone).await;
        assert!(
            killed.elapsed() < REAPED_WITHIN,
            "carol left only after {:?}",
            killed.elapsed()
        );
    }
    // Once, not once per sweeping node: nothing more about carol before a
    // marker.
    alice.send("still here").await;
    let l = wait_without(&mut bob, |l| l.starts_with("alice> "), gone).await;
    assert_eq!(l, "alice> still here");
    bob.send("me too").await;
    let l = wait_without(&mut alice, |l| l.starts_with("bob> "), gone).await;
    assert_eq!(l, "bob> me too");
    // Her nick is free, and she is in no member list.
    bob.send("/who").await;
    let who = bob
        .wait_for("the member list", |l| l.starts_with("* lobby ("))
        .await;
    assert!(!who.contains("carol"), "{who}");
    assert!(who.contains("alice") && who.contains("bob"), "{who}");
    let mut carol_again = named(&a, "carol").await;

    // The node comes back (a new process, a new id) and chats as before.
    c = redis.node_with(&["--cluster-node-ttl", TTL]);
    let mut dave = named(&c, "dave").await;
    dave.send("back on C").await;
    for peer in [&mut alice, &mut bob, &mut carol_again] {
        assert_eq!(
            wait_without(peer, |l| l.starts_with("dave> "), gone).await,
            "dave> back on C"
        );
    }
    carol_again.send("hi dave").await;
    assert_eq!(next_chat(&mut dave).await, "carol> hi dave");
    drop(carol);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_found_dead_drops_its_clients_and_serves_again_under_a_new_id() {
    let redis = Redis::on_socket();
    let (a, _b, mut alice, mut bob) = alice_and_bob_chatting(&redis).await;
    // Node A stalls past its TTL (stopped, as a frozen VM or a long pause
    // would): B reaps it; once it runs again, A finds it is dead.
    let owner = redis.cli(&["GET", "rchat:nick:alice"]);
    let node_a = owner.split('/').next().expect("NODE/TOKEN").to_string();
    signal(&a, "-STOP");
    bob.wait_for("alice's departure", |l| {
        l == "* alice was disconnected (their server stopped answering)"
    })
    .await;
    signal(&a, "-CONT");
    let told = alice.until_eof().await;
    assert!(
        told.iter()
            .any(|l| l.contains("lost contact with the cluster")),
        "{told:?}"
    );
    // A serves again, under a new id, and her nick is hers to take.
    let mut alice = named(&a, "alice").await;
    let owner_now = redis.cli(&["GET", "rchat:nick:alice"]);
    assert!(
        !owner_now.starts_with(&node_a),
        "{owner_now} is under the old id"
    );
    alice.send("back").await;
    assert_eq!(next_chat(&mut bob).await, "alice> back");
    let nodes = redis.cli(&["SMEMBERS", "rchat:nodes"]);
    assert_eq!(nodes.lines().count(), 2, "{nodes}");
    assert!(!nodes.contains(&node_a), "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_and_started_empty_refuses_sends_then_chat_resumes() {
    let mut redis = Redis::on_socket();
    // A TTL longer than the outage: the clients stay connected through it.
    let a = redis.node_with(&["--cluster-node-ttl", "8s"]);
    let b = redis.node_with(&["--cluster-node-ttl", "8s"]);
    let mut alice = named(&a, "alice").await;
    let mut bob = named(&b, "bob").await;
    let (mut jo, _) = json_jo_in_lobby(&b).await;
    alice.send("before").await;
    assert_eq!(next_chat(&mut bob).await, "alice> before");

    redis.kill();
    let sent = Instant::now();
    alice.send("while down").await;
    alice
        .wait_for("the refusal", |l| {
            l.starts_with("* error: the message was not sent")
        })
        .await;
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "refused only after {:?}",
        sent.elapsed()
    );
    jo.send(r#"{"type":"say","id":"d","room":"lobby","text":"json while down"}"#)
        .await;
    match json_next(&mut jo, |m| {
        matches!(m, ServerMsg::Ack { .. } | ServerMsg::Error { .. })
    })
    .await
    {
        ServerMsg::Error { code, .. } => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("a send while Redis is down was not refused: {other:?}"),
    }

    redis.start_again();
    let emptied = |l: &str| l.contains("restarted without its data");
    alice.wait_for("the notice", emptied).await;
    bob.wait_for("the notice", emptied).await;
    // Chat resumes across nodes, both ways, in one numbering.
    alice.send("after").await;
    assert_eq!(next_chat(&mut bob).await, "alice> after");
    bob.send("welcome back").await;
    assert_eq!(next_chat(&mut alice).await, "bob> welcome back");
    // Members and nicks are registered again: a newcomer sees everyone
    // and cannot take a nick in use on another node.
    let mut eve = named(&b, "eve").await;
    eve.send("/who").await;
    let who = eve
        .wait_for("the member list", |l| l.starts_with("* lobby ("))
        .await;
    for nick in ["alice", "bob", "jo"] {
        assert!(who.contains(nick), "{nick} missing from {who}");
    }
    let hash = redis.cli(&["HVALS", "rchat:room:lobby:members"]);
    for nick in ["alice", "bob", "jo"] {
        assert!(
            hash.lines().any(|l| l == nick),
            "{nick} not in Redis: {hash}"
        );
    }
    eve.send("/nick alice").await;
    eve.wait_for("the refusal", |l| l.contains("already in use"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_longer_than_the_ttl_drops_clients_and_nodes_come_back() {
    let mut redis = Redis::on_socket();
    let (a, b, mut alice, mut bob) = alice_and_bob_chatting(&redis).await;

    redis.kill();
    let down = Instant::now();
    for c in [&mut alice, &mut bob] {
        let told = c.until_eof().await;
        assert!(
            told.iter()
                .any(|l| l.contains("lost contact with the cluster")),
            "{told:?}"
        );
    }
    assert!(
        down.elapsed() < REAPED_WITHIN,
        "clients dropped only after {:?}",
        down.elapsed()
    );
    // While Redis is away a newcomer is refused, and told so.
    let mut early = Client::connect(a.addr).await;
    let refusal = early.until_eof().await;
    assert!(
        refusal.iter().any(|l| l.starts_with("* error:")),
        "{refusal:?}"
    );

    redis.start_again();
    let mut carol = named_once_serving(&a, "carol").await;
    let mut dave = named_once_serving(&b, "dave").await;
    carol.send("we are back").await;
    assert_eq!(next_chat(&mut dave).await, "carol> we are back");
    dave.send("so we are").await;
    assert_eq!(next_chat(&mut carol).await, "dave> so we are");
}

/// A client named `nick` on `node`, once the node serves again: until it
/// has registered with Redis, newcomers are refused (and told so).
async fn named_once_serving(node: &Served, nick: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Client::connect(node.addr).await;
        let first = c.try_line().await.unwrap_or_default();
        if first.starts_with("* welcome") {
            c.send(&format!("/nick {nick}")).await;
            c.expect_suffix(&format!("is now known as {nick}")).await;
            c.nick = nick.to_string();
            return c;
        }
        assert!(first.starts_with("* error:"), "{first:?}");
        assert!(
            Instant::now() < deadline,
            "{} never served again",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
