//! The relay task: the one owner of this instance's delivery state in Redis mode.
//!
//! It alone hands stream events to the hub, so it alone knows how far this instance has
//! delivered each stream (its cursors), which dataset it followed (the epoch), and which events
//! its clients already have ahead of the stream (own events delivered early, held events). The
//! publish path and sessions talk to it through a bounded command channel and read what it
//! publishes through `watch`es; nothing it owns sits behind a lock.
//!
//! # The rules it keeps
//!
//! - **Stream order, no gap, no repeat.** Each pub/sub message carries its entry's id and its
//!   predecessor's. An entry at or before the cursor is skipped; one whose predecessor is past
//!   the cursor means messages were missed, and the hole is filled from the stream (XRANGE)
//!   first. Every (re)connect of the subscription starts with a catch-up: subscribe, check each
//!   stream, fill from the cursor. Messages are only taken while live and caught up.
//! - **Data loss is detected and told.** The catch-up compares the dataset's epoch with the one
//!   followed (a new epoch: Redis restarted empty), and checks that the cursor's entry is still
//!   there (gone without being trimmed: a failover to a replica that lacked it) and that
//!   nothing after it was trimmed while away. Own events that Redis acknowledged but does not
//!   have any more are found too. Then the affected connections get a `resync` frame, and for
//!   a loss other instances may not see by themselves a loss marker goes into the stream.
//! - **Local order during outages.** While Redis is away, accepted events reach local clients
//!   at once under their ULID and wait in the outbox ([`super::held`]); own events appended
//!   just before the link broke are delivered before them. All of these are remembered by
//!   ULID (`early`) and skipped when the stream brings them back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::held::Held;
use super::keys::StreamKey;
use super::recent::Recent;
use super::supervisor::{Link, Supervisor};
use super::wire::{decode_message, stream_entries, Body, Entry};
use super::Shared;
use crate::broker::{PublishError, Published};
use crate::event::{now_ms, Audience, Dispatch, Event, FRAME_HEAD};
use crate::history::StreamId;
use crate::hub::{HubClosed, Submitter};
use crate::idempotency::IdemKey;
use crate::protocol::ServerFrame;

/// How often the link state is sampled and channel unsubscriptions fall due.
const TICK: Duration = Duration::from_millis(100);
/// Stream entries read per XRANGE when filling a gap.
const FILL_PAGE: u64 = 1000;
/// Own events remembered until the subscription brings them (see [`Relay::pending`]); older
/// ones are left to the stream.
const MAX_PENDING: usize = 10_000;
/// ULIDs of events delivered ahead of the stream; bounded by the outbox in practice, capped in
/// case the stream never brings some back (they were lost).
const MAX_EARLY: usize = 100_000;
/// ULIDs of the events delivered last, so that an event appended twice (a held copy and a
/// first append thought lost that Redis ran after all) is delivered once.
const RECENT: usize = 4096;

/// What the rest of the broker asks of the relay.
pub enum Cmd {
    /// An own event the publish script appended. It reaches local clients from the
    /// subscription like every other; kept until then so that, if the link breaks first, it
    /// is delivered before any event held after it.
    Appended { stream: StreamKey, sid: StreamId, own: Own },
    /// A publish that cannot go straight to Redis: the link is not live, events are held, or
    /// an append failed on the way (`uncertain`: it may have happened).
    Enqueue {
        event: Event,
        key: Option<IdemKey>,
        uncertain: bool,
        reply: oneshot::Sender<Result<Published, PublishError>>,
    },
    /// A local connection joined `channel`: follow its stream (answered once subscribed).
    Join { channel: Arc<str>, reply: oneshot::Sender<()> },
    /// A local connection left `channel`.
    Leave { channel: Arc<str> },
}

/// An own event, as it would be delivered early.
pub struct Own {
    pub eid: String,
    pub frame_tail: String,
    pub audience: Audience,
    pub ts: u64,
    /// The hub's next connection id when the event was accepted (see [`Dispatch::before_conn`]).
    pub watermark: u64,
}

impl Own {
    fn dispatch(&self, id: &str) -> Dispatch {
        let frame = frame(id, &self.frame_tail);
        Dispatch { frame, audience: self.audience.clone(), ts: self.ts, before_conn: Some(self.watermark) }
    }
}

