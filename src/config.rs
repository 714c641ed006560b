//! Every server limit and default, in one place.
//!
//! Precedence is flags > config file > these defaults: `rchat serve` loads the
//! file named by `--config` (TOML, same field names as below) into a
//! [`ServerConfig`], then overwrites whatever flags were given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How long a cluster node lives without a heartbeat, by default.
pub const DEFAULT_CLUSTER_NODE_TTL: Duration = Duration::from_secs(15);

/// Longest timeout accepted, so deadlines never overflow the clock.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Default listening address: loopback only, the classic port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1234";

/// Bytes `history = "memory"` keeps by default: a few hundred thousand
/// ordinary lines, small beside the server's other memory.
pub const DEFAULT_HISTORY_MEMORY_BUDGET: usize = 64 << 20;

/// Where room history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistoryMode {
    /// One SQLite file in the data directory, durable across restarts.
    Sqlite,
    /// In memory only: gone when the server stops.
    Memory,
    /// No history: no replay, no `/history`.
    Off,
}

/// Settings of one server instance. Every limit an operator may want to
/// change is a field here; the TOML file uses the same names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to accept connections on. All speak TLS when a certificate
    /// is configured.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain; with `tls_key`, turns the listeners into TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// File whose first line is the password every client must give;
    /// none: anyone may connect. Only its owner may be able to read it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Allow a password on a non-loopback listener without TLS.
    pub allow_plaintext_password: bool,
    /// File whose first line is the token that makes a connection an
    /// operator (`/oper TOKEN`); none: no operators.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Connections held at once, counting those still in a TLS handshake.
    pub max_clients: usize,
    /// Connections from one address at once, counting those still in a TLS
    /// handshake; IPv6 addresses count per `ipv6_prefix`. 0: no limit.
    pub max_per_ip: usize,
    /// Length of the IPv6 prefix that counts as one address for
    /// `max_per_ip` (a /64 is what one home or host usually gets).
    pub ipv6_prefix: u8,
    /// Lines per second one connection may send, after its burst; 0: no
    /// flood control.
    pub flood_rate: u32,
    /// Lines one connection may send at once (a paste) before
    /// `flood_rate` applies.
    pub flood_burst: u32,
    /// Refused lines within `flood_kick_window_secs` after which a
    /// connection is disconnected; 0: never.
    pub flood_kick_refusals: u32,
    /// The window `flood_kick_refusals` counts in, in seconds.
    pub flood_kick_window_secs: u64,
    /// Longest line accepted from a client, in bytes, newline excluded.
    pub max_line: usize,
    /// Bytes that may wait for one slow client before it is disconnected.
    pub max_sendq: usize,
    /// Rooms one member may be in at once.
    pub max_rooms_per_member: usize,
    /// Largest room whose messages the posting connection's task writes to
    /// the members' sockets itself (plain TCP or TLS, light traffic), instead of
    /// waking a writer task per member: less CPU, a slightly longer tail on
    /// a multi-core machine. Under quiet traffic a bigger room is written
    /// the same way, in parts of this many, a task each. 0 turns it off.
    pub direct_fanout: usize,
    /// Connections the kernel may queue before they are accepted. A class
    /// logging in at once must not overflow it: an overflowed queue drops
    /// handshakes, which clients see as multi-second stalls.
    pub listen_backlog: u32,
    /// New connections taken in per second, server-wide, after a burst of
    /// `accept_burst`; the rest wait in the kernel's queue, so a wave of
    /// thousands logging in at once is spread out instead of starving the
    /// people already chatting. 0: as fast as they come.
    pub accept_rate: u32,
    /// Connections taken in at once before `accept_rate` applies.
    pub accept_burst: u32,
    /// Sessions that end of their own accord (a quit, a closed connection)
    /// taken out per second, server-wide, after a burst of `leave_burst`;
    /// the rest wait, so ten thousand leaving at once do not hold everyone
    /// else's lines back. A nick is free again once its session is taken
    /// out. 0: at once.
    pub leave_rate: u32,
    /// Sessions taken out at once before `leave_rate` applies.
    pub leave_burst: u32,
    /// Seconds a client has to complete its TLS handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds a connection has from accept to being registered (TLS
    /// handshake, protocol detection, JSON hello) before it is closed.
    pub register_timeout_secs: u64,
    /// Seconds of silence after which a text connection is closed; 0: never.
    /// JSON connections are pinged instead.
    pub idle_timeout_secs: u64,
    /// Seconds of silence on a connection before the kernel probes whether
    /// its peer is still there (TCP keepalive); 0: no probes.
    pub tcp_keepalive_secs: u64,
    /// The kernel's send buffer of each connection, in bytes (`SO_SNDBUF`;
    /// Linux doubles it); 0 leaves it to the kernel's autotuning, which
    /// grows it to several MiB for a client that stops reading, so that
    /// such a client holds that much kernel memory and is evicted only
    /// once that, too, is full.
    pub socket_send_buffer: usize,
    /// Milliseconds a new connection is given to send a JSON hello before
    /// it is greeted as a person in text mode.
    pub hello_wait_ms: u64,
    /// Seconds a closing connection gets to flush its last lines.
    pub close_timeout_secs: u64,
    /// Seconds of silence from a JSON client before the server pings it.
    pub ping_interval_secs: u64,
    /// Seconds a JSON client has to answer a ping before it is dropped.
    pub ping_timeout_secs: u64,
    /// Where room history is kept.
    pub history: HistoryMode,
    /// Directory for the history database; the platform's data directory
    /// for rchat when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Messages a member is sent on joining a room; 0 for none. At most
    /// [`crate::proto::MAX_HISTORY_PAGE`].
    pub history_replay: usize,
    /// Keep only this many of each room's newest messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_per_room: Option<u64>,
    /// Delete messages older than this (in the file: "30d", "12h", ...).
    #[serde(
        deserialize_with = "duration_opt",
        serialize_with = "duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub history_max_age: Option<Duration>,
    /// Bytes of messages `history = "memory"` keeps before dropping the
    /// oldest.
    pub history_memory_budget: usize,
    /// Store private messages too (off by default; see docs/protocol.md).
    pub store_private: bool,
    /// Join a cluster of nodes sharing this Redis (`redis://HOST:PORT[/DB]`
    /// or `redis+unix:///PATH`); see docs/cluster.md. Room history is then
    /// the cluster's, kept in Redis.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How long a cluster node counts as alive without refreshing its
    /// heartbeat; it refreshes three times per TTL (at most every 5 s), and
    /// nodes sweep for dead ones as often.
    #[serde(
        deserialize_with = "duration_req",
        serialize_with = "duration_req_text"
    )]
    pub cluster_node_ttl: Duration,
}

