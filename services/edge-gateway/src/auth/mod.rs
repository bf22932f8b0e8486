//! Bearer-token authentication: `authorization: Bearer <JWT>`, verified
//! against the configured keys, issuer and audience.
//!
//! The algorithm is decided by the key a token names (and must also be in the
//! allowed list); the token's header only has to agree. HS256 is possible
//! only with a configured secret, and a JWKS never supplies shared secrets, so
//! a token "signed" with a public key as an HMAC secret finds no key that would
//! verify it. Verified tokens are remembered (by SHA-256 of the token) until
//! they expire or the key set changes, which keeps signature checks off the
//! hot path for clients that reuse a token.

mod jwks;
mod keys;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::Digest as _;

pub use jwks::{JwksSource, JwksSourceError, KeyStore};
pub use keys::{JwksError, KeySet};

use crate::config::AuthArgs;
use crate::metrics::GatewayMetrics;

/// Why a request was not authenticated; the label of `gateway_auth_failures_total`.
/// Clients only ever see a generic message; the reason goes to logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Oversized,
    Algorithm,
    UnknownKey,
    /// No key set has loaded yet (the JWKS URL has not answered since start-up).
    KeysUnavailable,
    Signature,
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Claims,
    /// The client's address has used up its token verifications for now: refused
    /// before any signature work (RESOURCE_EXHAUSTED, retry after this long).
    Throttled(Duration),
}

impl AuthFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::KeysUnavailable => "keys_unavailable",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Issuer => "issuer",
            Self::Audience => "audience",
            Self::Claims => "claims",
            Self::Throttled(_) => "throttled",
        }
    }
}

/// What a verified token says, ready to forward upstream.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub subject: HeaderValue,
    pub roles: HeaderValue,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "no token verification keys: set JWKS_FILE or JWKS_URL (or JWT_HS256_SECRET); \
         `dev-certs` writes a development JWKS to .dev/certs/jwks.json"
    )]
    NoKeys,
    #[error("JWT_ISSUER and JWT_AUDIENCE must both be set: tokens are checked against them")]
    NoIssuerOrAudience,
    #[error("JWT_ALGORITHMS: {0:?} is not one of RS256, ES256, EdDSA, HS256")]
    UnknownAlgorithm(String),
    #[error("JWT_ALGORITHMS allows HS256 but JWT_HS256_SECRET is not set")]
    Hs256WithoutSecret,
    #[error("JWT_HS256_SECRET must be at least 32 bytes")]
    WeakSecret,
    #[error(transparent)]
    Source(#[from] JwksSourceError),
    #[error("{0}")]
    Load(String),
}

/// The claims the gateway reads. The time claims must be JSON integers of
/// seconds when present: jsonwebtoken skips a not-before check whose value it
/// cannot read, so a string `nbf` would otherwise pass as "no nbf".
/// How long a refused token is remembered as refused.
const REFUSED_TOKEN_MEMORY: Duration = Duration::from_secs(10);

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    /// Read only to refuse a token whose `nbf` is not a number; jsonwebtoken checks its value.
    #[serde(rename = "nbf", default, deserialize_with = "numeric_date")]
    _nbf: Option<u64>,
    /// Read only to refuse a token whose `iat` is not a number.
    #[serde(rename = "iat", default, deserialize_with = "numeric_date")]
    _iat: Option<u64>,
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

/// A present time claim: a non-negative integer, never null, a string or a fraction.
fn numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    <u64 as serde::Deserialize>::deserialize(deserializer).map(Some)
}

