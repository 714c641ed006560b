//! The certificate verifiers rustls calls during the handshake: the roots
//! a verifying client trusts, trust on first use against the known-hosts
//! file or a pinned fingerprint ([`TofuVerifier`]), and no verification at
//! all ([`InsecureVerifier`]); and the wording of a rejection.

use super::*;

pub(super) fn system_roots() -> Result<RootCertStore, TrustError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(loaded.certs);
    if added == 0 {
        let detail = match loaded.errors.first() {
            Some(e) => format!(" ({e})"),
            None => String::new(),
        };
        return Err(TrustError::NoSystemRoots { detail });
    }
    Ok(roots)
}

pub(super) fn ca_roots(path: &Path) -> Result<RootCertStore, TrustError> {
    let certs = cert::load_certs(path).map_err(|source| TrustError::CaFile {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    let mut last_err = None;
    for c in certs {
        if let Err(e) = roots.add(c) {
            last_err = Some(e);
        }
    }
    if roots.is_empty() {
        return Err(TrustError::CaUnusable {
            path: path.to_owned(),
            detail: last_err.map_or_else(|| "no certificates".to_owned(), |e| e.to_string()),
        });
    }
    Ok(roots)
}

pub(super) fn record(seen: &SeenFingerprint, fp: &str) {
    let mut slot = seen.lock().unwrap_or_else(|p| p.into_inner());
    *slot = Some(fp.to_owned());
}

/// A [`TrustError`] travelling inside a `rustls::Error`. rustls shows it
/// with `{:?}`, so its `Debug` is the readable message too.
pub(super) struct Rejected(pub(super) TrustError);

impl fmt::Debug for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Rejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

pub(super) fn reject(err: TrustError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Rejected(err)))))
}

/// A user-facing phrase for why webpki refused a certificate.
pub(super) fn describe(err: &rustls::Error, roots_desc: &str, host_port: &str) -> String {
    match err {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer => format!("it is not signed by {roots_desc}"),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("it is not valid for the name in {host_port}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "it has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "it is not valid yet".to_owned()
            }
            other => format!("it did not verify against {roots_desc} ({other})"),
        },
        other => format!("it did not verify against {roots_desc} ({other})"),
    }
}

/// The handshake-signature checks both verifiers share: whatever a
/// verifier decides about the certificate, the server must still prove it
/// holds the certificate's key, checked with the one crypto provider.
macro_rules! provider_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

/// Verifies like a browser first (against [`TrustMode`]'s roots), then
/// falls back to the fingerprint the user trusts for this server.
pub struct TofuVerifier {
    pub(super) host_port: String,
    /// `None` when no roots could be loaded but a fingerprint is expected.
    pub(super) webpki: Option<Arc<WebPkiServerVerifier>>,
    pub(super) roots_desc: String,
    pub(super) expected: Option<(String, Origin)>,
    pub(super) known_hosts: PathBuf,
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) seen: SeenFingerprint,
}

impl fmt::Debug for TofuVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TofuVerifier")
            .field("host_port", &self.host_port)
            .field("roots", &self.webpki.is_some())
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for TofuVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = cert::fingerprint(end_entity);
        record(&self.seen, &got);
        let webpki_err = match &self.webpki {
            Some(v) => match v.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Ok(ok) => return Ok(ok),
                Err(e) => Some(e),
            },
            None => None,
        };
        match &self.expected {
            Some((fp, _)) if fingerprints_match(fp, &got) => Ok(ServerCertVerified::assertion()),
            Some((fp, origin)) => Err(reject(TrustError::Mismatch {
                host_port: self.host_port.clone(),
                expected: fp.clone(),
                got,
                origin: origin.clone(),
            })),
            None => Err(reject(TrustError::Unknown {
                host_port: self.host_port.clone(),
                fingerprint: got,
                reason: match &webpki_err {
                    Some(e) => describe(e, &self.roots_desc, &self.host_port),
                    None => {
                        "no certificate authorities could be loaded from this system".to_owned()
                    }
                },
                known_hosts: self.known_hosts.clone(),
            })),
        }
    }

    provider_signature_checks!();
}

/// `--insecure`: accepts any certificate. It still records the fingerprint
/// and checks that the server holds the certificate's key, which costs
/// nothing and keeps the recorded fingerprint meaningful.
#[derive(Debug)]
pub struct InsecureVerifier {
    pub(super) provider: Arc<CryptoProvider>,
    pub(super) seen: SeenFingerprint,
}

impl ServerCertVerifier for InsecureVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        record(&self.seen, &cert::fingerprint(end_entity));
        Ok(ServerCertVerified::assertion())
    }

    provider_signature_checks!();
}
