//! What the Redis broker writes into Redis and reads back: stream entries and pub/sub messages.
//!
//! # Stream entries
//!
//! An event is an entry of its stream (`{prefix}stream:all`, or `{prefix}chstream:{<name>}` for
//! a channel event) with the fields:
//!
//! - `f`: the client frame, exactly the bytes every client receives (`{"id":"<entry id>",...}`;
//!   the publish script splices the id Redis gave in front of the rest, encoded by the
//!   publishing instance), so neither fan-out nor a replay encodes it again;
//! - `i`: the event's ULID, its identity before it had a stream id;
//! - `a`: the users it is for, as a JSON list (absent for a broadcast or a channel event);
//! - `p`: `1` when the event was accepted while Redis was away: its publishing instance's
//!   clients already have it, under its ULID.
//!
//! A loss marker is an entry with the single field `m` (the reason): Redis lost entries of this
//! stream that some instance had seen or acknowledged. A note is an entry with the single field
//! `n` (a ULID): the earlier entry of that event had reached its publishing instance's clients
//! under the ULID (see `publish.lua`). Notes are not published.
//!
//! # Pub/sub messages
//!
//! The publish script sends each entry on its stream's Redis channel as one JSON object, with
//! the entry's id and its predecessor's first, so a subscriber can tell whether it missed one:
//!
//! ```json
//! {"sid":"<id>","prev":"<previous id>","eid":"<ULID>","users":["u1"],"p":1,"f":{...frame...}}
//! {"sid":"<id>","prev":"<previous id>","m":"<reason>"}
//! ```

use std::borrow::Cow;

use fred::types::Value;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::event::Audience;
use crate::history::{frame_position, StreamId};

/// Why an entry or a message could not be decoded (its text says what is wrong with which id).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

/// One entry of a stream, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry {
    pub sid: StreamId,
    pub body: Body,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Body {
    Event {
        /// The event's ULID.
        eid: String,
        frame: Utf8Bytes,
        /// `None`: a broadcast, or a channel event (the stream says which channel).
        users: Option<Vec<String>>,
        /// Accepted while Redis was away (see the module docs).
        held: bool,
    },
    Marker {
        reason: String,
    },
    /// The entry with this ULID before it reached its publishing instance's clients under the
    /// ULID (a held event whose first append, thought lost, had happened): clients never see
    /// a note; a resume across it is not promised.
    Note {
        eid: String,
    },
}

impl Body {
    /// Who an event of the stream of `channel` is for.
    pub fn audience(users: &Option<Vec<String>>, channel: Option<&str>) -> Audience {
        match (channel, users) {
            (Some(c), _) => Audience::Channel(c.to_string()),
            (None, Some(u)) => Audience::Users(u.clone()),
            (None, None) => Audience::All,
        }
    }
}

/// A pub/sub message: the entry and its predecessor's id.
#[derive(Debug)]
pub struct Message {
    pub prev: StreamId,
    pub entry: Entry,
}

#[derive(Deserialize)]
struct RawMessage<'a> {
    #[serde(borrow)]
    sid: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(default, borrow)]
    eid: Option<Cow<'a, str>>,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(default)]
    p: Option<u8>,
    #[serde(default, borrow)]
    m: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    f: Option<&'a RawValue>,
}

fn parse_id(s: &str) -> Result<StreamId, DecodeError> {
    s.parse().map_err(|()| DecodeError(format!("malformed stream id {s:?}")))
}

/// An event body, checked: the frame must be a JSON object that starts with its own id, which
/// is what sessions rely on to drop frames a replay already sent.
fn event_body(
    sid: StreamId,
    eid: &str,
    frame: &str,
    users: Option<Vec<String>>,
    held: bool,
) -> Result<Body, DecodeError> {
    if frame_position(frame) != Some(sid) {
        return Err(DecodeError(format!("frame of entry {sid} does not start with its id")));
    }
    if eid.is_empty() {
        return Err(DecodeError(format!("entry {sid} has no event id")));
    }
    Ok(Body::Event { eid: eid.to_string(), frame: Utf8Bytes::from(frame.to_string()), users, held })
}

/// Decodes a pub/sub message (see the module docs).
pub fn decode_message(bytes: &[u8]) -> Result<Message, DecodeError> {
    let raw: RawMessage = serde_json::from_slice(bytes).map_err(|e| DecodeError(e.to_string()))?;
    let sid = parse_id(&raw.sid)?;
    let prev = parse_id(&raw.prev)?;
    let body = match (raw.m, raw.f, raw.eid) {
        (Some(reason), None, _) => Body::Marker { reason: reason.into_owned() },
        (None, Some(frame), Some(eid)) => event_body(sid, &eid, frame.get(), raw.users, raw.p == Some(1))?,
        _ => return Err(DecodeError(format!("message {sid} is neither an event nor a marker"))),
    };
    Ok(Message { prev, entry: Entry { sid, body } })
}

