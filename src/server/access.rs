//! Who may connect and who may act: the server password and the operator
//! token, each read once from a file at start.
//!
//! Only a SHA-256 digest of each secret is kept, and attempts are compared
//! digest to digest in constant time, so neither the secret's text nor its
//! length leaks through memory, logs or timing. A secret's `Debug` shows
//! nothing. What a client typed is never logged either: a failed attempt is
//! logged with the peer's address only (for fail2ban).
//!
//! Not here: asking the client (the sessions do), and what an operator may
//! do (the hub and the dispatcher).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use subtle::ConstantTimeEq;

use crate::config::ServerConfig;

/// Wrong passwords (or operator tokens) one connection may try before it is
/// closed.
pub const MAX_ATTEMPTS: u32 = 3;

/// Why the secrets cannot be used. The messages say what to do.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read the {what} file {}: {cause}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("the {what} file {} is empty; put the {what} on its first line", path.display())]
    Empty { what: &'static str, path: PathBuf },
    #[error(
        "the {what} file {} can be read by other users (mode {mode:o}); run: chmod 600 {}",
        path.display(),
        path.display()
    )]
    Readable {
        what: &'static str,
        path: PathBuf,
        mode: u32,
    },
    #[error(
        "a password on {addr} without TLS would cross the network in clear text; give \
         --tls-cert and --tls-key, listen on a loopback address, or pass \
         --allow-plaintext-password if the network is yours"
    )]
    Plaintext { addr: SocketAddr },
}

/// A secret, as its digest only.
#[derive(Clone)]
pub struct Secret {
    digest: [u8; 32],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(text: &str) -> Secret {
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Secret { digest: out }
    }

    /// Reads a secret from the first line of `path`, which only its owner
    /// may read.
    pub fn from_file(path: &Path, what: &'static str) -> Result<Secret, AccessError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(path).map_err(|cause| AccessError::Read {
                what,
                path: path.to_owned(),
                cause,
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(AccessError::Readable {
                    what,
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        let text = std::fs::read_to_string(path).map_err(|cause| AccessError::Read {
            what,
            path: path.to_owned(),
            cause,
        })?;
        let first = text.lines().next().unwrap_or("");
        if first.is_empty() {
            return Err(AccessError::Empty {
                what,
                path: path.to_owned(),
            });
        }
        Ok(Secret::new(first))
    }

    /// Whether `attempt` is the secret, in time that does not depend on
    /// either.
    pub fn matches(&self, attempt: &str) -> bool {
        Secret::new(attempt).digest.ct_eq(&self.digest).into()
    }
}

/// The server's secrets.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Needed to connect at all.
    pub password: Option<Secret>,
    /// Makes a connection an operator (`/oper TOKEN`).
    pub admin_token: Option<Secret>,
}

impl Access {
    /// Reads the files the configuration names, and refuses a password
    /// that would cross a network in clear text.
    pub fn load(config: &ServerConfig) -> Result<Access, AccessError> {
        let read = |path: &Option<PathBuf>, what| {
            path.as_deref()
                .map(|p| Secret::from_file(p, what))
                .transpose()
        };
        let access = Access {
            password: read(&config.password_file, "password")?,
            admin_token: read(&config.admin_token_file, "admin token")?,
        };
        if access.password.is_some() && !config.tls_enabled() && !config.allow_plaintext_password {
            if let Some(addr) = config.listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(AccessError::Plaintext { addr: *addr });
            }
        }
        Ok(access)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("secret");
        std::fs::write(&path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        path
    }

    #[test]
    fn a_secret_matches_only_itself_and_shows_nothing() {
        let s = Secret::new("hunter2");
        assert!(s.matches("hunter2"));
        assert!(!s.matches("hunter3"));
        assert!(!s.matches(""));
        assert!(!s.matches("hunter2 "));
        assert_eq!(format!("{s:?}"), "Secret(..)");
    }

    #[test]
    fn files_must_be_private_and_not_empty() {
        let dir = tempfile::tempdir().unwrap();
        let ok = write(dir.path(), "open sesame\n", 0o600);
        assert!(Secret::from_file(&ok, "password")
            .unwrap()
            .matches("open sesame"));
        let empty = write(dir.path(), "\n", 0o600);
        let e = Secret::from_file(&empty, "password").unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        #[cfg(unix)]
        {
            let shared = write(dir.path(), "x\n", 0o644);
            let e = Secret::from_file(&shared, "password").unwrap_err();
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
        let e = Secret::from_file(&dir.path().join("missing"), "admin token").unwrap_err();
        assert!(
            e.to_string().contains("cannot read the admin token file"),
            "{e}"
        );
    }

    #[test]
    fn a_password_in_clear_text_on_a_network_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "pw\n", 0o600);
        let config = |listen: &str, allow| ServerConfig {
            listen: vec![listen.parse().unwrap()],
            password_file: Some(path.clone()),
            allow_plaintext_password: allow,
            ..ServerConfig::default()
        };
        assert!(Access::load(&config("127.0.0.1:0", false)).is_ok());
        let e = Access::load(&config("0.0.0.0:1234", false)).unwrap_err();
        assert!(e.to_string().contains("--allow-plaintext-password"), "{e}");
        assert!(Access::load(&config("0.0.0.0:1234", true)).is_ok());
    }
}
