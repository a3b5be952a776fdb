//! Event positions and the history kept for resume.
//!
//! Every event id is a stream position `<ms>-<seq>`, the form Redis stream ids take: in Redis
//! mode Redis assigns it (XADD), in memory mode [`MemoryHistory`] does, the same way. Ids are
//! totally ordered by `(ms, seq)`, so a client's last id says exactly what it has seen, and a
//! subscriber can tell from an event's predecessor id whether it missed one.
//!
//! A resume (`since=<id>`) succeeds only when everything after `since` is still retained; the
//! answer is then every retained event after it that was addressed to the connection's user.

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::config::HistoryLimits;
use crate::event::{now_ms, Audience, Event};

/// A position in an event stream, `<ms>-<seq>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    pub ms: u64,
    pub seq: u64,
}

impl StreamId {
    pub const ZERO: StreamId = StreamId { ms: 0, seq: 0 };

    /// The id after `self` for an event accepted at `now_ms`: Redis's rule for `XADD *`.
    pub fn next(self, now_ms: u64) -> StreamId {
        if now_ms > self.ms {
            StreamId { ms: now_ms, seq: 0 }
        } else if self.seq == u64::MAX {
            StreamId { ms: self.ms + 1, seq: 0 }
        } else {
            StreamId { ms: self.ms, seq: self.seq + 1 }
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for StreamId {
    type Err = ();
    /// Strictly `<digits>-<digits>`, each a u64 (no signs, spaces or other forms).
    fn from_str(s: &str) -> Result<StreamId, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let num = |p: &str| {
            if p.is_empty() || p.len() > 20 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            p.parse::<u64>().map_err(|_| ())
        };
        Ok(StreamId { ms: num(ms)?, seq: num(seq)? })
    }
}

/// The stream position of an event frame made by [`Event::frame`] (which always starts with
/// `{"id":"`); `None` for other frames (replies) and for events without a stream position
/// (accepted while Redis was away).
pub fn frame_position(frame: &str) -> Option<StreamId> {
    let rest = frame.strip_prefix(r#"{"id":""#)?;
    rest[..rest.find('"')?].parse().ok()
}

/// The stream an event frame belongs to (its `channel`, `None` for events published without
/// one) and its position; `None` for frames that are not events with a stream position.
pub fn frame_route(frame: &str) -> Option<(Option<String>, StreamId)> {
    #[derive(serde::Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        id: std::borrow::Cow<'a, str>,
        #[serde(default, borrow)]
        channel: Option<std::borrow::Cow<'a, str>>,
    }
    let position = frame_position(frame)?;
    let head: Head = serde_json::from_str(frame).ok()?;
    debug_assert_eq!(head.id.parse::<StreamId>().ok(), Some(position));
    Some((head.channel.map(|c| c.into_owned()), position))
}

/// What `GET /api/history` asks of a broker: one stream's events, oldest first.
#[derive(Clone, Copy, Debug)]
pub struct HistoryQuery<'a> {
    /// `None`: the events published without a channel.
    pub channel: Option<&'a str>,
    /// Only events after this id; `None`: the newest `limit` events.
    pub since: Option<StreamId>,
    pub limit: usize,
}

/// The answer to a [`HistoryQuery`].
#[derive(Debug, Default)]
pub struct HistoryPage {
    /// Event frames as clients receive them, oldest first.
    pub events: Vec<Utf8Bytes>,
    /// The newest event of the stream (not only of this page); `None` when it has none.
    pub last_id: Option<StreamId>,
}

/// The answer to a resume request.
#[derive(Debug)]
pub enum Replay {
    /// Every event after `since` is known and none could have reached the client already:
    /// these are the events for this user, in order (possibly none), and for each stream
    /// replayed (`None`: events without a channel), the position up to which it was read.
    Recovered { frames: Vec<Utf8Bytes>, upto: Vec<(Option<String>, StreamId)> },
    /// `since` is malformed, unknown, older than the retention, or history is off; or the
    /// missed range holds events whose delivery to this client cannot be told.
    NotRecovered,
}

/// Whether an event with this audience is for a connection of `user` in `channels`.
pub fn addressed_to(audience: &Audience, user: &str, channels: &[String]) -> bool {
    match audience {
        Audience::All => true,
        Audience::Users(u) => u.binary_search_by(|x| x.as_str().cmp(user)).is_ok(),
        Audience::Channel(c) => channels.iter().any(|x| x == c),
    }
}

struct Entry {
    id: StreamId,
    /// Accept time, ms since the epoch (for age trimming).
    ts: u64,
    audience: Audience,
    frame: Utf8Bytes,
    bytes: usize,
}

/// Memory mode's history: a ring of encoded frames, bounded by count, bytes and age, and the
/// id generator. Not synchronised: the memory broker holds it under its publish lock.
pub struct MemoryHistory {
    limits: HistoryLimits,
    ring: VecDeque<Entry>,
    bytes: usize,
    /// The last id handed out.
    last: StreamId,
    /// Every event after this id is in the ring: the newest trimmed id, or the process's
    /// start (ids from an earlier process are not recoverable).
    floor: StreamId,
}

impl MemoryHistory {
    pub fn new(limits: HistoryLimits) -> MemoryHistory {
        let start = StreamId { ms: now_ms(), seq: 0 };
        MemoryHistory { limits, ring: VecDeque::new(), bytes: 0, last: start, floor: start }
    }

