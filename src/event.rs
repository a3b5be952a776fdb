//! An event, its id, its audience and its wire encoding.
//!
//! An event is parsed and validated once at the edge ([`PublishRequest::parse`]), given an id
//! and a timestamp, and encoded to its frame payload once per instance ([`Event::frame`]); the
//! resulting [`Utf8Bytes`] is cloned by reference count into every outbox.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::protocol::EventFrame;
pub use crate::protocol::FRAME_HEAD;

/// Longest `type`, in characters.
pub const MAX_TYPE_CHARS: usize = 128;
/// Most users one event may name. Bounds the work one request can cause.
pub const MAX_USERS: usize = 10_000;
/// Longest user id, in bytes.
pub const MAX_USER_BYTES: usize = 256;

/// Who an event is for. The hub resolves it against the local registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ids")]
pub enum Audience {
    /// Every connection on every instance.
    All,
    /// Every connection of each named user (deduplicated), wherever it is connected.
    Users(Vec<String>),
    /// Every connection subscribed to this channel, wherever it is connected.
    Channel(String),
}

impl Audience {
    /// The channel, for a channel event.
    pub fn channel(&self) -> Option<&str> {
        match self {
            Audience::Channel(c) => Some(c),
            _ => None,
        }
    }
}

/// An event ready for fan-out: its frame, encoded once where the event entered history (the
/// memory ring, the Redis stream), and who it is for. Also used for frames that are not
/// events (`resync`), which carry no id.
#[derive(Clone, Debug)]
pub struct Dispatch {
    pub frame: Utf8Bytes,
    pub audience: Audience,
    /// Accept time, ms since the epoch (latency metric for events from other instances).
    pub ts: u64,
    /// Only connections registered before the one with this id (see
    /// [`crate::hub::Submitter::watermark`]): an own event delivered late, ahead of the
    /// stream, must not reach connections that registered after it was accepted (they may
    /// have seen it elsewhere, and were not promised it).
    pub before_conn: Option<u64>,
}

/// One accepted event.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    /// Unique across instances and restarts, sorts by time (a ULID).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The publisher's JSON value, byte for byte.
    pub data: Box<RawValue>,
    /// Accept time, ms since the epoch.
    pub ts: u64,
    pub audience: Audience,
}

impl Event {
    /// Encodes the frame payload. Called once per event per instance.
    pub fn frame(&self) -> Utf8Bytes {
        Utf8Bytes::from(self.frame_with_id(&self.id))
    }

    fn frame_with_id(&self, id: &str) -> String {
        let frame =
            EventFrame { id, kind: &self.kind, channel: self.audience.channel(), data: &self.data, ts: self.ts };
        // Serialising borrowed strings and a RawValue cannot fail.
        serde_json::to_string(&frame).unwrap_or_default()
    }

    /// The frame without its opening `{"id":"<id>",`: the Redis publish script puts the stream
    /// id in front once Redis has given it, so the frame is still encoded only once.
    pub fn frame_tail(&self) -> String {
        let mut s = self.frame_with_id("");
        s.replace_range(..FRAME_HEAD.len() + 2, "");
        s
    }