/// The `rchat serve` flags that override the config file, one per
/// [`ServerConfig`] field and named after it. Only flags given are applied
/// (see [`ServerConfig::load`]), so a flag absent from the command line
/// never hides the file's value.
#[derive(Debug, Clone, Default, Serialize, clap::Args)]
pub struct ServeFlags {
    /// Address to listen on (repeat for several; IPv6 as [::1]:1234).
    /// [default: 127.0.0.1:1234]
    #[arg(long, value_name = "ADDR")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain: the listeners speak TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// File whose first line is the password clients must give (/pass in
    /// text mode); it must be readable by its owner only.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Allow --password-file on a non-loopback address without TLS (the
    /// password then crosses the network in clear text).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext_password: bool,
    /// File whose first line is the operator token (/oper TOKEN); it must
    /// be readable by its owner only.
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    /// Most connections held at once. [default: 10000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_clients: Option<usize>,
    /// Connections from one address at once (IPv6: per --ipv6-prefix); 0
    /// for no limit. [default: 16]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_per_ip: Option<usize>,
    /// IPv6 prefix length that counts as one address for --max-per-ip.
    /// [default: 64]
    #[arg(long, value_name = "BITS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_prefix: Option<u8>,
    /// Lines per second one connection may send after its burst; 0 turns
    /// flood control off. [default: 5]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood_rate: Option<u32>,
    /// Lines one connection may send at once before --flood-rate applies.
    /// [default: 20]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood_burst: Option<u32>,
    /// Refused lines within --flood-kick-window after which a connection is
    /// disconnected; 0 for never. [default: 50]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flood_kick_refusals: Option<u32>,
    /// Seconds --flood-kick-refusals counts in. [default: 10]
    #[arg(long, value_name = "SECS")]
    #[serde(
        rename = "flood_kick_window_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub flood_kick_window: Option<u64>,
    /// Longest line accepted from a client, in bytes. [default: 1024]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_line: Option<usize>,
    /// Bytes queued for one client before it is disconnected as too slow.
    /// [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sendq: Option<usize>,
    /// Rooms one member may be in at once. [default: 32]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rooms_per_member: Option<usize>,
    /// Largest room whose messages are written to members' sockets by the
    /// sender's task instead of one writer task per member (less CPU, a
    /// slightly longer tail); bigger rooms, under quiet traffic, in parts
    /// of this many, a task each; 0 turns it off. [default: 128]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_fanout: Option<usize>,
    /// Connections the kernel may queue before they are accepted.
    /// [default: 4096]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen_backlog: Option<u32>,
    /// New connections taken in per second after --accept-burst; the rest
    /// wait their turn in the kernel's queue. 0: no pacing. [default: 1000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_rate: Option<u32>,
    /// Connections taken in at once before --accept-rate applies.
    /// [default: 200]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accept_burst: Option<u32>,
    /// Sessions that end of their own accord (quit, connection closed)
    /// taken out per second after --leave-burst; the rest wait their turn.
    /// 0: no pacing. [default: 2000]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave_rate: Option<u32>,
    /// Sessions taken out at once before --leave-rate applies.
    /// [default: 200]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leave_burst: Option<u32>,
    /// Seconds a client has to finish its TLS handshake. [default: 10]
    #[arg(long, value_name = "SECS")]
    #[serde(
        rename = "handshake_timeout_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub handshake_timeout: Option<u64>,
    /// Seconds from accept to registered (TLS handshake, protocol
    /// detection, JSON hello) before a connection is closed. [default: 20]
    #[arg(long, value_name = "SECS")]
    #[serde(
        rename = "register_timeout_secs",
        skip_serializing_if = "Option::is_none"
    )]
    pub register_timeout: Option<u64>,
    /// Seconds of silence after which a text connection is closed; 0 for
    /// never. [default: 0]
    #[arg(long, value_name = "SECS")]
    #[serde(rename = "idle_timeout_secs", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<u64>,
    /// Seconds of silence before TCP keepalive probes a peer; 0 for none.
    /// [default: 60]
    #[arg(long, value_name = "SECS")]
    #[serde(rename = "tcp_keepalive_secs", skip_serializing_if = "Option::is_none")]
    pub tcp_keepalive: Option<u64>,
    /// The kernel's send buffer per connection, in bytes; 0 for the
    /// kernel's autotuning. [default: 262144]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket_send_buffer: Option<usize>,
    /// Milliseconds to wait for a program's JSON hello before greeting a
    /// person in text mode. [default: 300]
    #[arg(long, value_name = "MS")]
    #[serde(rename = "hello_wait_ms", skip_serializing_if = "Option::is_none")]
    pub hello_wait: Option<u64>,
    /// Seconds a closing connection gets to flush its last lines.
    /// [default: 3]
    #[arg(long, value_name = "SECS")]
    #[serde(rename = "close_timeout_secs", skip_serializing_if = "Option::is_none")]
    pub close_timeout: Option<u64>,
    /// Seconds of silence from a JSON client before it is pinged.
    /// [default: 30]
    #[arg(long, value_name = "SECS")]
    #[serde(rename = "ping_interval_secs", skip_serializing_if = "Option::is_none")]
    pub ping_interval: Option<u64>,
    /// Seconds a JSON client has to answer a ping. [default: 30]
    #[arg(long, value_name = "SECS")]
    #[serde(rename = "ping_timeout_secs", skip_serializing_if = "Option::is_none")]
    pub ping_timeout: Option<u64>,
    /// Where room history is kept: an SQLite file in --data-dir, memory
    /// (lost on exit), or off. [default: sqlite]
    #[arg(long, value_name = "KIND")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryMode>,
    /// Directory for the history database (created if missing).
    /// [default: the platform's data directory, e.g. ~/.local/share/rchat]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Messages replayed to a member joining a room; 0 for none.
    /// [default: 50]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_replay: Option<usize>,
    /// Keep only each room's newest N messages. [default: all]
    #[arg(long, value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_per_room: Option<u64>,
    /// Delete messages older than this, e.g. 30d or 12h. [default: never]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_text)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_max_age: Option<String>,
    /// Bytes of messages `--history memory` keeps. [default: 67108864]
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_memory_budget: Option<usize>,
    /// Store private messages too (they are not stored by default).
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub store_private: bool,
    /// Join the cluster of nodes sharing this Redis:
    /// redis://HOST:PORT[/DB] or redis+unix:///PATH (see docs/cluster.md).
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// How long a cluster node counts as alive without a heartbeat, e.g.
    /// 15s; its members are dropped cluster-wide past it. [default: 15s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_text)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_node_ttl: Option<String>,
}

