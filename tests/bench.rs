//! `rchat bench`'s load generator against a real in-process server (and a
//! stand-in for `ncat --chat`), on loopback only, in short runs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rchat::bench::token::{self, Parsed, Token};
use rchat::bench::{run, BenchConfig, BenchError, Rate, Report};
use rchat::config::ServerConfig;
use rchat::server::Server;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

/// A real rchat server on 127.0.0.1, port 0.
struct TestServer {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start() -> TestServer {
        let server = Server::bind(ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            history: rchat::config::HistoryMode::Off,
            ..Default::default()
        })
        .await
        .expect("server binds");
        let addr = server.local_addrs()[0];
        let (stop, stop_rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            stop_rx.await.ok();
        }));
        TestServer { addr, stop, task }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops in time")
            .expect("server task does not panic");
    }
}

fn config(addr: SocketAddr) -> BenchConfig {
    BenchConfig {
        quiet: true,
        warmup: Duration::ZERO,
        grace: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(10),
        ..BenchConfig::new(addr)
    }
}

fn assert_clean(r: &Report) {
    assert_eq!(r.loss, 0, "loss\n{}", r.table());
    assert_eq!(r.duplicates, 0, "duplicates\n{}", r.table());
    assert_eq!(r.order_violations, 0, "order\n{}", r.table());
    assert_eq!(r.unexpected_tokens, 0, "unexpected\n{}", r.table());
    assert_eq!(r.malformed_tokens, 0, "malformed\n{}", r.table());
    assert_eq!(r.disconnects, 0, "disconnects\n{}", r.table());
    assert!(r.drained, "not drained\n{}", r.table());
    assert_eq!(
        r.deliveries,
        r.messages_sent * (r.settings.clients as u64 - 1),
        "deliveries vs sent\n{}",
        r.table()
    );
    assert_eq!(r.expected_deliveries, r.deliveries);
    assert_eq!(r.latency.samples, r.deliveries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_loop_run_is_lossless_and_ordered() {
    let srv = TestServer::start().await;
    let cfg = BenchConfig {
        clients: 10,
        senders: 10,
        window: 4,
        rate: Rate::Max,
        duration: Duration::from_secs(1),
        ..config(srv.addr)
    };
    let began = Instant::now();
    let r = run(&cfg).await.expect("bench runs");
    let took = began.elapsed();
    println!("{}", r.table());
    assert_clean(&r);
    // The connect phase's join notices were drained before the start.
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    assert!(r.messages_sent > 0 && r.deliveries > 0, "{}", r.table());
    assert_eq!(r.connect.greeted, 10);
    assert!(r.latency.p50_ms > 0.0 && r.latency.p50_ms <= r.latency.max_ms);
    assert!(r.deliveries_per_sec > 0.0);
    // Connect (~300 ms greeting delay) + 1 s + a short drain.
    assert!(took < Duration::from_secs(6), "took {took:?}");
    // The JSON form carries the same numbers.
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["deliveries"], r.deliveries);
    assert_eq!(json["settings"]["rate"], serde_json::Value::Null);
    assert_eq!(json["settings"]["window"], 4);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn open_loop_sends_at_the_requested_rate() {
    let srv = TestServer::start().await;
    let cfg = BenchConfig {
        clients: 6,
        senders: 3,
        window: 0,
        rate: Rate::PerSecond(300.0),
        size: 200,
        warmup: Duration::from_millis(200),
        duration: Duration::from_secs(1),
        ..config(srv.addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    // 300/s for 1 s, give or take a message per sender at either edge.
    assert!(
        (295..=305).contains(&r.messages_sent),
        "sent {}\n{}",
        r.messages_sent,
        r.table()
    );
    // 300/s during the 200 ms warm-up, not counted above.
    assert!(
        (55..=65).contains(&r.warmup_messages),
        "warm-up {}",
        r.warmup_messages
    );
    assert_eq!(r.settings.rate, Some(300.0));
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn works_against_a_relay_that_decorates_and_splits_lines() {
    let (addr, relay) = ncat_like_relay().await;
    let cfg = BenchConfig {
        clients: 4,
        senders: 2,
        window: 8,
        rate: Rate::Max,
        size: 64,
        duration: Duration::from_millis(500),
        ..config(addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    assert!(r.deliveries > 0);
    // No rchat greeting: the clients waited out the quiet second, then a
    // roll call waited for the relay to admit the slow last client.
    assert_eq!(r.connect.greeted, 0);
    assert!(r.connect.roll_call_complete, "{}", r.table());
    assert!(r.connect.roll_call_rounds >= 1, "{}", r.table());
    // Every connect announcement arrived before the start.
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    relay.abort();
}

/// Heavier than the default test budget; run it with
/// `cargo test --release --test bench -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn many_clients_closed_loop() {
    let srv = TestServer::start().await;
    let cfg = BenchConfig {
        clients: 1000,
        senders: 50,
        window: 8,
        rate: Rate::Max,
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(3),
        ..config(srv.addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    srv.stop().await;
}

#[tokio::test]
async fn bad_settings_and_unreachable_servers_are_errors() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    for cfg in [
        BenchConfig {
            clients: 1,
            ..config(addr)
        },
        BenchConfig {
            senders: 0,
            ..config(addr)
        },
        BenchConfig {
            clients: 2,
            senders: 3,
            ..config(addr)
        },
        BenchConfig {
            size: 10,
            ..config(addr)
        },
        BenchConfig {
            rate: Rate::PerSecond(0.0),
            ..config(addr)
        },
        BenchConfig {
            duration: Duration::ZERO,
            ..config(addr)
        },
    ] {
        assert!(matches!(run(&cfg).await, Err(BenchError::Config(_))));
    }
    // Nothing listens on a freshly closed port.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let cfg = BenchConfig {
        clients: 3,
        senders: 1,
        duration: Duration::from_millis(100),
        ..config(port)
    };
    let err = run(&cfg).await.expect_err("nothing listens");
    assert!(matches!(err, BenchError::Connect { .. }), "{err}");
}

#[test]
fn rate_parses_max_and_positive_numbers() {
    assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
    assert_eq!("MAX".parse::<Rate>(), Ok(Rate::Max));
    assert_eq!("250".parse::<Rate>(), Ok(Rate::PerSecond(250.0)));
    assert_eq!("0.5".parse::<Rate>(), Ok(Rate::PerSecond(0.5)));
    for bad in ["0", "-3", "nan", "inf", "fast", ""] {
        assert!(bad.parse::<Rate>().is_err(), "{bad}");
    }
    assert_eq!(Rate::Max.to_string(), "max");
}

// ---- token parsing ----

fn tok(sender: u64, seq: u64, sent_ns: u64) -> Token {
    Token {
        sender,
        seq,
        sent_ns,
    }
}

#[test]
fn token_is_found_anywhere_in_the_line() {
    let t = tok(3, 41, 1_234_567);
    let msg = t.line(80);
    let msg = msg.trim_end();
    assert_eq!(msg.len(), 80);
    assert!(msg.starts_with("#b:3:41:1234567:"));
    for line in [
        msg.to_string(),
        format!("guest12> {msg}"),
        format!("<user5> {msg}"),
        format!("[private] bob> {msg}"),
        format!("* alice {msg}"),
        format!("{msg} trailing words"),
        format!("xx#b:9:9 and then {msg}"),
    ] {
        assert_eq!(token::parse(line.as_bytes()), Parsed::Token(t), "{line}");
    }
    // The first complete token wins.
    let two = format!("a> {} {}", tok(1, 2, 3).line(40).trim_end(), msg);
    assert_eq!(token::parse(two.as_bytes()), Parsed::Token(tok(1, 2, 3)));
}

#[test]
fn garbage_is_classified_not_fatal() {
    for line in [
        &b""[..],
        b"* welcome to rchat, guest1! type /help for commands",
        b"* guest4 joined lobby",
        b"hello #b",
        b"\xff\xfe\x00\x01",
    ] {
        assert_eq!(token::parse(line), Parsed::NoToken, "{line:?}");
    }
    for line in [
        &b"#b:"[..],
        b"#b:1:2",
        b"#b:1:2:3",
        b"#b::2:3:",
        b"#b:a:b:c:",
        b"#b:1:-2:3:",
        b"#b:99999999999999999999:1:1:",
        b"x> #b:1:2:\xff:",
    ] {
        assert_eq!(token::parse(line), Parsed::Malformed, "{line:?}");
    }
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = token::parse(&bytes);
    }

    #[test]
    fn tokens_survive_any_decoration(
        sender in 0u64..100_000,
        seq in any::<u64>(),
        sent_ns in any::<u64>(),
        prefix in "[^#]{0,20}",
        size in 0usize..300,
    ) {
        let t = tok(sender, seq, sent_ns);
        let line = format!("{prefix}{}", t.line(size));
        prop_assert_eq!(token::parse(line.trim_end().as_bytes()), Parsed::Token(t));
    }
}

// ---- a stand-in for `ncat --chat` ----

/// Like `ncat --chat`: no greeting, an announcement to everyone (the new
/// client included) on each connect and disconnect, and relayed data
/// prefixed with `<userN> ` once per read chunk, not per line, with no echo.
/// Like ncat with a full accept queue, it admits clients slowly: the last
/// one only after the bench's quiet second is over, so messages sent before
/// a roll call would miss it. To test framing, every write is split in two
/// at a varying point.
async fn ncat_like_relay() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    type Peers = Arc<Mutex<Vec<(usize, mpsc::UnboundedSender<Vec<u8>>)>>>;
    let peers: Peers = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn(async move {
        let mut next_id = 0;
        let mut conns = tokio::task::JoinSet::new();
        loop {
            if next_id > 0 {
                tokio::time::sleep(Duration::from_millis(450)).await;
            }
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let id = next_id;
            next_id += 1;
            let (mut read, mut write) = sock.into_split();
            let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
            {
                let mut p = peers.lock().await;
                p.push((id, tx));
                let notice = format!("<announce> 127.0.0.1 is connected as <user{id}>.\n");
                for (_, other) in p.iter() {
                    let _ = other.send(notice.clone().into_bytes());
                }
            }
            conns.spawn(async move {
                let mut cut = 0usize;
                while let Some(data) = rx.recv().await {
                    cut = (cut + 7) % (data.len() + 1);
                    if write.write_all(&data[..cut]).await.is_err() {
                        return;
                    }
                    tokio::task::yield_now().await;
                    if write.write_all(&data[cut..]).await.is_err() {
                        return;
                    }
                }
            });
            let peers = peers.clone();
            conns.spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0; 8192];
                while let Ok(n @ 1..) = read.read(&mut buf).await {
                    // One prefix per chunk, however many lines it holds.
                    let mut out = format!("<user{id}> ").into_bytes();
                    out.extend_from_slice(&buf[..n]);
                    for (other, tx) in peers.lock().await.iter() {
                        if *other != id {
                            let _ = tx.send(out.clone());
                        }
                    }
                }
                let mut p = peers.lock().await;
                p.retain(|(other, _)| *other != id);
                for (_, tx) in p.iter() {
                    let _ =
                        tx.send(format!("<announce> <user{id}> is disconnected.\n").into_bytes());
                }
            });
        }
    });
    (addr, task)
}
