//! `[oauth2]`: OAuth 2.0 access tokens (OAUTHBEARER, XOAUTH2) checked against an OpenID
//! provider, two ways:
//!
//! - `mode = "jwt"`: the token is a JWT, verified here against the provider's published keys
//!   (OpenID discovery → `jwks_uri`, cached, fetched again on an unknown `kid`), with an
//!   allow-list of asymmetric algorithms, and `iss`, `aud` (or `azp`), `exp`, `nbf`, `iat`
//!   and the required scopes checked. The signature is verified on the `-n` pool.
//! - `mode = "introspection"`: the provider is asked (RFC 7662, with the client's
//!   credentials) whether the token is active, and the same claims are checked in its answer,
//!   which is remembered for `cache_ttl` at most (never past the token's `exp`).
//!
//! The user the token names (`username_claim`, with `username_domain` applied) must be the
//! one the client names. A provider that cannot be asked is an error (a temporary failure),
//! never a success.
//!
//! Better than Dovecot 2.3's `oauth2` passdb: the audience is always checked in JWT mode (and
//! whenever `audience` is set), the token never goes back in a reply, the provider's calls
//! have a deadline of seconds (not 60), the keys come from discovery (not copied in by hand),
//! and RFC 9068's `typ: at+jwt` tokens are taken.

mod http;
mod keys;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use reqwest::Url;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{Answer, Context, KeyError, PassdbError, Table, TokenCheck, TokenModule, TokenVerdict};
use crate::secret::Password;
use crate::verdict::{PassdbKind, Replies, TokenRefusal};
use http::{checked_url, Http, UrlError};
use keys::{Found, Keys, Source};

/// The table and how it opens.
pub(super) const MODULE: TokenModule = TokenModule {
    name: "oauth2",
    table: Table {
        about: "OAUTHBEARER and XOAUTH2 on the Dovecot socket, their tokens checked against an OpenID provider: mode (\"jwt\" or \"introspection\"), issuer or openid_configuration_url, audience, username_claim, introspection_url, client_id, client_secret, scope, ...; Dovecot's dovecot-oauth2.conf.ext keys where they mean the same.",
        check: check_key,
    },
    open,
};

/// Its name in the log and the metrics.
const KIND: PassdbKind = PassdbKind {
    name: "oauth2",
    replies: Replies::BARE,
};

/// Introspection answers remembered at most.
const MAX_CACHED: usize = 10_000;

/// The keys the table takes: ours, then Dovecot's that mean the same (or that a password
/// check has no use for, which are taken and ignored).
const KEYS: &[&str] = &[
    "mode",
    "issuer",
    "openid_configuration_url",
    "jwks_uri",
    "introspection_url",
    "client_id",
    "client_secret",
    "audience",
    "username_claim",
    "username_domain",
    "scope",
    "algorithms",
    "leeway",
    "timeout",
    "ca",
    "cache_ttl",
    "key_refresh_interval",
    // Dovecot's dovecot-oauth2.conf.ext.
    "introspection_mode",
    "username_attribute",
    "active_attribute",
    "active_value",
    "issuers",
    "tls_ca_cert_file",
    "timeout_msecs",
    "force_introspection",
    "tokeninfo_url",
    "username_format",
    "pass_attrs",
    "rawlog_dir",
    "max_idle_time_msecs",
    "max_parallel_connections",
    "max_pipelined_requests",
    "send_auth_headers",
    "use_grant_password",
    "local_validation_key_dict",
    "blocking",
    "debug",
];

fn check_key(key: &str, _value: &str) -> Result<(), KeyError> {
    if KEYS.contains(&key) {
        Ok(())
    } else {
        Err(format!("unknown key {key:?} (known: {})", KEYS.join(", ")).into())
    }
}

/// How tokens are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Jwt,
    Introspection,
}

/// The table's settings, checked.
#[derive(Debug, Clone)]
struct Settings {
    mode: Mode,
    issuer: Option<String>,
    discovery: Option<Url>,
    jwks_uri: Option<Url>,
    introspection_url: Option<Url>,
    client: Option<(String, String)>,
    audience: Vec<String>,
    username_claim: String,
    username_domain: Option<String>,
    scope: Vec<String>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    timeout: Duration,
    ca: Option<PathBuf>,
    cache_ttl: Duration,
    key_refresh_interval: Duration,
    /// What the log should say once it is up.
    notices: Vec<String>,
}

