//! `Idempotency-Key` on `POST /api/events`: a retry with the same key (and the same body)
//! within the window answers with the first event's id and publishes nothing.
//!
//! Keys are scoped by the publisher's token subject, so two services cannot collide: the scope
//! is `<length of the subject>:<subject>:<use>:<key>`, which no other (subject, key) pair can
//! spell (a plain `subject:key` let publisher `svc` with key `a:b` and publisher `svc:a` with
//! key `b` share one entry, and the second one's event was dropped as a "retry"). `<use>` is
//! `e` for `POST /api/events` and `b<i>` for item `i` of a batch, so a batch key covers each
//! of its items exactly once (a retry after a partial failure publishes only what is missing).
//! The body
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
    /// `<subject length>:<subject>:<use>:<key>` (see the module docs).
    pub scoped: String,
    /// 16 hex digits.
    pub fingerprint: String,
}

/// A validated `Idempotency-Key` header of one request, scoped by its publisher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestKey {
    subject: String,
    key: String,
    fingerprint: String,
}

impl RequestKey {
    fn scoped(&self, use_: &str) -> IdemKey {
        IdemKey {
            scoped: format!("{}:{}:{use_}:{}", self.subject.len(), self.subject, self.key),
            fingerprint: self.fingerprint.clone(),
        }
    }

    /// The key of a single publish.
    pub fn single(&self) -> IdemKey {
        self.scoped("e")
    }

    /// The key of item `index` of a batch (the fingerprint is the whole batch's).
    pub fn item(&self, index: usize) -> IdemKey {
        self.scoped(&format!("b{index}"))
    }
}

/// A malformed `Idempotency-Key` header (400).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters")]
pub struct BadKey;

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

/// Validates the header value (1 to 255 visible ASCII characters) of a request by `subject`
/// whose body is `body`.
pub fn parse_key(subject: &str, header: &[u8], body: &[u8]) -> Result<RequestKey, BadKey> {
    if header.is_empty() || header.len() > MAX_KEY_BYTES || !header.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(BadKey);
    }
    let key = std::str::from_utf8(header).map_err(|_| BadKey)?;
    Ok(RequestKey { subject: subject.to_string(), key: key.to_string(), fingerprint: format!("{:016x}", fnv1a(body)) })
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

    fn key(subject: &str, header: &[u8], body: &[u8]) -> IdemKey {
        parse_key(subject, header, body).unwrap().single()
    }

    #[test]
    fn keys_of_different_publishers_never_collide() {
        // The audit's case: `svc` with key `a:b` and `svc:a` with key `b` were one entry.
        let one = key("svc", b"a:b", b"{}");
        let other = key("svc:a", b"b", b"{}");
        assert_ne!(one.scoped, other.scoped);
        let mut s = LocalStore::new(Duration::from_secs(60));
        s.remember(&one, "1-0");
        assert_eq!(s.check(&other), Seen::New, "another publisher's key is not a retry");
        // A batch's items and a single publish with the same header do not collide either.
        let batch = parse_key("svc", b"k", b"{}").unwrap();
        let keys = [batch.single().scoped, batch.item(0).scoped, batch.item(1).scoped, key("svc", b"b0:k", b"").scoped];
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn keys_are_validated_and_scoped() {
        let k = key("svc", b"order-42", b"{}");
        assert_eq!(k.scoped, "3:svc:e:order-42");
        assert_eq!(k.fingerprint.len(), 16);
        assert!(parse_key("svc", b"", b"").is_err());
        assert!(parse_key("svc", b"a b", b"").is_err());
        assert!(parse_key("svc", "é".as_bytes(), b"").is_err());
        assert!(parse_key("svc", &[b'a'; 256], b"").is_err());
        assert!(parse_key("svc", &[b'a'; 255], b"").is_ok());
        assert_ne!(key("s", b"k", b"1").fingerprint, key("s", b"k", b"2").fingerprint);
    }

    #[test]
    fn replay_conflict_and_expiry() {
        let mut s = LocalStore::new(Duration::from_millis(50));
        let k = key("svc", b"k", b"body");
        assert_eq!(s.check(&k), Seen::New);
        s.remember(&k, "1-0");
        assert_eq!(s.check(&k), Seen::Replay("1-0".into()));
        assert_eq!(s.check(&key("svc", b"k", b"other")), Seen::Conflict);
        assert_eq!(s.check(&key("svc2", b"k", b"body")), Seen::New);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(s.check(&k), Seen::New);
    }
}
