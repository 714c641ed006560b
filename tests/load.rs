//! Many clients and slow clients: nothing lost, one order per room, and a
//! reader that stops reading hurts only itself.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{Client, TestServer};
use rchat::config::ServerConfig;
use tokio::io::AsyncReadExt;
use tokio::sync::Barrier;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_zero_loss_one_order() {
    const N: usize = 500;
    let srv = TestServer::start().await;
    let barrier = Arc::new(Barrier::new(N));
    let mut tasks = Vec::new();
    for _ in 0..N {
        let addr = srv.addr;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await;
            c.greeted().await;
            // Everyone is in the lobby before anyone speaks.
            tokio::time::timeout(common::DEADLINE * 4, barrier.wait())
                .await
                .expect("every client joined");
            c.send(&format!("msg-from-{}", c.nick)).await;
            let mut seen = Vec::with_capacity(N - 1);
            while seen.len() < N - 1 {
                let l = c.line().await;
                if l.starts_with("* ") {
                    continue;
                }
                let (from, text) = l.split_once("> ").expect("chat line");
                assert_eq!(text, format!("msg-from-{from}"), "attribution");
                seen.push(from.to_string());
            }
            // Nothing beyond the N-1 messages, and in particular no echo.
            c.expect_nothing_pending().await;
            // Returned, not dropped: a leave notice now would disturb the
            // others' checks.
            (c.nick.clone(), seen, c)
        }));
    }
    let mut orders: HashMap<String, Vec<String>> = HashMap::new();
    let mut keep = Vec::new();
    for t in tasks {
        let (nick, seen, client) = t.await.expect("client task");
        keep.push(client);
        assert!(!seen.contains(&nick), "{nick} got its own message back");
        let mut uniq = seen.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), N - 1, "{nick}: duplicates or loss");
        orders.insert(nick, seen);
    }
    // Rebuild the room's total order from two clients' views, then check
    // every client saw exactly that order minus its own message.
    let mut nicks: Vec<_> = orders.keys().cloned().collect();
    nicks.sort();
    let (a, b) = (&nicks[0], &nicks[1]);
    let mut total = orders[a].clone();
    let pos_in_b = orders[b].iter().position(|n| n == a).expect("b saw a");
    let before: Vec<&String> = orders[b][..pos_in_b].iter().filter(|n| *n != b).collect();
    let insert_at = if let Some(prev) = before.last() {
        total.iter().position(|n| n == *prev).expect("in a's order") + 1
    } else {
        0
    };
    total.insert(insert_at, a.clone());
    assert_eq!(total.len(), N);
    for (nick, seen) in &orders {
        let expected: Vec<&String> = total.iter().filter(|n| *n != nick).collect();
        let seen: Vec<&String> = seen.iter().collect();
        assert_eq!(seen, expected, "{nick} saw a different order");
    }
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_that_never_reads_is_dropped_and_does_not_stall_others() {
    let srv = TestServer::with(ServerConfig {
        max_sendq: 64 * 1024,
        ..ServerConfig::default()
    })
    .await;
    let mut alice = srv.named("alice").await;
    let mut bob = srv.named("bob").await;

    // The slow client: a tiny receive window, and it never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(srv.addr).await.unwrap();
    let mut slow = Client::over(Box::new(stream));
    slow.greeted().await;
    let slow_nick = slow.nick.clone();
    let mut slow_io = slow;

    let evicted = Arc::new(AtomicBool::new(false));
    let stop = evicted.clone();
    // Bob reports how far he has read; alice keeps at most WINDOW lines
    // ahead of him, so bob (a healthy reader) never nears his own limit.
    const WINDOW: u32 = 16;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u32);
    let sender = tokio::spawn(async move {
        let pad = "x".repeat(900);
        let mut sent = 0u32;
        // Bounded: at most 60k lines of ~1 KB, far more than the slow
        // client's socket buffers and queue can hold.
        while !stop.load(Ordering::Relaxed) && sent < 60_000 {
            if progress
                .wait_for(|&read| sent < read + WINDOW)
                .await
                .is_err()
            {
                break;
            }
            alice.send(&format!("{sent} {pad}")).await;
            sent += 1;
        }
        alice.send("done").await;
        (alice, sent)
    });

    let notice = format!("* {slow_nick} was disconnected (send queue full: client too slow)");
    let mut next = 0u32;
    let mut saw_notice = false;
    loop {
        let l = bob.line().await;
        if l == notice {
            saw_notice = true;
            evicted.store(true, Ordering::Relaxed);
            continue;
        }
        if l.starts_with("* ") {
            continue;
        }
        let body = l.strip_prefix("alice> ").expect("only alice talks");
        if body == "done" {
            break;
        }
        let n: u32 = body.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, next, "bob lost or reordered a message");
        next += 1;
        let _ = progress_tx.send(next);
    }
    let (_alice, sent) = sender.await.unwrap();
    assert!(saw_notice, "the slow reader was never evicted");
    assert_eq!(next, sent, "bob got every message");
    srv.wait_members(2).await;

    // The evicted client finds its connection closed once it reads what
    // was already in its socket.
    let mut sink = Vec::new();
    let read = tokio::time::timeout(
        common::DEADLINE,
        slow_io_read_to_end(&mut slow_io, &mut sink),
    )
    .await;
    assert!(read.is_ok(), "evicted connection was not closed");
    srv.stop().await;
}

async fn slow_io_read_to_end(c: &mut Client, sink: &mut Vec<u8>) {
    let io = c.raw();
    let _ = io.read_to_end(sink).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_quits_without_reading_frees_its_slot() {
    let srv = TestServer::with(ServerConfig {
        max_clients: 1,
        // Large enough that the queue never overflows: the close path, not
        // eviction, must end this connection.
        max_sendq: 64 * 1024 * 1024,
        close_timeout_secs: 1,
        ..ServerConfig::default()
    })
    .await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let stream = sock.connect(srv.addr).await.unwrap();
    let mut stuck = Client::over(Box::new(stream));
    stuck.greeted().await;
    // About 14 MB of replies it never reads, far beyond socket buffers:
    // the server's write blocks.
    for _ in 0..20_000 {
        stuck.send("/help").await;
    }
    stuck.send("/quit").await;
    srv.wait_members(0).await;
    // The slot comes back once the blocked write is given up.
    let mut admitted = false;
    for _ in 0..200 {
        let mut next = Client::connect(srv.addr).await;
        let first = next.try_line().await;
        if first.is_some_and(|l| l.starts_with("* welcome")) {
            admitted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(admitted, "the quitting client's slot was never freed");
    drop(stuck);
    srv.stop().await;
}