/// Every asymmetric algorithm: the default allow-list.
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn words(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What is wrong with the `[oauth2]` table.
#[derive(Debug, thiserror::Error)]
enum SettingsError {
    /// A value outside what its key takes.
    #[error("{key} = {value:?}: {expected}")]
    Value {
        key: String,
        value: String,
        expected: String,
    },
    /// A key that asks for something saslauthd-rs does not do, and why.
    #[error("{key}: {why}")]
    Unsupported { key: String, why: &'static str },
    /// A key with nothing in it.
    #[error("{0}: empty")]
    Empty(String),
    /// A URL that cannot be used.
    #[error("{key}: {source}")]
    Url { key: String, source: UrlError },
    /// A key the mode cannot do without.
    #[error("mode = \"{mode}\" needs {what}")]
    Needs {
        mode: &'static str,
        what: &'static str,
    },
}

impl SettingsError {
    fn value(key: &str, value: &str, expected: impl Into<String>) -> SettingsError {
        SettingsError::Value {
            key: key.to_owned(),
            value: value.to_owned(),
            expected: expected.into(),
        }
    }

    fn unsupported(key: &str, why: &'static str) -> SettingsError {
        SettingsError::Unsupported {
            key: key.to_owned(),
            why,
        }
    }
}

fn seconds(
    key: &str,
    text: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Duration, SettingsError> {
    match text.trim().parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(SettingsError::value(
            key,
            text,
            format!("seconds, {} to {}", range.start(), range.end()),
        )),
    }
}

fn yes(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "yes" | "true" | "1"
    )
}

impl Settings {
    fn parse(table: &[(String, String)]) -> Result<Settings, SettingsError> {
        let mut mode = None;
        let mut s = Settings {
            mode: Mode::Jwt,
            issuer: None,
            discovery: None,
            jwks_uri: None,
            introspection_url: None,
            client: None,
            audience: Vec::new(),
            username_claim: "email".into(),
            username_domain: None,
            scope: Vec::new(),
            algorithms: ASYMMETRIC.to_vec(),
            leeway: Duration::from_secs(60),
            timeout: Duration::from_secs(3),
            ca: None,
            cache_ttl: Duration::from_secs(60),
            key_refresh_interval: Duration::from_secs(10),
            notices: Vec::new(),
        };
        let (mut client_id, mut client_secret) = (None, None);
        let url = |key: &str, v: &str| {
            checked_url(v).map_err(|source| SettingsError::Url {
                key: key.to_owned(),
                source,
            })
        };
        for (key, value) in table {
            let v = value.trim();
            match key.as_str() {
                "mode" => {
                    mode = Some(match v {
                        "jwt" => Mode::Jwt,
                        "introspection" => Mode::Introspection,
                        _ => {
                            return Err(SettingsError::value(
                                key,
                                v,
                                "\"jwt\" or \"introspection\"",
                            ))
                        }
                    })
                }
                // Dovecot: auth/get/post ask the provider; local verifies a JWT here.
                "introspection_mode" => {
                    mode = Some(match v {
                        "post" => Mode::Introspection,
                        "local" => Mode::Jwt,
                        "auth" | "get" => {
                            return Err(SettingsError::value(
                                key,
                                v,
                                "only \"post\" (RFC 7662) and \"local\" (a JWT verified here) \
                                 are supported",
                            ))
                        }
                        _ => {
                            return Err(SettingsError::value(
                                key,
                                v,
                                "unknown (\"post\" or \"local\")",
                            ))
                        }
                    })
                }
                "issuer" => s.issuer = Some(v.to_owned()).filter(|i| !i.is_empty()),
                "issuers" => {
                    let all = words(v);
                    match all.as_slice() {
                        [] => {}
                        [one] => s.issuer = Some(one.clone()),
                        _ => {
                            return Err(SettingsError::unsupported(
                                key,
                                "name one issuer (several are not supported)",
                            ))
                        }
                    }
                }
                "openid_configuration_url" => s.discovery = Some(url(key, v)?),
                "jwks_uri" => s.jwks_uri = Some(url(key, v)?),
                "introspection_url" => {
                    // Dovecot puts the client's credentials in the URL; take them from there.
                    let mut parsed = Url::parse(v).map_err(|e| SettingsError::Url {
                        key: key.clone(),
                        source: UrlError::Parse(v.to_owned(), e),
                    })?;
                    if !parsed.username().is_empty() {
                        let decode = |s: &str| {
                            percent_encoding::percent_decode_str(s)
                                .decode_utf8_lossy()
                                .into_owned()
                        };
                        client_id.get_or_insert(decode(parsed.username()));
                        client_secret.get_or_insert(decode(parsed.password().unwrap_or("")));
                        let _ = parsed.set_username("");
                        let _ = parsed.set_password(None);
                    }
                    s.introspection_url = Some(url(key, parsed.as_str())?);
                }
                "client_id" => client_id = Some(v.to_owned()),
                "client_secret" => client_secret = Some(value.clone()),
                "audience" => s.audience = words(v),
                "username_claim" | "username_attribute" => {
                    if v.is_empty() {
                        return Err(SettingsError::Empty(key.clone()));
                    }
                    s.username_claim = v.to_owned();
                }
                "username_domain" => {
                    s.username_domain = Some(v.trim_start_matches('@').to_ascii_lowercase())
                        .filter(|d| !d.is_empty())
                }
                "scope" => s.scope = words(v),
                "algorithms" => {
                    let mut list = Vec::new();
                    for name in words(v) {
                        let alg = ASYMMETRIC
                            .iter()
                            .find(|a| format!("{a:?}").eq_ignore_ascii_case(&name))
                            .ok_or_else(|| {
                                SettingsError::value(
                                    key,
                                    &name,
                                    "not one of RS256 RS384 RS512 PS256 PS384 PS512 ES256 \
                                     ES384 EdDSA (no HMAC, no none)",
                                )
                            })?;
                        list.push(*alg);
                    }
                    if list.is_empty() {
                        return Err(SettingsError::Empty(key.clone()));
                    }
                    s.algorithms = list;
                }
                "leeway" => s.leeway = seconds(key, v, 0..=300)?,
                "timeout" => s.timeout = seconds(key, v, 1..=30)?,
                "timeout_msecs" => {
                    let ms: u64 = v
                        .parse()
                        .map_err(|_| SettingsError::value(key, v, "milliseconds"))?;
                    s.timeout = Duration::from_millis(ms.clamp(100, 30_000));
                }
                "ca" | "tls_ca_cert_file" => s.ca = Some(PathBuf::from(v)),
                "cache_ttl" => s.cache_ttl = seconds(key, v, 0..=3600)?,
                "key_refresh_interval" => s.key_refresh_interval = seconds(key, v, 1..=3600)?,
                "active_attribute" if v != "active" => {
                    return Err(SettingsError::value(
                        key,
                        v,
                        "only \"active\" (RFC 7662) is supported",
                    ))
                }
                "active_value" if v != "true" => {
                    return Err(SettingsError::value(
                        key,
                        v,
                        "only \"true\" (RFC 7662) is supported",
                    ))
                }
                "tokeninfo_url" if !v.is_empty() => {
                    return Err(SettingsError::unsupported(
                        key,
                        "not supported; use introspection_url (RFC 7662)",
                    ))
                }
                "use_grant_password" if yes(v) => {
                    return Err(SettingsError::unsupported(
                        key,
                        "not supported (it sends the password to the provider)",
                    ))
                }
                "local_validation_key_dict" if !v.is_empty() => s.notices.push(
                    "[oauth2] local_validation_key_dict is not read: the keys come from the \
                     provider's jwks_uri (openid_configuration_url or issuer)"
                        .into(),
                ),
                // Dovecot's keys a password check has no use for.
                _ => {}
            }
        }
        if let (Some(id), secret) = (client_id, client_secret) {
            s.client = Some((id, secret.unwrap_or_default()));
        }
        s.mode = match mode {
            Some(m) => m,
            None if s.introspection_url.is_some() && s.jwks_uri.is_none() => Mode::Introspection,
            None => Mode::Jwt,
        };
        if s.discovery.is_none() {
            if let Some(issuer) = &s.issuer {
                let base = issuer.trim_end_matches('/');
                s.discovery = Some(url(
                    "issuer",
                    &format!("{base}/.well-known/openid-configuration"),
                )?);
            }
        }
        match s.mode {
            Mode::Jwt => {
                if s.issuer.is_none() {
                    return Err(SettingsError::Needs {
                        mode: "jwt",
                        what: "issuer (the iss every token must have)",
                    });
                }
                if s.audience.is_empty() {
                    return Err(SettingsError::Needs {
                        mode: "jwt",
                        what: "audience (tokens for another service must be refused)",
                    });
                }
            }
            Mode::Introspection => {
                if s.audience.is_empty() {
                    s.notices.push(
                        "[oauth2] no audience: a token the provider issued for another service \
                         is taken too (as Dovecot's oauth2 passdb does); name this service's in \
                         audience"
                            .into(),
                    );
                }
                if s.introspection_url.is_none() && s.discovery.is_none() {
                    return Err(SettingsError::Needs {
                        mode: "introspection",
                        what: "introspection_url (or issuer, whose discovery names it)",
                    });
                }
                if s.client.is_none() {
                    return Err(SettingsError::Needs {
                        mode: "introspection",
                        what: "client_id and client_secret",
                    });
                }
            }
        }
        Ok(s)
    }
}

/// A token's claims kept (an introspection's active answer, a verified JWT's), until `until`.
struct Cached {
    claims: Arc<Map<String, Value>>,
    until: Instant,
}

/// The token check.
pub(super) struct OAuth2 {
    settings: Settings,
    http: Http,
    /// JWT mode's keys.
    keys: Option<Keys>,
    /// Introspection mode's endpoint, once known (configured, or from discovery).
    endpoint: tokio::sync::OnceCell<Url>,
    /// Kept claims, by SHA-256 of the token ([`OAuth2::remember`]).
    cache: Mutex<HashMap<[u8; 32], Cached>>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("mode", &self.settings.mode)
            .field("issuer", &self.settings.issuer)
            .finish_non_exhaustive()
    }
}

