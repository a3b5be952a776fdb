//! The newest entries this instance delivered of each stream it follows, kept so that a resume
//! can be answered from memory.
//!
//! In a reconnect storm (an instance dies, its clients come back through the others) thousands
//! of clients resume at once, each from a `since` a few hundred events back. Reading that range
//! from Redis once per client costs Redis a copy of it per client, the gateway a decode per
//! client, and memory a private copy of every frame per client. Here the frames are the ones
//! the relay already fanned out (shared by reference count), and a resume reads a few pointers.
//!
//! The promise is the Redis path's (see the broker's docs), checked on what the relay
//! delivered: each window holds *every* entry of its stream after `from`, in order (the relay
//! delivers a stream's entries one after another, filling gaps from the stream), and records
//! the newest entry after which nothing is promised (an event held during an outage, a note, a
//! loss marker, an entry that could not be decoded). A window starts again when the relay's
//! position jumps (a new data set, entries trimmed while away, a stream followed anew), and
//! answers only while the link is live. Whatever it cannot answer goes to Redis.

use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::keys::StreamKey;
use super::wire::Body;
use crate::history::{addressed_to, Replay, StreamId};

/// Per entry, what it costs beside its frame (the id, the audience, the queue slot).
const ENTRY_OVERHEAD: usize = 64;

pub struct Recent {
    // A std RwLock, not messages to the relay: the relay writes one entry per delivered event
    // (a few instructions under the lock), resumes read; routing a reconnect storm's thousands
    // of resumes through the relay's queue would put them behind delivery, and delivery
    // behind them. Never held across an await.
    inner: RwLock<Windows>,
    max_events: usize,
    max_bytes: usize,
    /// `HISTORY_MAX_AGE_SECS`, in ms: older entries count as trimmed, as in Redis (which trims
    /// by id on every append).
    max_age_ms: u64,
}

#[derive(Default)]
struct Windows {
    /// The link is live: the windows are what the fleet published, up to the relay's lag.
    live: bool,
    streams: HashMap<StreamKey, Window>,
    bytes: usize,
}

struct Window {
    /// Every entry of the stream after `from` is in `entries`. `None`: the window starts at
    /// the next entry the relay delivers.
    from: Option<StreamId>,
    /// `from` is itself an entry of the stream (so resuming from it proves the data set).
    from_is_entry: bool,
    entries: VecDeque<Cached>,
    /// The newest entry across which no resume is promised.
    unsure: Option<StreamId>,
}

struct Cached {
    sid: StreamId,
    frame: Utf8Bytes,
    users: Option<Vec<String>>,
    bytes: usize,
}

