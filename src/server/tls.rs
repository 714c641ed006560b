//! The TLS side of a listener: the acceptor it hands each connection to.
//! The provider and the config from PEM files are shared with the client
//! and live in [`crate::tls`].

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::TlsAcceptor;

pub use crate::tls::{provider, TlsError};

/// Builds an acceptor serving the chain in `cert_path` with `key_path`.
pub fn acceptor(cert_path: &Path, key_path: &Path) -> Result<TlsAcceptor, TlsError> {
    let config = crate::tls::server_config(cert_path, key_path)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