fn frame(id: &str, tail: &str) -> Utf8Bytes {
    let mut f = String::with_capacity(FRAME_HEAD.len() + id.len() + 2 + tail.len());
    f.push_str(FRAME_HEAD);
    f.push_str(id);
    f.push_str("\",");
    f.push_str(tail);
    Utf8Bytes::from(f)
}

fn resync_frame(reason: &str) -> Utf8Bytes {
    ServerFrame::Resync { reason }.encode()
}

/// Why connections are told to resync: the reasons of the protocol's `resync` frame.
pub use crate::protocol::resync as reason;

/// One stream this instance follows.
#[derive(Default)]
pub(super) struct Follow {
    /// The newest entry handed to the hub (or passed over). `None` until the stream's end is
    /// known.
    pub(super) cursor: Option<StreamId>,
    /// The dataset the cursor belongs to.
    epoch: Option<String>,
}

/// What the relay publishes for sessions: the newest position delivered per stream.
pub type Positions = HashMap<StreamKey, StreamId>;

pub struct Relay {
    pub(super) sh: Arc<Shared>,
    pub(super) hub: Submitter,
    pub(super) cmds: mpsc::Receiver<Cmd>,
    pub(super) link: Supervisor,
    pub(super) positions: watch::Sender<Positions>,
    /// Mirrors `held.len()` for the publish path (which goes straight to Redis only when
    /// nothing is held).
    pub(super) held_len: Arc<AtomicUsize>,
    pub(super) follows: HashMap<StreamKey, Follow>,
    /// Own events appended, not yet seen on the subscription, by (id, ULID).
    pub(super) pending: BTreeMap<(StreamId, String), (StreamKey, Own)>,
    /// ULIDs of events local clients already have (delivered early or held).
    pub(super) early: HashSet<String>,
    /// The last [`RECENT`] ULIDs delivered, oldest first, and the same as a set.
    recent: (std::collections::VecDeque<Arc<str>>, HashSet<Arc<str>>),
    pub(super) held: Held,
    /// Channels with local connections: each join counts one, each leave takes one.
    pub(super) topics: HashMap<Arc<str>, usize>,
    /// Channels nobody here is in any more, since when: dropped after the unsubscribe delay
    /// unless joined again.
    pub(super) idle: HashMap<Arc<str>, Instant>,
    pub(super) unsubscribe_delay: Duration,
    /// The subscription (re)connected since the last catch-up: messages wait for one.
    pub(super) stale: bool,
    /// The newest entries delivered, for resumes (this task is their one writer).
    pub(super) window: Arc<Recent>,
    pub(super) cancel: CancellationToken,
}

pub struct RelayParts {
    pub cmds: mpsc::Receiver<Cmd>,
    pub link: Supervisor,
    pub positions: watch::Sender<Positions>,
    pub held_len: Arc<AtomicUsize>,
    pub held: Held,
    pub unsubscribe_delay: Duration,
    pub recent: Arc<Recent>,
    pub cancel: CancellationToken,
}

impl Relay {
    pub fn new(sh: Arc<Shared>, hub: Submitter, p: RelayParts) -> Relay {
        let mut follows = HashMap::new();
        follows.insert(None, Follow::default());
        Relay {
            sh,
            hub,
            cmds: p.cmds,
            link: p.link,
            positions: p.positions,
            held_len: p.held_len,
            follows,
            pending: BTreeMap::new(),
            early: HashSet::new(),
            recent: Default::default(),
            held: p.held,
            topics: HashMap::new(),
            idle: HashMap::new(),
            unsubscribe_delay: p.unsubscribe_delay,
            stale: true,
            window: p.recent,
            cancel: p.cancel,
        }
    }

