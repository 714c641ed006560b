//! The one TLS crypto provider, shared by the server, the client and the
//! bench, and the server-side rustls config built from PEM files.
//!
//! It sits below both `server/` and `client/` so neither imports the other:
//! the client's tests serve TLS with [`server_config`] just as the server
//! does. What a listener does with a handshake lives in `server::tls`; whom
//! the client trusts lives in `client::trust`.

use std::path::Path;
use std::sync::Arc;

use crate::cert::{self, CertError};

/// Why a certificate and key cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Files(#[from] CertError),
    #[error("the certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
}

/// The process-wide crypto provider (ring), the same one rcgen signs with.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server config serving the chain in `cert_path` with `key_path`: TLS
/// 1.3 and 1.2 only, no client certificates.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<rustls::ServerConfig, TlsError> {
    let certs = cert::load_certs(cert_path)?;
    let key = cert::load_key(key_path)?;
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?)
}
