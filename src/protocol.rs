//! The client wire protocol, in one place: every frame the server sends on `/ws/tasks` and
//! every message it accepts.
//!
//! Server → client, one JSON object per text frame:
//!
//! | frame | when |
//! | --- | --- |
//! | `{"type":"connected","connection_id","user","instance_id","last_id"?,"recovered"?}` | first, once registered |
//! | `{"id","type","channel"?,"data","ts"}` ([`EventFrame`]) | every event |
//! | `{"type":"subscribed","channel"}` / `{"type":"unsubscribed","channel"}` | channel answers |
//! | `{"type":"error","channel"?,"error","message"}` | a refused request (the connection stays) |
//! | `{"type":"pong"}` | the answer to `{"type":"ping"}` |
//! | `{"type":"resync","reason"}` | Redis lost events this connection may not have |
//!
//! Client → server: `{"type":"ping"}`, `{"type":"subscribe","channel"}`,
//! `{"type":"unsubscribe","channel"}` ([`parse_request`]).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The `reason` of a `resync` frame: why the client should reload its state.
pub mod resync {
    /// Redis lost entries (restarted empty, failed over to a replica that lacked them).
    pub const DATA_LOST: &str = "redis_data_lost";
    /// This instance was away longer than the stream's retention.
    pub const TRIMMED: &str = "history_trimmed";
    /// The instance served locally from start-up, without Redis, before it could follow the
    /// fleet's events.
    pub const UNAVAILABLE: &str = "redis_unavailable";
    /// Every reason (also the metric's labels).
    pub const ALL: [&str; 3] = [DATA_LOST, TRIMMED, UNAVAILABLE];

    /// `r` as a `'static` label; `other` for a reason this version does not know (a marker
    /// written by a newer instance).
    pub fn label(r: &str) -> &'static str {
        ALL.into_iter().find(|&known| known == r).unwrap_or("other")
    }
}

/// Every frame the server sends that is not an event.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Connected {
        connection_id: &'a str,
        user: &'a str,
        instance_id: &'a str,
        /// Where this connection starts in the stream: a client that gets no event before it
        /// drops resumes from here.
        #[serde(skip_serializing_if = "Option::is_none")]
        last_id: Option<&'a str>,
        /// Only for a connection that asked to resume (`since=`).
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Subscribed {
        channel: &'a str,
    },
    Unsubscribed {
        channel: &'a str,
    },
    Error {
        /// The `channel` of the refused request, as sent (it may not be a string).
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a serde_json::Value>,
        error: &'a str,
        message: &'a str,
    },
    Pong,
    Resync {
        reason: &'a str,
    },
}

impl ServerFrame<'_> {
    pub fn encode(&self) -> Utf8Bytes {
        // Serialising borrowed strings and JSON values cannot fail.
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// An event as clients receive it: `{"id","type","channel"?,"data","ts"}`. `id` comes first
/// (see [`crate::history::frame_position`]) and `ts` last (the Redis relay reads it from the
/// end).
#[derive(Serialize)]
pub struct EventFrame<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<&'a str>,
    pub data: &'a RawValue,
    pub ts: u64,
}

/// How every event frame starts, before its id.
pub const FRAME_HEAD: &str = r#"{"id":""#;

/// A channel request read from the client; `Err` holds a `channel` that is not a string.
#[derive(Debug)]
pub enum ChannelOp {
    Subscribe(Result<String, serde_json::Value>),
    Unsubscribe(Result<String, serde_json::Value>),
}

/// A client's text message.
#[derive(Debug)]
pub enum Request {
    /// Answered at once.
    Reply(Utf8Bytes),
    Channel(ChannelOp),
}

/// The `{"type":"error"}` frame for a message that is not a request.
pub fn error_frame(code: &str, message: &str) -> Utf8Bytes {
    ServerFrame::Error { channel: None, error: code, message }.encode()
}

/// Parses a client's text message (public for the fuzz target; never panics).
pub fn parse_request(text: &str) -> Request {
    #[derive(Deserialize)]
    struct ClientMessage<'a> {
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
        #[serde(default)]
        channel: serde_json::Value,
    }
    let name = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => Ok(s),
        other => Err(other),
    };
    let reply = match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage { kind: Some(k), .. }) if k == "ping" => ServerFrame::Pong.encode(),
        Ok(ClientMessage { kind: Some(k), channel }) if k == "subscribe" => {
            return Request::Channel(ChannelOp::Subscribe(name(channel)))
        }
        Ok(ClientMessage { kind: Some(k), channel }) if k == "unsubscribe" => {
            return Request::Channel(ChannelOp::Unsubscribe(name(channel)))
        }
        Ok(ClientMessage { kind: Some(k), .. }) => error_frame(
            "unknown_type",
            &format!("unknown message type {k:?}; supported: \"ping\", \"subscribe\", \"unsubscribe\""),
        ),
        Ok(ClientMessage { kind: None, .. }) => error_frame("invalid_message", "message lacks a string \"type\""),
        Err(_) => error_frame("invalid_message", "messages must be JSON objects with a \"type\""),
    };
    Request::Reply(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> String {
        match parse_request(text) {
            Request::Reply(r) => r.as_str().to_string(),
            Request::Channel(ChannelOp::Subscribe(c)) => format!("subscribe {c:?}"),
            Request::Channel(ChannelOp::Unsubscribe(c)) => format!("unsubscribe {c:?}"),
        }
    }

    #[test]
    fn client_messages() {
        assert_eq!(reply(r#"{"type":"ping"}"#), r#"{"type":"pong"}"#);
        assert!(reply(r#"{"type":"nope"}"#).contains("unknown_type"));
        assert!(reply("hello").contains("invalid_message"));
        assert!(reply(r#"{"type":3}"#).contains("invalid_message"));
        assert_eq!(reply(r#"{"type":"subscribe","channel":"a:1"}"#), r#"subscribe Ok("a:1")"#);
        assert_eq!(reply(r#"{"type":"unsubscribe","channel":"a:1"}"#), r#"unsubscribe Ok("a:1")"#);
        assert_eq!(reply(r#"{"type":"subscribe","channel":5}"#), "subscribe Err(Number(5))");
        assert_eq!(reply(r#"{"type":"subscribe"}"#), "subscribe Err(Null)");
    }

    #[test]
    fn server_frames() {
        let hello = ServerFrame::Connected {
            connection_id: "i-1",
            user: "u",
            instance_id: "i",
            last_id: Some("5-0"),
            recovered: None,
        };
        assert_eq!(
            hello.encode().as_str(),
            r#"{"type":"connected","connection_id":"i-1","user":"u","instance_id":"i","last_id":"5-0"}"#
        );
        assert_eq!(
            ServerFrame::Subscribed { channel: "a" }.encode().as_str(),
            r#"{"type":"subscribed","channel":"a"}"#
        );
        assert_eq!(
            ServerFrame::Resync { reason: "redis_data_lost" }.encode().as_str(),
            r#"{"type":"resync","reason":"redis_data_lost"}"#
        );
        let c = serde_json::json!(5);
        assert_eq!(
            ServerFrame::Error { channel: Some(&c), error: "invalid_channel", message: "m" }.encode().as_str(),
            r#"{"type":"error","channel":5,"error":"invalid_channel","message":"m"}"#
        );
        assert_eq!(error_frame("x", "y").as_str(), r#"{"type":"error","error":"x","message":"y"}"#);
    }
}
