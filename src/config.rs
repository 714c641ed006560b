//! Every server limit and default, in one place.
//!
//! Precedence is flags > config file > these defaults: `rchat serve` loads the
//! file named by `--config` (TOML, same field names as below) into a
//! [`ServerConfig`], then overwrites whatever flags were given.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Longest timeout accepted, so deadlines never overflow the clock.
const MAX_TIMEOUT_SECS: u64 = 86_400;

/// Default listening address: loopback only, the classic port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:1234";

/// Longest replay on joining, and longest `/history` page.
pub const MAX_HISTORY_REPLAY: usize = 500;

/// Where room history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HistoryMode {
    /// One SQLite file in the data directory, durable across restarts.
    Sqlite,
    /// In memory only: gone when the server stops.
    Memory,
    /// No history: no replay, no `/history`.
    Off,
}

/// Settings of one server instance.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to accept connections on. All speak TLS when a certificate
    /// is configured.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain; with `tls_key`, turns the listeners into TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Connections held at once, counting those still in a TLS handshake.
    pub max_clients: usize,
    /// Longest line accepted from a client, in bytes, newline excluded.
    pub max_line: usize,
    /// Bytes that may wait for one slow client before it is disconnected.
    pub max_sendq: usize,
    /// Rooms one member may be in at once.
    pub max_rooms_per_member: usize,
    /// Seconds a client has to complete its TLS handshake.
    pub handshake_timeout_secs: u64,
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
    pub data_dir: Option<PathBuf>,
    /// Messages a member is sent on joining a room; 0 for none.
    pub history_replay: usize,
    /// Keep only this many of each room's newest messages.
    pub history_max_per_room: Option<u64>,
    /// Delete messages older than this (in the file: "30d", "12h", ...).
    #[serde(deserialize_with = "duration_opt")]
    pub history_max_age: Option<Duration>,
    /// Store private messages too (off by default; see docs/protocol.md).
    pub store_private: bool,
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
            max_clients: 10_000,
            max_line: 1024,
            max_sendq: 1024 * 1024,
            max_rooms_per_member: 32,
            handshake_timeout_secs: 10,
            close_timeout_secs: 3,
            ping_interval_secs: 30,
            ping_timeout_secs: 30,
            history: HistoryMode::Sqlite,
            data_dir: None,
            history_replay: 50,
            history_max_per_room: None,
            history_max_age: None,
            store_private: false,
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
}

impl ServerConfig {
    /// Loads a TOML config file; fields it omits keep their defaults.
    pub fn from_file(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        toml::from_str(&text).map_err(|cause| ConfigError::Parse {
            path: path.to_owned(),
            cause,
        })
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
        if self.max_sendq < 4 * self.max_line {
            return bad("max-sendq must be at least four times max-line");
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
        if self.history_replay > MAX_HISTORY_REPLAY {
            return bad("history-replay must be at most 500 messages");
        }
        if self.history_max_per_room == Some(0) {
            return bad("history-max-per-room must be at least 1; use --history off to keep none");
        }
        Ok(())
    }

    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
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
    fn tls_needs_both_files() {
        let cfg = ServerConfig {
            tls_cert: Some("c.pem".into()),
            ..ServerConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
