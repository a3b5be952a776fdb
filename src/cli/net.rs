//! Where the gateway is, how to authenticate to it, and the wire: the `--url`/`--admin-url`
//! settings, the one TLS client configuration (HTTPS and wss:// trust the same CAs), HTTP
//! requests, the WebSocket handshake, and their failures as [`CliError`]s.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;

use super::CliError;
use crate::config::AuthArgs;

/// Bound on reaching the gateway (TCP and TLS), and on one whole HTTP exchange: a command
/// against a gateway that does not answer ends by itself.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The gateway to talk to and the token to show it.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// The gateway's base URL, http:// or https:// (listen turns it into ws:// or wss://).
    /// https:// trusts the system's CAs, or those of the PEM file SSL_CERT_FILE names.
    #[arg(
        help_heading = "Gateway",
        long,
        env = "WSGATE_URL",
        value_name = "WSGATE_URL",
        default_value = "http://127.0.0.1:8000",
        value_parser = parse_base_url
    )]
    pub url: Url,

    /// The token to send. Without it, one is minted with the configured secret (JWT_SECRET or
    /// JWT_SECRET_FILE, as the gateway has it).
    #[arg(help_heading = "Gateway", long, env = "WSGATE_TOKEN", value_name = "WSGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// The key to mint with, and the claims the gateway checks (a minted token carries
    /// JWT_ISSUER and JWT_AUDIENCE when they are set).
    #[command(flatten)]
    pub key: AuthArgs,
}

/// [`GatewayArgs`] plus the admin listener, for the admin API and `/ws/stats`.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminTarget {
    #[command(flatten)]
    pub gateway: GatewayArgs,

    /// The admin listener's base URL, when the gateway has one (ADMIN_LISTEN_ADDR). Default:
    /// WSGATE_URL.
    #[arg(help_heading = "Gateway", long, env = "WSGATE_ADMIN_URL", value_name = "WSGATE_ADMIN_URL", value_parser = parse_base_url)]
    pub admin_url: Option<Url>,
}

impl AdminTarget {
    pub fn base(&self) -> &Url {
        self.admin_url.as_ref().unwrap_or(&self.gateway.url)
    }
}

/// A base URL: http(s):// (or ws(s)://, taken as the same host), no query or fragment. A path
/// is kept as a prefix (a gateway behind a proxy at `https://host/realtime`).
fn parse_base_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e} (want a URL like https://gw.example.com)"))?;
    if !matches!(url.scheme(), "http" | "https" | "ws" | "wss") {
        return Err(format!("the scheme must be http:// or https://, got {}://", url.scheme()));
    }
    if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err("want a base URL: a host, perhaps a path, no query".into());
    }
    Ok(url)
}

/// `base` + `path` (which starts with `/`), in the http(s) scheme (`ws: false`) or the
/// ws(s) one (`ws: true`).
pub fn endpoint(base: &Url, path: &str, ws: bool) -> Url {
    let secure = matches!(base.scheme(), "https" | "wss");
    let scheme = match (ws, secure) {
        (false, false) => "http",
        (false, true) => "https",
        (true, false) => "ws",
        (true, true) => "wss",
    };
    let mut url = base.clone();
    // Between the special schemes (http, https, ws, wss) a change always works.
    url.set_scheme(scheme).expect("http(s) and ws(s) are interchangeable");
    url.set_path(&format!("{}{path}", base.path().trim_end_matches('/')));
    url
}

