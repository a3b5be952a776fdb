//! `wsgate publish`: one event through `POST /api/events`.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use super::net::{self, GatewayArgs};
use super::token::token_or_mint;
use super::{print_line, CliError};

/// Lifetime of a token minted for one publish.
const MINTED_TTL: Duration = Duration::from_secs(300);

#[derive(clap::Args, Debug, Clone)]
pub struct PublishArgs {
    /// The event type (1 to 128 characters).
    #[arg(help_heading = "Event", long = "type", value_name = "TYPE")]
    pub kind: String,

    /// The event data, as JSON: inline, @file to read a file, @- to read standard input.
    /// Default: null.
    #[arg(help_heading = "Event", long, value_name = "JSON|@FILE|@-")]
    pub data: Option<String>,

    /// Deliver only to this user (repeatable). Default: every connected client.
    #[arg(help_heading = "Event", long = "user", value_name = "SUB", conflicts_with = "channel")]
    pub users: Vec<String>,

    /// Deliver only to this channel's subscribers.
    #[arg(help_heading = "Event", long)]
    pub channel: Option<String>,

    /// A retry with the same key within the gateway's window publishes nothing new and gets
    /// the first event's id.
    #[arg(help_heading = "Event", long, value_name = "KEY")]
    pub idempotency_key: Option<String>,

    #[command(flatten)]
    pub gateway: GatewayArgs,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// As given, byte for byte (the gateway passes it on the same way).
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    users: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
}

pub async fn run(a: PublishArgs) -> Result<(), CliError> {
    let data = match a.data.as_deref() {
        None => None,
        Some(d) => Some(read_data(d)?),
    };
    let data: Option<Box<RawValue>> = match data {
        None => None,
        Some(text) => {
            Some(serde_json::from_str(text.trim()).map_err(|e| CliError::Usage(format!("--data is not JSON: {e}")))?)
        }
    };
    let body = Body { kind: &a.kind, data: data.as_deref(), users: &a.users, channel: a.channel.as_deref() };
    let body = serde_json::to_vec(&body).map_err(|e| CliError::Local(e.to_string()))?;
    let g = &a.gateway;
    let token = token_or_mint(g.token.as_deref(), &g.key, "wsgate-cli", Some("publish"), &[], MINTED_TTL)?;
    let url = net::endpoint(&g.url, "/api/events", false);
    let mut req = net::bearer(net::client(&g.url)?.post(url), &token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    if let Some(k) = &a.idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let answer = net::send(req, "POST /api/events").await?;
    print_line(answer.trim())
}

/// `--data`: the JSON itself, `@path`, or `@-` for standard input.
fn read_data(arg: &str) -> Result<String, CliError> {
    match arg.strip_prefix('@') {
        None => Ok(arg.to_owned()),
        Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| CliError::Usage(format!("--data @-: cannot read standard input: {e}")))?;
            Ok(s)
        }
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("--data @{path}: cannot read it: {e}")))
        }
    }
}