    pub async fn run(mut self) {
        let mut messages = self.sh.subscriber.message_rx();
        let mut reconnects = self.sh.subscriber.reconnect_rx();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected_once = false;
        loop {
            let closed = tokio::select! {
                // Reconnect events first: fred announces a new connection before any message
                // arrives on it, so no message of a new connection is taken before the
                // catch-up that checks the dataset.
                biased;
                _ = self.cancel.cancelled() => return,
                r = reconnects.recv() => {
                    if r.is_ok() && std::mem::replace(&mut connected_once, true) {
                        self.sh.metrics.redis_reconnects.inc();
                    }
                    self.stale = true;
                    self.supervise().await
                }
                m = messages.recv() => match m {
                    Ok(m) => self.on_message(m).await,
                    Err(RecvError::Lagged(n)) => {
                        // Fell behind fred's buffer: n messages are gone from the channel, not
                        // from the stream.
                        self.sh.metrics.redis_messages_lost.inc_by(n);
                        tracing::warn!(lost = n, "Redis subscriber lagged; refilling from the stream");
                        self.stale = true;
                        self.supervise().await
                    }
                    Err(RecvError::Closed) => return,
                },
                Some(cmd) = self.cmds.recv() => self.on_command(cmd).await,
                _ = tick.tick() => {
                    let r = self.supervise().await;
                    self.expire_topics().await;
                    r
                }
            };
            if closed.is_err() {
                return; // the hub is gone: the instance is stopping
            }
        }
    }

    fn up(&self) -> bool {
        self.sh.publisher.is_connected() && self.sh.subscriber.is_connected()
    }