    /// Gives `event` the next id and keeps it (when history is on); returns the id and the
    /// event's frame, the bytes that are kept and fanned out.
    pub fn append(&mut self, event: &mut Event) -> (StreamId, Utf8Bytes) {
        let id = self.last.next(event.ts);
        self.last = id;
        event.id = id.to_string();
        let frame = event.frame();
        if self.limits.max_events == 0 {
            self.floor = id;
            return (id, frame);
        }
        let bytes = frame.len() + std::mem::size_of::<Entry>();
        self.ring.push_back(Entry { id, ts: event.ts, audience: event.audience.clone(), frame: frame.clone(), bytes });
        self.bytes += bytes;
        while self.ring.len() > self.limits.max_events || self.bytes > self.limits.max_bytes {
            self.pop_front();
        }
        self.trim_age(event.ts);
        (id, frame)
    }

    fn pop_front(&mut self) {
        if let Some(e) = self.ring.pop_front() {
            self.bytes -= e.bytes;
            self.floor = e.id;
        }
    }

    fn trim_age(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.limits.max_age.as_millis() as u64);
        while self.ring.front().is_some_and(|e| e.ts < cutoff) {
            self.pop_front();
        }
    }

    /// The events after `since` for `user`, if all of them are still here.
    pub fn replay(&mut self, since: &str, user: &str, channels: &[String], max: usize) -> Replay {
        let Ok(since) = since.parse::<StreamId>() else { return Replay::NotRecovered };
        self.trim_age(now_ms());
        if self.limits.max_events == 0 || since < self.floor || since > self.last {
            return Replay::NotRecovered;
        }
        let start = self.ring.partition_point(|e| e.id <= since);
        if self.ring.len() - start > max {
            return Replay::NotRecovered;
        }
        let frames = self
            .ring
            .range(start..)
            .filter(|e| addressed_to(&e.audience, user, channels))
            .map(|e| e.frame.clone())
            .collect();
        // One ring, read at once: every stream is covered up to the last id.
        let mut upto = vec![(None, self.last)];
        upto.extend(channels.iter().map(|c| (Some(c.clone()), self.last)));
        Replay::Recovered { frames, upto }
    }

    /// A page of one stream (`q.channel`: a channel's events; `None`: the others), oldest
    /// first: the first `q.limit` after `q.since`, or the newest `q.limit`.
    pub fn page(&mut self, q: HistoryQuery<'_>) -> HistoryPage {
        self.trim_age(now_ms());
        let in_stream = |e: &&Entry| e.audience.channel() == q.channel;
        let last_id = self.ring.iter().rev().find(in_stream).map(|e| e.id);
        let events = match q.since {
            Some(since) => {
                let start = self.ring.partition_point(|e| e.id <= since);
                self.ring.range(start..).filter(in_stream).take(q.limit).map(|e| e.frame.clone()).collect()
            }
            None => {
                let mut newest: Vec<Utf8Bytes> =
                    self.ring.iter().rev().filter(in_stream).take(q.limit).map(|e| e.frame.clone()).collect();
                newest.reverse();
                newest
            }
        };
        HistoryPage { events, last_id }
    }

