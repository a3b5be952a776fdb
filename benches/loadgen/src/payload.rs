//! The bench event: what the publisher sends and how a receiver reads it back.
//!
//! Body sent to `POST /api/events`:
//! `{"type":"bench","data":{"seq":N,"t0":T0_NS,"pad":"xxx…"}}`
//! Frame delivered by the gateway:
//! `{"id":"<26-char ulid>","type":"bench","data":{"seq":N,"t0":T0_NS,"pad":"xxx…"},"ts":<ms>}`
//!
//! JSON numbers cannot carry leading zeros, so seq and t0 have variable width; the pad
//! absorbs the difference and every delivered frame has the same length. Receivers find
//! `"seq":` and `"t0":` by search, not at fixed offsets, so a gateway that re-serialises
//! `data` (allowed by the contract) is still read correctly.

/// Event type used for bench events.
pub const EVENT_TYPE: &str = "bench";

/// Bytes of the delivered frame around `data`: `{"id":"<26>","type":"bench","data":` and
/// `,"ts":<13 digits>}`.
const FRAME_OVERHEAD: usize =
    r#"{"id":""#.len() + 26 + r#"","type":"bench","data":"#.len() + r#","ts":"#.len() + 13 + 1;

fn digits(v: u64) -> usize {
    let mut n = 1;
    let mut v = v / 10;
    while v > 0 {
        n += 1;
        v /= 10;
    }
    n
}

/// The `data` object for one broadcast, padded so the delivered frame is `frame_bytes` long
/// (or as short as possible when `frame_bytes` is smaller than the fixed part).
pub fn data_json(seq: u64, t0: u64, frame_bytes: usize) -> String {
    let fixed = FRAME_OVERHEAD + r#"{"seq":,"t0":,"pad":""}"#.len() + digits(seq) + digits(t0);
    let pad = frame_bytes.saturating_sub(fixed);
    let mut s = String::with_capacity(fixed + pad);
    s.push_str("{\"seq\":");
    s.push_str(&seq.to_string());
    s.push_str(",\"t0\":");
    s.push_str(&t0.to_string());
    s.push_str(",\"pad\":\"");
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// The full `POST /api/events` body.
pub fn publish_body(seq: u64, t0: u64, frame_bytes: usize) -> String {
    format!(r#"{{"type":"{EVENT_TYPE}","data":{}}}"#, data_json(seq, t0, frame_bytes))
}

#[inline]
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from >= hay.len() {
        return None;
    }
    let first = needle[0];
    let mut i = from;
    while i + needle.len() <= hay.len() {
        if hay[i] == first && &hay[i..i + needle.len()] == needle {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// Parses an unsigned integer at `at` (after optional spaces); returns it and the index after.
#[inline]
fn number(b: &[u8], mut at: usize) -> Option<(u64, usize)> {
    while at < b.len() && b[at] == b' ' {
        at += 1;
    }
    let start = at;
    let mut v: u64 = 0;
    while at < b.len() && b[at].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((b[at] - b'0') as u64)?;
        at += 1;
    }
    (at > start).then_some((v, at))
}

/// Reads `(seq, t0)` from a delivered frame; `None` when the frame is not a bench event.
#[inline]
pub fn parse_seq_t0(b: &[u8]) -> Option<(u64, u64)> {
    const SEQ: &[u8] = b"\"seq\":";
    const T0: &[u8] = b"\"t0\":";
    let at = find(b, SEQ, 0)? + SEQ.len();
    let (seq, end) = number(b, at)?;
    // Usual case: t0 follows seq directly; otherwise search the whole frame.
    let t0_at = if b[end..].starts_with(b",\"t0\":") { end + 1 + T0.len() } else { find(b, T0, 0)? + T0.len() };
    let (t0, _) = number(b, t0_at)?;
    Some((seq, t0))
}

/// True for the gateway's greeting frame `{"type":"connected",...}`.
pub fn is_connected_frame(b: &[u8]) -> bool {
    find(b, b"\"type\":\"connected\"", 0).is_some() || find(b, b"\"type\": \"connected\"", 0).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &str) -> String {
        format!(r#"{{"id":"01J9ZQ3S4Y8W6M2K7T5R1V0XAB","type":"bench","data":{data},"ts":1763798400000}}"#)
    }

    #[test]
    fn frames_have_the_requested_size_and_parse_back() {
        for (seq, t0) in [(0u64, 1u64), (7, 6_123_456_789_012), (10_199, 999_999_999_999_999), (u32::MAX as u64, 42)] {
            let f = frame(&data_json(seq, t0, 200));
            assert_eq!(f.len(), 200, "{f}");
            assert_eq!(parse_seq_t0(f.as_bytes()), Some((seq, t0)));
        }
        // Too small a target: no pad, still parseable.
        let f = frame(&data_json(3, 4, 10));
        assert!(f.contains(r#""pad":"""#));
        assert_eq!(parse_seq_t0(f.as_bytes()), Some((3, 4)));
    }

    #[test]
    fn body_is_valid_json_with_the_expected_fields() {
        let body = publish_body(12, 345, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "bench");
        assert_eq!(v["data"]["seq"], 12);
        assert_eq!(v["data"]["t0"], 345);
        assert!(v["data"]["pad"].as_str().unwrap().chars().all(|c| c == 'x'));
    }

    #[test]
    fn parse_without_fixed_offsets() {
        // Re-serialised with another key order and spaces.
        let f = r#"{"ts": 1, "data": {"pad": "xx", "t0": 98765, "seq": 4}, "type": "bench", "id": "x"}"#;
        assert_eq!(parse_seq_t0(f.as_bytes()), Some((4, 98765)));
        assert_eq!(parse_seq_t0(br#"{"type":"pong"}"#), None);
        assert_eq!(parse_seq_t0(br#"{"type":"connected","connection_id":"c","user":"u1"}"#), None);
        assert_eq!(parse_seq_t0(br#"{"data":{"seq":,"t0":5}}"#), None);
        assert_eq!(parse_seq_t0(br#"{"data":{"seq":99999999999999999999999,"t0":5}}"#), None);
        assert_eq!(parse_seq_t0(br#"{"data":{"seq":1}}"#), None);
    }

    #[test]
    fn connected_frame() {
        assert!(is_connected_frame(br#"{"type":"connected","connection_id":"a","user":"u0","instance_id":"i"}"#));
        assert!(is_connected_frame(br#"{"connection_id": "a", "type": "connected"}"#));
        assert!(!is_connected_frame(br#"{"type":"pong"}"#));
    }
}