/// The TLS client configuration for https:// and wss://: the ring provider (the one fred and
/// reqwest are built with, named here so no process-wide default is needed) and the system's
/// CA store, or the PEM file `SSL_CERT_FILE` names (directories: `SSL_CERT_DIR`).
pub fn tls_config() -> Result<rustls::ClientConfig, CliError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        let why = if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) };
        return Err(CliError::Usage(format!(
            "no trusted CA certificate found for https://{why}: install the system's CA bundle or set SSL_CERT_FILE"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Local(format!("TLS set-up: {e}")))?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

fn is_secure(url: &Url) -> bool {
    matches!(url.scheme(), "https" | "wss")
}

/// An HTTP client for `base`: TLS as [`tls_config`] for https://, no redirects (a `POST`
/// redirected would turn into a `GET`: the answer names the new place instead).
pub fn client(base: &Url) -> Result<reqwest::Client, CliError> {
    let b = reqwest::Client::builder()
        .user_agent(concat!("wsgate-cli/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    let b = if is_secure(base) { b.use_preconfigured_tls(tls_config()?) } else { b.tls_built_in_root_certs(false) };
    b.build().map_err(|e| CliError::Local(format!("HTTP client set-up: {e}")))
}

/// Sends `req` (`what`: "POST /api/events", for messages) and returns the body of a 2xx answer.
/// Any other status is [`CliError::Refused`] with the gateway's `error` text.
pub async fn send(req: reqwest::RequestBuilder, what: &str) -> Result<String, CliError> {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            let url = e.url().map(|u| u.to_string()).unwrap_or_default();
            return Err(failure(&url, &e));
        }
    };
    let status = resp.status();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = resp.text().await.map_err(|e| CliError::Lost(format!("reading the answer to {what}: {e}")))?;
    if status.is_success() {
        return Ok(body);
    }
    let mut message = error_text(&body);
    if let (true, Some(to)) = (status.is_redirection(), location) {
        message = format!("redirected to {to}: use that URL");
    }
    Err(CliError::Refused { what: what.to_owned(), status: status.as_u16(), message })
}

/// The gateway's `{"error": "..."}`, or the body itself when it is not that.
pub fn error_text(body: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) if v["error"].is_string() => v["error"].as_str().unwrap_or_default().to_owned(),
        _ if body.trim().is_empty() => "(no body)".to_owned(),
        _ => body.trim().chars().take(500).collect(),
    }
}

/// Adds `Authorization: Bearer <token>`.
pub fn bearer(req: reqwest::RequestBuilder, token: &str) -> reqwest::RequestBuilder {
    req.header(reqwest::header::AUTHORIZATION, format!("Bearer {token}"))
}

/// A connection failure, with a TLS failure told apart (and an untrusted certificate named so
/// the operator knows what to do).
pub fn failure(url: &str, e: &(dyn std::error::Error + 'static)) -> CliError {
    if let Some(tls) = find_rustls(e) {
        let reason = match tls {
            // BadSignature: a CA of the same name as the signer, but not the signer.
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            ) => format!(
                "the server's certificate is not trusted here ({tls}): if a private CA signed it, set \
                 SSL_CERT_FILE to that CA's PEM file"
            ),
            rustls::Error::InvalidCertificate(_) => format!("the server's certificate is refused ({tls})"),
            other => other.to_string(),
        };
        return CliError::Tls { url: url.to_owned(), reason };
    }
    // The innermost cause says most ("Connection refused"); the outer ones only that a
    // request failed.
    let mut reason = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        reason = s.to_string();
        cur = s.source();
    }
    CliError::Unreachable { url: url.to_owned(), reason }
}

/// The rustls error in `e`'s chain. `io::Error::source` skips the error it wraps, so each
/// `io::Error` is opened by hand.
fn find_rustls<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if let Some(t) = find_rustls(inner) {
                return Some(t);
            }
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_host_and_a_path_prefix() {
        let u = parse_base_url("https://gw.example.com").unwrap();
        assert_eq!(endpoint(&u, "/ws/tasks", true).as_str(), "wss://gw.example.com/ws/tasks");
        assert_eq!(endpoint(&u, "/api/events", false).as_str(), "https://gw.example.com/api/events");
        let u = parse_base_url("http://127.0.0.1:8000/realtime/").unwrap();
        assert_eq!(endpoint(&u, "/ws/tasks", true).as_str(), "ws://127.0.0.1:8000/realtime/ws/tasks");
        let u = parse_base_url("wss://gw:9443").unwrap();
        assert_eq!(endpoint(&u, "/ws/stats", false).as_str(), "https://gw:9443/ws/stats");
        for bad in ["gw.example.com", "ftp://gw", "http://gw/?a=1", "unix:/tmp/s"] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_text_is_the_error_field() {
        assert_eq!(error_text(r#"{"error":"token expired"}"#), "token expired");
        assert_eq!(error_text(""), "(no body)");
        assert_eq!(error_text("plain"), "plain");
    }
}
