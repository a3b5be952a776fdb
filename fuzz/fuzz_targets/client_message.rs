//! A client's WebSocket text message: `protocol::parse_request`. WebSocket text frames are
//! UTF-8 (tungstenite refuses others), so non-UTF-8 inputs are skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::fuzzing::{parse_request, ChannelOp, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_request(text) {
        // Every reply is a JSON object with a "type".
        Request::Reply(r) => {
            let v: serde_json::Value = serde_json::from_str(r.as_str()).expect("reply is JSON");
            assert!(v["type"].is_string(), "reply: {}", r.as_str());
        }
        Request::Channel(ChannelOp::Subscribe(c) | ChannelOp::Unsubscribe(c)) => {
            // The session validates the name next; do what it does.
            if let Ok(name) = c {
                let _ = wsgate::fuzzing::valid_name(&name);
            }
        }
    }
});
