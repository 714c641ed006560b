//! Shared test harness: a real server on 127.0.0.1 port 0 inside the test
//! process, and line-oriented clients over real sockets. Every wait has a
//! deadline, so a broken server fails a test instead of hanging it.
#![allow(dead_code)]

pub mod redis;
pub mod served;
pub mod tmux;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rchat::config::{HistoryMode, ServerConfig};
use rchat::server::hub::Hub;
use rchat::server::Server;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single expected event may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(ServerConfig::default()).await
    }

    /// Starts a server with `config`, listening on 127.0.0.1:0 unless the
    /// config names other addresses already.
    pub async fn with(mut config: ServerConfig) -> TestServer {
        if config.listen == ServerConfig::default().listen {
            config.listen = vec!["127.0.0.1:0".parse().unwrap()];
        }
        // Every test client comes from 127.0.0.1 and many send in bursts:
        // the limits per address and on flooding are off unless a test
        // sets them to something other than their defaults.
        let defaults = ServerConfig::default();
        if config.max_per_ip == defaults.max_per_ip {
            config.max_per_ip = 0;
        }
        if config.flood_rate == defaults.flood_rate {
            config.flood_rate = 0;
        }
        // Never the user's own data directory: a test that wants SQLite
        // history names a temporary one; the others keep none.
        if config.history == HistoryMode::Sqlite && config.data_dir.is_none() {
            config.history = HistoryMode::Off;
        }
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addrs()[0];
        let hub = server.hub();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            hub,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(DEADLINE, task)
                .await
                .expect("server stops in time")
                .expect("server task does not panic");
        }
    }

    /// Connects a plaintext client and reads through its greeting, so that
    /// when this returns the client is a member of `lobby`.
    pub async fn client(&self) -> Client {
        let mut c = Client::connect(self.addr).await;
        c.greeted().await;
        c
    }

    /// Connects and renames; returns once the rename is confirmed.
    pub async fn named(&self, nick: &str) -> Client {
        let mut c = self.client().await;
        c.send(&format!("/nick {nick}")).await;
        c.expect_suffix(&format!(" is now known as {nick}")).await;
        c.nick = nick.to_string();
        c
    }

    /// Polls the hub until `n` members are registered.
    pub async fn wait_members(&self, n: usize) {
        let hub = self.hub.clone();
        tokio::time::timeout(DEADLINE, async move {
            while hub.member_count() != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("hub did not reach {n} members"));
    }
}

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A test's chat client: writes lines, reads lines with deadlines.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
    /// Nick the server assigned or the test chose.
    pub nick: String,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Client::over(Box::new(stream))
    }

    pub fn over(io: Box<dyn Io>) -> Client {
        Client {
            io: BufReader::new(io),
            nick: String::new(),
        }
    }

    /// Reads the welcome and the lobby confirmation.
    pub async fn greeted(&mut self) {
        let welcome = self.line().await;
        assert!(welcome.starts_with("* "), "welcome: {welcome:?}");
        assert!(welcome.contains("/help"), "welcome: {welcome:?}");
        let nick = welcome
            .split_whitespace()
            .find(|w| w.starts_with("guest"))
            .expect("welcome names the nick");
        self.nick = nick.trim_end_matches(['!', ',', '.']).to_string();
        let joined = self.line().await;
        assert!(joined.starts_with("* you are now in lobby"), "{joined:?}");
    }

    pub async fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.io.get_mut();
        w.write_all(bytes).await.expect("write");
        w.flush().await.expect("flush");
    }

    /// The next line, without its newline. Panics on EOF or timeout.
    pub async fn line(&mut self) -> String {
        match self.try_line().await {
            Some(l) => l,
            None => panic!("{}: connection closed while a line was expected", self.nick),
        }
    }

    /// The next line, or None at EOF. Panics on timeout or invalid UTF-8.
    pub async fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        let n = tokio::time::timeout(DEADLINE, self.io.read_until(b'\n', &mut buf))
            .await
            .unwrap_or_else(|_| panic!("{}: no line within {DEADLINE:?}", self.nick))
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        assert_eq!(buf.pop(), Some(b'\n'), "lines end in newline");
        Some(String::from_utf8(buf).expect("server sends UTF-8"))
    }

    /// Reads until EOF, returning the lines seen on the way.
    pub async fn until_eof(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(l) = self.try_line().await {
            lines.push(l);
        }
        lines
    }

    pub async fn expect(&mut self, want: &str) {
        let got = self.line().await;
        assert_eq!(got, want, "{}", self.nick);
    }

    /// Skips lines until one satisfies `pred`; returns it.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        loop {
            let l = match self.try_line().await {
                Some(l) => l,
                None => panic!("{}: EOF while waiting for {what}", self.nick),
            };
            if pred(&l) {
                return l;
            }
        }
    }

    pub async fn expect_suffix(&mut self, suffix: &str) -> String {
        self.wait_for(suffix, |l| l.ends_with(suffix)).await
    }

    /// Proves nothing arrived for this client before a marker: asks the
    /// server for `/rooms` and requires its reply to be the very next line.
    pub async fn expect_nothing_pending(&mut self) {
        self.send("/rooms").await;
        let l = self.line().await;
        assert!(
            l.starts_with("* rooms: "),
            "{}: unexpected line {l:?}",
            self.nick
        );
    }
}

impl Client {
    /// Half-closes the write side (EOF to the server), keeping the read side.
    pub async fn io_shutdown(&mut self) {
        self.io.get_mut().shutdown().await.expect("shutdown");
    }
}

impl Client {
    /// Connects a client whose drop resets the connection (RST, not FIN).
    pub async fn connect_resetting(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let sock = socket2::SockRef::from(&stream);
        sock.set_linger(Some(Duration::ZERO)).expect("SO_LINGER");
        Client::over(Box::new(stream))
    }
}

impl Client {
    /// The underlying stream, for tests that read raw bytes.
    pub fn raw(&mut self) -> &mut BufReader<Box<dyn Io>> {
        &mut self.io
    }
}

/// A TLS connector trusting only the certificates in `ca`.
pub fn tls_connector(ca: &std::path::Path) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rchat::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Connects a text client over TLS, verifying against `ca` for `name`.
pub async fn tls_text_client(
    addr: SocketAddr,
    ca: &std::path::Path,
    name: &str,
) -> std::io::Result<Client> {
    let tcp = TcpStream::connect(addr).await?;
    let server_name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let tls = tls_connector(ca).connect(server_name, tcp).await?;
    let mut c = Client::over(Box::new(tls));
    c.greeted().await;
    Ok(c)
}

/// Runs the real `rchat connect ARGS` with `stdin` as its input (closed
/// after, so line mode finishes by itself), remembering servers in
/// `known_hosts`, without colours; returns what it printed and its status.
pub fn rchat_connect(
    args: &[&str],
    stdin: &str,
    known_hosts: &std::path::Path,
) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rchat"))
        .arg("connect")
        .args(args)
        .env("RCHAT_KNOWN_HOSTS", known_hosts)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rchat connect");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("rchat connect runs")
}