    /// The event as the hub fans it out.
    pub fn dispatch(&self) -> Dispatch {
        Dispatch { frame: self.frame(), audience: self.audience.clone(), ts: self.ts, before_conn: None }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Makes event ids: ULIDs (48-bit ms timestamp + 80 random bits, Crockford base32). The
/// randomness makes them unique across instances and restarts with no coordination; the
/// monotonic generator makes ids made in one process strictly increasing, even within one
/// millisecond, so sequential publishes through one instance sort in publish order.
pub struct IdGenerator {
    // A std Mutex: held for a few nanoseconds, never across an await.
    gen: Mutex<ulid::Generator>,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    pub fn new() -> Self {
        IdGenerator { gen: Mutex::new(ulid::Generator::new()) }
    }

    pub fn next_id(&self) -> String {
        let mut g = self.gen.lock().unwrap_or_else(|p| p.into_inner());
        match g.generate() {
            Ok(id) => id.to_string(),
            // 2^80 ids within one millisecond overflowed: take a fresh random one.
            Err(_) => ulid::Ulid::new().to_string(),
        }
    }
}

/// A validated `POST /api/events` body.
#[derive(Debug)]
pub struct PublishRequest {
    pub kind: String,
    pub data: Box<RawValue>,
    pub audience: Audience,
}

/// Why a publish body was refused (400): the field at fault, when one is, and what is wrong
/// with it. Displays as `"type" is required`; a batch names the item (`events[3].type`).
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest {
    pub field: Option<String>,
    pub message: String,
}

impl BadRequest {
    fn body(message: impl Into<String>) -> BadRequest {
        BadRequest { field: None, message: message.into() }
    }

    fn field(field: &str, message: impl Into<String>) -> BadRequest {
        BadRequest { field: Some(field.to_string()), message: message.into() }
    }

    /// The message for item `index` of a batch: `events[3].type: is required`.
    pub fn in_batch(&self, index: usize) -> String {
        match &self.field {
            Some(f) => format!("events[{index}].{f}: {}", self.message),
            None => format!("events[{index}]: {}", self.message.replace("body ", "item ")),
        }
    }
}

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field:?} {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl PublishRequest {
    /// Parses and validates a body. Fields are checked one by one so that every error names
    /// the field at fault; `data` is kept as raw bytes so it reaches clients byte for byte.
    pub fn parse(body: &[u8]) -> Result<PublishRequest, BadRequest> {
        let fields: Vec<(String, &RawValue)> = match serde_json::from_slice::<RawObject>(body) {
            Ok(o) => o.0,
            Err(e) if e.is_data() => return Err(BadRequest::body("body must be a JSON object")),
            Err(e) => return Err(BadRequest::body(format!("body is not valid JSON: {e}"))),
        };
        let mut kind = None;
        let mut data = None;
        let mut users = None;
        let mut channel = None;
        for (name, raw) in fields {
            match name.as_str() {
                "type" => kind = Some(raw),
                "data" => data = Some(raw),
                "users" => users = Some(raw),
                "channel" => channel = Some(raw),
                other => {
                    return Err(BadRequest::field(
                        other,
                        "is not a known field: expected \"type\", \"data\" and optionally \"users\" or \"channel\"",
                    ))
                }
            }
        }
        let kind = match kind.map(|r| serde_json::from_str::<String>(r.get())) {
            None => return Err(BadRequest::field("type", "is required")),
            Some(Ok(s)) if !s.is_empty() && s.chars().count() <= MAX_TYPE_CHARS => s,
            Some(_) => {
                return Err(BadRequest::field("type", format!("must be a string of 1 to {MAX_TYPE_CHARS} characters")))
            }
        };
        let data = match data {
            Some(raw) => raw.to_owned(),
            None => RawValue::from_string("null".into()).expect("null is JSON"),
        };
        let audience = match (users, channel) {
            (Some(_), Some(_)) => {
                return Err(BadRequest::field("channel", "cannot be given with \"users\": give one or the other"));
            }
            (None, Some(raw)) => match serde_json::from_str::<String>(raw.get()) {
                Ok(c) if crate::channel::valid_name(&c) => Audience::Channel(c),
                _ => {
                    return Err(BadRequest::field(
                        "channel",
                        format!(
                            "must be a string of 1 to {} characters of A-Z a-z 0-9 : _ - . @",
                            crate::channel::MAX_NAME
                        ),
                    ))
                }
            },
            // `null` is refused rather than read as "everyone": a serialiser that writes an
            // empty list as null must not turn a private event into a broadcast.
            (None, None) => Audience::All,
            (Some(raw), None) => {
                let list: Vec<String> = serde_json::from_str(raw.get())
                    .map_err(|_| BadRequest::field("users", "must be a list of user id strings"))?;
                if list.is_empty() {
                    return Err(BadRequest::field("users", "must not be empty (omit it to reach everyone)"));
                }
                if list.len() > MAX_USERS {
                    return Err(BadRequest::field("users", format!("may name at most {MAX_USERS} users")));
                }
                if list.iter().any(|u| u.is_empty() || u.len() > MAX_USER_BYTES) {
                    return Err(BadRequest::field("users", format!("entries must be 1 to {MAX_USER_BYTES} bytes")));
                }
                let mut list = list;
                list.sort_unstable();
                list.dedup();
                Audience::Users(list)
            }
        };
        Ok(PublishRequest { kind, data, audience })
    }
}

/// A JSON object whose values stay raw, in document order (duplicates kept; the last wins).
struct RawObject<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for RawObject<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = RawObject<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, &'de RawValue>()? {
                    v.push((k, val));
                }
                Ok(RawObject(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        PublishRequest::parse(body.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn data_is_kept_byte_for_byte_and_encoded_once() {
        let p = PublishRequest::parse(br#"{"type":"t","data":{"b": 1.50, "a":[1,2]}}"#).unwrap();
        assert_eq!(p.data.get(), r#"{"b": 1.50, "a":[1,2]}"#);
        let ev = Event { id: "01J".into(), kind: p.kind, data: p.data, ts: 7, audience: p.audience };
        assert_eq!(ev.frame().as_str(), r#"{"id":"01J","type":"t","data":{"b": 1.50, "a":[1,2]},"ts":7}"#);
    }

    #[test]
    fn defaults_and_targeting() {
        let p = PublishRequest::parse(br#"{"type":"t"}"#).unwrap();
        assert_eq!(p.data.get(), "null");
        assert_eq!(p.audience, Audience::All);
        let p = PublishRequest::parse(br#"{"type":"t","users":["b","a","b"]}"#).unwrap();
        assert_eq!(p.audience, Audience::Users(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[1]").contains("object"));
        assert!(err("{").contains("JSON"));
        assert!(err("").contains("JSON"));
        assert!(err(r#"{"data":1}"#).contains("\"type\""));
        assert!(err(r#"{"type":""}"#).contains("\"type\""));
        assert!(err(r#"{"type":5}"#).contains("\"type\""));
        assert!(err(&format!(r#"{{"type":"{}"}}"#, "x".repeat(129))).contains("\"type\""));
        assert!(PublishRequest::parse(format!(r#"{{"type":"{}"}}"#, "é".repeat(128)).as_bytes()).is_ok());
        assert!(err(r#"{"type":"t","users":"a"}"#).contains("\"users\""));
        assert!(err(r#"{"type":"t","users":[1]}"#).contains("\"users\""));
        assert!(err(r#"{"type":"t","users":[]}"#).contains("\"users\""));
        assert!(err(r#"{"type":"t","users":[""]}"#).contains("\"users\""));
        assert!(err(r#"{"type":"t","users":null}"#).contains("\"users\""));
        assert!(err(r#"{"type":"t","channel":"a b"}"#).contains("\"channel\""));
        assert!(err(r#"{"type":"t","channel":5}"#).contains("\"channel\""));
        assert!(err(r#"{"type":"t","channel":"x","users":["a"]}"#).contains("\"channel\""));
        assert!(err(r#"{"type":"t","other":1}"#).contains("\"other\" is not a known field"));
        let e = PublishRequest::parse(br#"{"type":5}"#).unwrap_err();
        assert_eq!(e.in_batch(3), "events[3].type: must be a string of 1 to 128 characters");
        assert_eq!(PublishRequest::parse(b"[1]").unwrap_err().in_batch(0), "events[0]: item must be a JSON object");
        let p = PublishRequest::parse(br#"{"type":"t","channel":"project:42"}"#).unwrap();
        assert_eq!(p.audience, Audience::Channel("project:42".into()));
        let ev = Event { id: "1-0".into(), kind: p.kind, data: p.data, ts: 7, audience: p.audience };
        assert_eq!(ev.frame().as_str(), r#"{"id":"1-0","type":"t","channel":"project:42","data":null,"ts":7}"#);
        assert_eq!(format!("{FRAME_HEAD}1-0\",{}", ev.frame_tail()), ev.frame().as_str());
    }

    #[test]
    fn ids_increase_and_differ() {
        let g = IdGenerator::new();
        let ids: Vec<String> = (0..10_000).map(|_| g.next_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids[0].len(), 26);
    }
}
