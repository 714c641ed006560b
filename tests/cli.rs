//! The real binary as a user runs it: `gen-cert`, and `serve` stopped by a
//! signal.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Client;

fn rchat() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rchat"))
}

#[test]
fn gen_cert_writes_files_prints_fingerprint_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = rchat()
        .args(["gen-cert", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let certs = rchat::cert::load_certs(&dir.path().join("cert.pem")).unwrap();
    let fp = rchat::cert::fingerprint(certs[0].as_ref());
    assert!(stdout.contains(&fp), "fingerprint {fp} not in {stdout}");
    assert!(stdout.contains("localhost, 127.0.0.1, ::1"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "key readable by others");
    }

    let again = rchat()
        .args(["gen-cert", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let unchanged = rchat::cert::load_certs(&dir.path().join("cert.pem")).unwrap();
    assert_eq!(unchanged, certs);

    let forced = rchat()
        .args(["gen-cert", "--force", "--name", "chat.example", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(forced.status.success());
    assert!(String::from_utf8_lossy(&forced.stdout).contains("chat.example"));
    assert_ne!(
        rchat::cert::load_certs(&dir.path().join("cert.pem")).unwrap(),
        certs
    );
}

/// A spawned server that is killed and reaped if a test fails midway.
struct Spawned(Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts `rchat serve` with `args` and returns it with its stderr.
fn spawn(args: &[&str]) -> (Spawned, BufReader<std::process::ChildStderr>) {
    let mut child = Spawned(
        rchat()
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = BufReader::new(child.0.stderr.take().unwrap());
    (child, stderr)
}

/// Starts `rchat serve` on a free port and returns it with its address,
/// read from the `listening on` log line.
fn spawn_server(extra: &[&str]) -> (Spawned, SocketAddr, BufReader<std::process::ChildStderr>) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    // Never the user's own data directory.
    if !extra.contains(&"--data-dir") && !extra.contains(&"--history") {
        args.extend_from_slice(&["--history", "memory"]);
    }
    args.extend_from_slice(extra);
    let (child, mut stderr) = spawn(&args);
    let addr = common::served::listening_addr(&mut stderr);
    (child, addr, stderr)
}

fn wait_exit(child: &mut Spawned, within: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > within {
            panic!("server did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Spawned, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn graceful_shutdown_on(sig: &str) {
    let (mut child, addr, _stderr) = spawn_server(&[]);
    let mut a = Client::connect(addr).await;
    a.greeted().await;
    let mut b = Client::connect(addr).await;
    b.greeted().await;
    b.send("/nick bob").await;
    a.wait_for("bob", |l| l.ends_with("is now known as bob"))
        .await;
    signal(&child, sig);
    for c in [&mut a, &mut b] {
        let rest = c.until_eof().await;
        assert_eq!(
            rest.last().map(String::as_str),
            Some("* server shutting down; goodbye"),
            "{rest:?}"
        );
    }
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigterm_notifies_clients_closes_and_exits_zero() {
    graceful_shutdown_on("-TERM").await;
}

#[tokio::test]
async fn sigint_notifies_clients_closes_and_exits_zero() {
    graceful_shutdown_on("-INT").await;
}

#[test]
fn warns_when_listening_in_clear_beyond_loopback() {
    let (mut child, mut stderr) = spawn(&["serve", "--listen", "0.0.0.0:0", "--history", "off"]);
    let mut seen = String::new();
    let mut line = String::new();
    while !seen.contains("without TLS") {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
    }
    signal(&child, "-TERM");
    wait_exit(&mut child, Duration::from_secs(10));
    assert!(seen.contains("WARNING"), "{seen}");
}

#[test]
fn bad_flags_fail_with_a_useful_message() {
    let out = rchat()
        .args([
            "serve",
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
}

/// `serve --print-config` shows defaults, the file and the flags merged, as
/// TOML that `--config` reads back to the very same configuration.
#[test]
fn print_config_round_trips_through_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rchat.toml");
    std::fs::write(
        &file,
        "max_line = 2048\nhistory = \"memory\"\nhistory_max_age = \"30d\"\n",
    )
    .unwrap();
    let print = |config: &std::path::Path, extra: &[&str]| {
        let out = rchat()
            .args(["serve", "--print-config", "--config"])
            .arg(config)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = print(
        &file,
        &[
            "--max-line",
            "4096",
            "--listen",
            "[::1]:7000",
            "--store-private",
        ],
    );
    // Flags win over the file; the file wins over the defaults.
    assert!(first.contains("max_line = 4096"), "{first}");
    assert!(first.contains("history = \"memory\""), "{first}");
    assert!(first.contains("store_private = true"), "{first}");
    assert!(first.contains("[::1]:7000"), "{first}");
    assert!(first.contains("max_clients = 10000"), "{first}");
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &first).unwrap();
    let second = print(&printed, &[]);
    assert_eq!(first, second);
    let parsed: rchat::config::ServerConfig = toml::from_str(&first).unwrap();
    assert_eq!(
        parsed.history_max_age,
        Some(Duration::from_secs(30 * 86_400))
    );

    // A bad value is refused with the reason, before anything is printed.
    let bad = rchat()
        .args(["serve", "--print-config", "--max-line", "3"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("max-line"));
}

/// `gen-cert --days` bounds the certificate; `serve` logs its fingerprint
/// and warns when it expires within 30 days.
#[test]
fn serve_logs_the_certificate_and_warns_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let out = rchat()
        .args([
            "gen-cert",
            "--days",
            "10",
            "--name",
            "chat.test",
            "--out-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("expires: ") && printed.contains("(10 days)"),
        "{printed}"
    );
    let certs = rchat::cert::load_certs(&dir.path().join("cert.pem")).unwrap();
    let fp = rchat::cert::fingerprint(certs[0].as_ref());
    let info = rchat::cert::info(certs[0].as_ref()).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("chat.test"));

    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--history", "off"];
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    args.extend_from_slice(&["--tls-cert", cert, "--tls-key", key]);
    let (_child, mut stderr) = spawn(&args);
    let mut log = String::new();
    loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "exited: {log}");
        log.push_str(&line);
        if line.contains("listening on") {
            break;
        }
    }
    assert!(
        log.contains("WARN") && log.contains("expires in") && log.contains(&fp),
        "{log}"
    );

    let out = rchat()
        .args(["gen-cert", "--days", "0", "--out-dir"])
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "zero days refused");
}
