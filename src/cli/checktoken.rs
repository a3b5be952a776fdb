//! `wsgate checktoken <jwt>`: whether the configured gateway accepts a token, and if not,
//! exactly why.
//!
//! The header and claims are decoded here without trusting them, so that even a token the
//! gateway cannot parse is shown. The verdict is the gateway's own: the token goes through
//! [`Authenticator`] built from the same settings, and its [`AuthError`] is explained with
//! the claims and settings behind it (`iss "x" not "y"`, which key verifies which algorithm).
//!
//! The report, one `label value` line each:
//!
//! ```text
//! alg       HS256
//! kid       (none)
//! sub       "alice"
//! exp       2026-05-09T12:34:56Z (expires in 12m)
//! nbf       (none)
//! iss       (none)
//! aud       (none)
//! scope     "publish"
//! channels  (none)
//! verdict   accepted
//! user      connects to /ws/tasks as "alice"; may join user:alice
//! service   may call POST /api/events, POST /api/events/batch, GET /api/channels/{name}/presence
//! ```
//!
//! A refused token ends with `verdict   refused: <why>` and `gateway   401 {"error": ...}`
//! (exit code 1).

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::{print_line, CliError};
use crate::auth::{AuthError, Authenticator, Claims, ServiceScope};
use crate::config::{auth_config, AuthArgs, AuthConfig, JwtKey};
use crate::http::router::endpoints_needing;

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// The token to check; - reads it from standard input (keeps it out of the shell's history).
    #[arg(value_name = "JWT")]
    pub token: String,

    /// The gateway's token settings: the same key source, JWT_ISSUER, JWT_AUDIENCE and
    /// JWT_LEEWAY_SECS as the gateway has.
    #[command(flatten)]
    pub key: AuthArgs,
}

pub async fn run(a: CheckArgs) -> Result<(), CliError> {
    let token = if a.token == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::Usage(format!("cannot read the token from standard input: {e}")))?;
        s.trim().to_owned()
    } else {
        a.token.trim().to_owned()
    };
    let cfg = auth_config(&a.key)?;
    if cfg.dev_mode() {
        return Err(CliError::Usage(
            "no key configured: set JWT_SECRET, JWT_SECRET_FILE, JWT_PUBLIC_KEY_FILE or JWT_JWKS_URL as the gateway has \
             it"
            .into(),
        ));
    }
    let decoded = Decoded::new(&token);
    let now = now_secs();
    for (label, value) in decoded.fields(now) {
        print_line(&line(label, &value))?;
    }
    let auth = Authenticator::new(&cfg).map_err(|e| {
        CliError::Config(crate::config::ConfigError { setting: key_setting(&a.key), message: e.to_string() })
    })?;
    match auth.verify_async(&token).await {
        Ok(claims) => {
            let leeway = cfg.leeway.as_secs();
            let note = match decoded.number("exp") {
                Some(exp) if exp <= now => {
                    format!(" (exp passed {} ago, within JWT_LEEWAY_SECS={leeway})", span(now - exp))
                }
                _ => String::new(),
            };
            print_line(&line("verdict", &format!("accepted{note}")))?;
            for (label, value) in uses(&claims) {
                print_line(&line(label, &value))?;
            }
            Ok(())
        }
        Err(e) => {
            let why = explain(&e, &decoded, &cfg, &a.key, now).await;
            print_line(&line("verdict", &format!("refused: {why}")))?;
            let answer = serde_json::json!({ "error": e.message() });
            print_line(&line("gateway", &format!("{} {answer}", e.status())))?;
            Err(CliError::TokenRefused(why))
        }
    }
}

