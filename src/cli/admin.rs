//! The operator's endpoints: `stats` (`GET /ws/stats`) and the admin API (`admin` scope):
//! `channels`, `history`, `disconnect`. All on `--admin-url`, which is `--url` unless the
//! gateway has an admin listener (`ADMIN_LISTEN_ADDR`). Each prints the gateway's JSON answer.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::net::{self, AdminTarget};
use super::token::token_or_mint;
use super::{print_line, CliError};

/// Lifetime of a token minted for one admin call.
const MINTED_TTL: Duration = Duration::from_secs(300);

/// What a path segment may carry unencoded: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(clap::Args, Debug, Clone)]
pub struct StatsArgs {
    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChannelsArgs {
    /// Only the channels whose name starts with this.
    #[arg(help_heading = "Query", long)]
    pub prefix: Option<String>,

    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(clap::Args, Debug, Clone)]
pub struct HistoryArgs {
    /// A channel's events. Default: the events published without a channel.
    #[arg(help_heading = "Query", long)]
    pub channel: Option<String>,

    /// Only the events after this id.
    #[arg(help_heading = "Query", long, value_name = "ID")]
    pub since: Option<String>,

    /// At most this many events (the gateway's default: 100, at most 1000).
    #[arg(help_heading = "Query", long, value_name = "N")]
    pub limit: Option<u32>,

    #[command(flatten)]
    pub target: AdminTarget,
}

#[derive(clap::Args, Debug, Clone)]
pub struct DisconnectArgs {
    /// The user (token subject) whose connections close.
    #[arg(value_name = "SUB")]
    pub sub: String,

    /// Close with 1012 (reconnect; the same token still works) instead of 4001 (revoked: do
    /// not reconnect with the same token).
    #[arg(long)]
    pub reconnect: bool,

    #[command(flatten)]
    pub target: AdminTarget,
}

/// The admin token: `--token`, or one minted with the `admin` scope.
fn admin_token(t: &AdminTarget) -> Result<String, CliError> {
    let g = &t.gateway;
    token_or_mint(g.token.as_deref(), &g.key, "wsgate-cli", Some("admin"), &[], MINTED_TTL)
}

/// `GET path?query` on the admin base with an admin token; prints the answer.
async fn get(t: &AdminTarget, path: &str, query: &[(&str, String)]) -> Result<(), CliError> {
    let token = admin_token(t)?;
    let mut url = net::endpoint(t.base(), path, false);
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    let req = net::bearer(net::client(t.base())?.get(url), &token);
    let answer = net::send(req, &format!("GET {path}")).await?;
    print_line(answer.trim())
}

pub async fn stats(a: StatsArgs) -> Result<(), CliError> {
    // /ws/stats needs no token: none is minted, so no key is needed either.
    let t = &a.target;
    let mut req = net::client(t.base())?.get(net::endpoint(t.base(), "/ws/stats", false));
    if let Some(token) = t.gateway.token.as_deref().filter(|s| !s.is_empty()) {
        req = net::bearer(req, token);
    }
    let answer = net::send(req, "GET /ws/stats").await?;
    print_line(answer.trim())
}

pub async fn channels(a: ChannelsArgs) -> Result<(), CliError> {
    let query: Vec<(&str, String)> = a.prefix.into_iter().map(|p| ("prefix", p)).collect();
    get(&a.target, "/api/channels", &query).await
}

pub async fn history(a: HistoryArgs) -> Result<(), CliError> {
    let mut query = Vec::new();
    query.extend(a.channel.map(|c| ("channel", c)));
    query.extend(a.since.map(|s| ("since", s)));
    query.extend(a.limit.map(|n| ("limit", n.to_string())));
    get(&a.target, "/api/history", &query).await
}

pub async fn disconnect(a: DisconnectArgs) -> Result<(), CliError> {
    let t = &a.target;
    let token = admin_token(t)?;
    let path = format!("/api/users/{}/disconnect", utf8_percent_encode(&a.sub, SEGMENT));
    let body = serde_json::json!({ "reconnect": a.reconnect }).to_string();
    let req = net::bearer(net::client(t.base())?.post(net::endpoint(t.base(), &path, false)), &token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    let answer = net::send(req, "POST /api/users/{sub}/disconnect").await?;
    print_line(answer.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sub_is_one_path_segment() {
        assert_eq!(utf8_percent_encode("a/b c?é%", SEGMENT).to_string(), "a%2Fb%20c%3F%C3%A9%25");
        assert_eq!(utf8_percent_encode("alice-1.x_y~", SEGMENT).to_string(), "alice-1.x_y~");
    }
}
