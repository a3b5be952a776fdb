//! Redis mode's settings: the URL (with a password from a file), key prefix, outage outbox,
//! channel unsubscribe delay, start-up wait.

use std::time::Duration;

use super::auth::read_secret_file;
use super::{at_least, at_most, bad, Args, ConfigError};

#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// With the password of `REDIS_PASSWORD_FILE` in it, when that is set.
    pub url: String,
    pub key_prefix: String,
    /// Events kept while Redis is away.
    pub outbox_max_events: usize,
    pub outbox_max_bytes: usize,
    pub channel_unsubscribe_delay: Duration,
    pub startup_wait: Duration,
}

const REDIS_SCHEMES: [&str; 6] =
    ["redis://", "rediss://", "redis-cluster://", "rediss-cluster://", "redis-sentinel://", "rediss-sentinel://"];

pub(super) fn redis_config(a: &Args) -> Result<Option<RedisConfig>, ConfigError> {
    if a.redis_key_prefix.chars().any(|c| c.is_whitespace()) {
        return Err(bad("REDIS_KEY_PREFIX", "must not contain white space"));
    }
    let Some(url) = a.redis_url.as_deref().filter(|u| !u.is_empty()) else {
        if a.redis_password_file.is_some() {
            return Err(bad("REDIS_PASSWORD_FILE", "is set but REDIS_URL is not"));
        }
        return Ok(None);
    };
    if !REDIS_SCHEMES.iter().any(|p| url.starts_with(p)) {
        return Err(bad(
            "REDIS_URL",
            "must start with redis://, rediss://, redis-cluster://, rediss-cluster:// or redis-sentinel://",
        ));
    }
    let url = match &a.redis_password_file {
        None => url.to_string(),
        Some(path) => {
            let password = read_secret_file("REDIS_PASSWORD_FILE", path)?;
            let password = String::from_utf8(password)
                .map_err(|_| bad("REDIS_PASSWORD_FILE", format!("{} is not UTF-8 text", path.display())))?;
            with_password(url, &password)?
        }
    };
    Ok(Some(RedisConfig {
        url,
        key_prefix: a.redis_key_prefix.clone(),
        outbox_max_events: at_least("REDIS_OUTBOX_MAX_EVENTS", a.redis_outbox_max_events, 1)?,
        outbox_max_bytes: at_least("REDIS_OUTBOX_MAX_BYTES", a.redis_outbox_max_bytes, 1024)?,
        channel_unsubscribe_delay: Duration::from_millis(a.channel_unsubscribe_delay_ms),
        startup_wait: Duration::from_millis(at_most("REDIS_STARTUP_WAIT_MS", a.redis_startup_wait_ms, 60_000)?),
    }))
}

/// `redis://user@host` + `pw` → `redis://user:pw@host` (the password percent-encoded). A URL
/// that already carries a password is a second source: refused, like two JWT key sources.
fn with_password(url: &str, password: &str) -> Result<String, ConfigError> {
    let (scheme, rest) = url.split_once("://").expect("scheme checked");
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (user, host) = match authority.rsplit_once('@') {
        Some((userinfo, _)) if userinfo.contains(':') => {
            return Err(bad("REDIS_PASSWORD_FILE", "REDIS_URL already carries a password: set it in one place only"));
        }
        Some((user, host)) => (user, host),
        None => ("", authority),
    };
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}@{host}{path}"))
}

/// Hides the password of a Redis URL for logs: `redis://user:***@host:6379/0`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let masked = if userinfo.contains(':') { format!("{user}:***") } else { "***".to_string() };
            format!("{}://{masked}@{}", &url[..scheme_end], &rest[at + 1..])
        }
        None => url.to_string(),
    }
}