fn line(label: &str, value: &str) -> String {
    format!("{label:<10}{value}")
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The token's parts, decoded and not trusted: `Err` says why a part is unreadable.
struct Decoded {
    header: Result<Map<String, Value>, String>,
    claims: Result<Map<String, Value>, String>,
}

impl Decoded {
    fn new(token: &str) -> Decoded {
        let parts: Vec<&str> = token.split('.').collect();
        if parts.len() != 3 {
            let why = format!("a JWT has 3 parts separated by '.', this has {}", parts.len());
            return Decoded { header: Err(why.clone()), claims: Err(why) };
        }
        Decoded { header: part(parts[0], "header"), claims: part(parts[1], "claims") }
    }

    fn claim(&self, name: &str) -> Option<&Value> {
        self.claims.as_ref().ok()?.get(name)
    }

    fn number(&self, name: &str) -> Option<u64> {
        let v = self.claim(name)?;
        v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
    }

    fn header_str(&self, name: &str) -> Option<&str> {
        self.header.as_ref().ok()?.get(name)?.as_str()
    }

    /// The report's lines before the verdict.
    fn fields(&self, now: u64) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let (Err(a), Err(b)) = (&self.header, &self.claims) {
            if a == b {
                out.push(("token", format!("unreadable: {a}")));
                return out;
            }
        }
        match &self.header {
            Ok(h) => {
                out.push((
                    "alg",
                    h.get("alg").map_or("(none)".into(), |v| v.as_str().map_or(v.to_string(), str::to_owned)),
                ));
                out.push(("kid", h.get("kid").map_or("(none)".into(), Value::to_string)));
            }
            Err(why) => out.push(("header", format!("unreadable: {why}"))),
        }
        if let Err(why) = &self.claims {
            out.push(("claims", format!("unreadable: {why}")));
            return out;
        }
        out.push(("sub", self.claim("sub").map_or("(missing)".into(), Value::to_string)));
        out.push(("exp", self.time("exp", now, "(missing)")));
        out.push(("nbf", self.time("nbf", now, "(none)")));
        for name in ["iss", "aud", "scope", "channels"] {
            out.push((name, self.claim(name).map_or("(none)".into(), Value::to_string)));
        }
        out
    }

    /// `2026-05-09T12:34:56Z (expires in 12m)`, or the raw value when it is not a time.
    fn time(&self, name: &str, now: u64, absent: &str) -> String {
        let Some(v) = self.claim(name) else { return absent.into() };
        let Some(t) = self.number(name) else { return format!("{v} (not a number of seconds)") };
        let when = rfc3339(t);
        let rel = match (name, t > now) {
            ("exp", true) => format!("expires in {}", span(t - now)),
            ("exp", false) => format!("expired {} ago", span(now - t)),
            (_, true) => format!("valid in {}", span(t - now)),
            (_, false) => format!("valid since {}", span(now - t)),
        };
        format!("{when} ({rel})")
    }
}

fn part(b64: &str, what: &str) -> Result<Map<String, Value>, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|e| format!("the {what} is not base64url ({e})"))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!("the {what} is JSON but not an object: {other}")),
        Err(e) => Err(format!("the {what} is not JSON ({e})")),
    }
}

fn rfc3339(secs: u64) -> String {
    match UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(t) if secs < 253_402_300_800 => humantime::format_rfc3339_seconds(t).to_string(),
        _ => format!("{secs} (beyond the year 9999)"),
    }
}

/// A span to the minute (seconds below one): `42s`, `12m`, `3h`, `1h 30m`, `7d`, `1d 12h`.
pub fn span(secs: u64) -> String {
    if secs < 60 {
        return format!("{secs}s");
    }
    let mins = (secs + 30) / 60;
    if mins < 60 {
        return format!("{mins}m");
    }
    if mins < 24 * 60 {
        let (h, m) = (mins / 60, mins % 60);
        return if m == 0 { format!("{h}h") } else { format!("{h}h {m}m") };
    }
    let hours = (secs + 1800) / 3600;
    let (d, h) = (hours / 24, hours % 24);
    if h == 0 {
        format!("{d}d")
    } else {
        format!("{d}d {h}h")
    }
}

