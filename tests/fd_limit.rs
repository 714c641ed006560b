//! Out of file descriptors: the real `rchat serve` under a low open-file
//! limit backs off instead of spinning, keeps serving the clients it has,
//! and lets new ones in once others leave.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::served::listening_addr;
use common::Client;
use tokio::io::AsyncBufReadExt;

/// The server process, killed and reaped however the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server's CPU time so far, in clock ticks (user + system).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("server alive");
    // Fields after the command name, which is in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The next line within `wait`, or `None` if none came.
async fn line_within(c: &mut Client, wait: Duration) -> Option<String> {
    let mut buf = String::new();
    match tokio::time::timeout(wait, c.raw().read_line(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(buf.trim_end().to_string()),
        _ => None,
    }
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn out_of_descriptors_the_server_backs_off_serves_its_clients_and_recovers() {
    let script = format!(
        "ulimit -n 48 && exec '{}' serve --listen 127.0.0.1:0 --history off \
         --max-per-ip 0 --flood-rate 0 --hello-wait 10",
        env!("CARGO_BIN_EXE_rchat")
    );
    let mut child = Killed(
        Command::new("sh")
            .args(["-c", &script])
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh starts rchat serve"),
    );
    let pid = child.0.id();
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap());
    let addr = listening_addr(&mut stderr);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
    }

    // Fill the server: clients connect until one is not greeted (its
    // connection waits in the kernel's queue, unaccepted).
    let mut inside = Vec::new();
    let waiting = loop {
        assert!(inside.len() < 100, "the descriptor limit was never reached");
        let mut c = Client::connect(addr).await;
        match line_within(&mut c, Duration::from_secs(2)).await {
            Some(welcome) => {
                assert!(welcome.contains("/help"), "{welcome}");
                assert!(line_within(&mut c, Duration::from_secs(2)).await.is_some());
                inside.push(c);
            }
            None => break c,
        }
    };
    assert!(inside.len() >= 10, "only {} got in", inside.len());

    // Full: no spinning. A busy loop would burn a whole core.
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu_ticks(pid) - before;
    let per_sec = ticks_per_sec();
    assert!(
        ticks * 10 < 2 * per_sec,
        "server used {ticks} ticks in 2 s while full"
    );

    // Those inside still chat (past the notices of those who joined).
    inside[0].send("anyone there?").await;
    let heard = inside[1]
        .wait_for("the message", |l| l.ends_with("> anyone there?"))
        .await;
    assert!(heard.starts_with("guest"), "{heard}");

    // Two leave; the waiting client gets in.
    let mut waiting = waiting;
    inside.truncate(inside.len() - 2);
    let welcome = line_within(&mut waiting, Duration::from_secs(10)).await;
    assert!(
        welcome.as_deref().is_some_and(|l| l.contains("/help")),
        "{welcome:?}"
    );

    // The log says so once, and says when it is over.
    let said = |what: &str| log.lock().unwrap().iter().any(|l| l.contains(what));
    let started = std::time::Instant::now();
    while !said("accepting connections again") {
        assert!(
            started.elapsed() < common::DEADLINE,
            "{:#?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(child);
    let log = log.lock().unwrap();
    let loud = log.iter().filter(|l| l.contains("accept failed")).count();
    assert_eq!(loud, 1, "logged once per episode: {log:#?}");
}

/// Clock ticks per second, as /proc/PID/stat counts them.
fn ticks_per_sec() -> u64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