/// Checks a duration flag and keeps its text, as the file would hold it.
fn parse_duration_text(text: &str) -> Result<String, String> {
    parse_duration(text).map(|_| text.trim().to_string())
}

/// Reads "30d", "1h 30m" and the like.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration such as 30d or 12h: {e}"))?;
    if d.is_zero() {
        return Err("a duration must be longer than zero".into());
    }
    Ok(d)
}

fn duration_text<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        None => s.serialize_none(),
    }
}

fn duration_req_text<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

fn duration_req<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn duration_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_duration(&t).map_err(serde::de::Error::custom))
        .transpose()
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![DEFAULT_LISTEN.parse().expect("constant address parses")],
            tls_cert: None,
            tls_key: None,
            password_file: None,
            allow_plaintext_password: false,
            admin_token_file: None,
            max_clients: 10_000,
            max_per_ip: 16,
            ipv6_prefix: 64,
            flood_rate: 5,
            flood_burst: 20,
            flood_kick_refusals: 50,
            flood_kick_window_secs: 10,
            max_line: 1024,
            max_sendq: 1024 * 1024,
            max_rooms_per_member: 32,
            direct_fanout: 128,
            listen_backlog: 4096,
            accept_rate: 1000,
            accept_burst: 200,
            leave_rate: 2000,
            leave_burst: 200,
            handshake_timeout_secs: 10,
            register_timeout_secs: 20,
            idle_timeout_secs: 0,
            tcp_keepalive_secs: 60,
            socket_send_buffer: 256 * 1024,
            hello_wait_ms: 300,
            close_timeout_secs: 3,
            ping_interval_secs: 30,
            ping_timeout_secs: 30,
            history: HistoryMode::Sqlite,
            data_dir: None,
            history_replay: 50,
            history_max_per_room: None,
            history_max_age: None,
            history_memory_budget: DEFAULT_HISTORY_MEMORY_BUDGET,
            store_private: false,
            cluster: None,
            cluster_node_ttl: DEFAULT_CLUSTER_NODE_TTL,
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("config file {path} is not valid: {cause}")]
    Parse {
        path: PathBuf,
        cause: toml::de::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot apply the command-line flags: {0}")]
    Flags(String),
}

