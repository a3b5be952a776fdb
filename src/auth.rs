//! Tokens: JWT → [`Claims`], with a typed [`AuthError`] whose reason is a metric label.
//!
//! HS256 with `JWT_SECRET`, or RS256/ES256 with the PEM in `JWT_PUBLIC_KEY_FILE` (the key type
//! picks the algorithm, so a token signed with another algorithm is refused), or the keys of the
//! JWK Set at `JWT_JWKS_URL`, picked by the token's `kid` ([`crate::jwks`]; each key allows only
//! the algorithms of its type). `exp` and `sub` are required, `nbf` is checked when present,
//! `iss`/`aud` when configured.
//!
//! With a JWKS, a token whose `kid` the cached set lacks asks for a refetch (rate-limited): the
//! issuer may have rotated its keys. [`Authenticator::verify_async`] waits for that refetch (at
//! most [`REFETCH_WAIT`]) and tries again, so a new key works on its first use;
//! [`Authenticator::verify`] cannot wait and refuses that token, and the refetch it started
//! serves the client's next attempt.

use std::time::Duration;

use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, JwtKey};
use crate::error::StartError;
use crate::jwks::Jwks;
use crate::jwt_key::public_key;

/// How long [`Authenticator::verify_async`] waits for a JWKS refetch before refusing a token
/// whose `kid` is unknown.
pub const REFETCH_WAIT: Duration = Duration::from_secs(3);

/// The claims wsgate reads. Unknown claims are ignored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The user id. (Defaults let a missing claim surface as `MissingClaim`, not `Malformed`.)
    #[serde(default)]
    pub sub: String,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: u64,
    /// Space-separated scopes (OAuth style) or a list of them; `publish` allows POST /api/events.
    #[serde(default, skip_serializing_if = "Scope::is_empty")]
    pub scope: Scope,
    /// Channels the user may join: exact names, or prefixes ending in `*` (`team:*`).
    /// `user:<sub>` is always allowed and need not be listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Scope {
    #[default]
    None,
    Text(String),
    List(Vec<String>),
}

impl Scope {
    fn is_empty(&self) -> bool {
        matches!(self, Scope::None)
    }

    pub fn contains(&self, want: &str) -> bool {
        match self {
            Scope::None => false,
            Scope::Text(s) => s.split_ascii_whitespace().any(|s| s == want),
            Scope::List(v) => v.iter().any(|s| s == want),
        }
    }
}

/// Why a token was refused. [`AuthError::reason`] is the `reason` label of
/// `wsgate_auth_failures_total`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    BadSignature,
    Expired,
    NotYetValid,
    BadIssuer,
    BadAudience,
    MissingClaim(String),
    /// Valid token without the scope the endpoint needs (403).
    Forbidden(ServiceScope),
    /// JWKS: no key for the token's `kid` (or, without a `kid`, the set has more than one key),
    /// or no key set loaded yet.
    NoKey,
}

impl AuthError {
    pub const REASONS: [&'static str; 10] = [
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "bad_issuer",
        "bad_audience",
        "missing_claim",
        "forbidden",
        "no_key",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::BadIssuer => "bad_issuer",
            AuthError::BadAudience => "bad_audience",
            AuthError::MissingClaim(_) => "missing_claim",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::NoKey => "no_key",
        }
    }

    /// 401 for a bad or absent token, 403 for a good token without the needed scope.
    pub fn status(&self) -> u16 {
        if matches!(self, AuthError::Forbidden(_)) {
            403
        } else {
            401
        }
    }

    pub fn message(&self) -> String {
        match self {
            AuthError::Missing => "missing token: pass ?token=<JWT> or Authorization: Bearer <JWT>".into(),
            AuthError::Malformed => "malformed token".into(),
            AuthError::BadSignature => "invalid token signature".into(),
            AuthError::Expired => "token expired".into(),
            AuthError::NotYetValid => "token not yet valid (nbf)".into(),
            AuthError::BadIssuer => "token issuer (iss) not accepted".into(),
            AuthError::BadAudience => "token audience (aud) not accepted".into(),
            AuthError::MissingClaim(c) => format!("token lacks required claim {c:?}"),
            AuthError::Forbidden(scope) => format!("token lacks the {:?} scope", scope.name()),
            AuthError::NoKey => {
                "no verification key for this token (unknown kid, or the key set is not loaded yet)".into()
            }
        }
    }
}

/// What a service token must allow: `publish` publishes (and reads presence), `admin` may call
/// every endpoint, publishing included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceScope {
    Publish,
    Admin,
}

impl ServiceScope {
    pub fn name(self) -> &'static str {
        match self {
            ServiceScope::Publish => "publish",
            ServiceScope::Admin => "admin",
        }
    }

    /// Whether a token with `scope` may call an endpoint that needs `self`.
    pub fn allowed_by(self, scope: &Scope) -> bool {
        scope.contains("admin") || (self == ServiceScope::Publish && scope.contains("publish"))
    }
}

/// Verifies tokens with the configured key, or the keys of the JWKS.
pub struct Authenticator {
    keys: Keys,
    /// Only in dev mode, or with a secret: lets `wsgate token` and dev start-up mint tokens.
    signing: Option<EncodingKey>,
}

