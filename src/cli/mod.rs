//! Operator subcommands of the binary: `token`, `publish`, `listen`, `stats`.
//!
//! They talk to a running gateway over the same public interface as everyone else
//! (`POST /api/events`, `GET /ws/tasks`, `GET /ws/stats`); `token` mints with the configured
//! key, so `JWT_SECRET` in the environment is all an operator needs.

use std::time::Duration;

use bytes::Bytes;
use clap::Subcommand;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;

use crate::auth::Authenticator;
use crate::config::{Args, Config};

/// Command-line interface. `wsgate --help` prints every setting with its environment name.
#[derive(clap::Parser, Debug)]
#[command(
    name = "wsgate",
    version,
    about = "WebSocket fan-out gateway: backends POST events, browsers receive them.",
    long_about = "WebSocket fan-out gateway.\n\nBrowsers connect to GET /ws/tasks?token=<JWT> and \
                  receive JSON events; backends POST /api/events with a service token. With \
                  REDIS_URL set, instances share one audience through Redis. Every flag can be \
                  set through the environment variable shown in brackets; the flag wins."
)]
pub struct Cli {
    /// An operator subcommand; without one, the gateway runs.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub settings: Args,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Command {
    /// Mint a token with the configured key (JWT_SECRET) and print it.
    Token {
        /// The token's subject (user id or service name).
        #[arg(long)]
        sub: String,
        /// Space-separated scopes, e.g. "publish".
        #[arg(long)]
        scope: Option<String>,
        /// Lifetime, e.g. 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
    },
    /// Publish one event through POST /api/events and print the answer.
    Publish {
        #[command(flatten)]
        target: Target,
        /// The event type.
        #[arg(long = "type")]
        kind: String,
        /// The event data, as JSON.
        #[arg(long, default_value = "null")]
        data: String,
        /// Deliver only to this user (repeatable). Default: everyone.
        #[arg(long = "user")]
        users: Vec<String>,
    },
    /// Connect as a user and print every frame as one JSON line.
    Listen {
        #[command(flatten)]
        target: Target,
        /// The user to connect as when minting a token.
        #[arg(long, default_value = "cli")]
        sub: String,
    },
    /// Print GET /ws/stats.
    Stats {
        #[command(flatten)]
        target: Target,
    },
}

/// Where the gateway is and how to authenticate to it.
#[derive(clap::Args, Debug, Clone)]
pub struct Target {
    /// The gateway's base URL.
    #[arg(long, env = "WSGATE_URL", value_name = "WSGATE_URL", default_value = "http://127.0.0.1:8000")]
    pub url: String,
    /// A token to use. Default: one minted with JWT_SECRET.
    #[arg(long, env = "WSGATE_TOKEN", value_name = "WSGATE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 1h or 7d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use s, m, h or d")),
    };
    Ok(Duration::from_secs(n * mult))
}

/// Runs a subcommand; the error is printed by `main`.
pub async fn run(cmd: Command, cfg: &Config) -> Result<(), String> {
    let auth = Authenticator::new(&cfg.auth).map_err(|e| e.to_string())?;
    let mint = |sub: &str, scope: Option<&str>| {
        if cfg.dev_mode() {
            return Err("no key configured: set JWT_SECRET (or pass --token)".to_string());
        }
        auth.mint(sub, scope, Duration::from_secs(3600))
            .ok_or_else(|| "cannot mint with a public key: pass --token".to_string())
    };
    match cmd {
        Command::Token { sub, scope, ttl } => {
            if cfg.dev_mode() {
                return Err("no key configured: set JWT_SECRET".into());
            }
            let t = auth
                .mint(&sub, scope.as_deref(), ttl)
                .ok_or("tokens can only be minted with JWT_SECRET (a public key or a JWKS cannot sign)")?;
            println!("{t}");
        }
        Command::Publish { target, kind, data, users } => {
            let data: serde_json::Value =
                serde_json::from_str(&data).map_err(|e| format!("--data is not JSON: {e}"))?;
            let mut body = serde_json::json!({ "type": kind, "data": data });
            if !users.is_empty() {
                body["users"] = users.into();
            }
            let token = match target.token {
                Some(t) => t,
                None => mint("wsgate-cli", Some("publish"))?,
            };
            let (status, text) = http(&target.url, "POST", "/api/events", Some(&token), Some(body.to_string())).await?;
            println!("{text}");
            if status != 202 {
                return Err(format!("publish failed with HTTP {status}"));
            }
        }
        Command::Listen { target, sub } => {
            let token = match target.token {
                Some(t) => t,
                None => mint(&sub, None)?,
            };
            let ws_url = format!("{}/ws/tasks?token={token}", target.url.replacen("http", "ws", 1));
            let (mut ws, _) =
                tokio_tungstenite::connect_async(ws_url).await.map_err(|e| format!("cannot connect: {e}"))?;
            while let Some(msg) = ws.next().await {
                match msg.map_err(|e| format!("connection lost: {e}"))? {
                    Message::Text(t) => println!("{t}"),
                    Message::Close(f) => {
                        let f = f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default();
                        return Err(format!("closed by the gateway: {f}"));
                    }
                    _ => {}
                }
            }
        }
        Command::Stats { target } => {
            let (status, text) = http(&target.url, "GET", "/ws/stats", None, None).await?;
            println!("{text}");
            if status != 200 {
                return Err(format!("HTTP {status}"));
            }
        }
    }
    Ok(())
}

/// One HTTP/1.1 request to `base` (http:// only), returning status and body.
async fn http(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(u16, String), String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("WSGATE_URL must start with http:// (got {base:?})"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("cannot reach {base}: {e}"))?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", authority);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(7 * 86400));
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