impl ServerConfig {
    /// Loads a TOML config file; fields it omits keep their defaults.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        ServerConfig::from_toml(&text).map_err(|cause| ConfigError::Parse {
            path: path.to_owned(),
            cause,
        })
    }

    /// Reads a configuration from TOML text (what `--config` files hold).
    pub fn from_toml(text: &str) -> Result<ServerConfig, toml::de::Error> {
        toml::from_str(text)
    }

    /// The one merge step: defaults, then the file (if any), then the flags
    /// that were given, then [`ServerConfig::validate`].
    pub fn load(file: Option<&Path>, flags: &ServeFlags) -> Result<ServerConfig, ConfigError> {
        let base = match file {
            Some(path) => ServerConfig::from_file(path)?,
            None => ServerConfig::default(),
        };
        let config = base.overridden_by(flags)?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with the given flags laid over it. The flags are
    /// serialised under the file's field names, so a new field needs no
    /// copying code here.
    pub fn overridden_by(&self, flags: &ServeFlags) -> Result<ServerConfig, ConfigError> {
        let flags_err = |e: &dyn std::fmt::Display| ConfigError::Flags(e.to_string());
        let mut table = toml::Table::try_from(self).map_err(|e| flags_err(&e))?;
        let over = toml::Table::try_from(flags).map_err(|e| flags_err(&e))?;
        table.extend(over);
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| flags_err(&e))
    }

    /// The configuration as a TOML file that [`ServerConfig::from_file`]
    /// reads back unchanged (`rchat serve --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print the configuration: {e}\n"))
    }

    /// Checks values that would make the server useless or unsafe.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.listen.is_empty() {
            return bad("at least one listen address is needed");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("--tls-cert and --tls-key go together: give both or neither");
        }
        if self.max_clients == 0 {
            return bad("max-clients must be at least 1");
        }
        if !(16..=1 << 20).contains(&self.max_line) {
            return bad("max-line must be between 16 and 1048576 bytes");
        }
        if !(Duration::from_millis(300)..=Duration::from_secs(3600))
            .contains(&self.cluster_node_ttl)
        {
            return bad("cluster-node-ttl must be from 300ms to 1h");
        }
        if self.max_sendq < 4 * self.max_line {
            return bad("max-sendq must be at least four times max-line");
        }
        if self.socket_send_buffer != 0 && !(4096..=64 << 20).contains(&self.socket_send_buffer) {
            return bad(
                "socket-send-buffer must be 0 (the kernel's) or from 4096 to 67108864 bytes",
            );
        }
        if [
            self.handshake_timeout_secs,
            self.close_timeout_secs,
            self.ping_interval_secs,
            self.ping_timeout_secs,
        ]
        .contains(&0)
        {
            return bad("timeouts must be at least 1 second");
        }
        if [
            self.handshake_timeout_secs,
            self.close_timeout_secs,
            self.ping_interval_secs,
            self.ping_timeout_secs,
        ]
        .iter()
        .any(|&t| t > MAX_TIMEOUT_SECS)
        {
            return bad("timeouts must be at most one day (86400 seconds)");
        }
        if self.max_rooms_per_member == 0 {
            return bad("max-rooms-per-member must be at least 1");
        }
        if self.history_replay > crate::proto::MAX_HISTORY_PAGE {
            return Err(ConfigError::Invalid(format!(
                "history-replay must be at most {} messages",
                crate::proto::MAX_HISTORY_PAGE
            )));
        }
        if !(1..=128).contains(&self.ipv6_prefix) {
            return bad("ipv6-prefix must be between 1 and 128");
        }
        if self.flood_rate > 0 && self.flood_burst == 0 {
            return bad("flood-burst must be at least 1 when flood-rate is on");
        }
        if self.flood_kick_window_secs == 0 || self.flood_kick_window_secs > MAX_TIMEOUT_SECS {
            return bad("flood-kick-window must be between 1 second and one day");
        }
        if self.register_timeout_secs == 0 || self.register_timeout_secs > MAX_TIMEOUT_SECS {
            return bad("register-timeout must be between 1 second and one day");
        }
        if self.idle_timeout_secs > MAX_TIMEOUT_SECS || self.tcp_keepalive_secs > MAX_TIMEOUT_SECS {
            return bad("idle-timeout and tcp-keepalive must be at most one day (86400 seconds)");
        }
        if self.listen_backlog == 0 {
            return bad("listen-backlog must be at least 1");
        }
        if self.accept_rate > 0 && self.accept_burst == 0 {
            return bad("accept-burst must be at least 1 when accept-rate is on");
        }
        if self.leave_rate > 0 && self.leave_burst == 0 {
            return bad("leave-burst must be at least 1 when leave-rate is on");
        }
        if !(1..=60_000).contains(&self.hello_wait_ms) {
            return bad("hello-wait must be between 1 and 60000 milliseconds");
        }
        if self.history_memory_budget == 0 {
            return bad(
                "history-memory-budget must be at least 1 byte; use --history off to keep none",
            );
        }
        if self.history_max_per_room == Some(0) {
            return bad("history-max-per-room must be at least 1; use --history off to keep none");
        }
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    pub fn register_timeout(&self) -> Duration {
        Duration::from_secs(self.register_timeout_secs)
    }

    /// `None` when text connections may stay silent for ever.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout_secs > 0).then(|| Duration::from_secs(self.idle_timeout_secs))
    }

    pub fn hello_wait(&self) -> Duration {
        Duration::from_millis(self.hello_wait_ms)
    }

    pub fn close_timeout(&self) -> Duration {
        Duration::from_secs(self.close_timeout_secs)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_secs(self.ping_timeout_secs)
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        ServerConfig::default().validate().unwrap();
    }

    #[test]
    fn file_overrides_some_fields() {
        let cfg: ServerConfig = toml::from_str("max_line = 2048\nlisten = [\"[::1]:0\"]").unwrap();
        assert_eq!(cfg.max_line, 2048);
        assert_eq!(cfg.listen, vec!["[::1]:0".parse().unwrap()]);
        assert_eq!(cfg.max_sendq, ServerConfig::default().max_sendq);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<ServerConfig>("max_lines = 5").is_err());
    }

    #[test]
    fn history_settings_from_a_file() {
        let cfg: ServerConfig = toml::from_str(
            "history = \"memory\"\nhistory_max_age = \"30d\"\nhistory_max_per_room = 100",
        )
        .unwrap();
        assert_eq!(cfg.history, HistoryMode::Memory);
        assert_eq!(cfg.history_max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(cfg.history_max_per_room, Some(100));
        assert!(toml::from_str::<ServerConfig>("history_max_age = \"soon\"").is_err());
        assert!(toml::from_str::<ServerConfig>("history = \"postgres\"").is_err());
        let zero = ServerConfig {
            history_max_per_room: Some(0),
            ..ServerConfig::default()
        };
        assert!(zero.validate().is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("12").is_err());
    }

    #[test]
    fn printed_config_reads_back_unchanged() {
        let defaults = ServerConfig::default();
        assert_eq!(
            toml::from_str::<ServerConfig>(&defaults.to_toml()).unwrap(),
            defaults
        );
        let every = ServerConfig {
            listen: vec![
                "[::1]:7000".parse().unwrap(),
                "127.0.0.1:7001".parse().unwrap(),
            ],
            tls_cert: Some("/etc/rchat/cert.pem".into()),
            tls_key: Some("/etc/rchat/key.pem".into()),
            data_dir: Some("/var/lib/rchat".into()),
            history: HistoryMode::Memory,
            history_max_per_room: Some(1000),
            history_max_age: Some(Duration::from_secs(30 * 86_400 + 3600)),
            store_private: true,
            max_line: 4096,
            ..defaults
        };
        let text = every.to_toml();
        assert_eq!(
            toml::from_str::<ServerConfig>(&text).unwrap(),
            every,
            "{text}"
        );
    }

    #[test]
    fn flags_override_the_file_and_only_when_given() {
        let file = ServerConfig {
            max_line: 2048,
            history_replay: 7,
            ..ServerConfig::default()
        };
        let flags = ServeFlags {
            max_line: Some(4096),
            history_max_age: Some("12h".into()),
            handshake_timeout: Some(4),
            store_private: true,
            ..ServeFlags::default()
        };
        let merged = file.overridden_by(&flags).unwrap();
        assert_eq!(merged.max_line, 4096);
        assert_eq!(merged.history_replay, 7);
        assert_eq!(merged.handshake_timeout_secs, 4);
        assert_eq!(merged.history_max_age, Some(Duration::from_secs(12 * 3600)));
        assert!(merged.store_private);
        assert_eq!(file.overridden_by(&ServeFlags::default()).unwrap(), file);
    }

    #[test]
    fn tls_needs_both_files() {
        let cfg = ServerConfig {
            tls_cert: Some("c.pem".into()),
            ..ServerConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
