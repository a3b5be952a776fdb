//! `wsgate token`: mint a token with the configured secret. The other subcommands mint theirs
//! here too when no `--token` is given.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::{print_line, CliError};
use crate::config::{auth_config, AuthArgs, JwtKey};

#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The token's subject: a user id, or a service's name.
    #[arg(help_heading = "Token", long)]
    pub sub: String,

    /// Space-separated scopes: "publish" (POST /api/events), "admin" (every endpoint).
    /// None: a user token.
    #[arg(help_heading = "Token", long)]
    pub scope: Option<String>,

    /// Channels the user may join: names and prefix patterns ('team:*'), comma-separated or
    /// repeated. user:<sub> is always allowed.
    #[arg(help_heading = "Token", long, value_delimiter = ',', num_args = 1..)]
    pub channels: Vec<String>,

    /// Lifetime: 90s, 30m, "1h 30m", 7d (a bare number is seconds).
    #[arg(help_heading = "Token", long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,

    #[command(flatten)]
    pub key: AuthArgs,
}

pub fn run(a: TokenArgs) -> Result<(), CliError> {
    for c in &a.channels {
        // `*` alone grants every channel; otherwise the part before `*` is a name's start.
        let ok = c == "*" || crate::channel::valid_name(c.strip_suffix('*').unwrap_or(c));
        if !ok {
            return Err(CliError::Usage(format!(
                "--channels {c:?}: a channel name or a prefix ending in '*', of A-Z a-z 0-9 : _ - . @"
            )));
        }
    }
    let t = mint(&a.key, &a.sub, a.scope.as_deref(), &a.channels, a.ttl)?;
    print_line(&t)
}

/// A duration for `--ttl`: humantime's forms (`90s`, `1h 30m`, `7d`), or whole seconds.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s).map_err(|e| format!("{e} (e.g. 90s, 30m, \"1h 30m\", 7d)"))?,
    };
    if d.as_secs() == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(d)
}

#[derive(Serialize)]
struct Minted<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// An HS256 token with the configured secret that the configured gateway accepts: `iss` and
/// `aud` are those it requires, when it requires them. Only the key settings are read (and
/// checked, naming the setting: a 31-byte JWT_SECRET is refused as the gateway refuses it).
pub fn mint(
    key: &AuthArgs,
    sub: &str,
    scope: Option<&str>,
    channels: &[String],
    ttl: Duration,
) -> Result<String, CliError> {
    let cfg = auth_config(key)?;
    let secret = match &cfg.key {
        JwtKey::Secret(s) => s,
        JwtKey::Dev(_) => return Err(CliError::Usage(
            "no key to mint a token with: set JWT_SECRET or JWT_SECRET_FILE as the gateway has it (or pass --token)"
                .into(),
        )),
        JwtKey::PublicKeyPem(_) | JwtKey::Jwks => {
            return Err(CliError::Usage(
                "JWT_PUBLIC_KEY_FILE and JWT_JWKS_URL verify tokens but cannot sign them: pass --token (one your \
                 identity provider issued)"
                    .into(),
            ))
        }
    };
    let now = crate::event::now_ms() / 1000;
    let claims = Minted {
        sub,
        iat: now,
        exp: now.saturating_add(ttl.as_secs()),
        scope: scope.map(str::trim).filter(|s| !s.is_empty()),
        channels,
        iss: cfg.issuer.as_deref(),
        aud: cfg.audience.as_deref(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))
        .map_err(|e| CliError::Local(format!("cannot sign the token: {e}")))
}

/// The token of [`super::net::GatewayArgs`]: the one given, or one minted for `sub` with `scope`.
pub fn token_or_mint(
    given: Option<&str>,
    key: &AuthArgs,
    sub: &str,
    scope: Option<&str>,
    channels: &[String],
    ttl: Duration,
) -> Result<String, CliError> {
    match given.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) => Ok(t.to_owned()),
        None => mint(key, sub, scope, channels, ttl),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h 30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1 fortnight").unwrap_err().contains("unit"));
        assert!(parse_ttl("h").is_err());
    }
}
