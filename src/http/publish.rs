//! `POST /api/events` and `POST /api/events/batch`: cheap checks first (token, rate, headers),
//! then the body, read up to the limit and never beyond, parsed once.

// A refusal is the finished response (`Err(Response)`): it goes straight back to hyper, once
// per request, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::respond::{error, json_response, service_token, unavailable, Body};
use crate::auth::{Claims, ServiceScope};
use crate::broker::{PublishError, PublishOptions, Published};
use crate::event::{now_ms, Event, PublishRequest};
use crate::idempotency::{self, IdemKey, RequestKey};
use crate::state::AppState;

/// A too-large body up to this size is read and discarded before the 413 (see [`read_body`]).
const DISCARD_UP_TO: u64 = 8 * 1024 * 1024;
/// ...for at most this long.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(5);
/// Most events one batch may carry (the contract's bound).
pub const MAX_BATCH: usize = 1000;

/// `POST /api/events`.
pub async fn publish(req: Request<Incoming>, st: &Arc<AppState>) -> Response<Body> {
    counted(st, publish_one(req, st, Instant::now()).await)
}

/// `POST /api/events/batch`.
pub async fn publish_batch(req: Request<Incoming>, st: &Arc<AppState>) -> Response<Body> {
    counted(st, batch(req, st, Instant::now()).await)
}

fn counted(st: &AppState, r: Response<Body>) -> Response<Body> {
    if r.status() != StatusCode::ACCEPTED {
        st.metrics.publish_rejected(r.status().as_u16());
    }
    r
}

async fn publish_one(req: Request<Incoming>, st: &Arc<AppState>, accepted_at: Instant) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let (claims, bytes) = match checked_body(st, &parts, body, 1).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let req = match PublishRequest::parse(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let key = match request_key(&parts, &claims, &bytes) {
        Ok(k) => k.map(|k| k.single()),
        Err(r) => return r,
    };
    match accept(st, req, key, accepted_at).await {
        Ok(p) => {
            let mut r = json_response(StatusCode::ACCEPTED, &json!({ "id": p.id }));
            count_accepted(st, &mut r, p.replayed as usize, 1);
            r
        }
        Err(r) => r,
    }
}

/// All or nothing for what can be checked: every item is validated before any is published.
/// Items are published in order through the same path as single events, so they reach each
/// client in that order. An `Idempotency-Key` covers each item once (see
/// [`crate::idempotency`]): a retry after a partial failure (a `503` midway) publishes only the
/// items still missing and answers every id.
async fn batch(req: Request<Incoming>, st: &Arc<AppState>, accepted_at: Instant) -> Response<Body> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let (parts, body) = req.into_parts();
    let (claims, bytes) = match checked_body(st, &parts, body, 0).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let items = match serde_json::from_slice::<Batch>(&bytes) {
        Ok(b) => b.events,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return error(StatusCode::BAD_REQUEST, &format!("body is not valid JSON: {e}"));
        }
        Err(_) => {
            return error(StatusCode::BAD_REQUEST, "body must be {\"events\": [<event>, ...]} and nothing else");
        }
    };
    if items.is_empty() || items.len() > MAX_BATCH {
        let msg = format!("\"events\" must hold 1 to {MAX_BATCH} events, got {}", items.len());
        return error(StatusCode::BAD_REQUEST, &msg);
    }
    let mut parsed = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match PublishRequest::parse(item.get().as_bytes()) {
            Ok(r) => parsed.push(r),
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.in_batch(i)),
        }
    }
    if let Some(r) = rate_limited(st, &claims, parsed.len()) {
        return r;
    }
    let key = match request_key(&parts, &claims, &bytes) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let n = parsed.len();
    let mut ids = Vec::with_capacity(n);
    let mut replayed = 0;
    for (i, req) in parsed.into_iter().enumerate() {
        match accept(st, req, key.as_ref().map(|k| k.item(i)), accepted_at).await {
            Ok(p) => {
                replayed += p.replayed as usize;
                ids.push(p.id);
            }
            Err(mut r) if i > 0 => {
                // Say what was kept: the items before this one were accepted.
                let accepted: Vec<&str> = ids.iter().map(String::as_str).collect();
                let msg = format!(
                    "events[{i}] not accepted; events[0..{i}] were (ids {accepted:?}): retry with the same \
                     Idempotency-Key to publish the rest exactly once"
                );
                let retry = r.headers_mut().remove(header::RETRY_AFTER);
                let status = r.status();
                let mut out = error(status, &msg);
                if let Some(v) = retry {
                    out.headers_mut().insert(header::RETRY_AFTER, v);
                }
                st.metrics.events_published.inc_by((i - replayed) as u64);
                return out;
            }
            Err(r) => return r,
        }
    }
    let mut r = json_response(StatusCode::ACCEPTED, &json!({ "ids": ids }));
    count_accepted(st, &mut r, replayed, n);
    r
}

