//! `Idempotency-Key` on `POST /api/events`: a retry with the same key (and the same body)
//! within the window answers with the first event's id and publishes nothing.
//!
//! Keys are scoped by the publisher's token subject, so two services cannot collide. The body
//! is fingerprinted (FNV-1a, 64 bits): the same key with another body is a client bug and gets
//! 422, as the IETF draft and Stripe do. The memory broker keeps keys in a bounded
//! [`LocalStore`]; the Redis broker keeps them in Redis (fleet-wide, in the same script that
//! appends the event) and in a `LocalStore` for when Redis is away.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// Most keys the local store remembers; the oldest go first beyond this.
const LOCAL_CAPACITY: usize = 100_000;

/// A validated key with the fingerprint of the body it came with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdemKey {
    /// `<subject>:<key>`.
    pub scoped: String,
    /// 16 hex digits.
    pub fingerprint: String,
}

/// What a key says about a publish.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// New key: publish.
    New,
    /// Same key, same body: answer with this id, publish nothing.
    Replay(String),
    /// Same key, another body: refuse (422).
    Conflict,
}

/// Validates the header value: 1 to 255 visible ASCII characters.
pub fn parse_key(subject: &str, header: &[u8], body: &[u8]) -> Result<IdemKey, String> {
    if header.is_empty() || header.len() > MAX_KEY_BYTES || !header.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(format!("Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"));
    }
    let key = std::str::from_utf8(header).map_err(|_| "Idempotency-Key is not ASCII".to_string())?;
    Ok(IdemKey { scoped: format!("{subject}:{key}"), fingerprint: format!("{:016x}", fnv1a(body)) })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Keys remembered by this process, bounded in count and age.
pub struct LocalStore {
    window: Duration,
    map: HashMap<String, (String, String, Instant)>,
    /// Insertion order, for expiry and the capacity bound.
    order: VecDeque<(Instant, String)>,
}

impl LocalStore {
    pub fn new(window: Duration) -> LocalStore {
        LocalStore { window, map: HashMap::new(), order: VecDeque::new() }
    }

    pub fn check(&mut self, key: &IdemKey) -> Seen {
        self.expire();
        match self.map.get(&key.scoped) {
            None => Seen::New,
            Some((fp, id, _)) if *fp == key.fingerprint => Seen::Replay(id.clone()),
            Some(_) => Seen::Conflict,
        }
    }

    pub fn remember(&mut self, key: &IdemKey, id: &str) {
        let now = Instant::now();
        self.map.insert(key.scoped.clone(), (key.fingerprint.clone(), id.to_string(), now));
        self.order.push_back((now, key.scoped.clone()));
        self.expire();
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some((at, k)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() <= LOCAL_CAPACITY {
                break;
            }
            // Only remove the entry this queue slot stands for (a key re-remembered later has
            // a newer slot of its own).
            if self.map.get(k).is_some_and(|(_, _, t)| t == at) {
                self.map.remove(k);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated_and_scoped() {
        let k = parse_key("svc", b"order-42", b"{}").unwrap();
        assert_eq!(k.scoped, "svc:order-42");
        assert_eq!(k.fingerprint.len(), 16);
        assert!(parse_key("svc", b"", b"").is_err());
        assert!(parse_key("svc", b"a b", b"").is_err());
        assert!(parse_key("svc", "é".as_bytes(), b"").is_err());
        assert!(parse_key("svc", &[b'a'; 256], b"").is_err());
        assert!(parse_key("svc", &[b'a'; 255], b"").is_ok());
        assert_ne!(parse_key("s", b"k", b"1").unwrap().fingerprint, parse_key("s", b"k", b"2").unwrap().fingerprint);
    }

    #[test]
    fn replay_conflict_and_expiry() {
        let mut s = LocalStore::new(Duration::from_millis(50));
        let k = parse_key("svc", b"k", b"body").unwrap();
        assert_eq!(s.check(&k), Seen::New);
        s.remember(&k, "1-0");
        assert_eq!(s.check(&k), Seen::Replay("1-0".into()));
        assert_eq!(s.check(&parse_key("svc", b"k", b"other").unwrap()), Seen::Conflict);
        assert_eq!(s.check(&parse_key("svc2", b"k", b"body").unwrap()), Seen::New);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(&k), Seen::New);
    }
}
