//! The provider's signing keys: found through OpenID discovery (`jwks_uri`), kept for
//! [`MAX_AGE`], fetched again when a token names a key the set does not have (at most once
//! per `key_refresh_interval`, so that forged `kid`s cannot make us hammer the provider), and
//! kept past their age while the provider cannot be reached.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;

use super::http::{checked_url, Http, MAX_DOCUMENT};
use crate::passdb::PassdbError;

/// How long a key set is used before it is fetched again (a rotation the provider announces
/// reaches us within this time even with no unknown `kid` to tell us).
pub(super) const MAX_AGE: Duration = Duration::from_secs(3600);

/// Where the keys are, once known.
#[derive(Debug, Clone)]
pub(super) enum Source {
    /// Discovery first (`/.well-known/openid-configuration`), then its `jwks_uri`.
    Discovery(Url),
    /// The key set's own URL.
    Jwks(Url),
}

/// One usable key.
struct Key {
    kid: Option<String>,
    /// The algorithm the key is for, when its JWK says (`alg`).
    alg: Option<Algorithm>,
    key: DecodingKey,
}

struct Set {
    keys: Vec<Key>,
    fetched: Instant,
}

/// What fetches share (the keys themselves are in [`Keys::current`]).
struct State {
    /// The last fetch tried, for the rate limit.
    tried: Option<Instant>,
    /// The key set's URL, once discovery said it.
    jwks_uri: Option<Url>,
}

/// The key cache.
pub(super) struct Keys {
    http: Http,
    source: Source,
    /// The issuer discovery must name (OpenID Discovery 4.3).
    issuer: Option<String>,
    min_refresh: Duration,
    /// The keys now, read without a lock by every check while they are fresh.
    current: arc_swap::ArcSwapOption<Set>,
    /// Fetches one at a time.
    state: tokio::sync::Mutex<State>,
}

