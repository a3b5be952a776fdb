//! Tokens: JWT → [`Claims`], with a typed [`AuthError`] whose reason is a metric label.
//!
//! HS256 with `JWT_SECRET`, or RS256/ES256 with the PEM in `JWT_PUBLIC_KEY_FILE` (the key type
//! picks the algorithm, so a token signed with another algorithm is refused). `exp` and `sub`
//! are required, `nbf` is checked when present, `iss`/`aud` when configured.

use std::time::Duration;

use hyper::header::AUTHORIZATION;
use hyper::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{Config, JwtKey};

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
    Forbidden,
}

impl AuthError {
    pub const REASONS: [&'static str; 9] = [
        "missing",
        "malformed",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "bad_issuer",
        "bad_audience",
        "missing_claim",
        "forbidden",
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
            AuthError::Forbidden => "forbidden",
        }
    }

    /// 401 for a bad or absent token, 403 for a good token without the needed scope.
    pub fn status(&self) -> u16 {
        if *self == AuthError::Forbidden {
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
            AuthError::Forbidden => "token lacks the \"publish\" scope".into(),
        }
    }
}

/// Verifies tokens with the configured key.
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// Only in dev mode, or with a secret: lets `wsgate token` and dev start-up mint tokens.
    signing: Option<EncodingKey>,
}

/// Checks that a PEM holds an RSA or EC public key jsonwebtoken can use.
pub fn check_public_key(pem: &[u8]) -> Result<(), String> {
    public_key(pem).map(|_| ())
}

fn public_key(pem: &[u8]) -> Result<(DecodingKey, Algorithm), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        return Ok((k, Algorithm::RS256));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        return Ok((k, Algorithm::ES256));
    }
    Err("not a PEM-encoded RSA or EC (P-256) public key".into())
}

impl Authenticator {
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let (key, alg, signing) = match &cfg.jwt_key {
            JwtKey::Secret(s) | JwtKey::Dev(s) => {
                (DecodingKey::from_secret(s), Algorithm::HS256, Some(EncodingKey::from_secret(s)))
            }
            JwtKey::PublicKeyPem(pem) => {
                let (k, alg) = public_key(pem)?;
                (k, alg, None)
            }
        };
        let mut validation = Validation::new(alg);
        // A configured issuer or audience must be present, not merely right when present.
        let mut required = vec!["exp", "sub"];
        if cfg.jwt_issuer.is_some() {
            required.push("iss");
        }
        if cfg.jwt_audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        validation.leeway = cfg.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        match &cfg.jwt_audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Without a configured audience, a token's `aud` is not ours to judge.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &cfg.jwt_issuer {
            validation.set_issuer(&[iss]);
        }
        Ok(Authenticator { key, validation, signing })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
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

    /// Verifies a service token and requires the `publish` scope.
    pub fn verify_publisher(&self, token: &str) -> Result<Claims, AuthError> {
        let c = self.verify(token)?;
        if !c.scope.contains("publish") {
            return Err(AuthError::Forbidden);
        }
        Ok(c)
    }

    /// Mints a token with the configured secret (not possible with a public key).
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
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&Config::for_tests("s3cret")).unwrap()
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
        let ok = sign(serde_json::json!({"sub":"alice","exp":exp(60)}), "s3cret");
        assert_eq!(a.verify(&ok).unwrap().sub, "alice");
        assert_eq!(a.verify_publisher(&ok).unwrap_err(), AuthError::Forbidden);
        let p = sign(serde_json::json!({"sub":"svc","exp":exp(60),"scope":"read publish"}), "s3cret");
        assert!(a.verify_publisher(&p).is_ok());
        let p = sign(serde_json::json!({"sub":"svc","exp":exp(60),"scope":["publish"]}), "s3cret");
        assert!(a.verify_publisher(&p).is_ok());
        let cases = [
            (sign(serde_json::json!({"sub":"a","exp":exp(-120)}), "s3cret"), AuthError::Expired),
            (sign(serde_json::json!({"sub":"a","exp":exp(60),"nbf":exp(120)}), "s3cret"), AuthError::NotYetValid),
            (sign(serde_json::json!({"sub":"a","exp":exp(60)}), "other"), AuthError::BadSignature),
            (sign(serde_json::json!({"exp":exp(60)}), "s3cret"), AuthError::MissingClaim("sub".into())),
            ("abc.def".to_string(), AuthError::Malformed),
            (String::new(), AuthError::Missing),
        ];
        for (tok, want) in cases {
            assert_eq!(a.verify(&tok).unwrap_err(), want, "{tok}");
        }
        // aud present but none configured: accepted.
        let t = sign(serde_json::json!({"sub":"a","exp":exp(60),"aud":"x"}), "s3cret");
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
