//! `wsgate listen`: connect to `/ws/tasks` as a user and print every frame as one JSON line.
//!
//! The token goes in the `Authorization: Bearer` header, not the query: query strings end up
//! in proxies' and load balancers' access logs. The command ends only when the connection
//! does: with the gateway's close code and reason (exit 1), or Ctrl-C.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::Connector;

use super::net::{self, GatewayArgs, CONNECT_TIMEOUT};
use super::token::token_or_mint;
use super::{print_line, CliError};

/// Lifetime of a token minted for a listener; the gateway closes with 1008 at its `exp`.
const MINTED_TTL: Duration = Duration::from_secs(24 * 3600);

#[derive(clap::Args, Debug, Clone)]
pub struct ListenArgs {
    /// The user to connect as (the minted token's sub; with --token, the token's own).
    #[arg(help_heading = "Connection", long, default_value = "cli")]
    pub sub: String,

    /// Resume after this event id: missed events come first (`"recovered": true`).
    #[arg(help_heading = "Connection", long, value_name = "ID")]
    pub since: Option<String>,

    /// Channels to join at connect time, comma-separated (a minted token allows them).
    #[arg(help_heading = "Connection", long, value_delimiter = ',', value_name = "A,B")]
    pub channels: Vec<String>,

    #[command(flatten)]
    pub gateway: GatewayArgs,
}

pub async fn run(a: ListenArgs) -> Result<(), CliError> {
    let g = &a.gateway;
    let token = token_or_mint(g.token.as_deref(), &g.key, &a.sub, None, &a.channels, MINTED_TTL)?;
    let mut url = net::endpoint(&g.url, "/ws/tasks", true);
    {
        let mut q = url.query_pairs_mut();
        if let Some(since) = &a.since {
            q.append_pair("since", since);
        }
        if !a.channels.is_empty() {
            q.append_pair("channels", &a.channels.join(","));
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let shown = url.to_string();
    let mut req = shown.as_str().into_client_request().map_err(|e| CliError::Usage(format!("{shown}: {e}")))?;
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| CliError::Usage("the token holds characters a header cannot carry".into()))?;
    req.headers_mut().insert("authorization", auth);
    let connector = match url.scheme() {
        "wss" => Some(Connector::Rustls(Arc::new(net::tls_config()?))),
        _ => None,
    };
    let handshake = tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector);
    let (mut ws, _) = match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
        Err(_) => {
            let reason = format!("no WebSocket handshake within {CONNECT_TIMEOUT:?}");
            return Err(CliError::Unreachable { url: shown, reason });
        }
        Ok(Err(e)) => return Err(handshake_error(&shown, e)),
        Ok(Ok(ok)) => ok,
    };
    // tungstenite answers the gateway's pings while it reads.
    while let Some(msg) = ws.next().await {
        match msg.map_err(|e| CliError::Lost(e.to_string()))? {
            Message::Text(t) => print_line(t.as_str().trim_end())?,
            Message::Close(Some(f)) => {
                return Err(CliError::Closed { code: f.code.into(), reason: f.reason.to_string() })
            }
            Message::Close(None) => return Err(CliError::Closed { code: 1005, reason: "(no status code)".into() }),
            _ => {}
        }
    }
    Err(CliError::Lost("the stream ended without a close frame".into()))
}

fn handshake_error(url: &str, e: WsError) -> CliError {
    match e {
        WsError::Http(resp) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            CliError::Refused {
                what: "GET /ws/tasks".into(),
                status: resp.status().as_u16(),
                message: net::error_text(&body),
            }
        }
        WsError::Io(io) => net::failure(url, &io),
        WsError::Tls(tls) => net::failure(url, &tls),
        other => CliError::Unreachable { url: url.to_owned(), reason: other.to_string() },
    }
}
