//! The outage outbox: events accepted while Redis was away, already delivered to this
//! instance's clients, waiting to be appended in order once Redis is back. Bounded in events
//! and bytes: when it is full a publish gets 503 instead of an acceptance that would be lost.

use std::collections::VecDeque;

use super::keys::StreamKey;
use crate::idempotency::IdemKey;

/// One held event, ready to append.
pub struct HeldEvent {
    pub stream: StreamKey,
    /// Its ULID: the id this instance's clients received it under.
    pub eid: String,
    pub frame_tail: String,
    /// The users as a JSON list, for a targeted event.
    pub users: Option<String>,
    pub key: Option<IdemKey>,
    /// The link broke while this event was being appended: it may be in the stream already.
    pub uncertain: bool,
}

impl HeldEvent {
    fn bytes(&self) -> usize {
        self.frame_tail.len() + self.users.as_ref().map_or(0, String::len) + self.eid.len()
    }
}

pub struct Held {
    queue: VecDeque<HeldEvent>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl Held {
    pub fn new(max_events: usize, max_bytes: usize) -> Held {
        Held { queue: VecDeque::new(), bytes: 0, max_events, max_bytes }
    }

    /// Keeps `e` unless that would pass a bound; false when it did not.
    #[must_use]
    pub fn push(&mut self, e: HeldEvent) -> bool {
        let b = e.bytes();
        if self.queue.len() >= self.max_events || self.bytes + b > self.max_bytes {
            return false;
        }
        self.bytes += b;
        self.queue.push_back(e);
        true
    }

    pub fn front(&self) -> Option<&HeldEvent> {
        self.queue.front()
    }

    pub fn pop_front(&mut self) {
        if let Some(e) = self.queue.pop_front() {
            self.bytes -= e.bytes();
        }
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> HeldEvent {
        HeldEvent { stream: None, eid: "e".into(), frame_tail: "x".repeat(n), users: None, key: None, uncertain: false }
    }

    #[test]
    fn bounded_in_events_and_bytes() {
        let mut h = Held::new(2, 100);
        assert!(h.push(ev(10)));
        assert!(!h.push(ev(95)), "bytes");
        assert!(h.push(ev(10)));
        assert!(!h.push(ev(1)), "events");
        h.pop_front();
        assert_eq!(h.len(), 1);
        assert!(h.push(ev(80)));
    }
}