impl Recent {
    /// Bounds: entries per stream (`HISTORY_MAX_EVENTS`), bytes in all (`HISTORY_MAX_BYTES`),
    /// age (`HISTORY_MAX_AGE_SECS`).
    pub fn new(max_events: usize, max_bytes: usize, max_age: std::time::Duration) -> Recent {
        let max_age_ms = max_age.as_millis() as u64;
        Recent { inner: RwLock::new(Windows::default()), max_events, max_bytes, max_age_ms }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Windows> {
        // Every update is a push or a pop: a panic elsewhere cannot leave a window half-made.
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the windows may answer resumes (the relay: link live, or not).
    pub fn set_live(&self, live: bool) {
        self.write().live = live;
    }

    /// `stream`'s window starts again at `from` (`None`: at the next entry delivered).
    pub fn restart(&self, stream: &StreamKey, from: Option<StreamId>, from_is_entry: bool) {
        let mut w = self.write();
        let freed = w.streams.remove(stream).map_or(0, |old| old.entries.iter().map(|e| e.bytes).sum());
        w.bytes -= freed;
        let window =
            Window { from, from_is_entry: from_is_entry && from.is_some(), entries: VecDeque::new(), unsure: None };
        w.streams.insert(stream.clone(), window);
    }

    /// The relay stopped following `stream`.
    pub fn forget(&self, stream: &StreamKey) {
        let mut w = self.write();
        if let Some(old) = w.streams.remove(stream) {
            w.bytes -= old.entries.iter().map(|e| e.bytes).sum::<usize>();
        }
    }

    /// The relay delivered (or passed over) event `sid` of `stream`. `promised`: a resume
    /// across it may be promised (it reached local clients only now, from the stream, under
    /// its stream id: not held, not delivered early, not a second copy).
    pub fn push_event(
        &self,
        stream: &StreamKey,
        sid: StreamId,
        frame: &Utf8Bytes,
        users: &Option<Vec<String>>,
        promised: bool,
    ) {
        let bytes = ENTRY_OVERHEAD + frame.len();
        let mut guard = self.write();
        let w = &mut *guard;
        let Some(window) = w.streams.get_mut(stream) else { return };
        let Some(from) = window.from else {
            // The first entry after a restart at "the next entry": the window starts after it.
            window.from = Some(sid);
            window.from_is_entry = true;
            return;
        };
        if sid <= window.entries.back().map_or(from, |e| e.sid) {
            return; // not after the newest: delivered already
        }
        if !promised {
            window.unsure = Some(sid);
        }
        window.entries.push_back(Cached { sid, frame: frame.clone(), users: users.clone(), bytes });
        w.bytes += bytes;
        let cutoff = sid.ms.saturating_sub(self.max_age_ms);
        while window.entries.len() > self.max_events
            || (w.bytes > self.max_bytes && window.entries.len() > 1)
            || window.entries.front().is_some_and(|e| e.sid.ms < cutoff)
        {
            let Some(old) = window.entries.pop_front() else { break };
            w.bytes -= old.bytes;
            window.from = Some(old.sid);
            window.from_is_entry = true;
        }
    }

    /// An entry of `stream` across which no resume is promised: a loss marker, a note, one
    /// that could not be decoded.
    pub fn push_unsure(&self, stream: &StreamKey, sid: StreamId) {
        let mut w = self.write();
        if let Some(window) = w.streams.get_mut(stream) {
            if window.from.is_none() {
                window.from = Some(sid);
            }
            window.unsure = Some(window.unsure.map_or(sid, |u| u.max(sid)));
        }
    }

    /// A resume of `user` in `channels` from `since`, if the windows can promise it; `None`
    /// when they cannot tell (the caller asks Redis).
    pub fn replay(&self, since: StreamId, user: &str, channels: &[String], max: usize) -> Option<Replay> {
        let w = self.inner.read().unwrap_or_else(|p| p.into_inner());
        if !w.live {
            return None;
        }
        // Entries older than the retention count as gone, as Redis trims them by id.
        let cutoff = crate::event::now_ms().saturating_sub(self.max_age_ms);
        let mut present = false;
        let mut upto = Vec::with_capacity(channels.len() + 1);
        let mut all: Vec<(StreamId, Utf8Bytes)> = Vec::new();
        let streams = std::iter::once(None).chain(channels.iter().map(|c| Some(c.as_str())));
        for stream in streams {
            let key: StreamKey = stream.map(Into::into);
            let window = w.streams.get(&key)?;
            let aged = window.entries.partition_point(|e| e.sid.ms < cutoff);
            let from = if aged > 0 { window.entries[aged - 1].sid } else { window.from? };
            if since < from || since.ms < cutoff || window.unsure.is_some_and(|u| u > since) {
                return None;
            }
            let start = window.entries.partition_point(|e| e.sid <= since);
            present |= (since == from && window.from_is_entry) || (start > 0 && window.entries[start - 1].sid == since);
            if window.entries.len() - start > max {
                return None;
            }
            let after = window.entries.range(start..);
            let newest = window.entries.back().map_or(since, |e| e.sid.max(since));
            upto.push((stream.map(str::to_string), newest));
            for e in after {
                if addressed_to(&Body::audience(&e.users, stream), user, channels) {
                    all.push((e.sid, e.frame.clone()));
                }
            }
        }
        if !present {
            return None;
        }
        all.sort_by_key(|(id, _)| *id);
        Some(Replay::Recovered { frames: all.into_iter().map(|(_, f)| f).collect(), upto })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids are ms since now minus a day plus `ms`, so the age bound of a day keeps them all.
    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

    fn id(ms: u64) -> StreamId {
        StreamId { ms: base() + ms, seq: 0 }
    }

    fn base() -> u64 {
        static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        *BASE.get_or_init(|| crate::event::now_ms() - 86_400_000 + 60_000)
    }

    fn frame(ms: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!(r#"{{"id":"{}","type":"t","data":null,"ts":1}}"#, id(ms)))
    }

    fn push(r: &Recent, stream: &StreamKey, ms: u64, users: Option<Vec<String>>, promised: bool) {
        r.push_event(stream, id(ms), &frame(ms), &users, promised);
    }

    fn ids(r: Option<Replay>) -> Option<Vec<u64>> {
        match r? {
            Replay::Recovered { frames, .. } => {
                Some(frames.iter().map(|f| crate::history::frame_position(f).unwrap().ms - base()).collect())
            }
            Replay::NotRecovered => panic!("the windows never refuse: they pass"),
        }
    }

    fn window(from: u64) -> Recent {
        let r = Recent::new(100, 1 << 20, DAY);
        r.restart(&None, Some(id(from)), true);
        r.set_live(true);
        r
    }

    #[test]
    fn replays_what_it_holds_after_an_entry_it_knows() {
        let r = window(10);
        for ms in 11..=15 {
            push(&r, &None, ms, None, true);
        }
        push(&r, &None, 16, Some(vec!["bob".into()]), true);
        assert_eq!(ids(r.replay(id(12), "alice", &[], 100)), Some(vec![13, 14, 15]));
        assert_eq!(ids(r.replay(id(12), "bob", &[], 100)), Some(vec![13, 14, 15, 16]));
        assert_eq!(ids(r.replay(id(10), "alice", &[], 100)), Some(vec![11, 12, 13, 14, 15]), "from itself");
        assert_eq!(ids(r.replay(id(16), "alice", &[], 100)), Some(vec![]));
        // Before the window, not an entry (a future id, or one of another data set), too many.
        assert_eq!(ids(r.replay(id(9), "alice", &[], 100)), None);
        assert_eq!(ids(r.replay(StreamId { ms: base() + 12, seq: 1 }, "alice", &[], 100)), None);
        assert_eq!(ids(r.replay(id(99), "alice", &[], 100)), None);
        assert_eq!(ids(r.replay(id(10), "alice", &[], 3)), None);
        // Only while live.
        r.set_live(false);
        assert_eq!(ids(r.replay(id(12), "alice", &[], 100)), None);
    }

    #[test]
    fn nothing_is_promised_across_an_unsure_entry() {
        let r = window(10);
        push(&r, &None, 11, None, true);
        push(&r, &None, 12, None, false); // held during an outage
        push(&r, &None, 13, None, true);
        assert_eq!(ids(r.replay(id(11), "a", &[], 100)), None);
        assert_eq!(ids(r.replay(id(12), "a", &[], 100)), Some(vec![13]));
        r.push_unsure(&None, id(14)); // a loss marker
        assert_eq!(ids(r.replay(id(13), "a", &[], 100)), None);
        r.push_unsure(&None, id(20));
        assert_eq!(ids(r.replay(id(14), "a", &[], 100)), None);
    }

    #[test]
    fn channels_need_their_own_window_and_merge_in_id_order() {
        let r = window(10);
        push(&r, &None, 11, None, true);
        assert_eq!(ids(r.replay(id(10), "a", &["room".into()], 100)), None, "room is not followed");
        r.restart(&Some("room".into()), Some(id(9)), true);
        push(&r, &Some("room".into()), 12, None, true);
        push(&r, &None, 13, None, true);
        assert_eq!(ids(r.replay(id(10), "a", &["room".into()], 100)), Some(vec![11, 12, 13]));
        r.forget(&Some("room".into()));
        assert_eq!(ids(r.replay(id(10), "a", &["room".into()], 100)), None);
    }

    #[test]
    fn entries_past_the_retention_count_as_trimmed() {
        let r = Recent::new(100, 1 << 20, std::time::Duration::from_secs(60));
        r.set_live(true);
        r.restart(&None, Some(id(0)), true);
        // base() + ms is a day old: every entry is older than 60 s.
        push(&r, &None, 1, None, true);
        assert_eq!(ids(r.replay(id(0), "a", &[], 100)), None, "older than the retention");
        let now = crate::event::now_ms();
        let fresh = StreamId { ms: now, seq: 0 };
        let f = Utf8Bytes::from(format!(r#"{{"id":"{fresh}","type":"t","data":null,"ts":1}}"#));
        r.push_event(&None, fresh, &f, &None, true);
        let next = StreamId { ms: now, seq: 1 };
        let f2 = Utf8Bytes::from(format!(r#"{{"id":"{next}","type":"t","data":null,"ts":1}}"#));
        r.push_event(&None, next, &f2, &None, true);
        assert!(
            matches!(r.replay(fresh, "a", &[], 100), Some(Replay::Recovered { ref frames, .. }) if frames.len() == 1)
        );
    }

    #[test]
    fn a_restart_at_the_next_entry_and_the_bounds() {
        let r = Recent::new(3, 1 << 20, DAY);
        r.set_live(true);
        r.restart(&None, None, false);
        assert_eq!(ids(r.replay(id(5), "a", &[], 100)), None, "nothing known yet");
        push(&r, &None, 5, None, true);
        push(&r, &None, 6, None, true);
        assert_eq!(ids(r.replay(id(5), "a", &[], 100)), Some(vec![6]));
        for ms in 7..=9 {
            push(&r, &None, ms, None, true);
        }
        // At most 3 entries: 7, 8, 9; 6 is the window's start now.
        assert_eq!(ids(r.replay(id(6), "a", &[], 100)), Some(vec![7, 8, 9]));
        assert_eq!(ids(r.replay(id(5), "a", &[], 100)), None);
        let tiny = Recent::new(100, 3 * (ENTRY_OVERHEAD + 40), DAY);
        tiny.set_live(true);
        tiny.restart(&None, Some(id(0)), true);
        for ms in 1..=10 {
            push(&tiny, &None, ms, None, true);
        }
        let kept = ids(tiny.replay(tiny.inner.read().unwrap().streams[&None].from.unwrap(), "a", &[], 100)).unwrap();
        assert!(kept.len() <= 3 && kept.last() == Some(&10), "{kept:?}");
    }
}
