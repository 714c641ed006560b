//! The terminal client's own files in its config directory
//! (`$XDG_CONFIG_HOME/rchat`, `~/.config/rchat` on Linux; `$RCHAT_CONFIG_DIR`
//! overrides it): `client.toml`, what `rchat connect` does without flags,
//! and `ignored`, the nicks `/ignore` hides, one per line.
//!
//! ```toml
//! server = "chat.example.org:1234"   # used when no ADDR is given
//! nick = "alice"
//! room = "lobby"
//! tls = true                         # or ca = "/path/ca.pem", trust = "SHA256…"
//! highlight = ["deploy", "oncall"]   # words that count as mentions
//! bell = true                        # ring the terminal bell on a mention
//! timestamp_format = "%H:%M"         # strftime, as in chrono
//! time_zone = "local"                # or "utc"
//! colors = true                      # NO_COLOR in the environment still wins
//! ```
//!
//! Flags win over the file. Owns reading and writing these files; what the
//! settings do is the rest of the client's business.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Overrides the config directory (tests, several profiles).
pub const CONFIG_DIR_ENV: &str = "RCHAT_CONFIG_DIR";
const CLIENT_FILE: &str = "client.toml";
const IGNORED_FILE: &str = "ignored";
/// Nicks kept in the ignore list at most.
pub const MAX_IGNORED: usize = 1000;

/// Which clock timestamps are shown in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeZone {
    #[default]
    Local,
    Utc,
}

/// `client.toml`. Every field is optional in the file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSettings {
    pub server: Option<String>,
    pub nick: Option<String>,
    pub room: Option<String>,
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub trust: Option<String>,
    pub highlight: Vec<String>,
    pub bell: bool,
    pub timestamp_format: String,
    pub time_zone: TimeZone,
    pub colors: bool,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            server: None,
            nick: None,
            room: None,
            tls: false,
            ca: None,
            trust: None,
            highlight: Vec::new(),
            bell: true,
            timestamp_format: "%H:%M".into(),
            time_zone: TimeZone::Local,
            colors: true,
        }
    }
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is not valid: {cause}", path.display())]
    Parse {
        path: PathBuf,
        cause: toml::de::Error,
    },
    #[error("{}: timestamp_format {format:?} is not a valid strftime format", path.display())]
    Format { path: PathBuf, format: String },
}

/// The client's config directory, if there is one.
pub fn config_dir() -> Option<PathBuf> {
    match std::env::var_os(CONFIG_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::config_dir().map(|d| d.join("rchat")),
    }
}

impl ClientSettings {
    /// Reads `client.toml` from `dir`; defaults if there is no such file.
    pub fn load(dir: Option<&Path>) -> Result<ClientSettings, SettingsError> {
        let Some(path) = dir.map(|d| d.join(CLIENT_FILE)) else {
            return Ok(ClientSettings::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ClientSettings::default())
            }
            Err(cause) => return Err(SettingsError::Read { path, cause }),
        };
        let settings: ClientSettings =
            toml::from_str(&text).map_err(|cause| SettingsError::Parse {
                path: path.clone(),
                cause,
            })?;
        if !valid_format(&settings.timestamp_format) {
            return Err(SettingsError::Format {
                path,
                format: settings.timestamp_format,
            });
        }
        Ok(settings)
    }
}

/// Whether chrono can format with `format` (an unknown `%` item fails).
fn valid_format(format: &str) -> bool {
    use chrono::format::{Item, StrftimeItems};
    !StrftimeItems::new(format).any(|item| matches!(item, Item::Error))
}

/// The ignore list's file in `dir`.
pub fn ignored_path(dir: &Path) -> PathBuf {
    dir.join(IGNORED_FILE)
}

/// Reads the ignore list (missing file: empty); blank lines and `#`
/// comments are skipped.
pub fn load_ignored(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(MAX_IGNORED)
        .map(str::to_string)
        .collect()
}