    /// The last id handed out, if history is on (a position to resume from).
    pub fn last(&self) -> Option<StreamId> {
        (self.limits.max_events > 0).then_some(self.last)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(max_events: usize) -> HistoryLimits {
        HistoryLimits { max_events, max_age: Duration::from_secs(3600), max_bytes: 1 << 20 }
    }

    fn event(audience: Audience) -> Event {
        let data = serde_json::value::RawValue::from_string("1".into()).unwrap();
        Event { id: String::new(), kind: "t".into(), data, ts: now_ms(), audience }
    }

    fn ids(r: Replay) -> Vec<String> {
        match r {
            Replay::Recovered { frames, .. } => frames.iter().map(|f| frame_position(f).unwrap().to_string()).collect(),
            Replay::NotRecovered => vec!["not recovered".into()],
        }
    }

    #[test]
    fn ids_parse_print_and_order() {
        let a: StreamId = "1700000000000-5".parse().unwrap();
        assert_eq!(a.to_string(), "1700000000000-5");
        assert!(a < "1700000000000-10".parse().unwrap());
        assert!(a < "1700000000001-0".parse().unwrap());
        for bad in ["", "1", "1-", "-1", "a-1", "1-1-1", "+1-1", " 1-1", "99999999999999999999999-1"] {
            assert!(bad.parse::<StreamId>().is_err(), "{bad:?}");
        }
        assert_eq!(a.next(a.ms - 10), StreamId { ms: a.ms, seq: 6 });
        assert_eq!(a.next(a.ms + 1), StreamId { ms: a.ms + 1, seq: 0 });
    }

    #[test]
    fn frame_positions() {
        let mut h = MemoryHistory::new(limits(10));
        let mut e = event(Audience::All);
        let (id, frame) = h.append(&mut e);
        assert_eq!(frame, e.frame());
        assert_eq!(frame_position(&e.frame()), Some(id));
        assert_eq!(frame_route(&e.frame()), Some((None, id)));
        let mut c = event(Audience::Channel("room".into()));
        let (id, frame) = h.append(&mut c);
        assert_eq!(frame_route(&frame), Some((Some("room".to_string()), id)));
        assert_eq!(frame_position(r#"{"type":"pong"}"#), None);
        assert_eq!(frame_position(r#"{"id":"01JABCDEF","type":"t"}"#), None);
    }

    #[test]
    fn replays_what_was_missed_for_that_user() {
        let mut h = MemoryHistory::new(limits(100));
        let first = h.append(&mut event(Audience::All)).0;
        let a = h.append(&mut event(Audience::All)).0;
        let _b = h.append(&mut event(Audience::Users(vec!["bob".into()])));
        let c = h.append(&mut event(Audience::Users(vec!["alice".into(), "carol".into()]))).0;
        assert_eq!(ids(h.replay(&first.to_string(), "alice", &[], 100)), [a.to_string(), c.to_string()]);
        assert!(ids(h.replay(&c.to_string(), "alice", &[], 100)).is_empty());
        // Malformed, from the future, from before this process: not recoverable.
        assert_eq!(ids(h.replay("x", "alice", &[], 100)), ["not recovered"]);
        assert_eq!(ids(h.replay(&c.next(c.ms + 1).to_string(), "alice", &[], 100)), ["not recovered"]);
        assert_eq!(ids(h.replay("1-0", "alice", &[], 100)), ["not recovered"]);
        // More than the caller may replay.
        assert_eq!(ids(h.replay(&first.to_string(), "alice", &[], 2)), ["not recovered"]);
    }

    #[test]
    fn history_pages_per_stream() {
        let mut h = MemoryHistory::new(limits(100));
        let a: Vec<StreamId> = (0..5).map(|_| h.append(&mut event(Audience::All)).0).collect();
        let c = h.append(&mut event(Audience::Channel("room".into()))).0;
        let q = |channel, since, limit| HistoryQuery { channel, since, limit };
        let page_ids = |p: HistoryPage| p.events.iter().map(|f| frame_position(f).unwrap()).collect::<Vec<_>>();
        let p = h.page(q(None, None, 2));
        assert_eq!(p.last_id, Some(a[4]));
        assert_eq!(page_ids(p), [a[3], a[4]], "the newest two, oldest first");
        assert_eq!(page_ids(h.page(q(None, Some(a[0]), 2))), [a[1], a[2]]);
        assert_eq!(page_ids(h.page(q(None, Some(a[4]), 2))), []);
        let p = h.page(q(Some("room"), None, 10));
        assert_eq!(p.last_id, Some(c));
        assert_eq!(page_ids(p), [c]);
        assert_eq!(h.page(q(Some("other"), None, 10)).last_id, None);
    }

    #[test]
    fn trimmed_history_is_not_recoverable() {
        let mut h = MemoryHistory::new(limits(3));
        let ids_: Vec<StreamId> = (0..5).map(|_| h.append(&mut event(Audience::All)).0).collect();
        assert_eq!(h.len(), 3);
        // ids_[1] was the last trimmed: everything after it is still here.
        assert_eq!(ids(h.replay(&ids_[1].to_string(), "u", &[], 10)).len(), 3);
        assert_eq!(ids(h.replay(&ids_[0].to_string(), "u", &[], 10)), ["not recovered"]);
        let mut off = MemoryHistory::new(limits(0));
        let id = off.append(&mut event(Audience::All)).0;
        assert_eq!(ids(off.replay(&id.to_string(), "u", &[], 10)), ["not recovered"]);
    }
}