fn open(table: &[(String, String)]) -> Result<Arc<dyn TokenCheck>, PassdbError> {
    let settings =
        Settings::parse(table).map_err(|e| PassdbError::Settings(format!("[oauth2] {e}")))?;
    let http = Http::new(settings.ca.as_ref(), settings.timeout)?;
    let keys = (settings.mode == Mode::Jwt).then(|| {
        let source = match (&settings.jwks_uri, &settings.discovery) {
            (Some(jwks), _) => Source::Jwks(jwks.clone()),
            (None, Some(discovery)) => Source::Discovery(discovery.clone()),
            (None, None) => unreachable!("jwt mode has an issuer, hence a discovery URL"),
        };
        Keys::new(
            http.clone(),
            source,
            settings.issuer.clone(),
            settings.key_refresh_interval,
        )
    });
    let endpoint = tokio::sync::OnceCell::new();
    if let Some(url) = &settings.introspection_url {
        let _ = endpoint.set(url.clone());
    }
    Ok(Arc::new(OAuth2 {
        settings,
        http,
        keys,
        endpoint,
        cache: Mutex::default(),
    }))
}

/// Whether a JWT whose header did not parse names an algorithm in it (`"alg": "none"`, or one
/// unknown to us): refused for its algorithm rather than as malformed.
fn names_an_algorithm(token: &str) -> bool {
    use base64::Engine;
    let Some(header) = token.split('.').next() else {
        return false;
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|json| serde_json::from_slice::<Map<String, Value>>(&json).ok())
        .is_some_and(|header| header.get("alg").is_some_and(Value::is_string))
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A numeric date claim: absent, a number, or malformed.
fn date(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenRefusal> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(Some)
            .ok_or(TokenRefusal::Malformed),
        Some(_) => Err(TokenRefusal::Malformed),
    }
}

