//! Tokens (HS256) signed with a gateway's secret.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::now_secs;

pub fn token_with(secret: &str, claims: Value) -> String {
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encode JWT")
}

/// A user token `{sub, exp: now + ttl_secs}` (a negative ttl gives an expired token).
pub fn user_token(secret: &str, sub: &str, ttl_secs: i64) -> String {
    token_with(secret, json!({"sub": sub, "exp": now_secs() as i64 + ttl_secs}))
}

/// A service token with `scope: "publish"`, valid for an hour.
pub fn publish_token(secret: &str) -> String {
    token_with(secret, json!({"sub": "test-publisher", "exp": now_secs() + 3600, "scope": "publish"}))
}

/// A user token `{sub, exp: now + 1h, channels}`: the `channels` claim lists the names and
/// prefix patterns (`team:*`) the user may join.
pub fn channel_token(secret: &str, sub: &str, channels: &[&str]) -> String {
    token_with(secret, json!({"sub": sub, "exp": now_secs() + 3600, "channels": channels}))
}

/// A service token for `sub` with `scope` (`"publish"`, `"admin"`, ...), valid for an hour.
pub fn service_token(secret: &str, sub: &str, scope: &str) -> String {
    token_with(secret, json!({"sub": sub, "exp": now_secs() + 3600, "scope": scope}))
}

/// A service token with `scope: "admin"`, valid for an hour.
pub fn admin_token(secret: &str) -> String {
    service_token(secret, "test-admin", "admin")
}