enum Keys {
    /// One key for every token.
    Fixed { key: DecodingKey, validation: Box<Validation> },
    /// The JWKS keys, picked by `kid`; each carries its own validation.
    Jwks(Jwks),
}

/// One verification attempt: done, or stopped for want of a key.
enum Attempt {
    Done(Result<Claims, AuthError>),
    /// `refetch`: a refetch might bring the key (an unknown `kid`, or no set loaded yet).
    NoKey {
        refetch: bool,
    },
}

/// The claim rules of the configuration, for tokens signed with `alg`.
fn validation(cfg: &AuthConfig, alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    // A configured issuer or audience must be present, not merely right when present.
    let mut required = vec!["exp", "sub"];
    if cfg.issuer.is_some() {
        required.push("iss");
    }
    if cfg.audience.is_some() {
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation.leeway = cfg.leeway.as_secs();
    validation.validate_nbf = true;
    match &cfg.audience {
        Some(aud) => validation.set_audience(&[aud]),
        // Without a configured audience, a token's `aud` is not ours to judge.
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &cfg.issuer {
        validation.set_issuer(&[iss]);
    }
    validation
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, AuthError> {
    let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
        ErrorKind::InvalidIssuer => AuthError::BadIssuer,
        ErrorKind::InvalidAudience => AuthError::BadAudience,
        ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
        _ => AuthError::Malformed,
    })?;
    if data.claims.sub.is_empty() {
        return Err(AuthError::MissingClaim("sub".into()));
    }
    Ok(data.claims)
}

impl Authenticator {
    /// With `JWT_JWKS_URL`, starts the key set's fetch task: must run inside a Tokio runtime.
    pub fn new(cfg: &AuthConfig) -> Result<Self, StartError> {
        let (keys, signing) = match &cfg.key {
            JwtKey::Secret(s) | JwtKey::Dev(s) => (
                Keys::Fixed {
                    key: DecodingKey::from_secret(s),
                    validation: Box::new(validation(cfg, Algorithm::HS256)),
                },
                Some(EncodingKey::from_secret(s)),
            ),
            JwtKey::PublicKeyPem(pem) => {
                let (key, alg) = public_key(pem)?;
                (Keys::Fixed { key, validation: Box::new(validation(cfg, alg)) }, None)
            }
            JwtKey::Jwks => {
                let settings = cfg.jwks.as_ref().expect("a JWKS key comes with its settings");
                // Each key replaces the algorithms with its own.
                (Keys::Jwks(Jwks::start(settings, validation(cfg, Algorithm::RS256))?), None)
            }
        };
        Ok(Authenticator { keys, signing })
    }

    fn attempt(&self, token: &str) -> Attempt {
        if token.is_empty() {
            return Attempt::Done(Err(AuthError::Missing));
        }
        match &self.keys {
            Keys::Fixed { key, validation } => Attempt::Done(decode(token, key, validation)),
            Keys::Jwks(jwks) => {
                let Ok(header) = jsonwebtoken::decode_header(token) else {
                    return Attempt::Done(Err(AuthError::Malformed));
                };
                match jwks.find(header.kid.as_deref()) {
                    Some(k) => Attempt::Done(decode(token, &k.key, &k.validation)),
                    // A token without kid facing several keys: no refetch changes that.
                    None => Attempt::NoKey { refetch: header.kid.is_some() || jwks.is_empty() },
                }
            }
        }
    }

    /// Verifies with the keys at hand. With a JWKS, a token whose key is missing is refused
    /// ([`AuthError::NoKey`]) and starts a refetch (rate-limited) for the next attempt; use
    /// [`Authenticator::verify_async`] to wait for it instead.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        match self.attempt(token) {
            Attempt::Done(r) => r,
            Attempt::NoKey { refetch } => {
                if let (true, Keys::Jwks(jwks)) = (refetch, &self.keys) {
                    jwks.request_refetch();
                }
                Err(AuthError::NoKey)
            }
        }
    }

    /// Like [`Authenticator::verify`], but a token whose key is missing from the JWKS waits
    /// (at most [`REFETCH_WAIT`]) for a refetch and is verified again, so a rotated key works
    /// on its first use. When a refetch was granted less than `JWKS_MIN_REFETCH_SECS` ago, and
    /// none is pending, the token is refused at once.
    pub async fn verify_async(&self, token: &str) -> Result<Claims, AuthError> {
        match self.attempt(token) {
            Attempt::Done(r) => r,
            Attempt::NoKey { refetch: true } => {
                let Keys::Jwks(jwks) = &self.keys else { return Err(AuthError::NoKey) };
                let Some(ticket) = jwks.request_refetch() else { return Err(AuthError::NoKey) };
                jwks.wait_for(ticket, REFETCH_WAIT).await;
                match self.attempt(token) {
                    Attempt::Done(r) => r,
                    Attempt::NoKey { .. } => Err(AuthError::NoKey),
                }
            }
            Attempt::NoKey { refetch: false } => Err(AuthError::NoKey),
        }
    }

    /// Verifies a service token and requires the `publish` scope (or `admin`).
    pub fn verify_publisher(&self, token: &str) -> Result<Claims, AuthError> {
        scoped(self.verify(token)?, ServiceScope::Publish)
    }

    /// [`Authenticator::verify_publisher`] that waits for a JWKS refetch like
    /// [`Authenticator::verify_async`].
    pub async fn verify_publisher_async(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_service_async(token, ServiceScope::Publish).await
    }

    /// Verifies a service token that must allow `scope`, waiting for a JWKS refetch like
    /// [`Authenticator::verify_async`].
    pub async fn verify_service_async(&self, token: &str, scope: ServiceScope) -> Result<Claims, AuthError> {
        scoped(self.verify_async(token).await?, scope)
    }

    /// Mints a token with the configured secret (not possible with a public key or a JWKS).
    pub fn mint(&self, sub: &str, scope: Option<&str>, ttl: Duration) -> Option<String> {
        let key = self.signing.as_ref()?;
        let claims = Claims {
            sub: sub.to_string(),
            exp: crate::event::now_ms() / 1000 + ttl.as_secs(),
            scope: scope.map(|s| Scope::Text(s.to_string())).unwrap_or_default(),
            channels: Vec::new(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key).ok()
    }
}

