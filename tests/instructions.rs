//! A regression guard that counts instead of timing: the server's CPU
//! instructions per delivery on a fixed scenario, under valgrind's
//! callgrind (the same count on a busy machine as on an idle one).
//!
//! The real `rchat serve` runs under callgrind; 20 text clients join the
//! lobby; one says N lines, each after the other 19 received the one
//! before (so nothing batches and every delivery costs a wake-up and a
//! write, as in everyday chat); then the server is stopped. Run with N
//! and with 3N lines, the difference over the 2N × 19 extra deliveries is
//! the cost of one delivery, start-up and shut-down cancelling out.
//!
//! It fails when that grows past `.ci/instructions-per-delivery` by more
//! than 10%. Ignored by default: it needs valgrind and means something
//! only for a release build. `.ci/run` runs it as
//! `RCHAT_BIN=target/release/rchat cargo test --release --test instructions -- --ignored`.
//! After a deliberate change, write the new figure it prints into the
//! baseline file, and say why in the commit. With `RCHAT_CALLGRIND_DIR`
//! set, the two profiles are kept there for `callgrind_annotate`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;

const CLIENTS: usize = 20;
const LINES: usize = 100;
/// How much above the baseline a count may be.
const TOLERANCE: f64 = 0.10;

fn baseline_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/instructions-per-delivery")
}

/// The server's instructions in all, on a run where `lines` lines are said.
async fn count(bin: &str, lines: usize) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    // RCHAT_CALLGRIND_DIR keeps the profiles, for callgrind_annotate.
    let out = match std::env::var_os("RCHAT_CALLGRIND_DIR") {
        Some(keep) => PathBuf::from(keep).join(format!("callgrind.{lines}.out")),
        None => dir.path().join("callgrind.out"),
    };
    let mut child = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .args([bin, "serve", "--listen", "127.0.0.1:0", "--history", "off"])
        .args(["--max-per-ip", "0", "--flood-rate", "0"])
        .env("RUST_LOG", "info")
        // One worker: fewer ways for the scheduling of the moment to
        // change the count (work stealing, spurious wake-ups).
        .env("TOKIO_WORKER_THREADS", "1")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("valgrind runs (apt-get install valgrind)");
    let mut log = BufReader::new(child.stderr.take().unwrap());
    let addr = common::served::listening_addr(&mut log);
    std::thread::spawn(move || {
        let mut sink = String::new();
        while matches!(log.read_line(&mut sink), Ok(1..)) {
            sink.clear();
        }
    });

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Client::connect(addr).await;
        c.greeted().await;
        clients.push(c);
    }
    let (speaker, listeners) = clients.split_first_mut().unwrap();
    let from = format!("{}> ", speaker.nick);
    for i in 0..lines {
        let text = format!("line {i}");
        speaker.send(&text).await;
        let want = format!("{from}{text}");
        for c in listeners.iter_mut() {
            c.wait_for("the line", |l| l == want).await;
        }
    }

    // A clean stop, so that callgrind writes its counts.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(clients);
    total(&std::fs::read_to_string(&out).expect("callgrind's output"))
}

/// The total instruction count in a callgrind output file.
fn total(text: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .expect("a summary line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs valgrind and a release build; .ci/run runs it"]
async fn instructions_per_delivery_stay_within_the_baseline() {
    let bin = std::env::var("RCHAT_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_rchat").into());
    let few = count(&bin, LINES).await;
    let many = count(&bin, 3 * LINES).await;
    let deliveries = (2 * LINES * (CLIENTS - 1)) as f64;
    let per_delivery = many.saturating_sub(few) as f64 / deliveries;
    println!(
        "instructions per delivery: {per_delivery:.0} ({few} with {LINES} lines, {many} with {})",
        3 * LINES
    );
    let baseline: f64 = std::fs::read_to_string(baseline_file())
        .expect("the baseline file")
        .lines()
        .find(|l| !l.starts_with('#') && !l.trim().is_empty())
        .and_then(|l| l.trim().parse().ok())
        .expect("a number in the baseline file");
    assert!(
        per_delivery <= baseline * (1.0 + TOLERANCE),
        "{per_delivery:.0} instructions per delivery, more than {:.0}% over the baseline {baseline:.0} \
         (.ci/instructions-per-delivery); find what grew (valgrind --tool=callgrind, docs/performance.md)",
        TOLERANCE * 100.0
    );
}

#[test]
fn the_total_is_read_from_callgrinds_summary() {
    assert_eq!(total("events: Ir\nsummary: 123456\n"), 123456);
    assert_eq!(total("events: Ir\ntotals: 42 7\n"), 42);
}
