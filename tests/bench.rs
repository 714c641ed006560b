//! `rchat bench`'s load generator against a real server (in this process,
//! or the real binary where its own CPU and memory are the point), and
//! against stand-ins for `ncat --chat`, on loopback only, in short runs.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::served::gen_cert;
use common::served::Served;
use common::TestServer;
use proptest::prelude::*;
use rchat::bench::idle::{self, IdleConfig};
use rchat::bench::sweep::{self, Senders, SweepSpec};
use rchat::bench::token::{self, Parsed, Token};
use rchat::bench::{plot, run, BenchConfig, BenchError, Rate, Report, TlsTarget};
use rchat::client::trust::{self, KnownHosts, TrustMode};
use rchat::config::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

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
        BenchConfig {
            slow: 1,
            slow_rate: Some(0),
            ..config(addr)
        },
        BenchConfig {
            churn: 5,
            churn_at: Some(Duration::from_secs(10)),
            duration: Duration::from_secs(10),
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

// ---- slow receivers and churn waves ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_evicted_while_the_measured_lose_nothing() {
    // Long lines, 2 MB/s to every client: the slow clients' queues
    // overflow within about 2.5 s, once the server's kernel has buffered
    // all it will (up to 4 MiB here), while a measured client has the
    // default 1 MiB queue to fall half a second behind without eviction
    // when the machine is busy.
    let srv = TestServer::with(ServerConfig {
        max_line: 4096,
        ..ServerConfig::default()
    })
    .await;
    let base = BenchConfig {
        clients: 5,
        senders: 2,
        window: 0,
        rate: Rate::PerSecond(1000.0),
        size: 2000,
        duration: Duration::from_secs(4),
        slow: 2,
        ..config(srv.addr)
    };
    for slow_rate in [None, Some(1000)] {
        let cfg = BenchConfig {
            slow_rate,
            ..base.clone()
        };
        let r = run(&cfg).await.expect("bench runs");
        println!("{}", r.table());
        assert_clean(&r);
        assert!(r.deliveries > 0, "{}", r.table());
        assert_eq!(r.unparsed_lines, 0, "{}", r.table());
        let slow = r.slow.as_ref().expect("slow figures");
        assert_eq!(slow.clients, 2);
        assert_eq!(slow.read_rate, slow_rate);
        assert_eq!(slow.evicted, 2, "{}", r.table());
        assert_eq!(slow.evicted_at_secs.len(), 2);
        for &at in &slow.evicted_at_secs {
            assert!(at > 0.0 && at < 4.0, "evicted at {at} s\n{}", r.table());
        }
        assert_eq!(slow.bytes_read > 0, slow_rate.is_some(), "{}", r.table());
        // Every measured client read both evictions, and nothing else.
        assert_eq!(r.notices.disconnected, 2 * 5, "{}", r.table());
        assert_eq!((r.notices.joined, r.notices.left), (0, 0));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let series = r.latency_series.as_ref().expect("series");
        assert_eq!(series.points.len(), 40);
        assert_eq!(
            series.points.iter().map(|p| p.samples).sum::<u64>(),
            r.latency.samples
        );
        assert_eq!(series.p99_per_second_ms.len(), 4);
        assert!(r.table().contains("2 disconnected by the server"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["slow"]["evicted"], 2);
        assert_eq!(json["settings"]["slow"], 2);
        srv.wait_members(0).await;
    }
    srv.stop().await;
}

/// Samples the hub's member count every few milliseconds until dropped,
/// keeping the highest.
struct PeakMembers {
    peak: Arc<std::sync::atomic::AtomicUsize>,
    task: JoinHandle<()>,
}

impl PeakMembers {
    fn watch(srv: &TestServer) -> PeakMembers {
        Self::watch_room(srv, None)
    }

    /// The peak of one room's members, or of the server's with `None`.
    fn watch_room(srv: &TestServer, room: Option<&'static str>) -> PeakMembers {
        let hub = srv.hub.clone();
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                let count = match room {
                    Some(room) => hub.who(room).map_or(0, |(_, nicks)| nicks.len()),
                    None => hub.member_count(),
                };
                seen.fetch_max(count, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        PeakMembers { peak, task }
    }

    fn stop(self) -> usize {
        self.task.abort();
        self.peak.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Five clients chatting at 200 msg/s for two seconds while `churn` others
/// join at 0.3 s and leave 0.4 s after they are all in.
fn churn_wave(addr: SocketAddr, churn: usize) -> BenchConfig {
    BenchConfig {
        clients: 5,
        senders: 2,
        window: 0,
        rate: Rate::PerSecond(200.0),
        size: 64,
        duration: Duration::from_secs(2),
        churn,
        churn_at: Some(Duration::from_millis(300)),
        churn_hold: Some(Duration::from_millis(400)),
        ..config(addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_churn_wave_joins_and_leaves_without_loss() {
    let srv = TestServer::start().await;
    let peak = PeakMembers::watch(&srv);
    let cfg = churn_wave(srv.addr, 50);
    let r = run(&cfg).await.expect("bench runs");
    let peak = peak.stop();
    println!("{}", r.table());
    assert_clean(&r);
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    // The whole wave was in the room at once, beside the measured clients.
    assert_eq!(peak, 5 + 50);
    let c = r.churn.as_ref().expect("churn figures");
    assert!(c.started);
    assert_eq!((c.joined, c.left, c.failed), (50, 50, 0), "{}", r.table());
    // Every measured client read every join and every quit.
    assert_eq!(r.notices.joined, 5 * 50, "{}", r.table());
    assert_eq!(r.notices.left, 5 * 50, "{}", r.table());
    assert_eq!(r.notices.disconnected, 0, "{}", r.table());
    // The phases in order, where they were planned.
    assert!(c.join_from_secs >= 0.3 && c.join_from_secs < 1.0, "{c:?}");
    assert!(c.join_to_secs > c.join_from_secs, "{c:?}");
    assert!(c.leave_from_secs - c.join_to_secs >= 0.4, "{c:?}");
    assert!(c.leave_to_secs > c.leave_from_secs, "{c:?}");
    // Each measured message is counted in exactly one window.
    for w in [&c.during_joins, &c.during_leaves, &c.outside] {
        assert!(w.samples > 0, "{w:?}\n{}", r.table());
    }
    assert_eq!(
        c.during_joins.samples + c.during_leaves.samples + c.outside.samples,
        r.latency.samples
    );
    assert!(r.table().contains("during joins") && r.table().contains("p99 per second"));
    // Every churn connection was closed.
    srv.wait_members(0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_churn_wave_into_a_big_room_is_counted_from_its_summaries() {
    let srv = TestServer::start().await;
    let cfg = churn_wave(srv.addr, 200);
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    let c = r.churn.as_ref().expect("churn figures");
    assert_eq!((c.joined, c.left, c.failed), (200, 200, 0), "{}", r.table());
    // Past 32 members the room tells joins and leaves as summaries; every
    // one of them is still counted, and no line went unread.
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    assert_eq!(r.notices.joined, 5 * 200, "{}", r.table());
    assert_eq!(r.notices.left, 5 * 200, "{}", r.table());
    srv.wait_members(0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_churn_wave_into_another_room_passes_through_the_measured_one() {
    let srv = TestServer::start().await;
    let side = PeakMembers::watch_room(&srv, Some("side"));
    let cfg = BenchConfig {
        churn_room: Some("side".into()),
        ..churn_wave(srv.addr, 150)
    };
    let r = run(&cfg).await.expect("bench runs");
    let side = side.stop();
    println!("{}", r.table());
    assert_clean(&r);
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    let c = r.churn.as_ref().expect("churn figures");
    assert_eq!((c.joined, c.left, c.failed), (150, 150, 0), "{}", r.table());
    assert_eq!(c.room.as_deref(), Some("side"));
    assert!(r.table().contains("150 clients into side"), "{}", r.table());
    // The whole wave was in the side room at once...
    assert_eq!(side, 150);
    // ...having come through the measured room (every client starts there)
    // and gone on: each one the measured clients were told of was told
    // leaving too (those who came and went within one summary of a crowded
    // lobby were not told at all), and their quits were none of its business.
    assert_eq!(r.notices.joined, r.notices.left, "{}", r.table());
    assert!(r.notices.joined <= 5 * 150, "{}", r.table());
    srv.wait_members(0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_churn_wave_works_against_a_relay_without_greeting() {
    let (addr, relay) = relay_with(Quirks::default()).await;
    let cfg = BenchConfig {
        clients: 4,
        senders: 2,
        window: 0,
        rate: Rate::PerSecond(100.0),
        size: 64,
        duration: Duration::from_secs(2),
        churn: 10,
        churn_at: Some(Duration::from_millis(200)),
        churn_hold: Some(Duration::from_millis(300)),
        ..config(addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    let c = r.churn.as_ref().expect("churn figures");
    assert_eq!((c.joined, c.left, c.failed), (10, 10, 0), "{}", r.table());
    // ncat's announcements: one connect and one disconnect per churn
    // client, to each measured client.
    assert_eq!(r.notices.joined, 4 * 10, "{}", r.table());
    assert_eq!(r.notices.disconnected, 4 * 10, "{}", r.table());
    relay.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_slow_and_churn_print_their_rows_and_json() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let addr = srv.addr.to_string();
    let base = [
        "bench",
        &addr,
        "--clients",
        "3",
        "--senders",
        "all",
        "--rate",
        "100",
        "--window",
        "0",
        "--duration",
        "1",
        "--warmup",
        "0",
        "--quiet",
    ];
    let extra = [
        "--slow",
        "1",
        "--slow-rate",
        "100000",
        "--churn",
        "5",
        "--churn-at",
        "0.2",
        "--churn-hold",
        "0.2",
        "--out",
        json.to_str().unwrap(),
    ];
    let out = bench_cli(&[&base[..], &extra[..]].concat(), dir.path()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for row in [
        "slow clients    1 (reading 97.7 KiB/s",
        "churn           5 clients: joined from 0.2",
        "  during joins",
        "p99 per second",
        "notices         15 joined, 15 left, 0 disconnected",
    ] {
        assert!(stdout.contains(row), "no {row:?} in\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["churn"]["left"], 5);
    assert_eq!(report["slow"]["read_rate"], 100000);
    assert_eq!(report["loss"], 0);
    assert!(report["latency_series"]["points"].is_array());

    // The wave's settings need the wave.
    let out = bench_cli(
        &[&base[..], &["--churn-at", "0.2"][..]].concat(),
        dir.path(),
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("need --churn"));
    srv.stop().await;
}

// ---- robustness against servers that do not greet ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_the_relay_never_admits_or_closes_are_connected_again() {
    // Connection 2 is accepted but never joins the room; connection 3 is
    // closed at once. Both clients must come back on a new connection.
    let (addr, relay) = relay_with(Quirks {
        ignore: Some(2),
        close: Some(3),
        ..Quirks::default()
    })
    .await;
    let cfg = BenchConfig {
        clients: 5,
        senders: 5,
        window: 4,
        size: 64,
        duration: Duration::from_millis(500),
        ..config(addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    assert!(r.measured() && r.deliveries > 0, "{}", r.table());
    assert!(r.connect.roll_call_complete, "{}", r.table());
    assert!(r.connect.reconnects >= 2, "{}", r.table());
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    relay.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_that_measured_nothing_says_so() {
    // The relay passes on the roll call, then goes quiet: the closed-loop
    // window fills during the warm-up and nothing is sent in the measured
    // window. That is no measurement, not zero loss.
    let (addr, relay) = relay_with(Quirks {
        stall_after: Some(2),
        ..Quirks::default()
    })
    .await;
    let cfg = BenchConfig {
        clients: 3,
        senders: 3,
        window: 2,
        size: 64,
        warmup: Duration::from_millis(300),
        duration: Duration::from_millis(300),
        grace: Duration::from_millis(300),
        ..config(addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert!(r.connect.roll_call_complete, "{}", r.table());
    assert!(!r.measured(), "{}", r.table());
    assert_eq!(r.expected_deliveries, 0);
    assert!(r.warmup_messages > 0, "{}", r.table());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("nothing was measured")),
        "{:?}",
        r.warnings
    );
    assert!(
        r.table().contains("unknown: nothing was sent"),
        "{}",
        r.table()
    );
    relay.abort();

    // Open loop against the same kind of relay: messages are sent in the
    // measured window but none arrives. That is 100% loss, and no latency.
    let (addr, relay) = relay_with(Quirks {
        stall_after: Some(2),
        ..Quirks::default()
    })
    .await;
    let cfg = BenchConfig {
        window: 0,
        rate: Rate::PerSecond(100.0),
        addr,
        ..cfg
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert!(r.measured() && r.messages_sent > 0, "{}", r.table());
    assert_eq!(r.deliveries, 0);
    assert_eq!(r.loss, r.expected_deliveries);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("no message of the measured window arrived")),
        "{:?}",
        r.warnings
    );
    assert!(r.table().contains("no samples"), "{}", r.table());
    relay.abort();
}

// ---- the server process: CPU and memory ----

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_pid_reports_the_servers_cpu_and_memory() {
    let srv = Served::start(&["--history", "off"]);
    let cfg = BenchConfig {
        clients: 10,
        senders: 10,
        window: 8,
        duration: Duration::from_secs(1),
        server_pid: Some(srv.pid()),
        ..config(srv.addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    println!("{}", r.table());
    assert_clean(&r);
    let s = r.server.as_ref().expect("server figures");
    assert_eq!(s.pid, srv.pid());
    assert!(!s.lost);
    // A server relaying a closed-loop run is busy for the whole second.
    assert!(s.cpu_secs > 0.0 && s.cpu_percent > 0.0, "{s:?}");
    assert!(s.cpu_percent < 100.0 * 64.0, "{s:?}");
    assert!(s.rss_start_bytes > 0, "{s:?}");
    assert!(
        s.rss_peak_bytes >= s.rss_start_bytes.max(s.rss_end_bytes),
        "{s:?}"
    );
    assert!(r.table().contains(&format!("pid {}", srv.pid())));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["server"]["pid"], srv.pid());

    // A pid that does not exist is an error before anything connects.
    let cfg = BenchConfig {
        server_pid: Some(u32::MAX),
        ..cfg
    };
    let err = run(&cfg).await.expect_err("no such process");
    assert!(matches!(err, BenchError::Process(_)), "{err}");
}

#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_cost_the_real_server_memory_and_all_close() {
    let srv = Served::start(&["--history", "off"]);
    let cfg = IdleConfig {
        hold: Duration::from_millis(300),
        quiet: true,
        ..IdleConfig::new(srv.addr, 200, srv.pid())
    };
    let r = idle::run(&cfg).await.expect("idle run");
    println!("{}", r.table());
    assert_eq!(r.connections, 200);
    assert_eq!(r.greeted, 200);
    assert!(r.settled, "{}", r.table());
    assert_eq!(r.dropped, 0);
    assert_eq!(r.not_closed, 0);
    // 200 sessions cost a separate server process some memory.
    assert!(r.rss_held_bytes > r.rss_before_bytes, "{}", r.table());
    let per_conn = (r.rss_held_bytes - r.rss_before_bytes) as f64 / 200.0;
    assert!((r.rss_per_connection_bytes - per_conn).abs() < 1e-6);
    assert!(r.table().contains("per idle connection"));
    // Every connection was closed: a newcomer is alone in the lobby.
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let mut c = common::Client::connect(srv.addr).await;
        c.line().await;
        let joined = c.line().await;
        if joined.contains("(just you)") {
            break;
        }
        assert!(Instant::now() < deadline, "still not alone: {joined}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_connections_are_members_while_held_and_none_after() {
    let srv = TestServer::start().await;
    let cfg = IdleConfig {
        hold: Duration::from_millis(500),
        quiet: true,
        ..IdleConfig::new(srv.addr, 200, std::process::id())
    };
    let running = tokio::spawn(async move { idle::run(&cfg).await });
    srv.wait_members(200).await;
    let r = running.await.unwrap().expect("idle run");
    println!("{}", r.table());
    assert_eq!(r.greeted, 200);
    assert_eq!(r.dropped, 0);
    assert!(r.rss_held_bytes > 0 && r.rss_per_connection_bytes.is_finite());
    srv.wait_members(0).await;
    srv.stop().await;

    // --idle needs a server process to watch.
    let cfg = IdleConfig::new("127.0.0.1:1".parse().unwrap(), 10, u32::MAX);
    assert!(matches!(idle::run(&cfg).await, Err(BenchError::Process(_))));
}

// ---- TLS ----

/// TLS settings as the CLI builds them, trusting `mode`, with an empty
/// known-hosts file.
fn tls_target(addr: SocketAddr, mode: TrustMode, dir: &Path) -> TlsTarget {
    let host_port = addr.to_string();
    let known = KnownHosts::load(dir.join("known_hosts")).unwrap();
    let (config, _) = trust::client_config(&mode, &host_port, None, &known).unwrap();
    TlsTarget {
        config,
        server_name: trust::server_name(&host_port).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_runs_with_a_trusted_ca_and_fails_without() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    gen_cert(other.path());
    let srv = TestServer::with(ServerConfig {
        tls_cert: Some(dir.path().join("cert.pem")),
        tls_key: Some(dir.path().join("key.pem")),
        ..ServerConfig::default()
    })
    .await;
    let trusted = tls_target(
        srv.addr,
        TrustMode::Ca(dir.path().join("cert.pem")),
        dir.path(),
    );
    let cfg = BenchConfig {
        clients: 6,
        senders: 6,
        window: 4,
        duration: Duration::from_millis(700),
        tls: Some(trusted),
        ..config(srv.addr)
    };
    let r = run(&cfg).await.expect("bench over TLS");
    println!("{}", r.table());
    assert_clean(&r);
    assert!(r.settings.tls && r.deliveries > 0);
    assert_eq!(r.connect.greeted, 6);

    // Idle connections over TLS too.
    let idle_cfg = IdleConfig {
        tls: cfg.tls.clone(),
        hold: Duration::from_millis(200),
        quiet: true,
        ..IdleConfig::new(srv.addr, 20, std::process::id())
    };
    let r = idle::run(&idle_cfg).await.expect("idle over TLS");
    assert!(r.tls && r.greeted == 20, "{}", r.table());

    // A certificate from another CA is refused, with the reason.
    let untrusted = tls_target(
        srv.addr,
        TrustMode::Ca(other.path().join("cert.pem")),
        dir.path(),
    );
    let cfg = BenchConfig {
        tls: Some(untrusted),
        ..cfg
    };
    match run(&cfg).await {
        Err(BenchError::Tls { reason, .. }) => {
            assert!(reason.contains("cannot verify"), "{reason}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    srv.wait_members(0).await;
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tls_without_trust_fails_and_with_ca_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    let srv = TestServer::with(ServerConfig {
        tls_cert: Some(dir.path().join("cert.pem")),
        tls_key: Some(dir.path().join("key.pem")),
        ..ServerConfig::default()
    })
    .await;
    let addr = srv.addr.to_string();
    let base = [
        "--clients",
        "3",
        "--senders",
        "all",
        "--duration",
        "0.3",
        "--warmup",
        "0",
        "--quiet",
    ];
    let untrusted = bench_cli(
        &[&["bench", &addr, "--tls"], &base[..]].concat(),
        dir.path(),
    )
    .await;
    assert!(!untrusted.status.success());
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(
        stderr.contains("TLS handshake") && stderr.contains("fingerprint"),
        "{stderr}"
    );

    let ca = dir.path().join("cert.pem");
    let ca = ca.to_str().unwrap();
    let trusted = bench_cli(
        &[&["bench", &addr, "--ca", ca], &base[..]].concat(),
        dir.path(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&trusted.stdout);
    assert!(
        trusted.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&trusted.stderr)
    );
    assert!(stdout.contains("(TLS), 3 clients (3 sending)"), "{stdout}");
    srv.stop().await;
}

/// Runs the real `rchat` with `args`, with known hosts kept in `dir`.
async fn bench_cli(args: &[&str], dir: &Path) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_rchat"));
    cmd.args(args)
        .env(trust::KNOWN_HOSTS_ENV, dir.join("known_hosts"))
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("bench finishes in time")
        .expect("run rchat bench")
}

// ---- sweeps and plots ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sweep_runs_once_per_point() {
    let srv = TestServer::start().await;
    let base = BenchConfig {
        window: 4,
        duration: Duration::from_millis(300),
        ..config(srv.addr)
    };
    let spec: SweepSpec = "clients=2,5,8".parse().unwrap();
    let outcome = sweep::run(&base, Senders::Count(4), &spec).await;
    assert!(outcome.error.is_none(), "{:?}", outcome.error);
    let clients: Vec<_> = outcome.reports.iter().map(|r| r.settings.clients).collect();
    let senders: Vec<_> = outcome.reports.iter().map(|r| r.settings.senders).collect();
    assert_eq!(clients, [2, 5, 8]);
    assert_eq!(senders, [2, 4, 4]);
    for r in &outcome.reports {
        assert_clean(r);
        assert!(r.deliveries > 0);
    }
    let table = sweep::table(&outcome.reports);
    println!("{table}");
    let rows: Vec<_> = table.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{table}");
    for (row, n) in rows.iter().zip([2, 5, 8]) {
        assert_eq!(row.split_whitespace().next(), Some(n.to_string().as_str()));
    }
    srv.stop().await;
}

/// The element names of an XML text, checking that every element that is
/// opened is closed, in order: enough to call plotters' SVG well-formed.
fn xml_elements(svg: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        let j = rest[i..].find('>').expect("tag ends") + i;
        let tag = &rest[i + 1..j];
        rest = &rest[j + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                open.pop().as_deref(),
                Some(name.trim()),
                "misnested </{name}>"
            );
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        names.push(name.clone());
        if !tag.ends_with('/') {
            open.push(name);
        }
    }
    assert!(open.is_empty(), "unclosed {open:?}");
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plot_draws_the_latency_cdf() {
    let srv = TestServer::start().await;
    let cfg = BenchConfig {
        clients: 5,
        senders: 5,
        window: 4,
        duration: Duration::from_millis(500),
        ..config(srv.addr)
    };
    let r = run(&cfg).await.expect("bench runs");
    srv.stop().await;
    let cdf = &r.latency.cdf;
    assert!(cdf.len() >= 10, "{cdf:?}");
    assert!(cdf
        .windows(2)
        .all(|w| w[0].percentile <= w[1].percentile && w[0].latency_ms <= w[1].latency_ms));
    assert_eq!(cdf.last().unwrap().percentile, 100.0);
    assert_eq!(cdf.last().unwrap().latency_ms, r.latency.max_ms);

    let svg = plot::render_svg(std::slice::from_ref(&r)).expect("plot");
    assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
    let elements = xml_elements(&svg);
    assert_eq!(elements.first().map(String::as_str), Some("svg"));
    for label in [
        "latency (ms, log scale)",
        "percentile of deliveries",
        "5 clients, 5 sending",
    ] {
        assert!(svg.contains(label), "no {label:?}");
    }
    // The CDF is one polyline with a vertex per point.
    let vertices = svg
        .split("<polyline")
        .skip(1)
        .map(|p| {
            let points = p.split("points=\"").nth(1).unwrap();
            points[..points.find('"').unwrap()]
                .split_whitespace()
                .count()
        })
        .max()
        .expect("a polyline");
    assert_eq!(vertices, cdf.len());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.svg");
    plot::write_svg(&path, &[r.clone(), r]).unwrap();
    let swept = std::fs::read_to_string(&path).unwrap();
    xml_elements(&swept);
    for label in [
        "Throughput against clients",
        "p99 latency against clients",
        "clients (log scale)",
    ] {
        assert!(swept.contains(label), "no {label:?}");
    }
    assert!(matches!(plot::render_svg(&[]), Err(plot::PlotError::Empty)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_sweep_writes_a_row_per_point_json_and_svg() {
    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("sweep.json");
    let svg = dir.path().join("sweep.svg");
    let addr = srv.addr.to_string();
    let out = bench_cli(
        &[
            "bench",
            &addr,
            "--sweep",
            "clients=2,4",
            "--senders",
            "all",
            "--window",
            "4",
            "--duration",
            "0.3",
            "--warmup",
            "0",
            "--quiet",
            "--out",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        dir.path(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let points = report["points"].as_array().expect("points");
    assert_eq!(points.len(), 2);
    assert_eq!(points[1]["settings"]["clients"], 4);
    assert_eq!(points[1]["settings"]["senders"], 4);
    let svg = std::fs::read_to_string(&svg).unwrap();
    xml_elements(&svg);
    assert!(svg.contains("2 clients, 2 sending") && svg.contains("4 clients, 4 sending"));
    srv.stop().await;
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

/// How the stand-in misbehaves.
#[derive(Clone, Copy, Default)]
struct Quirks {
    /// Pause before accepting each connection after the first.
    admit_delay: Duration,
    /// Accept this connection (counting from 0) but never take it into the
    /// room, like a client left half-open by an overflowing accept queue.
    ignore: Option<usize>,
    /// Close this connection at once, like ncat over its connection limit.
    close: Option<usize>,
    /// Relay nothing at all after this many lines from anyone.
    stall_after: Option<usize>,
}

/// Like `ncat --chat`: no greeting, an announcement to everyone (the new
/// client included) on each connect and disconnect, and relayed data
/// prefixed with `<userN> ` once per read chunk, not per line, with no echo.
/// To test framing, every write is split in two at a varying point.
async fn ncat_like_relay() -> (SocketAddr, JoinHandle<()>) {
    // Like ncat with a full accept queue, it admits clients slowly: the
    // last one only after the bench's quiet second is over, so messages
    // sent before a roll call would miss it.
    relay_with(Quirks {
        admit_delay: Duration::from_millis(450),
        ..Quirks::default()
    })
    .await
}

async fn relay_with(quirks: Quirks) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    type Peers = Arc<Mutex<Vec<(usize, mpsc::UnboundedSender<Vec<u8>>)>>>;
    let peers: Peers = Arc::new(Mutex::new(Vec::new()));
    let relayed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        let mut next_id = 0;
        let mut conns = tokio::task::JoinSet::new();
        let mut ignored = Vec::new();
        loop {
            if next_id > 0 && !quirks.admit_delay.is_zero() {
                tokio::time::sleep(quirks.admit_delay).await;
            }
            let Ok((sock, _)) = listener.accept().await else {
                return;
            };
            let id = next_id;
            next_id += 1;
            if quirks.close == Some(id) {
                drop(sock);
                continue;
            }
            if quirks.ignore == Some(id) {
                ignored.push(sock);
                continue;
            }
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
            let relayed = relayed.clone();
            conns.spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0; 8192];
                while let Ok(n @ 1..) = read.read(&mut buf).await {
                    let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                    let before = relayed.fetch_add(lines, std::sync::atomic::Ordering::Relaxed);
                    if quirks.stall_after.is_some_and(|limit| before >= limit) {
                        continue;
                    }
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