/// A claim that is a string or a list of strings (`aud`, `scp`).
fn strings(value: Option<&Value>) -> Result<Vec<&str>, TokenRefusal> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(TokenRefusal::Malformed))
            .collect(),
        Some(_) => Err(TokenRefusal::Malformed),
    }
}

impl OAuth2 {
    /// The claims' verdict, the same for both modes: dates, issuer, audience, scopes, and the
    /// user the token names against the one the client named.
    fn judge(&self, claims: &Map<String, Value>, named: Option<&[u8]>, now: i64) -> TokenVerdict {
        let s = &self.settings;
        let leeway = i64::try_from(s.leeway.as_secs()).unwrap_or(0);
        if date(claims, "exp")?.is_some_and(|exp| exp + leeway <= now) {
            return Err(TokenRefusal::Expired);
        }
        if date(claims, "nbf")?.is_some_and(|nbf| nbf - leeway > now)
            || date(claims, "iat")?.is_some_and(|iat| iat - leeway > now)
        {
            return Err(TokenRefusal::NotYetValid);
        }
        if let Some(issuer) = &s.issuer {
            match claims.get("iss") {
                Some(Value::String(iss)) if iss == issuer => {}
                // Introspection answers may leave iss out (RFC 7662: optional).
                None if s.mode == Mode::Introspection => {}
                _ => return Err(TokenRefusal::Issuer),
            }
        }
        if !s.audience.is_empty() {
            let aud = strings(claims.get("aud"))?;
            let azp = strings(claims.get("azp"))?;
            let ours = |a: &&str| s.audience.iter().any(|mine| mine == a);
            if !aud.iter().any(ours) && !azp.iter().any(ours) {
                return Err(TokenRefusal::Audience);
            }
        }
        if !s.scope.is_empty() {
            let mut granted: Vec<&str> = match claims.get("scope") {
                Some(Value::String(text)) => text.split(' ').collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(_) => return Err(TokenRefusal::Malformed),
            };
            granted.extend(strings(claims.get("scp"))?);
            if !s.scope.iter().all(|want| granted.contains(&want.as_str())) {
                return Err(TokenRefusal::Scope);
            }
        }
        let proven = match claims.get(&s.username_claim) {
            Some(Value::String(name)) if !name.is_empty() => name.as_str(),
            _ => return Err(TokenRefusal::NoUser),
        };
        let proven = match (&s.username_domain, proven.rsplit_once('@')) {
            (None, _) => proven.to_owned(),
            (Some(domain), None) => format!("{proven}@{domain}"),
            (Some(domain), Some((_, theirs))) if theirs.eq_ignore_ascii_case(domain) => {
                proven.to_owned()
            }
            (Some(_), Some(_)) => return Err(TokenRefusal::UserMismatch),
        };
        if proven.bytes().any(|b| b.is_ascii_control()) {
            return Err(TokenRefusal::Malformed);
        }
        if let Some(named) = named {
            // As the domain rule names it: a bare name the client gives is in the domain.
            let named_full;
            let named = match (&s.username_domain, memchr::memchr(b'@', named)) {
                (Some(domain), None) => {
                    named_full = [named, b"@", domain.as_bytes()].concat();
                    &named_full[..]
                }
                _ => named,
            };
            if !named.eq_ignore_ascii_case(proven.as_bytes()) {
                return Err(TokenRefusal::UserMismatch);
            }
        }
        Ok(proven.into_bytes())
    }

