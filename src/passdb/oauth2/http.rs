//! The provider's HTTP calls: reqwest over rustls (ring, the system's CA certificates or the
//! table's `ca`), each with a deadline and a size limit, no redirects, and only HTTPS, except
//! to a loopback address.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Map, Value};

use crate::passdb::PassdbError;

/// The largest discovery document or key set read.
pub(super) const MAX_DOCUMENT: usize = 1 << 20;
/// The largest introspection answer read.
pub(super) const MAX_INTROSPECTION: usize = 64 << 10;

/// Why a URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum UrlError {
    #[error("{0:?} is not a URL: {1}")]
    Parse(String, url::ParseError),
    #[error("{0:?}: only https:// (http:// to a loopback address only, for tests)")]
    Scheme(String),
    #[error("{0:?}: a URL with a user or password (give client_id and client_secret instead)")]
    Credentials(String),
}

/// Checks a configured URL: https, or http to 127.0.0.0/8, ::1 or localhost.
pub(super) fn checked_url(text: &str) -> Result<Url, UrlError> {
    let url = Url::parse(text).map_err(|e| UrlError::Parse(text.to_owned(), e))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials(redacted(&url)));
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        _ => Err(UrlError::Scheme(text.to_owned())),
    }
}

/// A URL as the log shows it: without its query and fragment.
pub(super) fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    shown.set_query(None);
    shown.set_fragment(None);
    let _ = shown.set_password(None);
    shown.to_string()
}

/// The client every call goes through.
#[derive(Debug, Clone)]
pub(super) struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client that checks servers against `ca` (or the system's CA certificates) and gives
    /// each call `timeout`, connection included.
    pub(super) fn new(ca: Option<&PathBuf>, timeout: Duration) -> Result<Http, PassdbError> {
        let settings = |e: &dyn std::fmt::Display| PassdbError::Settings(format!("[oauth2] {e}"));
        let roots = crate::passdb::tls::roots(ca.map(std::slice::from_ref).unwrap_or(&[]))
            .map_err(|e| settings(&e))?;
        let mut tls = crate::passdb::tls::builder()
            .map_err(|e| settings(&e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("saslauthd-rs/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| settings(&e))?;
        Ok(Http { client })
    }

    /// GETs a JSON object.
    pub(super) async fn get_json(
        &self,
        url: &Url,
        limit: usize,
    ) -> Result<Map<String, Value>, PassdbError> {
        let request = self
            .client
            .get(url.clone())
            .header("accept", "application/json");
        self.json(url, request, limit).await
    }

    /// POSTs a form, with HTTP basic authentication as `client` when given (RFC 6749 2.3.1:
    /// each part form-encoded first), and reads a JSON object.
    pub(super) async fn post_form_json(
        &self,
        url: &Url,
        client: Option<(&str, &str)>,
        form: &[(&str, &str)],
        limit: usize,
    ) -> Result<Map<String, Value>, PassdbError> {
        let mut request = self
            .client
            .post(url.clone())
            .header("accept", "application/json")
            .form(form);
        if let Some((id, secret)) = client {
            let encode = |s: &str| form_urlencoded_component(s);
            request = request.basic_auth(encode(id), Some(encode(secret)));
        }
        self.json(url, request, limit).await
    }

    async fn json(
        &self,
        url: &Url,
        request: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Map<String, Value>, PassdbError> {
        let failed = |message: String| PassdbError::OAuth2 {
            url: redacted(url),
            message,
        };
        let mut response = request.send().await.map_err(|e| failed(describe(&e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("HTTP {status}")));
        }
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(failed(format!("an answer of more than {limit} bytes")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| failed(describe(&e)))? {
            if body.len() + chunk.len() > limit {
                return Err(failed(format!("an answer of more than {limit} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        match serde_json::from_slice(&body) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(failed("the answer is not a JSON object".into())),
            Err(e) => Err(failed(format!("the answer is not JSON: {e}"))),
        }
    }
}

/// reqwest's error with its causes (a refused connection, a certificate problem), which its
/// own Display leaves out.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "no answer in time".to_owned()
    } else {
        e.to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_urlencoded_component(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
