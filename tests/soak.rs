//! `rchat bench --soak` against the real `rchat serve`, as an operator runs
//! them: two processes on loopback, the server with its default limits
//! (but for the per-address one, since every client comes from 127.0.0.1)
//! and its default SQLite history. The 20-second, 200-client soaks here are
//! the ones CI runs; docs/reliability.md has the ten-minute ones.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::served::{gen_cert, Served};
use serde_json::Value;

/// Longest a soak process may take: its duration, the drain, the probe.
const SOAK_BOUND: Duration = Duration::from_secs(120);

/// Runs `rchat bench --soak ARGS --out FILE`, and returns its exit status,
/// its report on stdout and the JSON report.
fn soak(args: &[&str], dir: &Path) -> (i32, String, Value) {
    let out = dir.join("soak.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rchat"))
        .args(["bench", "--soak", "--quiet", "--out"])
        .arg(&out)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rchat bench starts");
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for rchat bench") {
            break status;
        }
        if began.elapsed() > SOAK_BOUND {
            let _ = child.kill();
            panic!("the soak ran longer than {SOAK_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("soak output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    let json = std::fs::read_to_string(&out)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    (status.code().unwrap_or(-1), stdout, json)
}

/// The server with its defaults: per-address limit off, flood control at
/// its default (the test helper turns it off unless named), SQLite history
/// in a scratch directory.
fn server(dir: &Path, extra: &[&str]) -> Served {
    let data = dir.join("data");
    let data = data.to_str().expect("utf-8 temp path");
    let mut args = vec!["--data-dir", data, "--flood-rate", "5"];
    args.extend_from_slice(extra);
    Served::start(&args)
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// What every passing soak must show: everything owed arrived once and in
/// order, the chaos really happened and was refused, the server lived.
fn assert_held(code: i32, stdout: &str, r: &Value) {
    assert_eq!(code, 0, "the soak failed:\n{stdout}");
    assert!(stdout.contains("PASSED"), "{stdout}");
    assert_eq!(r["failures"], Value::Array(vec![]), "{r:#}");
    assert!(n(&r["expected"]) > 1000, "too little checked: {r:#}");
    assert_eq!(r["delivered"], r["expected"], "{r:#}");
    for zero in [
        "lost",
        "duplicates",
        "reordered",
        "misrouted",
        "steady_errors",
    ] {
        assert_eq!(n(&r[zero]), 0, "{zero}: {r:#}");
    }
    assert_eq!(r["steady"], 50);
    assert_eq!(r["chaos_slots"], 150);
    let c = &r["chaos"];
    assert!(n(&c["connections"]) >= 150, "{c:#}");
    // Floods were refused, and flooders disconnected.
    assert!(n(&c["flood_refusals"]) > 0, "{c:#}");
    assert!(n(&c["flood_kicks"]) > 0, "{c:#}");
    // Bad names, bad requests, long lines were answered with errors.
    assert!(n(&c["errors"]) > 0, "{c:#}");
    assert!(n(&c["garbage_bytes"]) > 0, "{c:#}");
    assert_eq!(r["server_answered"], true);
    let s = &r["server"];
    assert_eq!(s["lost"], false, "{s:#}");
    assert!(n(&s["rss_peak_bytes"]) >= n(&s["rss_start_bytes"]), "{s:#}");
}

#[test]
fn a_plaintext_soak_loses_nothing_and_refuses_the_abusers() {
    let dir = tempfile::tempdir().unwrap();
    let srv = server(dir.path(), &[]);
    let (pid, addr) = (srv.pid().to_string(), srv.addr.to_string());
    let (code, stdout, r) = soak(
        &[
            "--duration",
            "20",
            "--clients",
            "200",
            "--server-pid",
            &pid,
            &addr,
        ],
        dir.path(),
    );
    assert_held(code, &stdout, &r);
}

#[test]
fn a_tls_soak_also_closes_stalled_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    gen_cert(dir.path());
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let srv = server(dir.path(), &["--tls-cert", cert, "--tls-key", key]);
    let (pid, addr) = (srv.pid().to_string(), srv.addr.to_string());
    let (code, stdout, r) = soak(
        &[
            "--duration",
            "20",
            "--clients",
            "200",
            "--server-pid",
            &pid,
            "--ca",
            cert,
            &addr,
        ],
        dir.path(),
    );
    assert_held(code, &stdout, &r);
    // The handshake timeout (10 s) closes a stalled handshake well inside
    // a 20-second soak.
    let c = &r["chaos"];
    assert!(n(&c["stalls_closed"]) > 0, "{c:#}");
    assert_eq!(n(&c["stalls_overdue"]), 0, "{c:#}");
}

/// The soak must be able to fail: against a server whose flood limit (one
/// line a second, after a burst of three, enough to join) is below what the
/// well-behaved clients send, they are refused, and the soak says so and
/// exits with status 1.
#[test]
fn a_soak_fails_when_well_behaved_clients_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Served::start(&[
        "--data-dir",
        data.to_str().unwrap(),
        "--flood-rate",
        "1",
        "--flood-burst",
        "3",
    ]);
    let addr = srv.addr.to_string();
    let (code, stdout, r) = soak(
        &["--duration", "4", "--clients", "20", "--seed", "7", &addr],
        dir.path(),
    );
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
    assert!(n(&r["steady_errors"]) > 0, "{r:#}");
    assert!(
        r["steady_error_samples"][0]
            .as_str()
            .is_some_and(|s| s.contains("flood control")),
        "{r:#}"
    );
    assert_eq!(r["seed"], 7);
}
