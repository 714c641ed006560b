//! The known-hosts file: which server (`host:port`) was trusted with which
//! certificate fingerprint, kept like SSH's. Reading keeps comments and
//! unknown lines so that rewriting the file loses nothing; writing is
//! atomic.

use super::*;

/// The key a server is remembered under: `host:port`, host in lowercase.
pub(super) fn host_key(host_port: &str) -> String {
    host_port.trim().to_ascii_lowercase()
}

/// One line of a known-hosts file, kept as read so rewriting the file does
/// not lose comments.
#[derive(Debug, Clone)]
pub(super) enum Line {
    Entry { host: String, fp: String },
    Other(String),
}

/// Parses a line; `Err` for one that is neither an entry, a comment nor
/// blank.
pub(super) fn parse_line(raw: &str) -> Result<Line, ()> {
    let t = raw.trim();
    if t.is_empty() || t.starts_with('#') {
        return Ok(Line::Other(raw.to_owned()));
    }
    let mut words = t.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(host), Some(fp), None) => match normalize_fingerprint(fp) {
            Some(fp) => Ok(Line::Entry {
                host: host_key(host),
                fp,
            }),
            None => Err(()),
        },
        _ => Err(()),
    }
}

/// The servers the user has decided to trust: one `host:port FINGERPRINT`
/// per line, `#` comments allowed.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
}

impl KnownHosts {
    /// `$RCHAT_KNOWN_HOSTS` if set, else `<config dir>/rchat/known_hosts`
    /// (`~/.config/rchat/known_hosts` on Linux).
    pub fn default_path() -> Result<PathBuf, TrustError> {
        path_from(std::env::var_os(KNOWN_HOSTS_ENV), dirs::config_dir())
    }

    /// Loads the file at [`Self::default_path`].
    pub fn load_default() -> Result<Self, TrustError> {
        Self::load(Self::default_path()?)
    }

    /// Loads `path`; a missing file is an empty list.
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, TrustError> {
        let path = path.into();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(TrustError::KnownHostsRead { path, source }),
        };
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            match parse_line(raw) {
                Ok(l) => lines.push(l),
                Err(()) => {
                    return Err(TrustError::KnownHostsSyntax {
                        path,
                        line: i + 1,
                        text: raw.to_owned(),
                    })
                }
            }
        }
        Ok(Self { path, lines })
    }

    /// The file this list is read from and written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The remembered fingerprint of `host_port`, in [`cert::fingerprint`]
    /// form.
    pub fn get(&self, host_port: &str) -> Option<&str> {
        let key = host_key(host_port);
        self.lines.iter().rev().find_map(|l| match l {
            Line::Entry { host, fp } if *host == key => Some(fp.as_str()),
            _ => None,
        })
    }

    /// Remembers `fp` for `host_port`, replacing what was there, and writes
    /// the file atomically (a temporary file renamed over it), creating its
    /// directory. Entries other clients wrote since [`Self::load`] are kept.
    pub fn remember(&mut self, host_port: &str, fp: &str) -> io::Result<()> {
        let key = host_key(host_port);
        if key.is_empty() || key.contains(char::is_whitespace) || key.starts_with('#') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{host_port}` is not a host:port to remember"),
            ));
        }
        let fp = normalize_fingerprint(fp).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{fp}` is not a SHA-256 fingerprint"),
            )
        })?;
        // Start from what is on disk now, keeping lines this version would
        // not parse, so concurrent clients lose as little as possible.
        let mut lines = match fs::read_to_string(&self.path) {
            Ok(text) => text
                .lines()
                .map(|raw| parse_line(raw).unwrap_or_else(|()| Line::Other(raw.to_owned())))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![Line::Other(
                "# rchat known hosts: `host:port SHA-256-fingerprint`, one per line".to_owned(),
            )],
            Err(e) => return Err(e),
        };
        lines.retain(|l| !matches!(l, Line::Entry { host, .. } if *host == key));
        lines.push(Line::Entry { host: key, fp });
        let mut text = String::new();
        for l in &lines {
            match l {
                Line::Entry { host, fp } => {
                    text.push_str(host);
                    text.push(' ');
                    text.push_str(fp);
                }
                Line::Other(raw) => text.push_str(raw),
            }
            text.push('\n');
        }
        write_atomically(&self.path, text.as_bytes())?;
        self.lines = lines;
        Ok(())
    }
}

pub(super) fn path_from(
    env: Option<OsString>,
    config_dir: Option<PathBuf>,
) -> Result<PathBuf, TrustError> {
    match env {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => config_dir
            .map(|d| d.join("rchat").join("known_hosts"))
            .ok_or(TrustError::NoConfigDir),
    }
}

/// Writes `data` to a new file beside `path`, flushes it to disk, and
/// renames it over `path`, so readers see the old file or the new one,
/// never half of one.
pub(super) fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy()
        .into_owned();
    let mut attempt = 0u32;
    let (tmp, mut file) = loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let tmp = dir.join(format!(
            ".{name}.{}.{nanos}.{attempt}.tmp",
            std::process::id()
        ));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    };
    let written = file
        .write_all(data)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable where directories can be synced.
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