    /// Moves the link state along: live when caught up, down when Redis is gone.
    async fn supervise(&mut self) -> Result<(), HubClosed> {
        let link = self.link.get();
        let up = self.up();
        match link {
            Link::Live if !up => self.go_down().await?,
            Link::Live if self.stale && !self.catch_up().await? => self.go_down().await?,
            Link::Live => {}
            _ if up => {
                if self.catch_up().await? && self.flush_held().await {
                    self.link.set(Link::Live, &self.sh.keys.broadcast().topic);
                    self.window.set_live(true);
                } else if link == Link::Starting && self.link.startup_over() {
                    self.link.set(Link::LocalOnly, "");
                }
            }
            Link::Starting if self.link.startup_over() => {
                self.link.set(Link::LocalOnly, "");
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) async fn go_down(&mut self) -> Result<(), HubClosed> {
        self.stale = true;
        self.window.set_live(false);
        if self.link.get() == Link::Live {
            self.link.set(Link::Down, "");
        }
        self.deliver_pending_early().await
    }

    /// Own events appended but not seen back: local clients get them now, before anything
    /// held after them, and the stream's copies are skipped later.
    pub(super) async fn deliver_pending_early(&mut self) -> Result<(), HubClosed> {
        for ((sid, eid), (_, own)) in std::mem::take(&mut self.pending) {
            self.remember_early(eid);
            self.hub.submit(own.dispatch(&sid.to_string()), None).await?;
        }
        Ok(())
    }

    /// Records a delivered event's ULID; false when it was delivered already.
    fn remember_delivered(&mut self, eid: String) -> bool {
        let eid: Arc<str> = Arc::from(eid);
        let (order, set) = &mut self.recent;
        if !set.insert(eid.clone()) {
            return false;
        }
        order.push_back(eid);
        if order.len() > RECENT {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }

    pub(super) fn remember_early(&mut self, eid: String) {
        if self.early.len() >= MAX_EARLY {
            // ULIDs sort by time: forget the oldest half (their entries are long overdue).
            let mut all: Vec<String> = self.early.drain().collect();
            all.sort_unstable();
            self.early.extend(all.split_off(all.len() / 2));
        }
        self.early.insert(eid);
    }

    /// (Re)subscribes and brings every followed stream up to date; detects lost data. False
    /// when Redis failed on the way (the link is down again; the next tick retries).
    async fn catch_up(&mut self) -> Result<bool, HubClosed> {
        if !self.subscribe_all().await {
            return Ok(false);
        }
        // The broadcast stream (None) first: if its connections, that is all of them, are told
        // to resync, channel streams need not tell them again.
        let mut keys: Vec<StreamKey> = self.follows.keys().cloned().collect();
        keys.sort();
        let epochs: HashMap<StreamKey, Option<String>> =
            self.follows.iter().map(|(k, f)| (k.clone(), f.epoch.clone())).collect();
        let mut told_all = false;
        for key in keys {
            match self.check_stream(&key, told_all, false).await {
                Ok(told) => told_all |= told && key.is_none(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not check an event stream after (re)connecting");
                    return Ok(false);
                }
            }
        }
        // Own events acknowledged by Redis and not in the stream after the fill: lost.
        let lost: Vec<(StreamKey, StreamId)> =
            self.pending.iter().map(|((sid, _), (stream, _))| (stream.clone(), *sid)).collect();
        if !lost.is_empty() {
            self.deliver_pending_early().await?;
            let mut newest: HashMap<StreamKey, StreamId> = HashMap::new();
            for (stream, sid) in lost {
                let e = newest.entry(stream).or_default();
                *e = (*e).max(sid);
            }
            for (stream, floor) in newest {
                let before = epochs.get(&stream).cloned().flatten();
                let now = self.follows.get(&stream).and_then(|f| f.epoch.clone());
                if before.is_some() && before != now {
                    continue; // a new data set: everyone was told already
                }
                tracing::warn!(stream = ?stream, "Redis lost events it had acknowledged to this instance");
                if self.mark_loss(&stream, floor).await.is_err() {
                    return Ok(false);
                }
            }
        }
        self.stale = false;
        Ok(true)
    }

    /// Checks one stream against what this instance delivered of it, tells its connections of
    /// any loss, and fills it. Returns whether its connections were told to resync.
    ///
    /// `joined_now`: a channel a local connection joins while the link is live (nobody here
    /// could have missed anything of it yet).
    pub(super) async fn check_stream(
        &mut self,
        key: &StreamKey,
        all_told: bool,
        joined_now: bool,
    ) -> Result<bool, Error> {
        let route = self.sh.keys.route(key.as_deref());
        let (cursor, epoch) = {
            let f = self.follows.entry(key.clone()).or_default();
            (f.cursor, f.epoch.clone())
        };
        let check = self.sh.scripts.check(&self.sh.publisher, &route, cursor.filter(|c| *c != StreamId::ZERO)).await?;
        let mut told = None;
        let start = match cursor {
            // First time: start at the stream's end. Unless this is the start-up or a join
            // while live, local connections were served without this stream (Redis not
            // reached within the start-up wait, a channel joined while Redis was away): they
            // could not get its events from other instances meanwhile.
            None => {
                if !joined_now && self.link.get() != Link::Starting {
                    told = Some(reason::UNAVAILABLE);
                }
                check.newest.unwrap_or(StreamId::ZERO)
            }
            Some(_) if epoch.as_deref().is_some_and(|e| e != check.epoch) => {
                // A new dataset: everything in it is new to us; what we had is gone.
                tracing::warn!(stream = %route.stream, "Redis lost its data (new epoch); telling connections to resync");
                told = Some(reason::DATA_LOST);
                StreamId::ZERO
            }
            Some(c) if c != StreamId::ZERO && !check.cursor_present => {
                if check.max_deleted > c {
                    tracing::warn!(stream = %route.stream, "events were trimmed from the stream while this instance was away");
                    told = Some(reason::TRIMMED);
                } else if check.max_deleted < c {
                    // Gone without being trimmed: Redis lost it (e.g. a failover to a replica
                    // that lacked it). Others may not see it by themselves: mark the stream
                    // (the fill below reads the marker, and this instance's clients are told).
                    tracing::warn!(stream = %route.stream, cursor = %c, "an entry this instance delivered is gone from Redis");
                    self.mark_loss(key, c).await?;
                }
                c
            }
            Some(c) => c,
        };
        // Where the window of newest entries starts again (see `recent`): it stays as it was
        // while the position carries on from the cursor.
        match (cursor, told) {
            (None, _) => self.window.restart(key, Some(start), check.newest.is_some()),
            (Some(_), Some(reason::DATA_LOST)) if start == StreamId::ZERO => {
                self.window.restart(key, Some(StreamId::ZERO), false)
            }
            // Trimmed while away: entries after the cursor are missing; start after the next one.
            (Some(_), Some(reason::TRIMMED)) => self.window.restart(key, None, false),
            _ => {}
        }
        if let Some(f) = self.follows.get_mut(key) {
            f.cursor = Some(start);
            f.epoch = Some(check.epoch);
        }
        let told_now = match told {
            Some(r) if !(all_told && key.is_some()) => {
                self.resync(key.clone(), r).await.map_err(|_| Error::new(ErrorKind::Canceled, "stopping"))?;
                true
            }
            Some(_) => true,
            None => false,
        };
        // Where connections registered from now on start (ZERO, after a new epoch: none yet).
        self.set_position(key, start);
        self.fill(key, None).await?;
        Ok(told_now)
    }

    /// Appends a loss marker to `stream` (see `mark.lua`); the relays of every instance, this
    /// one included, tell their connections of that stream when they read it.
    async fn mark_loss(&mut self, stream: &StreamKey, floor: StreamId) -> Result<(), Error> {
        let route = self.sh.keys.route(stream.as_deref());
        self.sh.scripts.mark(&self.sh.publisher, &route, reason::DATA_LOST, floor).await?;
        self.sh.metrics.redis_loss_markers.inc();
        Ok(())
    }

    /// Delivers the entries of `stream` after its cursor (and before `upto`), in order.
    async fn fill(&mut self, stream: &StreamKey, upto: Option<StreamId>) -> Result<(), Error> {
        let route = self.sh.keys.route(stream.as_deref());
        let end = upto.map_or_else(|| "+".to_string(), |u| format!("({u}"));
        let mut filled = 0u64;
        loop {
            let Some(from) = self.follows.get(stream).and_then(|f| f.cursor) else { return Ok(()) };
            let reply: Value = self
                .sh
                .publisher
                .xrange(route.stream.as_str(), format!("({from}"), end.as_str(), Some(FILL_PAGE))
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "could not read the stream to fill a gap"))?;
            let entries = stream_entries(reply);
            let n = entries.len() as u64;
            for (sid, entry) in entries {
                match entry {
                    Ok(entry) => {
                        if matches!(&entry.body, Body::Event { eid, .. } if !self.early.contains(eid)) {
                            filled += 1;
                        }
                        self.deliver(stream, entry).await.map_err(|_| Error::new(ErrorKind::Canceled, "stopping"))?;
                    }
                    Err(e) => self.skip_bad(stream, sid, &e),
                }
            }
            if n < FILL_PAGE {
                break;
            }
        }
        if filled > 0 {
            self.sh.metrics.history_gaps.inc();
            self.sh.metrics.history_gap_events.inc_by(filled);
            tracing::info!(events = filled, stream = %route.stream, "filled a gap in the event stream from Redis");
        }
        Ok(())
    }

    fn skip_bad(&mut self, stream: &StreamKey, sid: StreamId, e: &super::wire::DecodeError) {
        self.sh.metrics.redis_bad_messages.inc();
        tracing::warn!(error = %e, stream_id = %sid, "undecodable entry in the event stream");
        if let Some(f) = self.follows.get_mut(stream) {
            if f.cursor.is_some_and(|c| sid > c) {
                f.cursor = Some(sid);
            }
        }
        self.window.push_unsure(stream, sid);
    }

    /// Hands one stream entry to the hub, unless it is at or before the cursor or local
    /// clients have it already.
    async fn deliver(&mut self, stream: &StreamKey, entry: Entry) -> Result<(), HubClosed> {
        let Some(f) = self.follows.get_mut(stream) else { return Ok(()) };
        if f.cursor.is_some_and(|c| entry.sid <= c) {
            return Ok(());
        }
        f.cursor = Some(entry.sid);
        self.set_position(stream, entry.sid);
        match entry.body {
            Body::Marker { reason } => {
                self.window.push_unsure(stream, entry.sid);
                tracing::warn!(stream = ?stream, id = %entry.sid, reason = %reason, "a loss marker in the stream");
                self.resync(stream.clone(), reason::label(&reason)).await
            }
            // For resumes only.
            Body::Note { .. } => {
                self.window.push_unsure(stream, entry.sid);
                Ok(())
            }
            Body::Event { eid, frame, users, held } => {
                if !self.pending.is_empty() {
                    self.pending.remove(&(entry.sid, eid.clone()));
                }
                // Local clients have it already (delivered early, or held), or it is the same
                // event under a second id: either way, not again.
                let early = !self.early.is_empty() && self.early.remove(&eid);
                let fresh = self.remember_delivered(eid);
                self.window.push_event(stream, entry.sid, &frame, &users, fresh && !early && !held);
                if !fresh || early {
                    return Ok(());
                }
                let ts = frame_ts(&frame).unwrap_or_else(now_ms);
                let audience = Body::audience(&users, stream.as_deref());
                self.hub.submit(Dispatch { frame, audience, ts, before_conn: None }, None).await
            }
        }
    }

    fn set_position(&self, stream: &StreamKey, sid: StreamId) {
        // No receiver waits for changes (sessions read it when they connect): no notify.
        self.positions.send_if_modified(|p| {
            match p.get_mut(stream) {
                Some(v) => *v = sid,
                None => {
                    p.insert(stream.clone(), sid);
                }
            }
            false
        });
    }

    pub(super) async fn resync(&mut self, stream: StreamKey, reason: &'static str) -> Result<(), HubClosed> {
        self.sh.metrics.resync(reason);
        let audience = match stream {
            None => Audience::All,
            Some(c) => Audience::Channel(c.to_string()),
        };
        let resync = Dispatch { frame: resync_frame(reason), audience, ts: now_ms(), before_conn: None };
        self.hub.submit(resync, None).await
    }

    async fn on_message(&mut self, msg: fred::types::Message) -> Result<(), HubClosed> {
        self.sh.metrics.redis_messages_received.inc();
        if self.stale || self.link.get() != Link::Live {
            return Ok(()); // the next catch-up reads it from the stream
        }
        let Some(stream) = self.sh.keys.stream_of_topic(&msg.channel) else { return Ok(()) };
        let Some(cursor) = self.follows.get(&stream).map(|f| f.cursor) else { return Ok(()) };
        let Some(bytes) = msg.value.as_bytes() else { return Ok(()) };
        let m = match decode_message(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.sh.metrics.redis_bad_messages.inc();
                tracing::warn!(error = %e, "undecodable message on a Redis channel");
                return Ok(());
            }
        };
        let Some(cursor) = cursor else { return Ok(()) };
        if m.entry.sid <= cursor {
            return Ok(()); // delivered already by a fill
        }
        if m.prev < cursor {
            // The entry before this one is older than what we delivered: the stream lost our
            // cursor's entry. The catch-up finds out what happened.
            tracing::warn!(stream = ?stream, "the stream went back behind this instance's position; checking");
            self.stale = true;
            return self.supervise().await;
        }
        if m.prev > cursor {
            // Missed messages: fill the hole from the stream first. If that fails, this one is
            // not delivered either (it is in the stream); the catch-up retries.
            if self.fill(&stream, Some(m.entry.sid)).await.is_err() {
                self.stale = true;
                return Ok(());
            }
        }
        self.deliver(&stream, m.entry).await
    }