fn scoped(c: Claims, scope: ServiceScope) -> Result<Claims, AuthError> {
    if !scope.allowed_by(&c.scope) {
        return Err(AuthError::Forbidden(scope));
    }
    Ok(c)
}

/// The token of a request: `Authorization: Bearer <t>` first, then the `token` query parameter
/// (browsers cannot set headers on a WebSocket). `None` when neither is present.
pub fn token_from_parts(parts: &Parts, allow_query: bool) -> Option<String> {
    if let Some(v) = parts.headers.get(AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string());
    }
    if allow_query {
        return query_param(parts.uri.query()?, "token");
    }
    None
}

/// The (percent-decoded) value of a query parameter.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    const TEST_SECRET: &str = "unit-test-secret-of-at-least-32-bytes";
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&crate::config::Config::for_tests(TEST_SECRET).auth).unwrap()
    }

    fn sign(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn exp(delta: i64) -> i64 {
        (crate::event::now_ms() / 1000) as i64 + delta
    }

    #[test]
    fn accepts_and_refuses() {
        let a = auth();
        let ok = sign(serde_json::json!({"sub":"alice","exp":exp(60)}), TEST_SECRET);
        assert_eq!(a.verify(&ok).unwrap().sub, "alice");
        assert_eq!(a.verify_publisher(&ok).unwrap_err(), AuthError::Forbidden(ServiceScope::Publish));
        assert_eq!(a.verify_publisher(&ok).unwrap_err().message(), "token lacks the \"publish\" scope");
        let admin = sign(serde_json::json!({"sub":"ops","exp":exp(60),"scope":"admin"}), TEST_SECRET);
        assert!(a.verify_publisher(&admin).is_ok(), "admin may publish");
        let p = sign(serde_json::json!({"sub":"svc","exp":exp(60),"scope":"publish"}), TEST_SECRET);
        assert!(!ServiceScope::Admin.allowed_by(&a.verify(&p).unwrap().scope), "publish is not admin");
        assert!(ServiceScope::Admin.allowed_by(&a.verify(&admin).unwrap().scope));
        let p = sign(serde_json::json!({"sub":"svc","exp":exp(60),"scope":"read publish"}), TEST_SECRET);
        assert!(a.verify_publisher(&p).is_ok());
        let p = sign(serde_json::json!({"sub":"svc","exp":exp(60),"scope":["publish"]}), TEST_SECRET);
        assert!(a.verify_publisher(&p).is_ok());
        let cases = [
            (sign(serde_json::json!({"sub":"a","exp":exp(-120)}), TEST_SECRET), AuthError::Expired),
            (sign(serde_json::json!({"sub":"a","exp":exp(60),"nbf":exp(120)}), TEST_SECRET), AuthError::NotYetValid),
            (sign(serde_json::json!({"sub":"a","exp":exp(60)}), "other"), AuthError::BadSignature),
            (sign(serde_json::json!({"exp":exp(60)}), TEST_SECRET), AuthError::MissingClaim("sub".into())),
            ("abc.def".to_string(), AuthError::Malformed),
            (String::new(), AuthError::Missing),
        ];
        for (tok, want) in cases {
            assert_eq!(a.verify(&tok).unwrap_err(), want, "{tok}");
        }
        // aud present but none configured: accepted.
        let t = sign(serde_json::json!({"sub":"a","exp":exp(60),"aud":"x"}), TEST_SECRET);
        assert!(a.verify(&t).is_ok());
    }

    #[test]
    fn minted_tokens_verify() {
        let a = auth();
        let t = a.mint("bob", Some("publish"), Duration::from_secs(60)).unwrap();
        assert!(a.verify_publisher(&t).is_ok());
    }

    #[test]
    fn query_token_is_percent_decoded() {
        assert_eq!(query_param("a=1&token=x%2Ey", "token").as_deref(), Some("x.y"));
        assert_eq!(query_param("a=1", "token"), None);
    }
}
