//! Certificates: making a self-signed one (`rchat gen-cert`), reading PEM
//! files, and the SHA-256 fingerprint users compare to decide whom to trust.
//!
//! Everything uses the `ring` provider, the same one rustls runs on, so the
//! binary carries one crypto library.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Names a generated certificate is valid for unless told otherwise.
pub const DEFAULT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("cannot read {what} from {path}: {detail}")]
    Read {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("{0} contains no certificate")]
    NoCertificate(PathBuf),
}

/// A freshly generated self-signed certificate and its key.
pub struct SelfSigned {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
}

/// Generates a self-signed certificate valid for `names` (DNS names or IP
/// addresses).
pub fn self_signed(names: &[String]) -> Result<SelfSigned, CertError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    Ok(SelfSigned {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
        cert_der: certified.cert.der().to_vec(),
    })
}

/// Paths `gen-cert` writes into `dir`.
pub fn pem_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Writes `cert.pem` and `key.pem` into `dir` (created if missing). Refuses
/// to replace either file unless `force`. The key is readable by its owner
/// only.
pub fn write_pair(dir: &Path, cert: &SelfSigned, force: bool) -> Result<(), CertError> {
    let (cert_path, key_path) = pem_paths(dir);
    if !force {
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(CertError::Exists(p.clone()));
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|cause| CertError::Write {
        path: dir.to_owned(),
        cause,
    })?;
    write_file(&cert_path, cert.cert_pem.as_bytes(), 0o644)?;
    write_file(&key_path, cert.key_pem.as_bytes(), 0o600)?;
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), CertError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let err = |cause| CertError::Write {
        path: path.to_owned(),
        cause,
    };
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// SHA-256 over the DER certificate, as colon-separated uppercase hex
/// (`AB:CD:...`), the form `openssl x509 -fingerprint -sha256` prints.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| CertError::Read {
            what: "certificates",
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| CertError::Read {
        what: "a private key",
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pair_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let cert = self_signed(&names).unwrap();
        write_pair(dir.path(), &cert, false).unwrap();
        let (c, k) = pem_paths(dir.path());
        let certs = load_certs(&c).unwrap();
        assert_eq!(certs[0].as_ref(), cert.cert_der.as_slice());
        load_key(&k).unwrap();
        assert!(matches!(
            write_pair(dir.path(), &cert, false),
            Err(CertError::Exists(_))
        ));
        write_pair(dir.path(), &cert, true).unwrap();
    }

    #[test]
    fn fingerprint_format() {
        let fp = fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF"));
    }
}
