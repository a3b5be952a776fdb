//! `POST /api/events` body parser: `PublishRequest::parse`, then the frame encoding of the
//! event an accepted body becomes (as the hub does once per event).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::fuzzing::{Audience, Event, PublishRequest};

fuzz_target!(|data: &[u8]| {
    let Ok(req) = PublishRequest::parse(data) else { return };
    // What parse promises about an accepted body.
    assert!(!req.kind.is_empty() && req.kind.chars().count() <= wsgate::fuzzing::MAX_TYPE_CHARS);
    match &req.audience {
        Audience::All => {}
        Audience::Channel(c) => assert!(wsgate::fuzzing::valid_name(c)),
        Audience::Users(u) => {
            assert!(!u.is_empty() && u.len() <= wsgate::fuzzing::MAX_USERS);
            assert!(u.windows(2).all(|w| w[0] < w[1]), "users sorted and deduplicated");
        }
    }
    let (kind, data, audience) = (req.kind, req.data, req.audience);
    let channel = audience.channel().map(str::to_string);
    let event = Event { id: "1-0".into(), kind: kind.clone(), data: data.clone(), ts: 0, audience };
    let frame = event.frame();
    // The frame is the JSON object clients parse; `id` comes first (history::frame_position),
    // `data` is the publisher's bytes unchanged. (Checked with RawValue rather than Value:
    // a number like 1e400 is valid JSON that serde_json's Value refuses as out of range.)
    assert!(frame.as_str().starts_with(r#"{"id":"1-0","#), "frame: {}", frame.as_str());
    let f: Frame = serde_json::from_str(frame.as_str()).expect("frame is JSON");
    assert_eq!(f.kind, kind);
    assert_eq!(f.data.get(), data.get());
    assert_eq!(f.channel, channel);
    assert_eq!(f.ts, 0);
});

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Frame<'a> {
    #[allow(dead_code)]
    id: &'a str,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channel: Option<String>,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    ts: u64,
}