/// Token (publish scope), rate (`n` events; 0: counted after the body is parsed), content type,
/// then the body within `MAX_BODY_BYTES`.
async fn checked_body(
    st: &Arc<AppState>,
    parts: &Parts,
    body: Incoming,
    n: usize,
) -> Result<(Claims, Bytes), Response<Body>> {
    let claims = service_token(st, parts, ServiceScope::Publish).await?;
    if n > 0 {
        if let Some(r) = rate_limited(st, &claims, n) {
            return Err(r);
        }
    }
    let ct = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type must be application/json"));
    }
    let bytes = read_body(parts, body, st.publish.max_body_bytes).await?;
    Ok((claims, bytes))
}

fn rate_limited(st: &AppState, claims: &Claims, n: usize) -> Option<Response<Body>> {
    let wait = st.rate_limited(&claims.sub, n)?;
    let r = match wait {
        Some(wait) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "publish rate limit exceeded for this token subject");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        None => error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("a batch of {n} events is larger than PUBLISH_BURST allows; send smaller batches"),
        ),
    };
    Some(r)
}

fn request_key(parts: &Parts, claims: &Claims, body: &[u8]) -> Result<Option<RequestKey>, Response<Body>> {
    match parts.headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => idempotency::parse_key(&claims.sub, v.as_bytes(), body)
            .map(Some)
            .map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

/// Hands one validated event to the broker.
async fn accept(
    st: &AppState,
    req: PublishRequest,
    idempotency: Option<IdemKey>,
    accepted_at: Instant,
) -> Result<Published, Response<Body>> {
    // The ULID is the event's identity until the broker gives it its stream position.
    let event = Event { id: st.ids.next_id(), kind: req.kind, data: req.data, ts: now_ms(), audience: req.audience };
    match st.broker.publish(event, PublishOptions { accepted_at, idempotency }).await {
        Ok(p) => Ok(p),
        Err(PublishError::KeyReused) => {
            Err(error(StatusCode::UNPROCESSABLE_ENTITY, &PublishError::KeyReused.to_string()))
        }
        Err(e) => Err(unavailable(&format!("event not accepted: {e}"))),
    }
}

fn count_accepted(st: &AppState, r: &mut Response<Body>, replayed: usize, n: usize) {
    st.metrics.idempotent_replays.inc_by(replayed as u64);
    st.metrics.events_published.inc_by((n - replayed) as u64);
    if replayed == n {
        r.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
}

/// The body, at most `limit` bytes. A body declared too large gets 413 at once, except that
/// one of moderate size is read and thrown away first (nothing is kept): answering while the
/// client is still sending, then closing, makes the kernel reset the connection, and the
/// client can lose the 413 (seen with httpx).
pub async fn read_body(parts: &Parts, body: Incoming, limit: usize) -> Result<Bytes, Response<Body>> {
    let too_large = || {
        let mut r = error(StatusCode::PAYLOAD_TOO_LARGE, &format!("body larger than {limit} bytes"));
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > limit as u64) {
        if n <= DISCARD_UP_TO {
            let _ = tokio::time::timeout(DISCARD_TIMEOUT, discard(body)).await;
        }
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(error(StatusCode::BAD_REQUEST, &format!("could not read body: {e}"))),
    }
}

/// Reads a body to its end, keeping nothing.
async fn discard(mut body: Incoming) {
    while let Some(Ok(_)) = body.frame().await {}
}
