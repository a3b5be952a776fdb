//! `GET /ws/tasks` (alias `/ws`): checks, then `101 Switching Protocols` and a session task.
//!
//! Everything this handler does runs on the one HTTP thread, so it is bounded by the request's
//! size: the query is refused past a length the settings imply, and `channels=` past
//! `MAX_CHANNELS_PER_CONNECTION` names (deduplicated with a set as it is read), before the
//! token's signature is checked.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::respond::{auth_error, error, json_response, limit_refusal, Body};
use crate::auth::{query_param, token_from_parts};
use crate::channel;
use crate::limits::{client_ip, Admission};
use crate::session::{self, Peer};
use crate::state::AppState;

/// Room in the query for everything but `channels=` (a token, `since`, a client's own
/// parameters).
const QUERY_SLACK: usize = 8 * 1024;

/// The longest query an upgrade may carry: a full `channels=` list of the longest names, plus
/// [`QUERY_SLACK`].
pub fn max_query_bytes(max_channels: usize) -> usize {
    max_channels.saturating_mul(channel::MAX_NAME + 1).saturating_add(QUERY_SLACK)
}

/// `channels=a,b,a` → `[a, b]`: in order, without repeats or empty names. Past
/// `MAX_CHANNELS_PER_CONNECTION` the session refuses each name with an error frame
/// (`too_many_channels`), as for a `subscribe`; a list of more than twice that many is refused
/// whole, `Err(())`, as soon as the name past the bound is read (the rest is not read), so one
/// request cannot make thousands of answers.
pub fn parse_channels(list: &str, max: usize) -> Result<Vec<String>, ()> {
    let bound = max.saturating_mul(2);
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if seen.insert(name) {
            if out.len() == bound {
                return Err(());
            }
            out.push(name.to_string());
        }
    }
    Ok(out)
}

pub async fn upgrade(mut req: Request<Incoming>, st: &Arc<AppState>, peer_addr: IpAddr) -> Response<Body> {
    if st.draining.load(Ordering::Acquire) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "instance is shutting down; reconnect to another");
    }
    if let Some(allowed) = &st.listen.allowed_origins {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim_end_matches('/').to_ascii_lowercase();
            if !allowed.contains(&origin) {
                return error(StatusCode::FORBIDDEN, "origin not allowed");
            }
        }
    }
    let max_channels = st.session_settings.max_channels;
    let query = req.uri().query().unwrap_or("");
    let max_query = max_query_bytes(max_channels);
    if query.len() > max_query {
        return error(StatusCode::URI_TOO_LONG, &format!("the query string is longer than {max_query} bytes"));
    }
    let channels = match query_param(query, "channels").map(|l| parse_channels(&l, max_channels)) {
        None => Vec::new(),
        Some(Ok(c)) => c,
        Some(Err(())) => {
            let r = channel::Refusal::TooManyChannels;
            st.metrics.channel_refused(r);
            let msg = format!("channels= names more than {} channels ({})", 2 * max_channels, r.code());
            return json_response(StatusCode::BAD_REQUEST, &json!({ "error": msg, "code": r.code() }));
        }
    };
    let since = query_param(query, "since");
    // Cheap refusals before the token's signature is checked.
    let ip = client_ip(peer_addr, req.headers(), &st.listen.client_ip);
    if let Err(r) = st.conn_limits.check_upgrade_rate(ip) {
        return limit_refusal(st, r);
    }
    let (parts, body) = req.into_parts();
    let token = token_from_parts(&parts, true).unwrap_or_default();
    let claims = match st.auth.verify_async(&token).await {
        Ok(c) => c,
        Err(e) => return auth_error(st, &e),
    };
    req = Request::from_parts(parts, body);

    let h = req.headers();
    let has_token = |name: header::HeaderName, want: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(want))
    };
    // RFC 6455 §4.1: the opening handshake is HTTP/1.1 or later (HTTP/1.0 has no Upgrade).
    if req.version() < hyper::Version::HTTP_11 {
        return error(StatusCode::BAD_REQUEST, "a WebSocket upgrade needs HTTP/1.1");
    }
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        let mut r = error(StatusCode::UPGRADE_REQUIRED, "this endpoint needs a WebSocket upgrade");
        r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        let mut r = error(StatusCode::UPGRADE_REQUIRED, "unsupported Sec-WebSocket-Version; use 13");
        r.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    let accept = derive_accept_key(key.as_bytes());

    // Counted from here until the session ends (the admission travels with it).
    let admission = match st.conn_limits.admit(ip, &claims.sub) {
        Ok(a) => a,
        Err(r) => return limit_refusal(st, r),
    };
    // Nothing of the request outlives the upgrade: the session task would otherwise keep its
    // headers (and hyper's read buffer, through `read_buf`) for the socket's whole life,
    // which is most of an idle connection's memory.
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let peer = Peer {
        user: claims.sub,
        valid_until: claims.exp.saturating_add(st.leeway.as_secs()),
        since,
        grants: claims.channels,
        channels,
    };
    let session_rt = st.session_rt.clone();
    st.sessions.spawn_on(serve_upgraded(on_upgrade, st.clone(), peer, admission), &session_rt);

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    r
}