/// Decodes a stream entry from its fields.
pub fn decode_entry(sid: StreamId, fields: &[(String, Vec<u8>)]) -> Result<Entry, DecodeError> {
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice());
    if let Some(reason) = field("m") {
        return Ok(Entry { sid, body: Body::Marker { reason: String::from_utf8_lossy(reason).into_owned() } });
    }
    if let Some(eid) = field("n") {
        return Ok(Entry { sid, body: Body::Note { eid: String::from_utf8_lossy(eid).into_owned() } });
    }
    let text = |name: &str| {
        std::str::from_utf8(field(name).ok_or_else(|| DecodeError(format!("entry {sid} lacks field {name:?}")))?)
            .map_err(|_| DecodeError(format!("field {name:?} of entry {sid} is not UTF-8")))
    };
    let users = match field("a") {
        None => None,
        Some(a) => {
            Some(serde_json::from_slice(a).map_err(|e| DecodeError(format!("field \"a\" of entry {sid}: {e}")))?)
        }
    };
    let body = event_body(sid, text("i")?, text("f")?, users, field("p") == Some(b"1"))?;
    Ok(Entry { sid, body })
}

/// The entries of an XRANGE reply (or the entries part of a script's reply), decoded; an entry
/// that cannot be decoded keeps its id (so a cursor can move past it) and says why.
pub fn stream_entries(reply: Value) -> Vec<(StreamId, Result<Entry, DecodeError>)> {
    let Value::Array(entries) = reply else { return Vec::new() };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else { continue };
        if parts.len() != 2 {
            continue;
        }
        let fields = parts.pop();
        let Some(id) = parts.pop().and_then(|v| v.as_string()).and_then(|s| s.parse::<StreamId>().ok()) else {
            continue;
        };
        let Some(Value::Array(fields)) = fields else {
            out.push((id, Err(DecodeError(format!("entry {id} has no fields")))));
            continue;
        };
        let mut pairs = Vec::with_capacity(fields.len() / 2);
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if let (Some(k), Some(v)) = (k.as_string(), v.as_bytes()) {
                pairs.push((k, v.to_vec()));
            }
        }
        out.push((id, decode_entry(id, &pairs)));
    }
    out
}

/// The Redis decoders, for fuzzing: decodes `bytes` as a pub/sub message and as the fields of
/// a stream entry (`bytes` split at NUL bytes into name/value pairs). Returns whether the
/// message was accepted. Never panics (that is what the fuzz target checks).
pub fn decode_for_fuzzing(bytes: &[u8]) -> bool {
    let ok = match decode_message(bytes) {
        Ok(m) => match m.entry.body {
            Body::Event { frame, .. } => frame_position(&frame) == Some(m.entry.sid),
            Body::Marker { .. } | Body::Note { .. } => true,
        },
        Err(_) => false,
    };
    let parts: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
    let fields: Vec<(String, Vec<u8>)> = parts
        .chunks(2)
        .filter_map(|c| Some((String::from_utf8_lossy(c[0]).into_owned(), c.get(1)?.to_vec())))
        .collect();
    let _ = decode_entry(StreamId { ms: 1, seq: 0 }, &fields);
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_entries_decode() {
        let m = decode_message(
            br#"{"sid":"5-1","prev":"5-0","eid":"01J","users":["a"],"f":{"id":"5-1","type":"t","data":[1, 2],"ts":3}}"#,
        )
        .unwrap();
        assert_eq!(m.prev, StreamId { ms: 5, seq: 0 });
        let Body::Event { frame, users, held, eid } = m.entry.body else { panic!() };
        // The frame's bytes are kept as Redis sent them.
        assert_eq!(frame.as_str(), r#"{"id":"5-1","type":"t","data":[1, 2],"ts":3}"#);
        assert_eq!((users, held, eid.as_str()), (Some(vec!["a".to_string()]), false, "01J"));
        let m = decode_message(br#"{"sid":"6-0","prev":"5-1","m":"redis_data_lost"}"#).unwrap();
        assert_eq!(m.entry.body, Body::Marker { reason: "redis_data_lost".into() });
        // A frame that does not carry its entry's id, or a message that is neither: refused.
        assert!(decode_message(br#"{"sid":"5-2","prev":"5-1","eid":"x","f":{"id":"5-1"}}"#).is_err());
        assert!(decode_message(br#"{"sid":"5-2","prev":"5-1"}"#).is_err());
        assert!(decode_message(br#"{"sid":"5","prev":"5-1","m":"x"}"#).is_err());
        let fields = vec![
            ("f".to_string(), br#"{"id":"7-0","type":"t","data":null,"ts":1}"#.to_vec()),
            ("i".to_string(), b"01K".to_vec()),
            ("p".to_string(), b"1".to_vec()),
        ];
        let e = decode_entry(StreamId { ms: 7, seq: 0 }, &fields).unwrap();
        assert!(matches!(e.body, Body::Event { held: true, users: None, .. }));
        assert!(decode_entry(StreamId { ms: 7, seq: 1 }, &fields).is_err(), "id mismatch");
    }

    #[test]
    fn the_fuzz_hook_survives_garbage() {
        for b in [&b""[..], b"{", b"\0\0\0", b"f\0{\"id\":\"1-0\"}\0i", br#"{"sid":"1-0","prev":"0-0","m":1}"#] {
            let _ = decode_for_fuzzing(b);
        }
    }
}
