//! TLS for ldaps:// and StartTLS: the CA the settings name (or the system's), the peer's name
//! checked unless `ldap_tls_check_peer` is off, a client certificate when given.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::conf::LdapConf;

/// Why the TLS settings of `saslauthd.conf` cannot be used; each names its key.
#[derive(Debug, thiserror::Error)]
pub(super) enum LdapTlsError {
    /// rustls, or a CA file.
    #[error(transparent)]
    Setup(#[from] crate::passdb::tls::TlsSetupError),
    /// `ldap_tls_cacert_dir` cannot be listed.
    #[error("ldap_tls_cacert_dir {}: {source}", dir.display())]
    CaDir {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Peers are to be checked, but no CA is there to check them with.
    #[error("ldap_tls_check_peer: no CA certificate to check the server with")]
    NoCa,
    /// `ldap_tls_cert` or `ldap_tls_key` cannot be read.
    #[error("{key} {}: {message}", file.display())]
    ClientFile {
        /// The key.
        key: &'static str,
        /// Its file.
        file: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refuses the client certificate and key together.
    #[error("ldap_tls_cert: {0}")]
    ClientCert(rustls::Error),
}

pub(super) fn client_config(conf: &LdapConf) -> Result<rustls::ClientConfig, LdapTlsError> {
    let builder = crate::passdb::tls::builder()?;
    let builder = if conf.tls_check_peer {
        let mut files = Vec::new();
        if let Some(file) = &conf.tls_cacert_file {
            files.push(file.clone());
        }
        if let Some(dir) = &conf.tls_cacert_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| LdapTlsError::CaDir {
                dir: dir.clone(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|x| x == "pem" || x == "crt") || hashed_name(&path)
                {
                    files.push(path);
                }
            }
        }
        let roots = crate::passdb::tls::roots(&files)?;
        if roots.is_empty() {
            return Err(LdapTlsError::NoCa);
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify))
    };
    match (&conf.tls_cert, &conf.tls_key) {
        (Some(cert), Some(key)) => {
            let bad = |key: &'static str, file: &std::path::Path, e: &dyn std::fmt::Display| {
                LdapTlsError::ClientFile {
                    key,
                    file: file.to_owned(),
                    message: e.to_string(),
                }
            };
            let chain: Result<Vec<_>, _> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad("ldap_tls_cert", cert, &e))?
                .collect();
            let chain = chain.map_err(|e| bad("ldap_tls_cert", cert, &e))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| bad("ldap_tls_key", key, &e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(LdapTlsError::ClientCert)
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A name of OpenSSL's CA directory layout, which libldap's `TLS_CACERTDIR` reads and
/// `c_rehash` (`openssl rehash`) makes: the subject's hash, a dot, a number
/// (`5f3c1a2b.0`). Revocation lists (`5f3c1a2b.r0`) are not certificates.
fn hashed_name(path: &std::path::Path) -> bool {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    name.split_once('.').is_some_and(|(hash, n)| {
        hash.len() == 8
            && hash.bytes().all(|b| b.is_ascii_hexdigit())
            && !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
    })
}

/// `ldap_tls_check_peer: no` (Cyrus's default): the server's certificate is not checked.
#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &rustls::crypto::ring::default_provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_names_of_a_rehashed_ca_directory() {
        let hashed = |name: &str| super::hashed_name(std::path::Path::new(name));
        assert!(hashed("/etc/ssl/certs/5f3c1a2b.0"));
        assert!(hashed("ABCDEF01.12"));
        // A revocation list, a short or non-hex hash, no number, no dot.
        for name in [
            "5f3c1a2b.r0",
            "5f3c1a2.0",
            "5f3c1a2g.0",
            "5f3c1a2b.",
            "5f3c1a2b",
        ] {
            assert!(!hashed(name), "{name}");
        }
    }
}