/// The session task: waits for hyper to finish the 101, takes the socket over to the session
/// runtime, and runs the connection. Its future is what every open connection costs in memory
/// (the tokio task holds it): keep what it holds across `.await`s small.
async fn serve_upgraded(on_upgrade: OnUpgrade, st: Arc<AppState>, peer: Peer, admission: Admission) {
    let _admission = admission;
    let upgraded = match on_upgrade.await {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        tracing::error!("upgraded connection is not a TCP stream");
        return;
    };
    // The socket moves from the HTTP runtime's reactor to the session runtime's.
    let stream = match parts.io.into_inner().into_std().and_then(TcpStream::from_std) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot hand the socket to the session runtime");
            return;
        }
    };
    // A client may pipeline its first frames behind the handshake; hyper has read them.
    let early = (!parts.read_buf.is_empty()).then(|| parts.read_buf.to_vec());
    drop(parts.read_buf);
    let ws = session::wrap(stream, early, st.ws_config);
    session::run(ws, st.hub.clone(), st.broker.clone(), peer, st.session_settings).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an open connection's task holds: the session future (the tokio task is this plus
    /// a header). Most of an idle connection's memory; the figure is printed for the record
    /// (`cargo test --lib task_size -- --nocapture`) and held under a budget so that a change
    /// that makes every connection bigger is noticed.
    #[tokio::test]
    async fn the_session_task_stays_small() {
        let st = AppState::new(crate::config::Config::for_tests("a-unit-test-secret-of-32-bytes-or-more")).unwrap();
        let limiter = crate::limits::Limiter::new(Default::default());
        let admission = limiter.admit(std::net::Ipv4Addr::LOCALHOST.into(), "u").unwrap();
        let peer = Peer { user: "u".into(), valid_until: u64::MAX, since: None, grants: vec![], channels: vec![] };
        let on_upgrade = hyper::upgrade::on(Request::new(()));
        let task = serve_upgraded(on_upgrade, st, peer, admission);
        let size = std::mem::size_of_val(&task);
        eprintln!("task_size: the session future is {size} bytes");
        assert!(size <= 4096, "the session future grew to {size} bytes");
    }

    #[test]
    fn channels_are_deduplicated_and_bounded_while_parsed() {
        assert_eq!(parse_channels("a, b,,a ,c", 3).unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_channels("", 3).unwrap(), Vec::<String>::new());
        assert_eq!(parse_channels("a,b,c,d", 2).unwrap().len(), 4, "up to twice the limit: refused one by one later");
        assert!(parse_channels("a,b,c,d,e", 2).is_err());
        assert_eq!(parse_channels("a,a,a,a,a", 1).unwrap(), ["a"], "repeats do not count");
        // 17,000 names (the audit's 64 KB query) stop at the bound, in linear time.
        let many: Vec<String> = (0..17_000).map(|i| format!("c{i}")).collect();
        assert!(parse_channels(&many.join(","), 100).is_err());
        assert_eq!(max_query_bytes(100), 100 * 201 + 8192);
    }
}
