//! What the passdbs that speak TLS to a server share (LDAP's `ldaps://` and StartTLS, rimap's
//! STARTTLS and imaps): rustls with ring and its safe protocol versions, and the CA
//! certificates the server's is checked against.

use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Debian's bundle of the system's CA certificates: the default when no CA is named.
pub(crate) const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why a TLS client could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    /// rustls refused the settings.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A CA file that cannot be read or holds something that is no certificate.
    #[error("{}: {message}", file.display())]
    Ca {
        /// The file.
        file: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// A client configuration's builder: ring, TLS 1.2 and 1.3.
pub(crate) fn builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, TlsSetupError> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?)
}

/// The certificates of PEM `files` (the system's bundle when there are none), as roots; an
/// error names the file.
pub(crate) fn roots(files: &[PathBuf]) -> Result<rustls::RootCertStore, TlsSetupError> {
    let system = [PathBuf::from(SYSTEM_CA_FILE)];
    let files = if files.is_empty() { &system[..] } else { files };
    let mut roots = rustls::RootCertStore::empty();
    for file in files {
        let bad = |e: &dyn std::fmt::Display| TlsSetupError::Ca {
            file: file.clone(),
            message: e.to_string(),
        };
        let certs = CertificateDer::pem_file_iter(file).map_err(|e| bad(&e))?;
        for cert in certs {
            roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
        }
    }
    Ok(roots)
}