/// What an accepted token may do: as a user, and as a service.
fn uses(c: &Claims) -> Vec<(&'static str, String)> {
    let mut joins = vec![format!("user:{}", c.sub)];
    joins.extend(c.channels.iter().cloned());
    let user = format!("connects to /ws/tasks as {:?}; may join {}", c.sub, joins.join(", "));
    let service = if ServiceScope::Admin.allowed_by(&c.scope) {
        // The route table says what each endpoint needs (an admin token may call them all).
        let mut all = endpoints_needing(ServiceScope::Publish);
        all.extend(endpoints_needing(ServiceScope::Admin));
        format!("may call every endpoint (admin): {}", all.join(", "))
    } else if ServiceScope::Publish.allowed_by(&c.scope) {
        let publish = endpoints_needing(ServiceScope::Publish);
        format!("may call {} (not the admin API: no \"admin\" scope)", publish.join(", "))
    } else {
        "none: the scope has neither \"publish\" nor \"admin\"".to_owned()
    };
    vec![("user", user), ("service", service)]
}

/// The setting the key comes from, for messages.
fn key_setting(a: &AuthArgs) -> &'static str {
    if a.jwt_secret.as_deref().is_some_and(|s| !s.is_empty()) {
        "JWT_SECRET"
    } else if a.jwt_secret_file.is_some() {
        "JWT_SECRET_FILE"
    } else if a.jwt_public_key_file.is_some() {
        "JWT_PUBLIC_KEY_FILE"
    } else {
        "JWT_JWKS_URL"
    }
}

/// The claim as the gateway's own error would name it, with the value the token has.
fn shown(d: &Decoded, name: &str) -> String {
    d.claim(name).map_or("(missing)".into(), Value::to_string)
}

/// Why the gateway refuses the token, as precisely as the token and the settings tell.
async fn explain(e: &AuthError, d: &Decoded, cfg: &AuthConfig, a: &AuthArgs, now: u64) -> String {
    let leeway = cfg.leeway.as_secs();
    match e {
        AuthError::Missing => "no token".into(),
        AuthError::Malformed => malformed(d),
        AuthError::Expired => match d.number("exp") {
            Some(exp) => {
                format!("expired at {} ({} ago; JWT_LEEWAY_SECS={leeway})", rfc3339(exp), span(now.saturating_sub(exp)))
            }
            None => "expired".into(),
        },
        AuthError::NotYetValid => match d.number("nbf") {
            Some(nbf) => format!(
                "not valid before {} (in {}; JWT_LEEWAY_SECS={leeway})",
                rfc3339(nbf),
                span(nbf.saturating_sub(now))
            ),
            None => "not yet valid (nbf)".into(),
        },
        AuthError::BadIssuer => {
            format!("iss {} not {:?} (JWT_ISSUER)", shown(d, "iss"), cfg.issuer.as_deref().unwrap_or_default())
        }
        AuthError::BadAudience => {
            let want = cfg.audience.as_deref().unwrap_or_default();
            match d.claim("aud") {
                Some(Value::Array(_)) => format!("aud {} does not include {want:?} (JWT_AUDIENCE)", shown(d, "aud")),
                _ => format!("aud {} not {want:?} (JWT_AUDIENCE)", shown(d, "aud")),
            }
        }
        AuthError::MissingClaim(c) => match c.as_str() {
            "sub" if d.claim("sub").is_some() => format!("missing sub (it is {})", shown(d, "sub")),
            "iss" => format!("missing iss (JWT_ISSUER requires {:?})", cfg.issuer.as_deref().unwrap_or_default()),
            "aud" => format!("missing aud (JWT_AUDIENCE requires {:?})", cfg.audience.as_deref().unwrap_or_default()),
            other => format!("missing {other}"),
        },
        AuthError::BadSignature => bad_signature(d, cfg, a).await,
        AuthError::NoKey => no_key(d, cfg).await,
        // Not a verdict of verification: scopes are per endpoint, listed on acceptance.
        AuthError::Forbidden(scope) => format!("lacks the {:?} scope", scope.name()),
    }
}

fn malformed(d: &Decoded) -> String {
    if let Err(why) = &d.header {
        return format!("malformed: {why}");
    }
    if let Err(why) = &d.claims {
        return format!("malformed: {why}");
    }
    if let Some(alg) = d.header_str("alg") {
        if alg.parse::<Algorithm>().is_err() {
            return format!("malformed: alg {alg:?} is not a signature algorithm the gateway knows");
        }
    }
    let claims = Value::Object(d.claims.clone().unwrap_or_default());
    if let Err(e) = serde_json::from_value::<Claims>(claims) {
        return format!("malformed: the claims do not read as the gateway's ({e})");
    }
    "malformed".into()
}