    /// JWT mode: header, key, signature (on the pool), claims.
    async fn verify_jwt(
        self: Arc<Self>,
        named: Option<Vec<u8>>,
        token: Password,
        pool: Arc<crate::pool::Pool>,
        id: [u8; 32],
    ) -> Result<TokenVerdict, PassdbError> {
        let Ok(text) = std::str::from_utf8(token.expose()) else {
            return Ok(Err(TokenRefusal::Malformed));
        };
        // `alg: none` and unknown algorithms do not even parse here.
        let header = match jsonwebtoken::decode_header(text) {
            Ok(header) => header,
            Err(_) if names_an_algorithm(text) => return Ok(Err(TokenRefusal::Algorithm)),
            Err(_) => return Ok(Err(TokenRefusal::Malformed)),
        };
        if !self.settings.algorithms.contains(&header.alg) {
            return Ok(Err(TokenRefusal::Algorithm));
        }
        // RFC 9068's at+jwt, plain JWT, or none; an ID token or anything else is no access token.
        if let Some(typ) = &header.typ {
            let typ = typ.to_ascii_lowercase();
            if !matches!(typ.as_str(), "jwt" | "at+jwt" | "application/at+jwt") {
                return Ok(Err(TokenRefusal::Malformed));
            }
        }
        let keys = self.keys.as_ref().expect("jwt mode has keys");
        let key = match keys.key_for(header.kid.as_deref(), header.alg).await? {
            Found::Key(key) => key,
            Found::Unknown => return Ok(Err(TokenRefusal::UnknownKey)),
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        // The audience (or azp) and the issuer are judged with the other claims.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss"]);
        let text = text.to_owned();
        let decoded = pool
            .run(move || jsonwebtoken::decode::<Map<String, Value>>(&text, &key, &validation))
            .await?;
        let claims = match decoded {
            Ok(data) => data.claims,
            Err(e) => {
                return Ok(Err(match e.kind() {
                    ErrorKind::InvalidSignature => TokenRefusal::Signature,
                    ErrorKind::ExpiredSignature => TokenRefusal::Expired,
                    ErrorKind::ImmatureSignature => TokenRefusal::NotYetValid,
                    ErrorKind::InvalidIssuer => TokenRefusal::Issuer,
                    ErrorKind::InvalidAudience => TokenRefusal::Audience,
                    ErrorKind::InvalidAlgorithm => TokenRefusal::Algorithm,
                    _ => TokenRefusal::Malformed,
                }))
            }
        };
        let now = now_secs();
        let verdict = self.judge(&claims, named.as_deref(), now);
        self.remember(id, claims, now);
        Ok(verdict)
    }

    /// Keeps a token's claims (an introspection's active answer, a verified JWT's) for
    /// `cache_ttl`, never past its `exp`; the claims are judged again on every use.
    fn remember(&self, id: [u8; 32], claims: Map<String, Value>, now: i64) {
        if self.settings.cache_ttl.is_zero() {
            return;
        }
        let mut ttl = self.settings.cache_ttl;
        if let Ok(Some(exp)) = date(&claims, "exp") {
            let left = u64::try_from(exp - now).unwrap_or(0);
            ttl = ttl.min(Duration::from_secs(left));
        }
        if ttl.is_zero() {
            return;
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let at = Instant::now();
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, c| c.until > at);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            id,
            Cached {
                claims: Arc::new(claims),
                until: at + ttl,
            },
        );
    }

