//! Whom the client trusts over TLS (`rchat connect --tls [--ca PEM]
//! [--trust SHA256] [--insecure]`).
//!
//! Certificates are verified by default: against the system's roots
//! ([`TrustMode::System`]) or a CA file the user names ([`TrustMode::Ca`]).
//! A server whose certificate does not verify that way (the self-signed one
//! `rchat gen-cert` makes, say) is trusted on first use, like SSH: the user
//! checks its SHA-256 fingerprint once, it is remembered in a
//! [`KnownHosts`] file, and a later connection whose certificate has a
//! different fingerprint is refused loudly. `--trust` pins a fingerprint for
//! one connection and takes precedence over the file. `--insecure` turns all
//! of this off, and the CLI says so every time ([`insecure_warning`]).
//!
//! The first connection to an unknown server goes:
//!
//! 1. [`KnownHosts::load_default`], then [`client_config`] and connect.
//! 2. The handshake fails; [`rejection`] on the error gives
//!    [`TrustError::Unknown`] (which carries the fingerprint), and the
//!    shared [`SeenFingerprint`] holds it too.
//! 3. Ask the user ([`ask_to_trust`]) if the terminal is interactive;
//!    otherwise print the error, which explains `--trust`.
//! 4. On yes, [`KnownHosts::remember`], build a new config, connect again.
//!
//! With `--trust FP` the first handshake succeeds if the fingerprint
//! matches; remembering it then (from the [`SeenFingerprint`]) spares the
//! user `--trust` next time.
//!
//! The file is split by job: the known-hosts file ([`known_hosts`]), the
//! prompt ([`prompt`]), and the verifiers rustls calls ([`verify`]); this
//! file holds the settings and builds the client config.
//!
//! Everything runs on the one crypto provider,
//! [`crate::tls::provider`].

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::cert::{self, CertError};
use crate::tls::provider;

mod known_hosts;
mod prompt;
mod verify;

#[cfg(test)]
use known_hosts::path_from;
pub use known_hosts::KnownHosts;
pub use prompt::ask_to_trust;
use verify::*;
pub use verify::{InsecureVerifier, TofuVerifier};

/// Environment variable naming the known-hosts file, instead of
/// `<config dir>/rchat/known_hosts`.
pub const KNOWN_HOSTS_ENV: &str = "RCHAT_KNOWN_HOSTS";

/// Where the fingerprint of the certificate the server presented is put
/// during the handshake (the latest one, whether or not it was accepted),
/// so the caller can read it after a handshake error.
pub type SeenFingerprint = Arc<Mutex<Option<String>>>;

/// Which certificate authorities the client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustMode {
    /// The operating system's root certificates.
    System,
    /// Only the certificates in this PEM file (`--ca`).
    Ca(PathBuf),
    /// Nothing is checked (`--insecure`).
    Insecure,
}

/// Where an expected fingerprint came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--trust` on the command line.
    Pinned,
    /// The line for this server in this known-hosts file.
    KnownHosts(PathBuf),
}

