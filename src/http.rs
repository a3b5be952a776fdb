//! The hyper accept loop, routing, and the HTTP endpoints; every error is JSON.
//!
//! HTTP/1.1 only (keep-alive for publishers, upgrades for browsers): an upgraded connection is
//! downcast back to its `TcpStream`, which lets the session gate reads on socket readiness and
//! drops hyper's per-connection buffers. HTTP/2 would need hyper's auto builder, whose rewind
//! wrapper hides the TcpStream.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{query_param, token_from_parts, AuthError};
use crate::broker::{PublishError, PublishOptions};
use crate::event::{now_ms, Event, PublishRequest};
use crate::idempotency;
use crate::limits::{client_ip, Refusal as LimitRefusal};
use crate::session::{self, Peer};
use crate::state::AppState;
use crate::stats;

pub type Body = Full<Bytes>;

/// How long a client may take to send request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A too-large body up to this size is read and discarded before the 413 (see `publish`).
const DISCARD_UP_TO: u64 = 8 * 1024 * 1024;
/// ...for at most this long.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long in-flight HTTP requests get to finish once the server stops.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// Accepts connections until `shutdown` is cancelled, then gives in-flight HTTP requests a
/// short grace period. Upgraded WebSockets are not HTTP connections any more: the app closes
/// them (with 1001) through the hub before cancelling this loop.
pub async fn serve(listener: TcpListener, st: Arc<AppState>, shutdown: CancellationToken) {
    // hyper-util's GracefulShutdown does not take upgradeable connections, so each connection
    // task watches `shutdown` itself and the tracker waits for them.
    let conns = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning; the limit may clear.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let st = st.clone();
        let peer = peer.ip();
        let svc = service_fn(move |req| {
            let st = st.clone();
            async move { Ok::<_, Infallible>(route(req, st, peer).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            // Publishers that pipeline requests get their answers in one write.
            .pipeline_flush(true)
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let shutdown = shutdown.clone();
        conns.spawn(async move {
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
        });
    }
    drop(listener);
    conns.close();
    let _ = tokio::time::timeout(HTTP_GRACE, conns.wait()).await;
}

async fn route(req: Request<Incoming>, st: Arc<AppState>, peer: IpAddr) -> Response<Body> {
    let path = req.uri().path();
    let allowed = match path {
        "/ws/tasks" | "/ws" | "/ws/stats" | "/live" | "/ready" | "/health" | "/metrics" => "GET",
        "/api/events" => "POST",
        "/demo" | "/demo/" | "/demo/wsgate.js" if st.listen.demo_page => "GET",
        p if presence_channel(p).is_some() => "GET",
        _ => return error(StatusCode::NOT_FOUND, &format!("no such endpoint: {path}")),
    };
    // HEAD is answered wherever GET is (hyper leaves the body out); uptime checks use it.
    let method_ok = req.method().as_str() == allowed || (allowed == "GET" && req.method() == hyper::Method::HEAD);
    if !method_ok {
        let allow = if allowed == "GET" { "GET, HEAD" } else { allowed };
        let mut r = error(StatusCode::METHOD_NOT_ALLOWED, &format!("{path} accepts {allow} only"));
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        return r;
    }
    match path {
        "/ws/tasks" | "/ws" => upgrade(req, &st, peer).await,
        "/api/events" => publish(req, &st).await,
        "/ws/stats" => json_response(StatusCode::OK, &stats::ws_stats(&st).await),
        "/live" => json_response(StatusCode::OK, &json!({"status": "ok"})),
        "/ready" => {
            if st.draining.load(Ordering::Acquire) {
                json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "draining"}))
            } else if !st.broker.status().ready {
                // Redis mode, start-up: not yet following the fleet's events (bounded wait).
                json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({"status": "starting"}))
            } else {
                json_response(StatusCode::OK, &json!({"status": "ready"}))
            }
        }
        "/health" => json_response(StatusCode::OK, &stats::health(&st)),
        "/metrics" => {
            let status = st.broker.status();
            let ready = status.ready && !st.draining.load(Ordering::Acquire);
            let connected = status.redis_state == "connected";
            st.metrics.set_status(status.redis_enabled, connected, status.local_only, ready);
            let mut r = Response::new(Full::new(Bytes::from(st.metrics.render())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        "/demo" | "/demo/" => static_file(DEMO_HTML, "text/html; charset=utf-8"),
        "/demo/wsgate.js" => static_file(JS_CLIENT, "text/javascript; charset=utf-8"),
        p => match presence_channel(p).map(percent_decode) {
            Some(channel) => presence(req, channel, &st).await,
            None => unreachable!("every routed path is matched above"),
        },
    }
}

/// The `{name}` of `/api/channels/{name}/presence` (still percent-encoded).
fn presence_channel(path: &str) -> Option<&str> {
    path.strip_prefix("/api/channels/")?.strip_suffix("/presence").filter(|n| !n.contains('/'))
}

/// `GET /api/channels/{name}/presence`: who is in a channel across the fleet (service token).
async fn presence(req: Request<Incoming>, name: String, st: &Arc<AppState>) -> Response<Body> {
    let (parts, _) = req.into_parts();
    let token = token_from_parts(&parts, false).unwrap_or_default();
    if let Err(e) = st.auth.verify_publisher_async(&token).await {
        return auth_error(st, &e);
    }
    if !crate::channel::valid_name(&name) {
        return error(StatusCode::BAD_REQUEST, &crate::channel::Refusal::InvalidChannel.message(0));
    }
    let users: Vec<Value> =
        st.fleet.presence(&name).await.into_iter().map(|(u, n)| json!({"user": u, "connections": n})).collect();
    json_response(StatusCode::OK, &json!({ "channel": name, "users": users }))
}

/// `%XX` escapes decoded; an invalid one is kept as is (and then fails name validation).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (b[i], b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `GET /ws/tasks`: checks, then answers 101 and hands the socket to a session task.
async fn upgrade(mut req: Request<Incoming>, st: &Arc<AppState>, peer_addr: IpAddr) -> Response<Body> {
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
    // Cheap refusals before the token's signature is checked.
    let ip = client_ip(peer_addr, req.headers(), &st.listen.trusted_proxies);
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

    // Nothing of the request outlives the upgrade: the session task would otherwise keep its
    // headers (and hyper's read buffer, through `read_buf`) for the socket's whole life,
    // which is most of an idle connection's memory.
    let since = req.uri().query().and_then(|q| query_param(q, "since"));
    let mut channels: Vec<String> = Vec::new();
    for name in req.uri().query().and_then(|q| query_param(q, "channels")).unwrap_or_default().split(',') {
        let name = name.trim();
        if !name.is_empty() && !channels.iter().any(|c| c == name) {
            channels.push(name.to_string());
        }
    }
    // Counted from here until the session ends (the admission travels with it).
    let admission = match st.conn_limits.admit(ip, &claims.sub) {
        Ok(a) => a,
        Err(r) => return limit_refusal(st, r),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    drop(req);
    let peer = Peer {
        user: claims.sub,
        valid_until: claims.exp.saturating_add(st.leeway.as_secs()),
        since,
        grants: claims.channels,
        channels,
    };
    let st2 = st.clone();
    let session_rt = st.session_rt.clone();
    st.sessions.spawn_on(
        async move {
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
            let cfg = Some(st2.ws_config);
            let ws = match early {
                None => WebSocketStream::from_raw_socket(stream, Role::Server, cfg).await,
                Some(bytes) => WebSocketStream::from_partially_read(stream, bytes, Role::Server, cfg).await,
            };
            session::run(ws, st2.hub.clone(), st2.broker.clone(), peer, st2.session_settings).await;
        },
        &session_rt,
    );

    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let hs = r.headers_mut();
    hs.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    hs.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    hs.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    r
}

/// `POST /api/events`. Cheap checks first (token, rate, headers), then the body, read up to
/// the limit and never beyond.
async fn publish(req: Request<Incoming>, st: &Arc<AppState>) -> Response<Body> {
    let accepted_at = Instant::now();
    let r = publish_inner(req, st, accepted_at).await;
    if r.status() != StatusCode::ACCEPTED {
        st.metrics.publish_rejected(r.status().as_u16());
    }
    r
}

async fn publish_inner(req: Request<Incoming>, st: &Arc<AppState>, accepted_at: Instant) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let token = token_from_parts(&parts, false).unwrap_or_default();
    let claims = match st.auth.verify_publisher_async(&token).await {
        Ok(c) => c,
        Err(e) => return auth_error(st, &e),
    };
    if let Some(wait) = st.rate_limited(&claims.sub) {
        let mut r = error(StatusCode::TOO_MANY_REQUESTS, "publish rate limit exceeded for this token subject");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return r;
    }
    let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json");
    }
    let limit = st.publish.max_body_bytes;
    let too_large = || {
        let mut r = error(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {limit} bytes"));
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        // Answering while the client is still sending, then closing, makes the kernel reset
        // the connection, and the client can lose the 413 (seen with httpx). A body of
        // moderate size is read and thrown away first (nothing is kept), so the answer
        // arrives; a huge one is refused at once.
        if n <= DISCARD_UP_TO {
            let _ = tokio::time::timeout(DISCARD_TIMEOUT, discard(body)).await;
        }
        return too_large();
    }
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("could not read body: {e}")),
    };
    let req = match PublishRequest::parse(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.0),
    };
    let idempotency = match parts.headers.get("idempotency-key") {
        None => None,
        Some(v) => match idempotency::parse_key(&claims.sub, v.as_bytes(), &bytes) {
            Ok(k) => Some(k),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        },
    };
    // The ULID is the event's identity until the broker gives it its stream position.
    let event = Event { id: st.ids.next_id(), kind: req.kind, data: req.data, ts: now_ms(), audience: req.audience };
    let published = match st.broker.publish(event, PublishOptions { accepted_at, idempotency }).await {
        Ok(p) => p,
        Err(PublishError::KeyReused) => {
            return error(StatusCode::UNPROCESSABLE_ENTITY, &PublishError::KeyReused.to_string());
        }
        Err(e) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &format!("event not accepted: {e}"));
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
    };
    let mut r = json_response(StatusCode::ACCEPTED, &json!({ "id": published.id }));
    if published.replayed {
        st.metrics.idempotent_replays.inc();
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    } else {
        st.metrics.events_published.inc();
    }
    r
}

fn limit_refusal(st: &AppState, r: LimitRefusal) -> Response<Body> {
    st.metrics.limit_refused(r.label());
    let status = StatusCode::from_u16(r.status()).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
    let mut resp = error(status, &r.message(st.conn_limits.limits()));
    let retry = match r {
        LimitRefusal::UpgradeRate(wait) => Some(wait.as_secs_f64().ceil().max(1.0) as u64),
        LimitRefusal::Full => Some(1),
        LimitRefusal::PerUser | LimitRefusal::PerIp => None,
    };
    if let Some(secs) = retry {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

fn auth_error(st: &AppState, e: &AuthError) -> Response<Body> {
    st.metrics.auth_failure(e);
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let mut r = error(status, &e.message());
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// The live demo page and the JS client it loads, built into the binary.
const DEMO_HTML: &str = include_str!("../clients/demo/index.html");
const JS_CLIENT: &str = include_str!("../clients/js/wsgate.js");

fn static_file(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn json_response(status: StatusCode, v: &impl serde::Serialize) -> Response<Body> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn error(status: StatusCode, message: &str) -> Response<Body> {
    json_response(status, &json!({ "error": message }))
}

/// Reads a body to its end, keeping nothing.
async fn discard(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}