    async fn on_command(&mut self, cmd: Cmd) -> Result<(), HubClosed> {
        match cmd {
            Cmd::Appended { stream, sid, own } => {
                if !self.follows.contains_key(&stream) {
                    return Ok(()); // a channel with no subscriber here
                }
                if self.link.get() != Link::Live {
                    // The link broke meanwhile: local clients get it now.
                    self.remember_early(own.eid.clone());
                    return self.hub.submit(own.dispatch(&sid.to_string()), None).await;
                }
                let delivered = self.follows.get(&stream).and_then(|f| f.cursor).is_some_and(|c| sid <= c);
                if !delivered {
                    self.pending.insert((sid, own.eid.clone()), (stream, own));
                    if self.pending.len() > MAX_PENDING {
                        self.pending.pop_first();
                    }
                }
                Ok(())
            }
            Cmd::Enqueue { event, key, uncertain, reply } => {
                let r = self.enqueue(event, key, uncertain).await;
                let _ = reply.send(r);
                Ok(())
            }
            Cmd::Join { channel, reply } => {
                self.join(channel).await;
                let _ = reply.send(());
                Ok(())
            }
            Cmd::Leave { channel } => {
                self.leave(channel);
                Ok(())
            }
        }
    }
}

/// The `ts` of an event frame: frames end with `,"ts":<ms>}` (see [`crate::event::Event::frame`]).
fn frame_ts(frame: &str) -> Option<u64> {
    let body = frame.strip_suffix('}')?;
    let at = body.rfind(":")?;
    body[at + 1..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_spliced_and_their_ts_read() {
        let f = frame("5-1", r#""type":"t","data":{"a":":"},"ts":1234}"#);
        assert_eq!(f.as_str(), r#"{"id":"5-1","type":"t","data":{"a":":"},"ts":1234}"#);
        assert_eq!(frame_ts(&f), Some(1234));
        assert_eq!(frame_ts("{}"), None);
    }
}