    /// A token's claims, if kept and still fresh.
    fn recall(&self, id: &[u8; 32]) -> Option<Arc<Map<String, Value>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        match cache.get(id) {
            Some(c) if c.until > Instant::now() => Some(Arc::clone(&c.claims)),
            Some(_) => {
                cache.remove(id);
                None
            }
            None => None,
        }
    }

    /// The introspection endpoint: configured, or from discovery.
    async fn endpoint(&self) -> Result<&Url, PassdbError> {
        self.endpoint
            .get_or_try_init(|| async {
                let discovery = self
                    .settings
                    .discovery
                    .as_ref()
                    .expect("checked when parsed");
                let found =
                    keys::discover(&self.http, discovery, self.settings.issuer.as_deref()).await?;
                found
                    .introspection_endpoint
                    .ok_or_else(|| PassdbError::OAuth2 {
                        url: http::redacted(discovery),
                        message: "the discovery document has no introspection_endpoint".into(),
                    })
            })
            .await
    }

    /// Introspection mode: asks the provider, keeps an active token's claims.
    async fn introspect(
        self: Arc<Self>,
        named: Option<Vec<u8>>,
        token: Password,
        id: [u8; 32],
    ) -> Result<TokenVerdict, PassdbError> {
        let Ok(text) = std::str::from_utf8(token.expose()) else {
            return Ok(Err(TokenRefusal::Malformed));
        };
        let (active, answer) = self.ask_about(text).await?;
        if !active {
            return Ok(Err(TokenRefusal::Inactive));
        }
        let now = now_secs();
        let verdict = self.judge(&answer, named.as_deref(), now);
        self.remember(id, answer, now);
        Ok(verdict)
    }

    /// Asks the introspection endpoint about `token`: whether it is active, and the
    /// provider's answer. An answer without a boolean `active` is no answer.
    async fn ask_about(&self, token: &str) -> Result<(bool, Map<String, Value>), PassdbError> {
        let url = self.endpoint().await?;
        let client = self
            .settings
            .client
            .as_ref()
            .map(|(id, secret)| (id.as_str(), secret.as_str()));
        let form = [("token", token), ("token_type_hint", "access_token")];
        let answer = self
            .http
            .post_form_json(url, client, &form, http::MAX_INTROSPECTION)
            .await?;
        match answer.get("active") {
            Some(Value::Bool(active)) => Ok((*active, answer)),
            _ => Err(PassdbError::OAuth2 {
                url: http::redacted(url),
                message: "the introspection answer has no boolean \"active\"".into(),
            }),
        }
    }

    /// `--check-config`: the keys fetched, or the introspection endpoint asked about a token
    /// that cannot exist (it must say "not active").
    async fn probe(&self) -> Result<String, PassdbError> {
        if let (Some(keys), Mode::Jwt) = (&self.keys, self.settings.mode) {
            return keys.probe().await;
        }
        let (active, _) = self.ask_about("saslauthd-rs-check-config").await?;
        let url = self.endpoint().await?;
        if active {
            return Err(PassdbError::OAuth2 {
                url: http::redacted(url),
                message: "a made-up token was answered \"active\": true".into(),
            });
        }
        let client = self
            .settings
            .client
            .as_ref()
            .map_or("none", |c| c.0.as_str());
        Ok(format!(
            "introspection at {} answers (client {client})",
            http::redacted(url)
        ))
    }
}

impl TokenCheck for OAuth2 {
    fn kind(&self) -> PassdbKind {
        KIND
    }