/// Why the client will not (or cannot) trust a server. The messages tell
/// the user what to do next.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "no trusted root certificates could be loaded from this system{detail}; \
         to connect over TLS, pass --ca FILE with the certificate of the CA that \
         signed the server's certificate (or the server's own cert.pem), or \
         --trust SHA256 with the fingerprint the server's operator gives you \
         (`rchat gen-cert` prints it)"
    )]
    NoSystemRoots { detail: String },
    #[error("cannot use --ca {path}: {source}")]
    CaFile { path: PathBuf, source: CertError },
    #[error("cannot use --ca {path}: it contains no usable CA certificate ({detail})")]
    CaUnusable { path: PathBuf, detail: String },
    #[error(
        "`{given}` is not a SHA-256 fingerprint: expected 64 hex digits, with or \
         without colons (like AB:CD:EF:...)"
    )]
    BadFingerprint { given: String },
    #[error("--insecure and --trust cannot be used together: --trust checks the certificate, --insecure checks nothing")]
    InsecureWithPin,
    #[error("`{given}` is not a host name or IP address to check a certificate against")]
    BadServerName { given: String },
    #[error(
        "cannot tell where to keep known hosts: no configuration directory \
         was found; set {KNOWN_HOSTS_ENV} to a file path"
    )]
    NoConfigDir,
    #[error("cannot read known hosts from {path}: {source}")]
    KnownHostsRead { path: PathBuf, source: io::Error },
    #[error(
        "line {line} of {path} is not `HOST:PORT SHA256-FINGERPRINT`: `{text}`; \
         fix or delete that line"
    )]
    KnownHostsSyntax {
        path: PathBuf,
        line: usize,
        text: String,
    },
    /// The certificate did not verify against the trusted roots, and no
    /// fingerprint is known for this server.
    #[error(
        "cannot verify the certificate of {host_port}: {reason}, and this server \
         is not in {known_hosts} yet.\n\
         Its SHA-256 fingerprint is {fingerprint}\n\
         Compare it with the fingerprint the server's operator gives you \
         (`rchat gen-cert` prints it; `openssl x509 -noout -fingerprint -sha256 \
         -in cert.pem` shows it). If they match, connect again with \
         --trust {fingerprint}"
    )]
    Unknown {
        host_port: String,
        fingerprint: String,
        reason: String,
        known_hosts: PathBuf,
    },
    /// The certificate did not verify against the trusted roots, and its
    /// fingerprint is not the expected one.
    #[error("{}", mismatch_message(.host_port, .expected, .got, .origin))]
    Mismatch {
        host_port: String,
        expected: String,
        got: String,
        origin: Origin,
    },
    #[error("cannot set up certificate verification: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
}

fn mismatch_message(host_port: &str, expected: &str, got: &str, origin: &Origin) -> String {
    match origin {
        Origin::KnownHosts(file) => format!(
            "WARNING: the certificate of {host_port} has CHANGED since it was \
             remembered!\n\
             Someone may be intercepting this connection (a man-in-the-middle \
             attack), or the server's certificate was replaced.\n\
             Expected SHA-256 fingerprint: {expected}\n\
             Got:                          {got}\n\
             The connection was refused. Check the new fingerprint with the \
             server's operator; if you trust the new certificate, remove the \
             line for {host_port} from {} or pass --trust {got}",
            file.display()
        ),
        Origin::Pinned => format!(
            "WARNING: the certificate of {host_port} does NOT match the \
             fingerprint given with --trust!\n\
             Someone may be intercepting this connection (a man-in-the-middle \
             attack), or the server's certificate was replaced.\n\
             Expected SHA-256 fingerprint: {expected}\n\
             Got:                          {got}\n\
             The connection was refused. Check the fingerprint with the \
             server's operator; if you trust the new certificate, pass \
             --trust {got}"
        ),
    }
}

/// The text the CLI prints every time it connects with `--insecure`.
pub fn insecure_warning() -> &'static str {
    "WARNING: --insecure: the server's certificate is NOT verified; anyone on \
     the network path can read and alter this chat"
}

/// Puts a SHA-256 fingerprint in the form [`cert::fingerprint`] prints
/// (colon-separated uppercase hex). Accepts hex with or without colons, in
/// any case. `None` if it is not 32 bytes of hex.
pub fn normalize_fingerprint(fp: &str) -> Option<String> {
    let hex: Vec<u8> = fp.trim().bytes().filter(|&b| b != b':').collect();
    if hex.len() != 64 || !hex.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let upper = hex.to_ascii_uppercase();
    let pairs: Vec<&str> = upper
        .chunks(2)
        .map(|p| std::str::from_utf8(p).expect("ASCII hex"))
        .collect();
    Some(pairs.join(":"))
}

