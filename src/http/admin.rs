//! The admin API (service tokens with the `admin` scope): disconnect a user everywhere, list
//! live channels, read history; and channel presence (the `publish` scope suffices).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::header;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

use super::publish::read_body;
use super::respond::{error, json_bytes, json_response, service_token, unavailable, Body};
use super::router::percent_decode;
use crate::auth::ServiceScope;
use crate::broker::HistoryQuery;
use crate::channel;
use crate::disconnect::Disconnect;
use crate::event::MAX_USER_BYTES;
use crate::history::StreamId;
use crate::state::AppState;

/// `GET /api/history`: the default and the largest `limit`.
pub const HISTORY_DEFAULT_LIMIT: usize = 100;
pub const HISTORY_MAX_LIMIT: usize = 1000;
/// Largest body `POST /api/users/{sub}/disconnect` reads (it takes one boolean).
const DISCONNECT_BODY_BYTES: usize = 1024;

/// `POST /api/users/{sub}/disconnect`, optional body `{"reconnect": false}`.
pub async fn disconnect(req: Request<Incoming>, sub: &str, st: &Arc<AppState>) -> Response<Body> {
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Options {
        #[serde(default)]
        reconnect: bool,
    }
    let (parts, body) = req.into_parts();
    if let Err(r) = service_token(st, &parts, ServiceScope::Admin).await {
        return r;
    }
    let user = percent_decode(sub);
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return error(StatusCode::BAD_REQUEST, &format!("the user id must be 1 to {MAX_USER_BYTES} bytes"));
    }
    let bytes = match read_body(&parts, body, DISCONNECT_BODY_BYTES).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let options = if bytes.iter().all(u8::is_ascii_whitespace) {
        Options::default()
    } else {
        let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
            return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
        }
        match serde_json::from_slice::<Options>(&bytes) {
            Ok(o) => o,
            Err(e) => {
                let msg = format!("body must be {{\"reconnect\": true|false}} (or empty): {e}");
                return error(StatusCode::BAD_REQUEST, &msg);
            }
        }
    };
    let how = if options.reconnect { Disconnect::Reconnect } else { Disconnect::Revoked };
    let n = st.fleet.disconnect(&user, how).await;
    tracing::info!(user = %crate::logging::escaped(&user), disconnected = n, reason = how.reason(), "operator disconnect");
    json_response(StatusCode::OK, &json!({ "user": user, "disconnected": n }))
}

/// `GET /api/channels?prefix=<p>`.
pub async fn channels(req: Request<Incoming>, st: &Arc<AppState>) -> Response<Body> {
    let (parts, _) = req.into_parts();
    if let Err(r) = service_token(st, &parts, ServiceScope::Admin).await {
        return r;
    }
    let mut prefix = String::new();
    for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        match &*k {
            "prefix" if v.is_empty() || channel::valid_name(&v) => prefix = v.into_owned(),
            "prefix" => return error(StatusCode::BAD_REQUEST, "\"prefix\" must be the start of a channel name"),
            other => return error(StatusCode::BAD_REQUEST, &format!("unknown query parameter {other:?}")),
        }
    }
    let list: Vec<Value> =
        st.fleet.channels(&prefix).await.into_iter().map(|(c, n)| json!({"channel": c, "subscribers": n})).collect();
    json_response(StatusCode::OK, &json!({ "channels": list }))
}

/// `GET /api/history?channel=<name>&since=<id>&limit=<n>`.
pub async fn history(req: Request<Incoming>, st: &Arc<AppState>) -> Response<Body> {
    let (parts, _) = req.into_parts();
    if let Err(r) = service_token(st, &parts, ServiceScope::Admin).await {
        return r;
    }
    let (mut channel, mut since, mut limit) = (None, None, HISTORY_DEFAULT_LIMIT);
    for (k, v) in form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()) {
        match &*k {
            "channel" if channel::valid_name(&v) => channel = Some(v.into_owned()),
            "channel" => return error(StatusCode::BAD_REQUEST, &channel::Refusal::InvalidChannel.message(0)),
            "since" => match v.parse::<StreamId>() {
                Ok(id) => since = Some(id),
                Err(()) => {
                    return error(StatusCode::BAD_REQUEST, "\"since\" must be an event id like 1732262400000-0");
                }
            },
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=HISTORY_MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    let msg = format!("\"limit\" must be a whole number from 1 to {HISTORY_MAX_LIMIT}");
                    return error(StatusCode::BAD_REQUEST, &msg);
                }
            },
            other => return error(StatusCode::BAD_REQUEST, &format!("unknown query parameter {other:?}")),
        }
    }
    let q = HistoryQuery { channel: channel.as_deref(), since, limit };
    match st.broker.history(q).await {
        Ok(page) => {
            // The frames are JSON already: spliced in as they are, not parsed and re-encoded.
            let mut body = BytesMut::with_capacity(64 + page.events.iter().map(|f| f.len() + 1).sum::<usize>());
            body.put_slice(b"{\"events\":[");
            for (i, f) in page.events.iter().enumerate() {
                if i > 0 {
                    body.put_u8(b',');
                }
                body.put_slice(f.as_bytes());
            }
            body.put_slice(b"],\"last_id\":");
            let last = serde_json::to_vec(&page.last_id.map(|id| id.to_string())).unwrap_or_default();
            body.put_slice(&last);
            body.put_u8(b'}');
            json_bytes(StatusCode::OK, Bytes::from(body))
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

/// `GET /api/channels/{name}/presence`: who is in a channel across the fleet.
pub async fn presence(req: Request<Incoming>, name: &str, st: &Arc<AppState>) -> Response<Body> {
    let (parts, _) = req.into_parts();
    if let Err(r) = service_token(st, &parts, ServiceScope::Publish).await {
        return r;
    }
    let name = percent_decode(name);
    if !channel::valid_name(&name) {
        return error(StatusCode::BAD_REQUEST, &channel::Refusal::InvalidChannel.message(0));
    }
    let users: Vec<Value> =
        st.fleet.presence(&name).await.into_iter().map(|(u, n)| json!({"user": u, "connections": n})).collect();
    json_response(StatusCode::OK, &json!({ "channel": name, "users": users }))
}