    fn verify_token(
        self: Arc<Self>,
        user: Option<&[u8]>,
        token: Password,
        cx: &Context<'_>,
    ) -> Answer<TokenVerdict> {
        let named = user.map(<[u8]>::to_vec);
        let id: [u8; 32] = Sha256::digest(token.expose()).into();
        if let Some(claims) = self.recall(&id) {
            return Answer::Now(Ok(self.judge(&claims, named.as_deref(), now_secs())));
        }
        match self.settings.mode {
            Mode::Jwt => {
                let pool = Arc::clone(cx.pool);
                Answer::awaited(self.verify_jwt(named, token, pool, id))
            }
            Mode::Introspection => Answer::awaited(self.introspect(named, token, id)),
        }
    }

    fn notices(&self) -> Vec<String> {
        self.settings.notices.clone()
    }

    fn scope(&self) -> Option<String> {
        (!self.settings.scope.is_empty()).then(|| self.settings.scope.join(" "))
    }

    fn openid_configuration(&self) -> Option<String> {
        self.settings.discovery.as_ref().map(Url::to_string)
    }

    fn probe(
        self: Arc<Self>,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<String, PassdbError>> + Send>> {
        Box::pin(async move { OAuth2::probe(&self).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(lines: &[(&str, &str)]) -> Vec<(String, String)> {
        lines
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn check(lines: &[(&str, &str)]) -> OAuth2 {
        let settings = Settings::parse(&table(lines)).unwrap();
        OAuth2 {
            http: Http::new(None, settings.timeout).unwrap(),
            settings,
            keys: None,
            endpoint: tokio::sync::OnceCell::new(),
            cache: Mutex::default(),
        }
    }

    fn claims(json: serde_json::Value) -> Map<String, Value> {
        json.as_object().unwrap().clone()
    }

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn the_claims_decide() {
        let c = check(&[
            ("issuer", "https://id.example.org"),
            ("audience", "urn:smtp other"),
            ("scope", "mail"),
            ("leeway", "30"),
        ]);
        let good = serde_json::json!({
            "iss": "https://id.example.org", "aud": "urn:smtp", "exp": NOW + 60,
            "iat": NOW - 10, "scope": "openid mail", "email": "alice@example.org"
        });
        let judge = |patch: serde_json::Value, named: Option<&str>| {
            let mut c2 = good.clone();
            for (k, v) in patch.as_object().unwrap() {
                if v.is_null() {
                    c2.as_object_mut().unwrap().remove(k);
                } else {
                    c2[k] = v.clone();
                }
            }
            c.judge(&claims(c2), named.map(str::as_bytes), NOW)
        };
        let ok = Ok(b"alice@example.org".to_vec());
        assert_eq!(judge(serde_json::json!({}), None), ok);
        assert_eq!(judge(serde_json::json!({}), Some("ALICE@example.org")), ok);
        assert_eq!(
            judge(serde_json::json!({}), Some("bob@example.org")),
            Err(TokenRefusal::UserMismatch)
        );
        // Within the leeway, and past it.
        assert_eq!(judge(serde_json::json!({"exp": NOW - 20}), None), ok);
        assert_eq!(
            judge(serde_json::json!({"exp": NOW - 30}), None),
            Err(TokenRefusal::Expired)
        );
        assert_eq!(
            judge(serde_json::json!({"nbf": NOW + 31}), None),
            Err(TokenRefusal::NotYetValid)
        );
        assert_eq!(
            judge(serde_json::json!({"iat": NOW + 31}), None),
            Err(TokenRefusal::NotYetValid)
        );
        assert_eq!(
            judge(serde_json::json!({"exp": "soon"}), None),
            Err(TokenRefusal::Malformed)
        );
        assert_eq!(
            judge(serde_json::json!({"iss": "https://evil"}), None),
            Err(TokenRefusal::Issuer)
        );
        assert_eq!(
            judge(serde_json::json!({"iss": null}), None),
            Err(TokenRefusal::Issuer)
        );
        // aud as a list, or only azp naming us.
        assert_eq!(judge(serde_json::json!({"aud": ["x", "other"]}), None), ok);
        assert_eq!(
            judge(
                serde_json::json!({"aud": "account", "azp": "urn:smtp"}),
                None
            ),
            ok
        );
        assert_eq!(
            judge(serde_json::json!({"aud": "account"}), None),
            Err(TokenRefusal::Audience)
        );
        assert_eq!(
            judge(serde_json::json!({"aud": [1]}), None),
            Err(TokenRefusal::Malformed)
        );
        // Scopes: the string, or scp.
        assert_eq!(
            judge(serde_json::json!({"scope": "openid"}), None),
            Err(TokenRefusal::Scope)
        );
        assert_eq!(
            judge(serde_json::json!({"scope": null, "scp": ["mail"]}), None),
            ok
        );
        assert_eq!(
            judge(serde_json::json!({"scope": "mailx"}), None),
            Err(TokenRefusal::Scope)
        );
        // The user claim.
        assert_eq!(
            judge(serde_json::json!({"email": null}), None),
            Err(TokenRefusal::NoUser)
        );
        assert_eq!(
            judge(serde_json::json!({"email": ""}), None),
            Err(TokenRefusal::NoUser)
        );
        assert_eq!(
            judge(serde_json::json!({"email": 7}), None),
            Err(TokenRefusal::NoUser)
        );
        assert_eq!(
            judge(serde_json::json!({"email": "a\nb"}), None),
            Err(TokenRefusal::Malformed)
        );

        // The domain rule.
        let c = check(&[
            ("issuer", "https://id.example.org"),
            ("audience", "urn:smtp"),
            ("username_claim", "preferred_username"),
            ("username_domain", "@Example.org"),
        ]);
        let with = |name: &str, named: Option<&str>| {
            let json = serde_json::json!({
                "iss": "https://id.example.org", "aud": "urn:smtp", "exp": NOW + 60,
                "preferred_username": name
            });
            c.judge(&claims(json), named.map(str::as_bytes), NOW)
        };
        assert_eq!(with("alice", None), Ok(b"alice@example.org".to_vec()));
        assert_eq!(
            with("alice", Some("alice")),
            Ok(b"alice@example.org".to_vec())
        );
        assert_eq!(
            with("alice", Some("alice@example.org")),
            Ok(b"alice@example.org".to_vec())
        );
        assert_eq!(
            with("alice@EXAMPLE.org", None),
            Ok(b"alice@EXAMPLE.org".to_vec())
        );
        assert_eq!(
            with("alice@evil.test", None),
            Err(TokenRefusal::UserMismatch)
        );
        assert_eq!(
            with("alice", Some("alice@evil.test")),
            Err(TokenRefusal::UserMismatch)
        );
    }

    #[test]
    fn settings() {
        let err = |lines: &[(&str, &str)]| Settings::parse(&table(lines)).unwrap_err().to_string();
        assert!(err(&[("audience", "x")]).contains("needs issuer"));
        assert!(err(&[("issuer", "https://i.example")]).contains("needs audience"));
        assert!(err(&[("issuer", "http://i.example"), ("audience", "x")]).contains("only https://"));
        assert!(err(&[("issuer", "ftp://i.example"), ("audience", "x")]).contains("only https://"));
        assert!(err(&[("mode", "magic")]).contains("\"jwt\" or \"introspection\""));
        assert!(err(&[("introspection_mode", "get")]).contains("only \"post\""));
        assert!(err(&[("tokeninfo_url", "https://x")]).contains("not supported"));
        assert!(err(&[("algorithms", "none")]).contains("no HMAC, no none"));
        assert!(err(&[("active_value", "yes")]).contains("only \"true\""));
        assert!(err(&[("timeout", "0")]).contains("1 to 30"));
        // Loopback may be plain HTTP (tests); discovery from the issuer.
        let s = Settings::parse(&table(&[
            ("issuer", "http://127.0.0.1:8080/realms/x/"),
            ("audience", "a b,c"),
        ]))
        .unwrap();
        assert_eq!(s.mode, Mode::Jwt);
        assert_eq!(s.audience, ["a", "b", "c"]);
        assert_eq!(
            s.discovery.unwrap().as_str(),
            "http://127.0.0.1:8080/realms/x/.well-known/openid-configuration"
        );
        // Dovecot's file: the client in the URL, taken out of it.
        let s = Settings::parse(&table(&[
            ("introspection_mode", "post"),
            (
                "introspection_url",
                "https://smtp:s%40cret@id.example.org/introspect",
            ),
            ("username_attribute", "preferred_username"),
            ("timeout_msecs", "2500"),
        ]))
        .unwrap();
        assert_eq!(s.mode, Mode::Introspection);
        assert_eq!(s.client, Some(("smtp".into(), "s@cret".into())));
        assert_eq!(
            s.introspection_url.unwrap().as_str(),
            "https://id.example.org/introspect"
        );
        assert_eq!(s.username_claim, "preferred_username");
        assert_eq!(s.timeout, Duration::from_millis(2500));
        assert!(err(&[
            ("mode", "introspection"),
            ("introspection_url", "https://x/i")
        ])
        .contains("needs client_id"));
    }
}