/// What [`Keys::key_for`] found.
pub(super) enum Found {
    Key(DecodingKey),
    /// No key of the set fits, after a fetch if the rate limit allowed one.
    Unknown,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Keys {
    pub(super) fn new(
        http: Http,
        source: Source,
        issuer: Option<String>,
        min_refresh: Duration,
    ) -> Keys {
        Keys {
            http,
            source,
            issuer,
            min_refresh,
            current: arc_swap::ArcSwapOption::empty(),
            state: tokio::sync::Mutex::new(State {
                tried: None,
                jwks_uri: None,
            }),
        }
    }

    /// The key for a token signed with `alg` by the key `kid`.
    pub(super) async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Found, PassdbError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        // Another check may have fetched them while this one waited for the lock.
        let mut set = self.current.load_full();
        let stale = set
            .as_ref()
            .is_none_or(|s| now.duration_since(s.fetched) >= MAX_AGE);
        if stale {
            match self.fetch(&mut state).await {
                Ok(fresh) => set = Some(fresh),
                // Keys we had still serve while the provider is away.
                Err(e) if set.is_some() => {
                    tracing::warn!("oauth2: keeping the keys fetched before: {e}");
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(key) = set.as_deref().and_then(|s| find(s, kid, alg)) {
            return Ok(Found::Key(key));
        }
        // An unknown kid: the provider may have rotated its keys.
        let may_fetch = state
            .tried
            .is_none_or(|t| now.duration_since(t) >= self.min_refresh);
        if stale || !may_fetch {
            return Ok(Found::Unknown);
        }
        let fresh = self.fetch(&mut state).await?;
        Ok(find(&fresh, kid, alg).map_or(Found::Unknown, Found::Key))
    }

    /// Fetches the key set (and discovery first, until it has said where the set is), and
    /// puts it in service.
    async fn fetch(&self, state: &mut State) -> Result<Arc<Set>, PassdbError> {
        state.tried = Some(Instant::now());
        let jwks_uri = match (&self.source, &state.jwks_uri) {
            (Source::Jwks(url), _) => url.clone(),
            (Source::Discovery(_), Some(url)) => url.clone(),
            (Source::Discovery(url), None) => {
                let found = discover(&self.http, url, self.issuer.as_deref()).await?;
                let Some(jwks_uri) = found.jwks_uri else {
                    return Err(PassdbError::OAuth2 {
                        url: super::http::redacted(url),
                        message: "the discovery document has no jwks_uri".into(),
                    });
                };
                state.jwks_uri = Some(jwks_uri.clone());
                jwks_uri
            }
        };
        let document = self.http.get_json(&jwks_uri, MAX_DOCUMENT).await?;
        let set: JwkSet =
            serde_json::from_value(serde_json::Value::Object(document)).map_err(|e| {
                PassdbError::OAuth2 {
                    url: super::http::redacted(&jwks_uri),
                    message: format!("not a JWK set: {e}"),
                }
            })?;
        let keys: Vec<Key> = set.keys.iter().filter_map(usable).collect();
        tracing::info!(
            "oauth2: {} signing key(s) from {} ({} skipped)",
            keys.len(),
            super::http::redacted(&jwks_uri),
            set.keys.len() - keys.len()
        );
        let set = Arc::new(Set {
            keys,
            fetched: Instant::now(),
        });
        self.current.store(Some(Arc::clone(&set)));
        Ok(set)
    }

    /// Fetches discovery and the keys now, for `--check-config`: what was found, in words.
    pub(super) async fn probe(&self) -> Result<String, PassdbError> {
        let mut state = self.state.lock().await;
        let set = self.fetch(&mut state).await?;
        let kids: Vec<&str> = set.keys.iter().filter_map(|k| k.kid.as_deref()).collect();
        Ok(format!(
            "{} signing key(s) at {} (kid {})",
            set.keys.len(),
            state.jwks_uri.as_ref().map_or_else(
                || "the configured jwks_uri".to_owned(),
                super::http::redacted
            ),
            if kids.is_empty() {
                "none".to_owned()
            } else {
                kids.join(", ")
            }
        ))
    }
}

/// A JWK we can verify with: a public signing key of a kind the allow-list can have (an HMAC
/// secret in the set is skipped: a provider's published set is public).
fn usable(jwk: &Jwk) -> Option<Key> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(
        jwk.algorithm,
        jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
    ) {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(a) => Some(a.to_string().parse::<Algorithm>().ok()?),
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

/// The key `kid` names that can verify `alg`; without a `kid`, the one key that can.
fn find(set: &Set, kid: Option<&str>, alg: Algorithm) -> Option<DecodingKey> {
    let fits = |k: &&Key| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg);
    match kid {
        Some(kid) => set
            .keys
            .iter()
            .filter(fits)
            .find(|k| k.kid.as_deref() == Some(kid))
            .map(|k| k.key.clone()),
        None => {
            let mut fitting = set.keys.iter().filter(fits);
            match (fitting.next(), fitting.next()) {
                (Some(only), None) => Some(only.key.clone()),
                _ => None,
            }
        }
    }
}

/// What an OpenID discovery document says that we use.
#[derive(Debug, Default)]
pub(super) struct Discovered {
    pub(super) jwks_uri: Option<Url>,
    pub(super) introspection_endpoint: Option<Url>,
}

/// Fetches a discovery document; its `issuer` must be the configured one, and the URLs it
/// gives must pass the same checks as configured ones.
pub(super) async fn discover(
    http: &Http,
    url: &Url,
    issuer: Option<&str>,
) -> Result<Discovered, PassdbError> {
    let document = http.get_json(url, MAX_DOCUMENT).await?;
    let bad = |message: String| PassdbError::OAuth2 {
        url: super::http::redacted(url),
        message,
    };
    let named = document.get("issuer").and_then(|v| v.as_str());
    if let Some(issuer) = issuer {
        if named != Some(issuer) {
            return Err(bad(format!(
                "the discovery document names issuer {named:?}, not {issuer:?}"
            )));
        }
    }
    let url_of = |key: &str| -> Result<Option<Url>, PassdbError> {
        match document.get(key).and_then(|v| v.as_str()) {
            Some(text) => checked_url(text)
                .map(Some)
                .map_err(|e| bad(format!("{key}: {e}"))),
            None => Ok(None),
        }
    };
    Ok(Discovered {
        jwks_uri: url_of("jwks_uri")?,
        introspection_endpoint: url_of("introspection_endpoint")?,
    })
}