/// The algorithms a fixed key verifies, and what to call it.
fn fixed_key(cfg: &AuthConfig, a: &AuthArgs) -> Option<(Vec<Algorithm>, String)> {
    match &cfg.key {
        JwtKey::Secret(_) | JwtKey::Dev(_) => Some((vec![Algorithm::HS256], key_setting(a).to_owned())),
        JwtKey::PublicKeyPem(pem) => {
            let alg = crate::jwt_key::public_key(pem).ok()?.1;
            Some((vec![alg], "JWT_PUBLIC_KEY_FILE".to_owned()))
        }
        JwtKey::Jwks => None,
    }
}

async fn bad_signature(d: &Decoded, cfg: &AuthConfig, a: &AuthArgs) -> String {
    let (algs, name) = match fixed_key(cfg, a) {
        Some(k) => k,
        None => match fetch_key_set(cfg).await {
            Ok(set) => {
                let kid = d.header_str("kid");
                match set.find(kid) {
                    Some(k) => {
                        let which = kid.map_or("(the only one, no kid)".to_owned(), |k| format!("{k:?}"));
                        (k.validation.algorithms.clone(), format!("the JWT_JWKS_URL key {which}"))
                    }
                    None => return "bad signature".into(),
                }
            }
            Err(_) => return "bad signature".into(),
        },
    };
    let alg = d.header_str("alg").unwrap_or("(none)");
    let shown: Vec<String> = algs.iter().map(|a| format!("{a:?}")).collect();
    if !shown.iter().any(|s| s == alg) {
        return format!(
            "wrong algorithm for the key: the token is signed {alg}, {name} verifies {} only",
            shown.join(", ")
        );
    }
    format!("bad signature: not signed with the key of {name}")
}

async fn no_key(d: &Decoded, cfg: &AuthConfig) -> String {
    let set = match fetch_key_set(cfg).await {
        Ok(set) => set,
        Err(why) => return format!("no key: the key set of JWT_JWKS_URL could not be loaded ({why})"),
    };
    let kids: Vec<String> = set.kids().iter().map(|k| format!("{k:?}")).collect();
    match d.header_str("kid") {
        Some(kid) => format!("no key for kid {kid:?} in JWT_JWKS_URL (its kids: {})", kids.join(", ")),
        None => format!("the token has no kid and JWT_JWKS_URL holds {} keys: which one is not said", set.len()),
    }
}

/// One fetch of the configured key set, read as the gateway reads it.
async fn fetch_key_set(cfg: &AuthConfig) -> Result<crate::jwks::KeySet, String> {
    let url = cfg.jwks.as_ref().map(|j| j.url.clone()).ok_or("no JWT_JWKS_URL")?;
    let parsed: reqwest::Url = url.parse().map_err(|e| format!("{e}"))?;
    let client = super::net::client(&parsed).map_err(|e| e.to_string())?;
    let body = super::net::send(client.get(parsed), "GET JWT_JWKS_URL").await.map_err(|e| e.to_string())?;
    let parsed =
        crate::jwks::parse_key_set(body.as_bytes(), &Validation::new(Algorithm::RS256)).map_err(|e| e.to_string())?;
    Ok(parsed.keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_to_the_minute() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (719, "12m"),
            (3599, "1h"),
            (5400, "1h 30m"),
            (3 * 3600 + 20, "3h"),
            (7 * 86400, "7d"),
            (36 * 3600, "1d 12h"),
        ];
        for (secs, want) in cases {
            assert_eq!(span(secs), want, "{secs}");
        }
    }

    #[test]
    fn unreadable_tokens_say_why() {
        let d = Decoded::new("abc.def");
        assert!(d.header.unwrap_err().contains("3 parts"));
        let d = Decoded::new("e30.!!.x");
        assert!(d.claims.unwrap_err().contains("base64url"));
        let d = Decoded::new("e30.WzFd.x");
        assert!(d.claims.unwrap_err().contains("not an object"));
    }
}
