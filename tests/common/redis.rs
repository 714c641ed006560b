//! A `redis-server` of a test's own, and the clients cluster tests use
//! on its nodes.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::served::Served;
use super::Client;
use rchat::proto::json::{self, ServerMsg};

/// A `redis-server` of the test's own, killed on drop.
pub struct Redis {
    child: Child,
    pub url: String,
    /// The unix socket it listens on, if it does.
    socket: Option<std::path::PathBuf>,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// On a unix socket, without persistence.
    pub fn on_socket() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("redis.sock");
        let child = redis_server(&["--port", "0", "--unixsocket", socket.to_str().unwrap()]);
        wait_until("redis-server's socket", || socket.exists());
        Redis {
            child,
            url: format!("redis+unix://{}", socket.display()),
            socket: Some(socket),
            _dir: dir,
        }
    }

    /// On a free TCP port of 127.0.0.1.
    pub fn on_tcp() -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = redis_server(&["--bind", "127.0.0.1", "--port", &port.to_string()]);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        wait_until("redis-server's port", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        Redis {
            child,
            url: format!("redis://127.0.0.1:{port}/0"),
            socket: None,
            _dir: dir,
        }
    }

    /// A node of the cluster, on 127.0.0.1:0.
    pub fn node(&self) -> Served {
        Served::start(&["--cluster", &self.url])
    }

    /// A node of the cluster started with more flags.
    pub fn node_with(&self, args: &[&str]) -> Served {
        let mut all = vec!["--cluster", &self.url];
        all.extend_from_slice(args);
        Served::start(&all)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (`kill -9`): everything it held is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(socket) = &self.socket {
            let _ = std::fs::remove_file(socket);
        }
    }

    /// Starts an empty server again on the same unix socket.
    pub fn start_again(&mut self) {
        let socket = self.socket.clone().expect("a server on a unix socket");
        self.child = redis_server(&["--port", "0", "--unixsocket", socket.to_str().unwrap()]);
        wait_until("redis-server's socket", || socket.exists());
    }

    /// Runs `redis-cli` against the server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let socket = self.socket.as_ref().expect("a server on a unix socket");
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(socket)
            .args(args)
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn redis_server(args: &[&str]) -> Child {
    Command::new("redis-server")
        .args(args)
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs (install it: apt-get install redis-server)")
}

pub fn wait_until(what: &str, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A text client on `node`, greeted and named `nick`.
pub async fn named(node: &Served, nick: &str) -> Client {
    let mut c = Client::connect(node.addr).await;
    c.greeted().await;
    c.send(&format!("/nick {nick}")).await;
    c.wait_for("the rename", |l| {
        l.ends_with(&format!("is now known as {nick}"))
    })
    .await;
    c.nick = nick.to_string();
    c
}

/// The next `n` chat lines from `nick`.
pub async fn chat_from(c: &mut Client, nick: &str, n: usize) -> Vec<String> {
    let prefix = format!("{nick}> ");
    let mut got = Vec::new();
    while got.len() < n {
        let l = next_chat(c).await;
        if l.starts_with(&prefix) {
            got.push(l);
        }
    }
    got
}

/// Chat lines (`NICK> TEXT`) only, skipping notices and history.
pub async fn next_chat(c: &mut Client) -> String {
    c.wait_for("a chat line", |l| {
        !l.starts_with("* ") && !l.starts_with('[')
    })
    .await
}

/// The next JSON message from the server that `want` accepts, skipping
/// the others.
pub async fn json_next(c: &mut Client, want: impl Fn(&ServerMsg) -> bool) -> ServerMsg {
    loop {
        let line = c.line().await;
        let msg = json::decode_server(line.as_bytes()).expect("a JSON line");
        if want(&msg) {
            return msg;
        }
    }
}

/// Asks for `nick` until it is granted: a claim is released in the
/// background just after its owner moves on, within a moment.
pub async fn take_once_free(c: &mut Client, nick: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        c.send(&format!("/nick {nick}")).await;
        let l = c
            .wait_for("an answer", |l| {
                l.contains(&format!("is now known as {nick}")) || l.contains("already in use")
            })
            .await;
        if l.contains("is now known as") {
            return;
        }
        assert!(Instant::now() < deadline, "{nick} was never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JSON client on `node`, named `jo` and in `lobby`, with the members
/// its `room_state` listed.
pub async fn json_jo_in_lobby(node: &Served) -> (Client, Vec<String>) {
    let mut jo = Client::connect(node.addr).await;
    jo.send(r#"{"type":"hello","proto":"rchat","version":1,"nick":"jo","rooms":["lobby"]}"#)
        .await;
    match json_next(&mut jo, |m| matches!(m, ServerMsg::RoomState { .. })).await {
        ServerMsg::RoomState { members, .. } => (jo, members),
        _ => unreachable!(),
    }
}
