//! `rchat connect` from parsed flags to a running client: settles TLS trust
//! (asking on first use), then runs the TUI or line mode.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::conn::{self, Options};
use crate::client::plain::{self, Printer};
use crate::client::settings::{self, ClientSettings};
use crate::client::trust::{self, KnownHosts, TrustError, TrustMode};

/// Everything `rchat connect` was asked to do.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    /// `None`: the config file's `server`, else the default address.
    pub addr: Option<String>,
    pub nick: Option<String>,
    pub room: Option<String>,
    /// TLS requested (also implied by `ca`, `trust` and `insecure`).
    pub tls: bool,
    pub ca: Option<PathBuf>,
    pub trust: Option<String>,
    pub insecure: bool,
    /// Line mode even on a terminal.
    pub plain: bool,
    pub reconnect: bool,
    /// The server's password (`--password-file`).
    pub password: Option<conn::Password>,
}

/// Why the client could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("the certificate of {0} was not trusted; not connecting")]
    Declined(String),
    #[error("cannot remember the fingerprint in {path}: {cause}")]
    Remember {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read the password file {}: {cause}", path.display())]
    PasswordFile {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Settings(#[from] crate::client::settings::SettingsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// `cfg` with what its flags left open taken from the client's settings.
fn settle_defaults(mut cfg: ConnectConfig, settings: &ClientSettings) -> ConnectConfig {
    cfg.addr = cfg
        .addr
        .or_else(|| settings.server.clone())
        .or_else(|| Some(crate::config::DEFAULT_LISTEN.to_string()));
    cfg.nick = cfg.nick.or_else(|| settings.nick.clone());
    cfg.room = cfg.room.or_else(|| settings.room.clone());
    cfg.tls |= settings.tls;
    if !cfg.insecure {
        cfg.ca = cfg.ca.or_else(|| settings.ca.clone());
        cfg.trust = cfg.trust.or_else(|| settings.trust.clone());
    }
    cfg
}

/// How long the first TLS probe may take.
/// Reads a password from the first line of `path` (`--password-file`).
pub fn read_password_file(path: &std::path::Path) -> Result<conn::Password, AppError> {
    let text = std::fs::read_to_string(path).map_err(|cause| AppError::PasswordFile {
        path: path.to_owned(),
        cause,
    })?;
    match text.lines().next() {
        Some(first) if !first.is_empty() => Ok(conn::Password(first.to_string())),
        _ => Err(AppError::PasswordFile {
            path: path.to_owned(),
            cause: std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is empty"),
        }),
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the client to completion; returns the process exit code.
pub async fn run(cfg: ConnectConfig) -> Result<i32, AppError> {
    let config_dir = settings::config_dir();
    let settings = ClientSettings::load(config_dir.as_deref())?;
    let cfg = settle_defaults(cfg, &settings);
    let addr = cfg.addr.clone().unwrap_or_default();
    let tls = if cfg.tls || cfg.ca.is_some() || cfg.trust.is_some() || cfg.insecure {
        Some(settle_trust(&cfg).await?)
    } else {
        None
    };
    let tls_on = tls.is_some();
    let mut options = Options {
        addr: addr.clone(),
        nick: cfg.nick.clone(),
        room: cfg.room.clone(),
        tls,
        reconnect: cfg.reconnect,
        password: cfg.password.clone(),
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let (handle, updates) = if interactive && options.password.is_none() {
        first_contact(&mut options).await?
    } else {
        conn::start(options)
    };
    if interactive && !cfg.plain {
        let mut view = crate::client::view::ChatView::new(&addr, tls_on);
        view.set_highlights(&settings.highlight);
        view.set_time_format(settings::TimeFormat::of(&settings));
        let ignore_file = config_dir.as_deref().map(settings::ignored_path);
        for nick in ignore_file
            .as_deref()
            .map(settings::load_ignored)
            .unwrap_or_default()
        {
            view.ignore(&nick);
        }
        let options = crate::client::tui::Options {
            bell: settings.bell,
            colors: settings.colors && std::env::var_os("NO_COLOR").is_none(),
            ignore_file,
        };
        crate::client::tui::run(handle, updates, view, options).await?;
        Ok(0)
    } else {
        let color = settings.colors
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        let stdin = tokio::io::BufReader::new(tokio::io::stdin());
        let printer = Printer {
            color,
            nick_required: cfg.nick.is_some(),
        };
        Ok(plain::run(handle, updates, stdin, std::io::stdout(), printer).await)
    }
}

/// Decides whom to trust, asking the user on first use when it can, and
/// returns the TLS settings to connect with.
/// Connects, asking for the password without echo when the server wants
/// one, before the screen is taken over; up to three tries. The updates
/// seen meanwhile are handed on, so the interface misses none.
async fn first_contact(
    options: &mut Options,
) -> Result<(conn::Handle, tokio::sync::mpsc::Receiver<conn::Update>), AppError> {
    use conn::{Status, Update};
    let mut asked = 0;
    loop {
        let (handle, mut updates) = conn::start(options.clone());
        let mut early = Vec::new();
        let refused = loop {
            match updates.recv().await {
                Some(u @ Update::Status(Status::Connecting { .. })) => early.push(u),
                Some(Update::Status(Status::Lost {
                    reason,
                    retry_in: None,
                })) if reason.contains(crate::proto::json::PASSWORD_NEEDED)
                    || (asked > 0 && reason.contains("wrong password")) =>
                {
                    break Some(reason);
                }
                Some(u) => {
                    early.push(u);
                    break None;
                }
                None => break None,
            }
        };
        match refused {
            Some(reason) if asked < crate::client::conn::PASSWORD_TRIES => {
                if asked > 0 {
                    eprintln!("rchat: {reason}");
                }
                asked += 1;
                let addr = options.addr.clone();
                let typed = tokio::task::spawn_blocking(move || read_hidden(&addr))
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))??;
                options.password = Some(conn::Password(typed));
            }
            Some(reason) => {
                return Err(AppError::Io(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    reason,
                )))
            }
            None => {
                // Hand on what was read, then everything after it.
                let (tx, rx) = tokio::sync::mpsc::channel(1024);
                tokio::spawn(async move {
                    for u in early {
                        if tx.send(u).await.is_err() {
                            return;
                        }
                    }
                    while let Some(u) = updates.recv().await {
                        if tx.send(u).await.is_err() {
                            return;
                        }
                    }
                });
                return Ok((handle, rx));
            }
        }
    }
}

/// Reads a line from the terminal without showing it.
fn read_hidden(addr: &str) -> std::io::Result<String> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    use std::io::Write;
    eprint!("password for {addr}: ");
    std::io::stderr().flush()?;
    crossterm::terminal::enable_raw_mode()?;
    let mut typed = String::new();
    let result = loop {
        match event::read() {
            Ok(Event::Key(key)) if key.kind != KeyEventKind::Release => match key.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    break Err(std::io::Error::new(
                        std::io::ErrorKind::Interrupted,
                        "no password given",
                    ))
                }
                KeyCode::Char(c) => typed.push(c),
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    let _ = crossterm::terminal::disable_raw_mode();
    eprintln!();
    result.map(|()| typed)
}

async fn settle_trust(cfg: &ConnectConfig) -> Result<Arc<rustls::ClientConfig>, AppError> {
    let mode = if cfg.insecure {
        eprintln!("{}", trust::insecure_warning());
        TrustMode::Insecure
    } else if let Some(ca) = &cfg.ca {
        TrustMode::Ca(ca.clone())
    } else {
        TrustMode::System
    };
    let mut known = KnownHosts::load_default()?;
    let host_port = cfg.addr.as_deref().unwrap_or_default();
    let pinned = cfg.trust.as_deref();
    loop {
        let (config, seen) = trust::client_config(&mode, host_port, pinned, &known)?;
        if mode == TrustMode::Insecure {
            return Ok(config);
        }
        match probe(host_port, config.clone()).await {
            // Unreachable now: let the connection loop report and retry.
            Probe::Unreachable => return Ok(config),
            Probe::Ok => {
                if let (Some(_), Some(fp)) = (pinned, seen.lock().ok().and_then(|s| s.clone())) {
                    if known.get(host_port) != Some(fp.as_str()) {
                        remember(&mut known, host_port, &fp)?;
                    }
                }
                return Ok(config);
            }
            Probe::Rejected(TrustError::Unknown { fingerprint, .. })
                if pinned.is_none()
                    && std::io::stdin().is_terminal()
                    && std::io::stderr().is_terminal() =>
            {
                let yes = trust::ask_to_trust(
                    host_port,
                    &fingerprint,
                    std::io::stdin().lock(),
                    std::io::stderr(),
                )?;
                if !yes {
                    return Err(AppError::Declined(host_port.to_string()));
                }
                remember(&mut known, host_port, &fingerprint)?;
            }
            Probe::Rejected(e) => return Err(e.into()),
            Probe::Failed(e) => return Err(e.into()),
        }
    }
}

fn remember(known: &mut KnownHosts, host_port: &str, fp: &str) -> Result<(), AppError> {
    known
        .remember(host_port, fp)
        .map_err(|cause| AppError::Remember {
            path: known.path().to_owned(),
            cause,
        })
}

enum Probe {
    Ok,
    Unreachable,
    Rejected(TrustError),
    Failed(std::io::Error),
}

/// One TLS handshake, to learn whether the server is trusted before any UI
/// starts (a prompt cannot appear inside the full-screen interface).
async fn probe(host_port: &str, config: Arc<rustls::ClientConfig>) -> Probe {
    let attempt = async {
        let tcp = match TcpStream::connect(host_port).await {
            Ok(tcp) => tcp,
            Err(_) => return Probe::Unreachable,
        };
        let name = match trust::server_name(host_port) {
            Ok(name) => name,
            Err(e) => return Probe::Rejected(e),
        };
        match TlsConnector::from(config).connect(name, tcp).await {
            Ok(_) => Probe::Ok,
            Err(e) => {
                let owned = match trust::rejection(&e) {
                    Some(TrustError::Unknown {
                        host_port,
                        fingerprint,
                        reason,
                        known_hosts,
                    }) => Some(TrustError::Unknown {
                        host_port: host_port.clone(),
                        fingerprint: fingerprint.clone(),
                        reason: reason.clone(),
                        known_hosts: known_hosts.clone(),
                    }),
                    Some(TrustError::Mismatch {
                        host_port,
                        expected,
                        got,
                        origin,
                    }) => Some(TrustError::Mismatch {
                        host_port: host_port.clone(),
                        expected: expected.clone(),
                        got: got.clone(),
                        origin: origin.clone(),
                    }),
                    _ => None,
                };
                match owned {
                    Some(t) => Probe::Rejected(t),
                    None => Probe::Failed(e),
                }
            }
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or(Probe::Unreachable)
}
