//! Token verification settings: the one key source (JWT_SECRET, JWT_SECRET_FILE,
//! JWT_PUBLIC_KEY_FILE, JWT_JWKS_URL, or none: dev mode), issuer, audience, leeway.

use std::time::Duration;

use super::{at_least, at_most, bad, AuthArgs, ConfigError};

/// How tokens are verified.
#[derive(Clone)]
pub enum JwtKey {
    /// HS256 with a shared secret.
    Secret(Vec<u8>),
    /// RS256 or ES256 public key, PEM-encoded.
    PublicKeyPem(Vec<u8>),
    /// Keys fetched from `JWT_JWKS_URL` ([`AuthConfig::jwks`]) and picked by `kid`.
    Jwks,
    /// No key configured: a random HS256 secret for this process only.
    Dev(Vec<u8>),
}

impl std::fmt::Debug for JwtKey {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Secret(_) => f.write_str("Secret(<redacted>)"),
            JwtKey::PublicKeyPem(_) => f.write_str("PublicKeyPem(..)"),
            JwtKey::Jwks => f.write_str("Jwks"),
            JwtKey::Dev(_) => f.write_str("Dev(<random>)"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub key: JwtKey,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway: Duration,
    /// Set exactly when `key` is [`JwtKey::Jwks`].
    pub jwks: Option<JwksSettings>,
}

impl AuthConfig {
    /// True when no key was configured and tokens are signed with a random per-process key.
    pub fn dev_mode(&self) -> bool {
        matches!(self.key, JwtKey::Dev(_))
    }
}

/// Where to fetch verification keys from, and how often.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    pub url: String,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

/// Shortest HS256 secret accepted: 256 bits, the hash's own size (RFC 7518 §3.2). A shorter
/// one falls to an offline brute force from any token a client holds.
pub const MIN_SECRET_BYTES: usize = 32;

/// Checks an HS256 secret's length; `setting` names where it came from.
pub fn check_secret(setting: &'static str, secret: &[u8]) -> Result<(), ConfigError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(bad(
            setting,
            format!(
                "an HS256 secret must be at least {MIN_SECRET_BYTES} bytes, got {} (generate one with: openssl rand -base64 48)",
                secret.len()
            ),
        ));
    }
    Ok(())
}

/// A secret file's content without its trailing newline (editors and `echo` add one).
pub(super) fn read_secret_file(setting: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    let mut v = std::fs::read(path).map_err(|e| bad(setting, format!("cannot read {}: {e}", path.display())))?;
    if v.ends_with(b"\n") {
        v.pop();
        if v.ends_with(b"\r") {
            v.pop();
        }
    }
    if v.is_empty() {
        return Err(bad(setting, format!("{} is empty", path.display())));
    }
    Ok(v)
}

/// The key sources are exclusive: exactly one of JWT_SECRET, JWT_SECRET_FILE,
/// JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL, or none (dev mode). Public for the operator
/// subcommands, which validate these settings and no other.
pub fn auth_config(a: &AuthArgs) -> Result<AuthConfig, ConfigError> {
    let jwks_url = a.jwt_jwks_url.as_deref().map(str::trim).filter(|u| !u.is_empty());
    let sources: Vec<&'static str> = [
        ("JWT_SECRET", a.jwt_secret.as_deref().is_some_and(|s| !s.is_empty())),
        ("JWT_SECRET_FILE", a.jwt_secret_file.is_some()),
        ("JWT_PUBLIC_KEY_FILE", a.jwt_public_key_file.is_some()),
        ("JWT_JWKS_URL", jwks_url.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if sources.len() > 1 {
        return Err(bad(
            sources[sources.len() - 1],
            format!(
                "set only one of JWT_SECRET, JWT_SECRET_FILE, JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL (both {} are set)",
                sources.join(" and ")
            ),
        ));
    }
    let key = if let Some(s) = a.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
        check_secret("JWT_SECRET", s.as_bytes())?;
        JwtKey::Secret(s.as_bytes().to_vec())
    } else if a.jwt_secret.is_some() && sources.is_empty() {
        return Err(bad("JWT_SECRET", "must not be empty (unset it for dev mode)"));
    } else if let Some(path) = &a.jwt_secret_file {
        let s = read_secret_file("JWT_SECRET_FILE", path)?;
        check_secret("JWT_SECRET_FILE", &s)?;
        JwtKey::Secret(s)
    } else if let Some(path) = &a.jwt_public_key_file {
        let pem = std::fs::read(path)
            .map_err(|e| bad("JWT_PUBLIC_KEY_FILE", format!("cannot read {}: {e}", path.display())))?;
        crate::jwt_key::check_public_key(&pem).map_err(|e| bad("JWT_PUBLIC_KEY_FILE", e.to_string()))?;
        JwtKey::PublicKeyPem(pem)
    } else if jwks_url.is_some() {
        JwtKey::Jwks
    } else {
        let secret: [u8; 32] = rand::random();
        JwtKey::Dev(secret.to_vec())
    };
    let jwks = match jwks_url {
        None => None,
        Some(url) => {
            check_jwks_url(url)?;
            Some(JwksSettings {
                url: url.to_string(),
                refresh: Duration::from_secs(at_least("JWKS_REFRESH_SECS", a.jwks_refresh_secs, 1)?),
                // A floor: without it every token with an unknown `kid` could cause a fetch.
                min_refetch: Duration::from_secs(at_least("JWKS_MIN_REFETCH_SECS", a.jwks_min_refetch_secs, 1)?),
            })
        }
    };
    Ok(AuthConfig {
        key,
        issuer: a.jwt_issuer.clone().filter(|s| !s.is_empty()),
        audience: a.jwt_audience.clone().filter(|s| !s.is_empty()),
        leeway: Duration::from_secs(at_most("JWT_LEEWAY_SECS", a.jwt_leeway_secs, 3600)?),
        jwks,
    })
}

/// Keys fetched in plain text can be replaced by anyone on the path, who can then mint any
/// token: https only, except for a key server on this host.
fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(bad("JWT_JWKS_URL", "must be an https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Err(bad(
            "JWT_JWKS_URL",
            format!("must be an https:// URL (http:// is allowed only for a loopback host, got {host:?})"),
        ));
    }
    Ok(())
}