/// Writes the ignore list, creating the directory if needed; written to a
/// temporary file first, so a crash leaves the old list or the new one.
pub fn save_ignored(path: &Path, nicks: &[String]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = String::from("# nicks hidden by /ignore, one per line\n");
    for nick in nicks {
        text.push_str(nick);
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_gives_defaults_and_a_full_one_is_read() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ClientSettings::load(Some(dir.path())).unwrap(),
            ClientSettings::default()
        );
        std::fs::write(
            dir.path().join(CLIENT_FILE),
            "server = \"chat.example:1234\"\nnick = \"alice\"\nhighlight = [\"deploy\"]\n\
             bell = false\ntimestamp_format = \"%H:%M:%S\"\ntime_zone = \"utc\"\ncolors = false\n",
        )
        .unwrap();
        let s = ClientSettings::load(Some(dir.path())).unwrap();
        assert_eq!(s.server.as_deref(), Some("chat.example:1234"));
        assert_eq!(s.highlight, ["deploy"]);
        assert!(!s.bell && !s.colors);
        assert_eq!(s.time_zone, TimeZone::Utc);
        assert_eq!(s.timestamp_format, "%H:%M:%S");
    }

    #[test]
    fn mistakes_in_the_file_are_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CLIENT_FILE);
        std::fs::write(&file, "nick = \"a\"\ncolour = true\n").unwrap();
        let e = ClientSettings::load(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("client.toml") && e.contains("colour"), "{e}");
        std::fs::write(&file, "timestamp_format = \"%Q\"\n").unwrap();
        let e = ClientSettings::load(Some(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timestamp_format"), "{e}");
        std::fs::write(&file, "time_zone = \"mars\"\n").unwrap();
        assert!(ClientSettings::load(Some(dir.path())).is_err());
    }

    #[test]
    fn the_ignore_list_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = ignored_path(&dir.path().join("rchat"));
        assert!(load_ignored(&path).is_empty());
        save_ignored(&path, &["troll".into(), "spammer".into()]).unwrap();
        assert_eq!(load_ignored(&path), ["troll", "spammer"]);
    }
}

/// How the interface shows a timestamp: a strftime format in local time
/// or UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    pub format: String,
    pub zone: TimeZone,
}

impl Default for TimeFormat {
    /// `HH:MM` UTC, the server's own clock: what tests and line mode use.
    fn default() -> Self {
        TimeFormat {
            format: "%H:%M".into(),
            zone: TimeZone::Utc,
        }
    }
}

impl TimeFormat {
    /// From the settings.
    pub fn of(settings: &ClientSettings) -> TimeFormat {
        TimeFormat {
            format: settings.timestamp_format.clone(),
            zone: settings.time_zone,
        }
    }

    /// The time of day of `ts_ms`.
    pub fn time(&self, ts_ms: u64) -> String {
        self.with(ts_ms, &self.format)
            .unwrap_or_else(|| crate::clock::hhmm(ts_ms))
    }

    /// The date and time of `ts_ms`, for lines from another day.
    pub fn date_time(&self, ts_ms: u64) -> String {
        match self.with(ts_ms, "%Y-%m-%d") {
            Some(date) => format!("{date} {}", self.time(ts_ms)),
            None => crate::clock::date_time(ts_ms),
        }
    }

    /// `ts_ms` formatted in the zone, `None` past chrono's range or for a
    /// format it cannot write (never a panic: the server sends any time).
    fn with(&self, ts_ms: u64, format: &str) -> Option<String> {
        use std::fmt::Write;
        let utc = chrono::DateTime::from_timestamp_millis(i64::try_from(ts_ms).ok()?)?;
        let mut out = String::new();
        let written = match self.zone {
            TimeZone::Utc => write!(out, "{}", utc.format(format)),
            TimeZone::Local => write!(out, "{}", utc.with_timezone(&chrono::Local).format(format)),
        };
        written.ok().map(|()| out)
    }
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn times_follow_the_format_and_zone_and_never_panic() {
        let utc = TimeFormat {
            format: "%H:%M:%S".into(),
            zone: TimeZone::Utc,
        };
        // 2026-11-24 12:34:56 UTC.
        let t = 1_795_523_696_000;
        assert_eq!(utc.time(t), "12:34:56");
        assert_eq!(utc.date_time(t), "2026-11-24 12:34:56");
        assert_eq!(TimeFormat::default().time(t), "12:34");
        // Far past chrono's range: the fallback, not a panic.
        assert_eq!(utc.time(u64::MAX), crate::clock::hhmm(u64::MAX));
        let local = TimeFormat {
            format: "%H:%M".into(),
            zone: TimeZone::Local,
        };
        assert_eq!(local.time(t).len(), 5);
    }
}
