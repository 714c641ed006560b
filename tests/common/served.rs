//! The real `rchat serve` binary as a child process on 127.0.0.1:0, for
//! tests that need a separate process: its pid, signals, `kill -9`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, ChildStderr, Command, Stdio};

/// A running `rchat serve`, killed and reaped on drop.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Served {
    /// Starts `rchat serve --listen 127.0.0.1:0 ARGS` and waits for its
    /// `listening on` log line. Unless `args` name `--history` or
    /// `--data-dir`, history is kept in memory: a test never touches the
    /// user's own data directory. The log is drained in the background, so
    /// the server never blocks on a full pipe.
    pub fn start(args: &[&str]) -> Served {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rchat"));
        command.args(["serve", "--listen", "127.0.0.1:0"]);
        if !args.contains(&"--history") && !args.contains(&"--data-dir") {
            command.args(["--history", "memory"]);
        }
        // Load from one address: the limits per address and on flooding
        // are off unless the test names them.
        if !args.contains(&"--max-per-ip") {
            command.args(["--max-per-ip", "0"]);
        }
        if !args.contains(&"--flood-rate") {
            command.args(["--flood-rate", "0"]);
        }
        let mut child = command
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("rchat serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let addr = listening_addr(&mut stderr);
        std::thread::spawn(move || {
            let mut sink = String::new();
            while matches!(stderr.read_line(&mut sink), Ok(1..)) {
                sink.clear();
            }
        });
        Served { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the server's log up to its `listening on ADDR` line.
pub fn listening_addr(stderr: &mut BufReader<ChildStderr>) -> SocketAddr {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).expect("server log readable") > 0,
            "server exited early"
        );
        if let Some(rest) = line.split("listening on ").nth(1) {
            return rest
                .split_whitespace()
                .next()
                .and_then(|a| a.parse().ok())
                .expect("an address after 'listening on'");
        }
    }
}

/// Runs the real `rchat gen-cert --out-dir DIR` and returns the SHA-256
/// fingerprint it printed.
pub fn gen_cert(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rchat"))
        .args(["gen-cert", "--out-dir"])
        .arg(dir)
        .output()
        .expect("run rchat gen-cert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("SHA-256 fingerprint: "))
        .expect("fingerprint printed")
        .to_string()
}

/// A real `rchat serve` whose whole log (at `RUST_LOG=trace`) is kept, for
/// tests that look at what it wrote.
pub struct Logged {
    child: Child,
    pub addr: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Logged {
    /// Starts `rchat serve --history off --listen 127.0.0.1:0 ARGS`.
    pub fn start(args: &[&std::ffi::OsStr]) -> Logged {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rchat"))
            .args(["serve", "--history", "off", "--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "trace")
            .stderr(Stdio::piped())
            .spawn()
            .expect("rchat serve starts");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let addr = listening_addr(&mut stderr);
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in stderr.lines().map_while(Result::ok) {
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        Logged {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    /// Waits until the log holds `text`.
    pub async fn wait_for(&self, text: &str) {
        let started = std::time::Instant::now();
        while !self.log.lock().unwrap().contains(text) {
            assert!(
                started.elapsed() < super::DEADLINE,
                "the log never said {text:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stops the server and returns everything it logged.
    pub fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let log = self.log.lock().unwrap().clone();
        log
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
