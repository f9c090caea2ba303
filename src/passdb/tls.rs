//! What the passdbs that speak TLS to a server share (LDAP's `ldaps://` and StartTLS, rimap's
//! STARTTLS and imaps): rustls with ring and its safe protocol versions, and the CA
//! certificates the server's is checked against.

use std::path::PathBuf;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Debian's bundle of the system's CA certificates: the default when no CA is named.
pub(crate) const SYSTEM_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A client configuration's builder: ring, TLS 1.2 and 1.3.
pub(crate) fn builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())
}

/// The certificates of PEM `files` (the system's bundle when there are none), as roots; an
/// error names the file.
pub(crate) fn roots(files: &[PathBuf]) -> Result<rustls::RootCertStore, String> {
    let system = [PathBuf::from(SYSTEM_CA_FILE)];
    let files = if files.is_empty() { &system[..] } else { files };
    let mut roots = rustls::RootCertStore::empty();
    for file in files {
        let certs =
            CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", file.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("{}: {e}", file.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", file.display()))?;
        }
    }
    Ok(roots)
}