/// Verifies bearer tokens; cheap to share behind an `Arc`.
pub struct Authenticator {
    keys: Option<Arc<KeyStore>>,
    hs256: Option<DecodingKey>,
    allowed: Vec<Algorithm>,
    validation: Validation,
    leeway: Duration,
    max_token_bytes: usize,
    roles_claim: String,
    cache: Option<moka::sync::Cache<[u8; 32], Arc<VerifiedToken>>>,
    /// Tokens refused lately, by digest: the same bad token sent again is
    /// refused with no signature work.
    refused: Option<moka::sync::Cache<[u8; 32], AuthFailure>>,
    metrics: GatewayMetrics,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.keys)
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads the key set (the gateway does not start without one) and starts its refresh.
    pub async fn from_config(args: &AuthArgs, metrics: GatewayMetrics) -> Result<Arc<Self>, AuthConfigError> {
        let (Some(issuer), Some(audience)) = (&args.jwt_issuer, &args.jwt_audience) else {
            return Err(AuthConfigError::NoIssuerOrAudience);
        };
        let mut allowed = Vec::new();
        for name in &args.jwt_algorithms {
            let algorithm = match name.trim() {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                "HS256" => Algorithm::HS256,
                other => return Err(AuthConfigError::UnknownAlgorithm(other.to_owned())),
            };
            allowed.push(algorithm);
        }
        let hs256 = match &args.jwt_hs256_secret {
            Some(secret) if secret.len() < 32 => return Err(AuthConfigError::WeakSecret),
            Some(secret) => {
                if !allowed.contains(&Algorithm::HS256) {
                    allowed.push(Algorithm::HS256);
                }
                Some(DecodingKey::from_secret(secret.as_bytes()))
            }
            None if allowed.contains(&Algorithm::HS256) => return Err(AuthConfigError::Hs256WithoutSecret),
            None => None,
        };
        let source = match (&args.jwks_file, &args.jwks_url) {
            (Some(path), _) => Some(JwksSource::File(path.clone())),
            (None, Some(url)) => Some(JwksSource::url(url, args.jwks_ca_file.as_deref())?),
            (None, None) if hs256.is_some() => None,
            (None, None) => return Err(AuthConfigError::NoKeys),
        };
        let cache = (args.jwt_cache_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(args.jwt_cache_entries)
                // Expiry is checked per hit; this only bounds how long a stale entry occupies memory.
                .time_to_live(Duration::from_secs(3600))
                .build()
        });
        let refused = (args.jwt_cache_entries > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(args.jwt_cache_entries)
                // Short: a key that was unknown may be published, a token not yet valid may become so.
                .time_to_live(REFUSED_TOKEN_MEMORY)
                .build()
        });
        let verifications = metrics.clone();
        let keys = match source {
            Some(source) => {
                let forget = cache.clone();
                let on_change = Box::new(move || {
                    if let Some(cache) = &forget {
                        cache.invalidate_all();
                    }
                });
                let store = KeyStore::load(source, args.min_refresh_interval(), metrics, on_change)
                    .await
                    .map_err(AuthConfigError::Load)?;
                store.refresh_every(args.refresh_interval());
                Some(store)
            }
            None => None,
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = args.jwt_leeway_seconds;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        Ok(Arc::new(Self {
            keys,
            hs256,
            allowed,
            validation,
            leeway: args.leeway(),
            max_token_bytes: args.jwt_max_token_bytes,
            roles_claim: args.jwt_roles_claim.clone(),
            cache,
            refused,
            metrics: verifications,
        }))
    }

    /// Whether tokens can be verified: false only while a JWKS URL has not answered since start-up.
    pub fn has_keys(&self) -> bool {
        self.keys.as_ref().is_none_or(|store| store.is_loaded())
    }

    /// The verified token of a request, or why there is none. A token that is
    /// neither cached as verified nor remembered as refused is verified only if
    /// `may_verify` allows it (the client address's verification budget), since
    /// verifying is the expensive part and a forged token is new every time.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        may_verify: impl FnOnce() -> Result<(), Duration>,
    ) -> Result<Arc<VerifiedToken>, AuthFailure> {
        let value = headers.get(http::header::AUTHORIZATION).ok_or(AuthFailure::Missing)?;
        // Checked on the raw header, before any parsing.
        if value.len() > self.max_token_bytes + "Bearer ".len() {
            return Err(AuthFailure::Oversized);
        }
        let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Err(AuthFailure::Malformed),
        };
        let cache_key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(cache) = &self.cache
            && let Some(verified) = cache.get(&cache_key)
        {
            // Saturating: a token may carry any exp up to u64::MAX.
            if verified.expires_at.saturating_add(self.leeway.as_secs()) > unix_now() {
                return Ok(verified);
            }
            cache.invalidate(&cache_key);
            return Err(AuthFailure::Expired);
        }
        if let Some(refused) = &self.refused
            && let Some(failure) = refused.get(&cache_key)
        {
            return Err(failure);
        }
        may_verify().map_err(AuthFailure::Throttled)?;
        self.metrics.token_verified();
        // Boxed: verifying (and perhaps fetching keys) needs far more state
        // than a cache hit, and without the box every request's future would
        // carry room for it.
        let verified = match Box::pin(self.verify(token)).await {
            Ok(verified) => Arc::new(verified),
            Err(failure) => {
                // Not remembered when no key set has loaded yet: that says nothing about the token.
                if let Some(refused) = &self.refused
                    && failure != AuthFailure::KeysUnavailable
                {
                    refused.insert(cache_key, failure);
                }
                return Err(failure);
            }
        };
        if let Some(cache) = &self.cache {
            cache.insert(cache_key, verified.clone());
        }
        Ok(verified)
    }

    async fn verify(&self, token: &str) -> Result<VerifiedToken, AuthFailure> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthFailure::Malformed)?;
        if !self.allowed.contains(&header.alg) {
            return Err(AuthFailure::Algorithm);
        }
        let claims = if header.alg == Algorithm::HS256 {
            let key = self.hs256.as_ref().ok_or(AuthFailure::Algorithm)?;
            self.decode(token, key, Algorithm::HS256)?
        } else {
            let store = self.keys.as_ref().ok_or(AuthFailure::UnknownKey)?;
            let kid = header.kid.as_deref();
            if store.current().find(kid).is_none() {
                store.refresh_for_unknown_kid().await;
            }
            let keys = store.current();
            let key = keys.find(kid).ok_or(if store.is_loaded() {
                AuthFailure::UnknownKey
            } else {
                AuthFailure::KeysUnavailable
            })?;
            if key.algorithm != header.alg {
                return Err(AuthFailure::Algorithm);
            }
            self.decode(token, &key.decoding, key.algorithm)?
        };
        // Visible ASCII only: the services read the forwarded subject as text
        // (`to_str`), which a header value with other bytes would not be.
        let subject = HeaderValue::from_str(&claims.sub)
            .ok()
            .filter(|subject| !subject.is_empty() && subject.len() <= 256 && subject.to_str().is_ok())
            .ok_or(AuthFailure::Claims)?;
        let roles = self.roles(&claims.other);
        Ok(VerifiedToken {
            subject,
            roles: HeaderValue::from_str(&roles.join(",")).map_err(|_| AuthFailure::Claims)?,
            expires_at: claims.exp,
        })
    }

    fn decode(&self, token: &str, key: &DecodingKey, algorithm: Algorithm) -> Result<Claims, AuthFailure> {
        use jsonwebtoken::errors::ErrorKind;
        let mut validation = self.validation.clone();
        validation.algorithms = vec![algorithm];
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => AuthFailure::Signature,
                ErrorKind::ExpiredSignature => AuthFailure::Expired,
                ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
                ErrorKind::InvalidIssuer => AuthFailure::Issuer,
                ErrorKind::InvalidAudience => AuthFailure::Audience,
                ErrorKind::InvalidAlgorithm => AuthFailure::Algorithm,
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => AuthFailure::Claims,
                _ => AuthFailure::Malformed,
            })
    }

    /// Roles from the configured claim: a list of strings or one space-separated
    /// string (OAuth `scope`). Values that could not travel in a header are dropped.
    fn roles(&self, claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
        let valid = |role: &str| {
            !role.is_empty()
                && role.len() <= 64
                && role
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b':' | b'/'))
        };
        let roles: Vec<String> = match claims.get(&self.roles_claim) {
            Some(serde_json::Value::Array(values)) => values.iter().filter_map(|value| value.as_str()).map(str::to_owned).collect(),
            Some(serde_json::Value::String(text)) => text.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        roles.into_iter().filter(|role| valid(role)).take(32).collect()
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs())
}
