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

/// Days a generated certificate is valid by default: what browsers accept
/// at most for a certificate they trust, and a nudge to renew.
pub const DEFAULT_DAYS: u32 = 825;
/// Longest validity `gen-cert --days` accepts.
pub const MAX_DAYS: u32 = 3650;
/// How far before now a certificate starts, so a client whose clock is a
/// little behind still accepts it.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Generates a self-signed certificate valid for `names` (DNS names or IP
/// addresses) from a little before now for `days` days, with the first name
/// as its subject and a fresh random serial number.
pub fn self_signed(names: &[String], days: u32) -> Result<SelfSigned, CertError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + time::Duration::days(i64::from(days));
    let mut dn = rcgen::DistinguishedName::new();
    if let Some(first) = names.first() {
        dn.push(rcgen::DnType::CommonName, first.as_str());
    }
    params.distinguished_name = dn;
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    // Positive, as a DER INTEGER must be for a serial.
    serial[0] &= 0x7f;
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    Ok(SelfSigned {
        cert_pem: cert.pem(),
        key_pem: key_pair.serialize_pem(),
        cert_der: cert.der().to_vec(),
    })
}

/// What `rchat serve` and the tests read back from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub serial: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// The subject's common name, if it has one.
    pub common_name: Option<String>,
}

/// Reads the serial, validity and subject common name of a DER
/// certificate; `None` if it is not one. A few dozen lines of DER walking
/// rather than a full X.509 parser: these four fields are all we read.
pub fn info(der: &[u8]) -> Option<CertInfo> {
    let (cert, _) = der::element(der, 0x30)?;
    let (tbs, _) = der::element(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der::element(rest, 0xa0)?.1; // [0] version
    }
    let (serial, rest) = der::element(rest, 0x02)?;
    let (_signature, rest) = der::element(rest, 0x30)?;
    let (_issuer, rest) = der::element(rest, 0x30)?;
    let (validity, rest) = der::element(rest, 0x30)?;
    let (subject, _) = der::element(rest, 0x30)?;
    let (not_before, after) = der::time(validity)?;
    let (not_after, _) = der::time(after)?;
    Some(CertInfo {
        serial: serial.to_vec(),
        not_before,
        not_after,
        common_name: der::common_name(subject),
    })
}

/// The little DER [`info`] needs.
mod der {
    /// The contents of the element at the start of `input`, if its tag is
    /// `tag`, and what follows it.
    pub fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }

    /// A UTCTime or GeneralizedTime as seconds since the Unix epoch.
    pub fn time(input: &[u8]) -> Option<(i64, &[u8])> {
        let (text, rest, century) = match input.first()? {
            0x17 => {
                let (t, r) = element(input, 0x17)?;
                let yy: i32 = std::str::from_utf8(t.get(..2)?).ok()?.parse().ok()?;
                (
                    t.get(2..)?,
                    r,
                    Some(if yy >= 50 { 1900 + yy } else { 2000 + yy }),
                )
            }
            0x18 => {
                let (t, r) = element(input, 0x18)?;
                (t, r, None)
            }
            _ => return None,
        };
        let text = std::str::from_utf8(text).ok()?;
        let (year, text) = match century {
            Some(y) => (y, text),
            None => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        };
        let num = |r: std::ops::Range<usize>| -> Option<u8> { text.get(r)?.parse().ok() };
        let month = time::Month::try_from(num(0..2)?).ok()?;
        let date = time::Date::from_calendar_date(year, month, num(2..4)?).ok()?;
        let at = date
            .with_hms(num(4..6)?, num(6..8)?, num(8..10)?)
            .ok()?
            .assume_utc();
        Some((at.unix_timestamp(), rest))
    }

    /// The first common name (2.5.4.3) in a Name.
    pub fn common_name(name: &[u8]) -> Option<String> {
        const CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
        let mut sets = name;
        while !sets.is_empty() {
            let (set, rest) = element(sets, 0x31)?;
            sets = rest;
            let (pair, _) = element(set, 0x30)?;
            if let Some(value) = pair.strip_prefix(CN) {
                let tag = *value.first()?;
                let (text, _) = element(value, tag)?;
                return String::from_utf8(text.to_vec()).ok();
            }
        }
        None
    }
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
    #[test]
    fn generated_certificates_are_bounded_named_and_unique() {
        let names = vec!["chat.example".to_string(), "127.0.0.1".to_string()];
        let a = info(&self_signed(&names, 90).unwrap().cert_der).unwrap();
        let b = info(&self_signed(&names, 90).unwrap().cert_der).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!(
            a.not_before <= now && a.not_before >= now - 2 * 3600,
            "{a:?}"
        );
        let days = (a.not_after - a.not_before) as f64 / 86_400.0;
        assert!((90.0..90.1).contains(&days), "{days}");
        assert_eq!(a.common_name.as_deref(), Some("chat.example"));
        assert_ne!(a.serial, b.serial, "a fresh serial each time");
        assert!(info(b"not a certificate").is_none());
    }

    use super::*;

    #[test]
    fn generated_pair_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let cert = self_signed(&names, DEFAULT_DAYS).unwrap();
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
