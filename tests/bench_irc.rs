//! `rchat bench --irc` against a small IRC server written here: strict in
//! what a measurement depends on (a `JOIN` before the welcome is refused,
//! the welcome waits for the answer to a `PING`), so that the bench is
//! known to register, join and send as an IRC server requires.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rchat::bench::{run, BenchConfig, BenchError, Rate};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;

/// Nick → the queue of lines to that member's socket.
type Channel = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

struct FakeIrc {
    addr: SocketAddr,
    /// Clients that answered the registration `PING` correctly.
    ponged: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl FakeIrc {
    /// `taken`: a nick already in use, refused with `433`.
    async fn start(taken: Option<&'static str>) -> FakeIrc {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let channel: Channel = Arc::default();
        let ponged = Arc::new(AtomicUsize::new(0));
        let counted = ponged.clone();
        let task = tokio::spawn(async move {
            let mut next = 0u32;
            while let Ok((sock, _)) = listener.accept().await {
                next += 1;
                let cookie = format!("c{next}");
                let (channel, ponged) = (channel.clone(), counted.clone());
                tokio::spawn(async move {
                    let (read, mut write) = sock.into_split();
                    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
                    tokio::spawn(async move {
                        while let Some(line) = rx.recv().await {
                            if write.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                    let mut lines = BufReader::new(read).lines();
                    let (mut nick, mut user, mut welcomed) = (None::<String>, false, false);
                    while let Ok(Some(line)) = lines.next_line().await {
                        let line = line.trim_end_matches('\r');
                        let (command, rest) = line.split_once(' ').unwrap_or((line, ""));
                        let me = nick.clone().unwrap_or_else(|| "*".into());
                        match command {
                            "NICK" if Some(rest) == taken => {
                                let _ = tx.send(format!(
                                    ":fake 433 * {rest} :Nickname is already in use\r\n"
                                ));
                            }
                            "NICK" => nick = Some(rest.to_string()),
                            "USER" => user = true,
                            "PONG" if rest.trim_start_matches(':') == cookie && !welcomed => {
                                welcomed = true;
                                ponged.fetch_add(1, Ordering::SeqCst);
                                let _ = tx.send(format!(":fake 001 {me} :Welcome\r\n"));
                                let _ = tx.send(format!(":fake 002 {me} :Your host\r\n"));
                            }
                            "JOIN" if !welcomed => {
                                let _ = tx.send(format!(
                                    ":fake 451 {me} JOIN :You have not registered\r\n"
                                ));
                            }
                            "JOIN" => {
                                let mut members = channel.lock().await;
                                members.insert(me.clone(), tx.clone());
                                for member in members.values() {
                                    let _ = member.send(format!(":{me}!u@h JOIN :#bench\r\n"));
                                }
                                let _ = tx.send(format!(":fake 353 {me} = #bench :{me}\r\n"));
                                let _ = tx.send(format!(":fake 366 {me} #bench :End\r\n"));
                            }
                            "PRIVMSG" if welcomed => {
                                let Some(text) = rest.strip_prefix("#bench :") else {
                                    continue;
                                };
                                let out = format!(":{me}!u@h PRIVMSG #bench :{text}\r\n");
                                for (who, member) in channel.lock().await.iter() {
                                    if *who != me {
                                        let _ = member.send(out.clone());
                                    }
                                }
                            }
                            _ => {}
                        }
                        if nick.is_some() && user && !welcomed && command != "PONG" {
                            let _ = tx.send(format!("PING :{cookie}\r\n"));
                        }
                    }
                    if let Some(me) = nick {
                        channel.lock().await.remove(&me);
                    }
                });
            }
        });
        FakeIrc { addr, ponged, task }
    }
}

fn config(addr: SocketAddr) -> BenchConfig {
    BenchConfig {
        irc: true,
        quiet: true,
        clients: 6,
        senders: 3,
        window: 0,
        rate: Rate::PerSecond(300.0),
        size: 64,
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        grace: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(10),
        ..BenchConfig::new(addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_other_member_of_the_channel() {
    let irc = FakeIrc::start(None).await;
    let r = run(&config(irc.addr)).await.expect("bench runs");
    println!("{}", r.table());
    // Every client registered (answering the ping), then joined.
    assert_eq!(irc.ponged.load(Ordering::SeqCst), 6);
    assert!(r.messages_sent > 0);
    assert_eq!(r.loss, 0, "{}", r.table());
    assert_eq!(r.duplicates, 0);
    assert_eq!(r.order_violations, 0);
    assert_eq!(r.deliveries, r.messages_sent * 5, "{}", r.table());
    // The other clients' JOINs are notices, not unparsed lines.
    assert_eq!(r.unparsed_lines, 0, "{}", r.table());
    irc.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registration_is_reported_with_the_servers_line() {
    let irc = FakeIrc::start(Some("rb2")).await;
    match run(&config(irc.addr)).await {
        Err(BenchError::Refused { client, line }) => {
            assert_eq!(client, 2);
            assert!(
                line.contains("433") && line.contains("already in use"),
                "{line}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    irc.task.abort();
}

#[test]
fn irc_lines_have_room_for_the_message() {
    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let too_long = BenchConfig {
        size: 495,
        ..config(addr)
    };
    let err = too_long.validate().expect_err("too long for IRC");
    assert!(err.to_string().contains("at most 494"), "{err}");
    assert!(BenchConfig {
        size: 494,
        ..config(addr)
    }
    .validate()
    .is_ok());
    let churn = BenchConfig {
        churn: 5,
        ..config(addr)
    };
    assert!(churn.validate().is_err());
}