/// Whether two fingerprints are the same, whatever their colons and case.
/// Anything that is not a fingerprint matches nothing.
pub fn fingerprints_match(a: &str, b: &str) -> bool {
    match (normalize_fingerprint(a), normalize_fingerprint(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The name to check the certificate against (and to send as SNI) for
/// `host:port`, `[v6]:port`, or a bare host.
pub fn server_name(host_port: &str) -> Result<ServerName<'static>, TrustError> {
    let s = host_port.trim();
    let host = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once(']').map_or(rest, |(h, _)| h)
    } else {
        match s.rsplit_once(':') {
            Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => s,
        }
    };
    ServerName::try_from(host.to_owned()).map_err(|_| TrustError::BadServerName {
        given: host_port.to_owned(),
    })
}

/// Finds a [`TrustError`] behind a failed handshake: in the error itself,
/// inside a `rustls::Error`, or inside an `io::Error` (what tokio-rustls
/// returns). With `anyhow`, call it on each of `err.chain()`.
pub fn rejection<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a TrustError> {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<TrustError>() {
            return Some(t);
        }
        if let Some(r) = e.downcast_ref::<Rejected>() {
            return Some(&r.0);
        }
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner)))) =
            e.downcast_ref::<rustls::Error>()
        {
            return inner.downcast_ref::<Rejected>().map(|r| &r.0);
        }
        cur = match e.downcast_ref::<io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Builds the TLS settings for connecting to `host_port` (the address as
/// typed, which is also its known-hosts key) in `mode`, expecting the
/// fingerprint `pinned` (`--trust`) if given, else the one `known`
/// remembers. Returns the config and where the verifier puts the
/// fingerprint it sees.
///
/// The config reads `known` now: after [`KnownHosts::remember`], build a
/// new one.
pub fn client_config(
    mode: &TrustMode,
    host_port: &str,
    pinned: Option<&str>,
    known: &KnownHosts,
) -> Result<(Arc<rustls::ClientConfig>, SeenFingerprint), TrustError> {
    let seen = SeenFingerprint::default();
    let provider = provider();
    let pinned = pinned
        .map(|p| {
            normalize_fingerprint(p).ok_or_else(|| TrustError::BadFingerprint {
                given: p.to_owned(),
            })
        })
        .transpose()?;
    let verifier: Arc<dyn ServerCertVerifier> = match mode {
        TrustMode::Insecure => {
            if pinned.is_some() {
                return Err(TrustError::InsecureWithPin);
            }
            Arc::new(InsecureVerifier {
                provider: provider.clone(),
                seen: seen.clone(),
            })
        }
        TrustMode::System | TrustMode::Ca(_) => {
            let expected = match pinned {
                Some(fp) => Some((fp, Origin::Pinned)),
                None => known
                    .get(host_port)
                    .map(|fp| (fp.to_owned(), Origin::KnownHosts(known.path().to_owned()))),
            };
            let (roots, roots_desc) = match mode {
                TrustMode::Ca(path) => (
                    Some(ca_roots(path)?),
                    format!("the CA in {}", path.display()),
                ),
                _ => match system_roots() {
                    Ok(roots) => (
                        Some(roots),
                        "a certificate authority this system trusts".to_owned(),
                    ),
                    // Without roots, a known fingerprint still lets us in.
                    Err(_) if expected.is_some() => (None, String::new()),
                    Err(e) => return Err(e),
                },
            };
            let webpki = roots
                .map(|r| {
                    WebPkiServerVerifier::builder_with_provider(Arc::new(r), provider.clone())
                        .build()
                })
                .transpose()?;
            Arc::new(TofuVerifier {
                host_port: host_port.to_owned(),
                webpki,
                roots_desc,
                expected,
                known_hosts: known.path().to_owned(),
                provider: provider.clone(),
                seen: seen.clone(),
            })
        }
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((Arc::new(config), seen))
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const FP_A: &str = "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD";

    /// A certificate and key in PEM files, and its fingerprint.
    struct Pem {
        _dir: tempfile::TempDir,
        cert: PathBuf,
        key: PathBuf,
        fp: String,
    }

    fn write_pem(cert_pem: &str, key_pem: &str, der: &[u8]) -> Pem {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = cert::pem_paths(dir.path());
        fs::write(&cert, cert_pem).unwrap();
        fs::write(&key, key_pem).unwrap();
        Pem {
            _dir: dir,
            cert,
            key,
            fp: cert::fingerprint(der),
        }
    }

    fn self_signed() -> Pem {
        let names: Vec<String> = cert::DEFAULT_NAMES.iter().map(|s| s.to_string()).collect();
        let c = cert::self_signed(&names, cert::DEFAULT_DAYS).unwrap();
        write_pem(&c.cert_pem, &c.key_pem, &c.cert_der)
    }

    /// A CA (its PEM files) and a server certificate it signed.
    fn ca_and_leaf() -> (Pem, Pem) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "rchat test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
        (
            write_pem(&ca.pem(), &ca_key.serialize_pem(), ca.der()),
            write_pem(&leaf.pem(), &leaf_key.serialize_pem(), leaf.der()),
        )
    }

    fn empty_known() -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownHosts::load(dir.path().join("known_hosts")).unwrap();
        (dir, known)
    }

    /// Serves `n` TLS connections on 127.0.0.1, saying "ok" on each;
    /// returns its address.
    /// A TLS acceptor as the server builds one, without importing it.
    fn acceptor(cert: &Path, key: &Path) -> TlsAcceptor {
        TlsAcceptor::from(Arc::new(crate::tls::server_config(cert, key).unwrap()))
    }

    async fn serve_n(acceptor: TlsAcceptor, n: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for _ in 0..n {
                let (tcp, _) = listener.accept().await.unwrap();
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    let _ = tls.write_all(b"ok").await;
                    let _ = tls.shutdown().await;
                }
            }
        });
        addr.to_string()
    }

    async fn serve(pem: &Pem) -> String {
        serve_n(acceptor(&pem.cert, &pem.key), 1).await
    }

    /// Connects as the client would, reads the server's greeting, and
    /// tells which TLS version was used.
    async fn connect(
        addr: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<rustls::ProtocolVersion> {
        let tcp = TcpStream::connect(addr).await?;
        let name = server_name(addr).unwrap();
        let mut tls = TlsConnector::from(config).connect(name, tcp).await?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ok");
        Ok(tls.get_ref().1.protocol_version().unwrap())
    }

    fn seen_fp(seen: &SeenFingerprint) -> Option<String> {
        seen.lock().unwrap().clone()
    }

    #[test]
    fn fingerprints_normalise() {
        let bare = FP_A.replace(':', "");
        assert_eq!(normalize_fingerprint(FP_A).as_deref(), Some(FP_A));
        assert_eq!(normalize_fingerprint(&bare).as_deref(), Some(FP_A));
        assert_eq!(
            normalize_fingerprint(&bare.to_lowercase()).as_deref(),
            Some(FP_A)
        );
        assert_eq!(
            normalize_fingerprint(&format!("  {}\n", FP_A.to_lowercase())).as_deref(),
            Some(FP_A)
        );
        assert!(fingerprints_match(FP_A, &bare.to_lowercase()));
        assert!(!fingerprints_match(FP_A, &FP_A.replace("BA", "BB")));
        for bad in [
            "",
            "AB:CD",
            &bare[..62],
            &format!("{bare}00"),
            &bare.replace('B', "G"),
        ] {
            assert_eq!(normalize_fingerprint(bad), None, "{bad}");
            assert!(!fingerprints_match(bad, bad));
        }
        assert_eq!(
            normalize_fingerprint(&cert::fingerprint(b"abc")).as_deref(),
            Some(FP_A)
        );
    }

    #[test]
    fn server_names() {
        let n = |s: &str| server_name(s).unwrap().to_str().into_owned();
        assert_eq!(n("localhost:7000"), "localhost");
        assert_eq!(n("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(n("[::1]:7000"), "::1");
        assert_eq!(n("chat.example.org"), "chat.example.org");
        assert_eq!(n("::1"), "::1");
        assert!(server_name("bad name:1").is_err());
    }

    #[test]
    fn known_hosts_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("dir").join("known_hosts");
        let mut known = KnownHosts::load(&path).unwrap();
        assert_eq!(known.get("localhost:7000"), None);

        known
            .remember("LocalHost:7000", &FP_A.replace(':', "").to_lowercase())
            .unwrap();
        assert_eq!(known.get("localhost:7000"), Some(FP_A));
        let fp_b = cert::fingerprint(b"b");
        known.remember("[::1]:7000", &fp_b).unwrap();

        let again = KnownHosts::load(&path).unwrap();
        assert_eq!(again.get("LOCALHOST:7000"), Some(FP_A));
        assert_eq!(again.get("[::1]:7000"), Some(fp_b.as_str()));
        assert_eq!(again.get("localhost:7001"), None);
        assert_eq!(again.path(), path);

        // Replacing keeps one line per server.
        known.remember("localhost:7000", &fp_b).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.matches("localhost:7000").count(), 1, "{text}");
        assert!(text.contains(&format!("localhost:7000 {fp_b}\n")), "{text}");

        // Atomic: only the file itself is left in its directory.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("known_hosts")]);

        assert!(known.remember("localhost:7000", "nope").is_err());
        assert!(known.remember("two words", FP_A).is_err());
    }

    #[test]
    fn remember_keeps_entries_and_comments_written_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, "# mine\n\na:1 ".to_owned() + FP_A + "\n").unwrap();
        let mut first = KnownHosts::load(&path).unwrap();
        let mut second = KnownHosts::load(&path).unwrap();
        assert_eq!(first.get("a:1"), Some(FP_A));
        let fp_b = cert::fingerprint(b"b");
        first.remember("b:2", &fp_b).unwrap();
        second.remember("c:3", &fp_b).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# mine\n\n"), "{text}");
        let after = KnownHosts::load(&path).unwrap();
        assert_eq!(after.get("a:1"), Some(FP_A));
        assert_eq!(after.get("b:2"), Some(fp_b.as_str()));
        assert_eq!(after.get("c:3"), Some(fp_b.as_str()));
    }

    #[test]
    fn known_hosts_syntax_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, format!("a:1 {FP_A}\nb:2 not-a-fingerprint\n")).unwrap();
        let err = KnownHosts::load(&path).unwrap_err();
        assert!(
            matches!(err, TrustError::KnownHostsSyntax { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn known_hosts_path_choice() {
        let env = path_from(Some("/tmp/kh".into()), Some("/home/u/.config".into())).unwrap();
        assert_eq!(env, PathBuf::from("/tmp/kh"));
        let conf = path_from(Some("".into()), Some("/home/u/.config".into())).unwrap();
        assert_eq!(conf, PathBuf::from("/home/u/.config/rchat/known_hosts"));
        assert!(matches!(
            path_from(None, None),
            Err(TrustError::NoConfigDir)
        ));
    }

    #[test]
    fn ask_to_trust_answers() {
        for (typed, want) in [
            ("y\n", true),
            ("yes\n", true),
            ("YES\n", true),
            (" Y \n", true),
            ("n\n", false),
            ("no\n", false),
            ("\n", false),
            ("", false),
            ("yep\n", false),
        ] {
            let mut out = Vec::new();
            let got = ask_to_trust("localhost:7000", FP_A, typed.as_bytes(), &mut out).unwrap();
            assert_eq!(got, want, "{typed:?}");
            let out = String::from_utf8(out).unwrap();
            assert!(
                out.contains("The authenticity of localhost:7000 can't be established."),
                "{out}"
            );
            assert!(
                out.contains(&format!("SHA-256 fingerprint: {FP_A}")),
                "{out}"
            );
            assert!(out.ends_with("Trust it and remember? [y/N] "), "{out}");
        }
    }

    #[test]
    fn insecure_warning_says_not_verified() {
        assert!(insecure_warning().contains("NOT verified"));
    }

    #[test]
    fn bad_options_are_refused() {
        let (_d, known) = empty_known();
        let err = client_config(&TrustMode::System, "h:1", Some("zz"), &known).unwrap_err();
        assert!(matches!(err, TrustError::BadFingerprint { .. }), "{err}");
        let err = client_config(&TrustMode::Insecure, "h:1", Some(FP_A), &known).unwrap_err();
        assert!(matches!(err, TrustError::InsecureWithPin), "{err}");
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let err = client_config(&TrustMode::Ca(missing), "h:1", None, &known).unwrap_err();
        assert!(matches!(err, TrustError::CaFile { .. }), "{err}");
        assert!(
            err.to_string().contains("--ca /nonexistent/ca.pem"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unknown_server_fails_and_reports_its_fingerprint_then_remembered_connects() {
        let server = self_signed();
        let (other_ca, _) = ca_and_leaf();
        let (_d, mut known) = empty_known();
        let mode = TrustMode::Ca(other_ca.cert.clone());

        let acceptor = acceptor(&server.cert, &server.key);
        let addr = serve_n(acceptor, 2).await;
        let (config, seen) = client_config(&mode, &addr, None, &known).unwrap();
        let err = connect(&addr, config).await.unwrap_err();
        match rejection(&err) {
            Some(TrustError::Unknown {
                fingerprint,
                host_port,
                ..
            }) => {
                assert_eq!(fingerprint, &server.fp);
                assert_eq!(host_port, &addr);
            }
            other => panic!("want Unknown, got {other:?} from {err}"),
        }
        let msg = rejection(&err).unwrap().to_string();
        assert!(msg.contains(&format!("--trust {}", server.fp)), "{msg}");
        assert!(msg.contains("not signed by the CA in"), "{msg}");
        assert_eq!(seen_fp(&seen).as_deref(), Some(server.fp.as_str()));

        // The user says yes: remember, rebuild the config, reconnect.
        let fp = seen_fp(&seen).unwrap();
        assert!(ask_to_trust(&addr, &fp, &b"y\n"[..], io::sink()).unwrap());
        known.remember(&addr, &fp).unwrap();
        let known = KnownHosts::load(known.path()).unwrap();
        let (config, seen) = client_config(&mode, &addr, None, &known).unwrap();
        connect(&addr, config).await.unwrap();
        assert_eq!(seen_fp(&seen).as_deref(), Some(server.fp.as_str()));
    }

    #[tokio::test]
    async fn pinned_fingerprint_connects_in_any_spelling() {
        let server = self_signed();
        let (_d, known) = empty_known();
        let pin = server.fp.replace(':', "").to_lowercase();
        // System roots (whether or not this machine has any) do not vouch
        // for a self-signed certificate; the pin does.
        let addr = serve(&server).await;
        let (config, _) = client_config(&TrustMode::System, &addr, Some(&pin), &known).unwrap();
        let version = connect(&addr, config).await.unwrap();
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_3);
    }

    #[tokio::test]
    async fn changed_certificate_is_refused_loudly() {
        let old = self_signed();
        let new = self_signed();
        let (other_ca, _) = ca_and_leaf();
        let (_d, mut known) = empty_known();
        let mode = TrustMode::Ca(other_ca.cert.clone());

        let addr = serve(&new).await;
        known.remember(&addr, &old.fp).unwrap();
        let (config, seen) = client_config(&mode, &addr, None, &known).unwrap();
        let err = connect(&addr, config).await.unwrap_err();
        let t = rejection(&err).unwrap_or_else(|| panic!("no TrustError in {err}"));
        match t {
            TrustError::Mismatch {
                expected,
                got,
                origin,
                ..
            } => {
                assert_eq!(expected, &old.fp);
                assert_eq!(got, &new.fp);
                assert_eq!(origin, &Origin::KnownHosts(known.path().to_owned()));
            }
            other => panic!("want Mismatch, got {other}"),
        }
        let msg = t.to_string();
        // Readable even where the caller just prints the handshake error.
        assert!(err.to_string().contains("has CHANGED"), "{err}");
        // And findable through anyhow's chain.
        let wrapped = anyhow::Error::new(err).context("cannot connect");
        assert!(wrapped.chain().find_map(rejection).is_some());
        assert!(
            msg.starts_with(&format!("WARNING: the certificate of {addr} has CHANGED")),
            "{msg}"
        );
        assert!(
            msg.contains(&old.fp) && msg.contains(&format!("--trust {}", new.fp)),
            "{msg}"
        );
        assert!(msg.contains(&known.path().display().to_string()), "{msg}");
        assert_eq!(seen_fp(&seen).as_deref(), Some(new.fp.as_str()));

        // A wrong --trust is refused too, and takes precedence over the file.
        let addr = serve(&old).await;
        known.remember(&addr, &old.fp).unwrap();
        let (config, _) = client_config(&mode, &addr, Some(&new.fp), &known).unwrap();
        let err = connect(&addr, config).await.unwrap_err();
        assert!(
            matches!(
                rejection(&err),
                Some(TrustError::Mismatch {
                    origin: Origin::Pinned,
                    ..
                })
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn ca_mode_accepts_its_ca_and_rejects_another() {
        let (ca, leaf) = ca_and_leaf();
        let (other_ca, _) = ca_and_leaf();
        let (_d, known) = empty_known();

        let addr = serve(&leaf).await;
        let (config, seen) =
            client_config(&TrustMode::Ca(ca.cert.clone()), &addr, None, &known).unwrap();
        connect(&addr, config).await.unwrap();
        assert_eq!(seen_fp(&seen).as_deref(), Some(leaf.fp.as_str()));

        let addr = serve(&leaf).await;
        let (config, seen) =
            client_config(&TrustMode::Ca(other_ca.cert.clone()), &addr, None, &known).unwrap();
        let err = connect(&addr, config).await.unwrap_err();
        assert!(
            matches!(rejection(&err), Some(TrustError::Unknown { .. })),
            "{err}"
        );
        assert_eq!(seen_fp(&seen).as_deref(), Some(leaf.fp.as_str()));

        // A server's own self-signed cert.pem works as --ca.
        let server = self_signed();
        let addr = serve(&server).await;
        let (config, _) =
            client_config(&TrustMode::Ca(server.cert.clone()), &addr, None, &known).unwrap();
        connect(&addr, config).await.unwrap();
    }

    #[tokio::test]
    async fn ca_verified_certificate_is_accepted_even_if_known_differs() {
        let (ca, leaf) = ca_and_leaf();
        let (_d, mut known) = empty_known();
        let addr = serve(&leaf).await;
        known.remember(&addr, FP_A).unwrap();
        let (config, _) =
            client_config(&TrustMode::Ca(ca.cert.clone()), &addr, None, &known).unwrap();
        connect(&addr, config).await.unwrap();
    }

    #[tokio::test]
    async fn tls12_server_with_pinned_fingerprint() {
        let server = self_signed();
        let (other_ca, _) = ca_and_leaf();
        let (_d, known) = empty_known();
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                cert::load_certs(&server.cert).unwrap(),
                cert::load_key(&server.key).unwrap(),
            )
            .unwrap();
        let addr = serve_n(TlsAcceptor::from(Arc::new(config)), 1).await;
        let mode = TrustMode::Ca(other_ca.cert.clone());
        let (config, _) = client_config(&mode, &addr, Some(&server.fp), &known).unwrap();
        let version = connect(&addr, config).await.unwrap();
        assert_eq!(version, rustls::ProtocolVersion::TLSv1_2);
    }

    #[tokio::test]
    async fn insecure_accepts_anything_and_records_the_fingerprint() {
        let server = self_signed();
        let (_d, known) = empty_known();
        let addr = serve(&server).await;
        let (config, seen) = client_config(&TrustMode::Insecure, &addr, None, &known).unwrap();
        connect(&addr, config).await.unwrap();
        assert_eq!(seen_fp(&seen).as_deref(), Some(server.fp.as_str()));
    }

    #[tokio::test]
    async fn system_mode_without_a_known_fingerprint_does_not_trust_self_signed() {
        let server = self_signed();
        let (_d, known) = empty_known();
        let addr = serve(&server).await;
        match client_config(&TrustMode::System, &addr, None, &known) {
            // This machine has no roots: the error says how to go on.
            Err(e @ TrustError::NoSystemRoots { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("--ca") && msg.contains("--trust"), "{msg}");
            }
            Err(e) => panic!("{e}"),
            Ok((config, seen)) => {
                let err = connect(&addr, config).await.unwrap_err();
                assert!(
                    matches!(rejection(&err), Some(TrustError::Unknown { .. })),
                    "{err}"
                );
                assert_eq!(seen_fp(&seen).as_deref(), Some(server.fp.as_str()));
            }
        }
    }
}
