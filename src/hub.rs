//! The local registry: connection id → outbox, user → connections; counts; fan-out.
//!
//! The hub is the only place that knows who is connected to this instance. Brokers hand it
//! encoded events through a [`Submitter`]; one dispatcher task takes them in order, resolves
//! each event's [`Audience`] against the registry and pushes the same frame bytes (encoded
//! once, where the event entered history) into every matching outbox. Pushing never waits, so delivery cost is bounded by the number of
//! matching sockets, whatever any one client does.
//!
//! Why a dispatcher task instead of fanning out in the publisher's request: a publish is
//! answered once the event is in the dispatch queue, not after 10,000 sockets have been woken
//! (milliseconds), so one sequential publisher is not capped by the audience size; and when
//! events arrive faster than one fan-out, the dispatcher takes the backlog as a batch and
//! queues a run of broadcasts on each socket under one lock with one wake-up, so the sessions
//! write them with one syscall. Order is kept: one queue, one dispatcher.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::channel::Refusal;
use crate::disconnect::Disconnect;
pub use crate::event::Dispatch;
use crate::event::{now_ms, Audience, Event};
use crate::metrics::Metrics;
use crate::outbox::{Limits, Outbox, Push};

/// Events waiting for the dispatcher. Bounded: when fan-out falls this far behind, `submit`
/// waits, which slows publishers down (backpressure) instead of growing memory.
const DISPATCH_QUEUE: usize = 4096;
/// ...and bounded in bytes too, since one event may carry up to MAX_BODY_BYTES: the `data`
/// of queued events may total at most this many KiB (4,096 events of 256 KiB would be 1 GiB).
const DISPATCH_BUDGET_KIB: u32 = 64 * 1024;
/// Most events the dispatcher takes in one batch; bounds how long the registry's read lock
/// is held in one go (a batch of broadcasts to 10k sockets is still about a millisecond).
const DISPATCH_BATCH: usize = 64;

/// A dispatch waiting for the dispatcher, with when it was accepted (local publishes only).
struct Pending {
    dispatch: Dispatch,
    accepted_at: Option<Instant>,
    /// The event's share of the dispatch budget, returned when the batch is delivered.
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What a broker holds to hand events to the hub: the dispatch queue's sending side and its
/// byte budget. Brokers get this, not the hub, so delivery has one way in.
#[derive(Clone)]
pub struct Submitter {
    tx: mpsc::Sender<Pending>,
    budget: Arc<tokio::sync::Semaphore>,
    next_conn: Arc<AtomicU64>,
}

impl Submitter {
    /// The id the next connection will get: connections registered from now on have ids at or
    /// above it (see [`Dispatch::before_conn`]).
    pub fn watermark(&self) -> u64 {
        self.next_conn.load(Ordering::Acquire)
    }

    /// Hands a frame to the dispatcher; resolves once it is queued for fan-out, in order after
    /// everything submitted before it. Waits while the dispatch queue is full.
    pub async fn submit(&self, dispatch: Dispatch, accepted_at: Option<Instant>) -> Result<(), HubClosed> {
        let kib = (dispatch.frame.len() / 1024) as u32 + 1;
        let budget = self.budget.clone().acquire_many_owned(kib.min(DISPATCH_BUDGET_KIB)).await;
        let pending = Pending { dispatch, accepted_at, _budget: Some(budget.map_err(|_| HubClosed)?) };
        self.tx.send(pending).await.map_err(|_| HubClosed)
    }
}

/// The hub no longer takes events (its dispatcher is gone).
#[derive(Debug)]
pub struct HubClosed;

#[derive(Default)]
struct Registry {
    /// connection id → its outbox.
    conns: HashMap<u64, Arc<Outbox>>,
    /// user → that user's connection ids (usually one or two, so a Vec beats a set).
    users: HashMap<Arc<str>, Vec<u64>>,
    /// channel → its subscribed connections here, with their users (for presence).
    channels: HashMap<Arc<str>, Vec<(u64, Arc<str>)>>,
    /// connection → the channels it joined (only connections that joined any).
    joined: HashMap<u64, Vec<Arc<str>>>,
    subscriptions: usize,
    /// Channels whose local membership changed since [`Hub::take_changed`] last ran: the Redis
    /// broker writes presence on change, not every channel every heartbeat.
    changed: HashSet<Arc<str>>,
}

pub struct Hub {
    // std RwLock: deliveries take the read lock and never await while holding it, so a
    // broadcast to 10k sockets holds it for ~1 ms; (un)registering takes the write lock briefly.
    registry: RwLock<Registry>,
    /// Mirrors of the registry's sizes so stats and heartbeats read them without the lock.
    connections: AtomicUsize,
    users: AtomicUsize,
    /// The next connection id; shared with [`Submitter`]s as the watermark.
    next_id: Arc<AtomicU64>,
    /// Set once shutdown begins: new registrations are closed at once (1001).
    draining: AtomicBool,
    limits: Limits,
    metrics: Arc<Metrics>,
    instance_id: Arc<str>,
    submitter: Submitter,
    /// Taken by [`Hub::spawn_dispatcher`].
    dispatch_rx: Mutex<Option<mpsc::Receiver<Pending>>>,
}

/// A registered connection. Dropping it unregisters the connection, so no exit path of a
/// session (error, panic, cancellation) can leak a registry entry; [`Registration::close`]
/// does the same and says which channels the connection was in.
pub struct Registration {
    hub: Arc<Hub>,
    pub id: u64,
    pub user: Arc<str>,
    pub outbox: Arc<Outbox>,
}

impl Registration {
    /// Unregisters the connection; returns the channels it was in (the session tells the
    /// broker it left them).
    pub fn close(self) -> Vec<Arc<str>> {
        self.hub.unregister(self.id, &self.user)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.id, &self.user);
    }
}

/// What one delivery did, for metrics and tests: frames queued, connections found slow.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    pub queued: usize,
    pub slow: usize,
}

impl Delivery {
    fn add(&mut self, o: Delivery) {
        self.queued += o.queued;
        self.slow += o.slow;
    }
}

impl Hub {
    pub fn new(limits: Limits, metrics: Arc<Metrics>, instance_id: &str) -> Arc<Hub> {
        let (dispatch_tx, dispatch_rx) = mpsc::channel(DISPATCH_QUEUE);
        let next_id = Arc::new(AtomicU64::new(1));
        Arc::new(Hub {
            registry: RwLock::new(Registry::default()),
            connections: AtomicUsize::new(0),
            users: AtomicUsize::new(0),
            next_id: next_id.clone(),
            draining: AtomicBool::new(false),
            limits,
            metrics,
            instance_id: instance_id.into(),
            submitter: Submitter {
                next_conn: next_id.clone(),
                tx: dispatch_tx,
                budget: Arc::new(tokio::sync::Semaphore::new(DISPATCH_BUDGET_KIB as usize)),
            },
            dispatch_rx: Mutex::new(Some(dispatch_rx)),
        })
    }

    /// Starts the dispatcher task (once; later calls do nothing). Needs a tokio runtime.
    pub fn spawn_dispatcher(self: &Arc<Self>) {
        let Some(mut rx) = self.dispatch_rx.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
        // The task holds a Weak so that a dropped hub (tests) lets it end.
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(DISPATCH_BATCH);
            while rx.recv_many(&mut batch, DISPATCH_BATCH).await > 0 {
                let Some(hub) = hub.upgrade() else { return };
                hub.deliver_batch(&batch);
                batch.clear();
            }
        });
    }

    /// The handle brokers submit events with.
    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Registers a connection of `user`. During shutdown the returned outbox is already closed
    /// with [`Disconnect::Shutdown`], so a session that raced the drain still gets its 1001.
    pub fn register(self: &Arc<Self>, name: &str) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::AcqRel);
        let outbox = Arc::new(Outbox::new(self.limits));
        let user: Arc<str>;
        {
            let mut reg = self.write();
            // Reuse the map's Arc<str> for a user with other connections.
            user = match reg.users.get_key_value(name) {
                Some((k, _)) => k.clone(),
                None => Arc::from(name),
            };
            reg.conns.insert(id, outbox.clone());
            reg.users.entry(user.clone()).or_default().push(id);
            self.publish_counts(&reg);
            // Checked under the write lock: `close_all` takes the same lock after setting the
            // flag, so every connection is either closed there or here.
            if self.draining.load(Ordering::Acquire) {
                outbox.close(Disconnect::Shutdown);
            }
        }
        self.metrics.connections_opened.inc();
        Registration { hub: self.clone(), id, user, outbox }
    }

    fn unregister(&self, id: u64, user: &Arc<str>) -> Vec<Arc<str>> {
        let mut reg = self.write();
        if reg.conns.remove(&id).is_none() {
            return Vec::new();
        }
        if let Some(ids) = reg.users.get_mut(user) {
            ids.retain(|&c| c != id);
            if ids.is_empty() {
                reg.users.remove(user);
            }
        }
        let joined = reg.joined.remove(&id).unwrap_or_default();
        for channel in &joined {
            Self::leave(&mut reg, id, channel);
        }
        self.publish_counts(&reg);
        joined
    }

    fn publish_counts(&self, reg: &Registry) {
        self.connections.store(reg.conns.len(), Ordering::Relaxed);
        self.users.store(reg.users.len(), Ordering::Relaxed);
        self.metrics.connections.set(reg.conns.len() as i64);
        self.metrics.users.set(reg.users.len() as i64);
        self.metrics.channels.set(reg.channels.len() as i64);
        self.metrics.channel_subscriptions.set(reg.subscriptions as i64);
    }

    /// Adds connection `id` of `user` to `channel`, unless it is in `max` channels already.
    /// True when it joined now, false when it was in the channel already (or is unregistered).
    /// The caller has checked the name and the user's right to it ([`crate::channel::check`]).
    pub fn subscribe(&self, id: u64, user: &Arc<str>, channel: &str, max: usize) -> Result<bool, Refusal> {
        let mut reg = self.write();
        let joined = reg.joined.get(&id).map_or(&[][..], Vec::as_slice);
        if joined.iter().any(|c| &**c == channel) {
            return Ok(false);
        }
        if joined.len() >= max {
            return Err(Refusal::TooManyChannels);
        }
        if !reg.conns.contains_key(&id) {
            // Unregistered meanwhile: nothing to join (the session is ending).
            return Ok(false);
        }
        let name: Arc<str> = match reg.channels.get_key_value(channel) {
            Some((k, _)) => k.clone(),
            None => Arc::from(channel),
        };
        reg.channels.entry(name.clone()).or_default().push((id, user.clone()));
        reg.changed.insert(name.clone());
        reg.joined.entry(id).or_default().push(name);
        reg.subscriptions += 1;
        self.publish_counts(&reg);
        Ok(true)
    }

    /// Removes connection `id` from `channel`; false if it was not in it.
    pub fn unsubscribe(&self, id: u64, channel: &str) -> bool {
        let mut reg = self.write();
        let Some(joined) = reg.joined.get_mut(&id) else { return false };
        let Some(at) = joined.iter().position(|c| &**c == channel) else { return false };
        let name = joined.swap_remove(at);
        if joined.is_empty() {
            reg.joined.remove(&id);
        }
        Self::leave(&mut reg, id, &name);
        self.publish_counts(&reg);
        true
    }

    fn leave(reg: &mut Registry, id: u64, channel: &Arc<str>) {
        let Some(members) = reg.channels.get_mut(channel) else { return };
        let before = members.len();
        members.retain(|(c, _)| *c != id);
        reg.subscriptions -= before - members.len();
        if members.is_empty() {
            reg.channels.remove(channel);
        }
        reg.changed.insert(channel.clone());
    }

    /// The channels whose local membership changed since the last call (and clears the set).
    pub fn take_changed(&self) -> Vec<Arc<str>> {
        let mut reg = self.write();
        if reg.changed.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut reg.changed).into_iter().collect()
    }

    /// Local subscribers per channel whose name starts with `prefix`: (channel, connections),
    /// sorted by channel.
    pub fn channel_counts(&self, prefix: &str) -> Vec<(String, usize)> {
        let reg = self.read();
        let mut v: Vec<(String, usize)> = reg
            .channels
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, members)| (name.to_string(), members.len()))
            .collect();
        v.sort();
        v
    }

    /// Local subscribers of `channel`: (user, connections), sorted by user.
    pub fn presence(&self, channel: &str) -> Vec<(String, usize)> {
        let reg = self.read();
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for (_, user) in reg.channels.get(channel).into_iter().flatten() {
            *counts.entry(user).or_default() += 1;
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().map(|(u, n)| (u.to_string(), n)).collect();
        v.sort();
        v
    }

    /// Every channel with local subscribers.
    pub fn channel_names(&self) -> Vec<Arc<str>> {
        self.read().channels.keys().cloned().collect()
    }

    pub fn channel_count(&self) -> usize {
        self.read().channels.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        // Registry updates are single insert/remove calls: a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still consistent.
        self.registry.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn user_count(&self) -> usize {
        self.users.load(Ordering::Relaxed)
    }

    /// Delivers one event now, on the caller's thread (tests; brokers submit).
    pub fn deliver(&self, event: &Event, accepted_at: Option<Instant>) -> Delivery {
        self.deliver_batch(&[Pending { dispatch: event.dispatch(), accepted_at, _budget: None }])
    }

    /// Fans out a batch in order. Frames come encoded; a run of consecutive broadcasts is
    /// queued on each connection in one push (one lock, one wake-up).
    fn deliver_batch(&self, batch: &[Pending]) -> Delivery {
        let frames: Vec<Utf8Bytes> = batch.iter().map(|p| p.dispatch.frame.clone()).collect();
        let mut d = Delivery::default();
        {
            let reg = self.read();
            let mut i = 0;
            while i < batch.len() {
                let audience = &batch[i].dispatch.audience;
                let before = batch[i].dispatch.before_conn;
                let run = match audience {
                    Audience::All if before.is_none() => batch[i..]
                        .iter()
                        .take_while(|p| p.dispatch.audience == Audience::All && p.dispatch.before_conn.is_none())
                        .count(),
                    _ => 1,
                };
                d.add(Self::fan_out(&reg, audience, before, &frames[i..i + run]));
                i += run;
            }
        }
        self.metrics.deliveries.inc_by(d.queued as u64);
        if d.slow > 0 {
            self.metrics.slow_consumer_closes.inc_by(d.slow as u64);
        }
        for p in batch {
            let secs = match p.accepted_at {
                Some(t) => t.elapsed().as_secs_f64(),
                // Events from other instances: the wall clock is all we share.
                None => now_ms().saturating_sub(p.dispatch.ts) as f64 / 1000.0,
            };
            self.metrics.publish_enqueue.observe(secs);
        }
        d
    }

    fn fan_out(reg: &Registry, audience: &Audience, before: Option<u64>, frames: &[Utf8Bytes]) -> Delivery {
        let bytes = frames.iter().map(|f| f.len()).sum();
        let mut d = Delivery::default();
        let mut push = |outbox: &Outbox| match outbox.push_all(frames, bytes) {
            Push::Queued => d.queued += frames.len(),
            Push::Overflow => d.slow += 1,
            Push::Closed => {}
        };
        let old_enough = |id: &u64| before.is_none_or(|b| *id < b);
        match audience {
            Audience::All if before.is_none() => reg.conns.values().for_each(|o| push(o)),
            Audience::All => reg.conns.iter().filter(|(id, _)| old_enough(id)).for_each(|(_, o)| push(o)),
            Audience::Users(users) => {
                // `users` is deduplicated at parse time, so nobody is reached twice.
                for u in users {
                    for id in reg.users.get(u.as_str()).into_iter().flatten().filter(|id| old_enough(id)) {
                        if let Some(e) = reg.conns.get(id) {
                            push(e);
                        }
                    }
                }
            }
            Audience::Channel(c) => {
                for (id, _) in reg.channels.get(c.as_str()).into_iter().flatten().filter(|(id, _)| old_enough(id)) {
                    if let Some(e) = reg.conns.get(id) {
                        push(e);
                    }
                }
            }
        }
        d
    }

    /// Starts the drain: every open connection is closed with `reason`, and so is every
    /// connection that registers from now on.
    pub fn close_all(&self, reason: Disconnect) -> usize {
        self.draining.store(true, Ordering::Release);
        let reg = self.write();
        reg.conns.values().filter(|o| o.close(reason)).count()
    }

    /// Closes every connection of `user` on this instance with `reason` (an operator's
    /// disconnect); returns how many this call closed.
    pub fn close_user(&self, user: &str, reason: Disconnect) -> usize {
        let reg = self.read();
        let ids = reg.users.get(user).map_or(&[][..], Vec::as_slice);
        ids.iter().filter_map(|id| reg.conns.get(id)).filter(|o| o.close(reason)).count()
    }

    /// The connections of `user` on this instance.
    pub fn user_connections(&self, user: &str) -> usize {
        self.read().users.get(user).map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use crate::outbox::Drained;

    fn hub() -> Arc<Hub> {
        Hub::new(Limits { max_messages: 100, max_bytes: 1 << 20 }, Arc::new(Metrics::new()), "test")
    }

    fn event(id: &str, audience: Audience) -> Event {
        let data = serde_json::value::RawValue::from_string("null".into()).unwrap();
        Event { id: id.into(), kind: "t".into(), data, ts: 0, audience }
    }

    fn drained(r: &Registration) -> Vec<String> {
        let mut q = VecDeque::new();
        match r.outbox.drain(&mut q) {
            Drained::Frames => q.iter().map(|f| f.as_str().to_string()).collect(),
            Drained::Closed(d) => vec![format!("closed:{}", d.reason())],
        }
    }

    #[test]
    fn counts_and_targeting() {
        let h = hub();
        let a1 = h.register("alice");
        let a2 = h.register("alice");
        let b = h.register("bob");
        assert_eq!((h.connection_count(), h.user_count()), (3, 2));
        let d = h.deliver(&event("x", Audience::Users(vec!["alice".into(), "carol".into()])), None);
        assert_eq!(d.queued, 2);
        assert_eq!(drained(&a1), [r#"{"id":"x","type":"t","data":null,"ts":0}"#]);
        assert_eq!(drained(&a2), [r#"{"id":"x","type":"t","data":null,"ts":0}"#]);
        assert!(drained(&b).is_empty());
        assert_eq!(h.deliver(&event("y", Audience::All), None).queued, 3);
        drop(a1);
        assert_eq!((h.connection_count(), h.user_count()), (2, 2));
        drop(a2);
        assert_eq!((h.connection_count(), h.user_count()), (1, 1));
        assert_eq!(h.user_connections("alice"), 0);
    }

    #[tokio::test]
    async fn the_dispatch_queue_is_bounded_in_bytes() {
        let h = hub();
        let reg = h.register("a");
        let big = format!("\"{}\"", "x".repeat(1024 * 1024)); // 1 MiB + a little: 1,025 KiB
        let event = |i: usize| Event {
            id: format!("{i}"),
            kind: "big".into(),
            data: serde_json::value::RawValue::from_string(big.clone()).unwrap(),
            ts: 0,
            audience: Audience::All,
        };
        // Without a dispatcher nothing drains: 63 events fit the 64 MiB budget, the 64th waits.
        let s = h.submitter();
        for i in 0..63 {
            s.submit(event(i).dispatch(), None).await.unwrap();
        }
        let blocked =
            tokio::time::timeout(std::time::Duration::from_millis(100), s.submit(event(63).dispatch(), None)).await;
        assert!(blocked.is_err(), "a 64th MiB was accepted");
        // Once the dispatcher delivers, the budget comes back.
        h.spawn_dispatcher();
        tokio::time::timeout(std::time::Duration::from_secs(10), s.submit(event(63).dispatch(), None))
            .await
            .unwrap()
            .unwrap();
        drop(reg);
    }

    #[test]
    fn a_late_own_event_skips_connections_registered_after_it() {
        let h = hub();
        let early = h.register("a");
        let watermark = h.submitter().watermark();
        let late = h.register("a");
        for audience in [Audience::All, Audience::Users(vec!["a".into()])] {
            let mut d = event("x", audience).dispatch();
            d.before_conn = Some(watermark);
            h.deliver_batch(&[Pending { dispatch: d, accepted_at: None, _budget: None }]);
            assert_eq!(drained(&early).len(), 1);
            assert!(drained(&late).is_empty());
        }
    }

    #[test]
    fn close_user_closes_only_that_user_and_channels_changed_are_told() {
        let h = hub();
        let a1 = h.register("alice");
        let a2 = h.register("alice");
        let b = h.register("bob");
        assert_eq!(h.subscribe(b.id, &b.user, "room", 10), Ok(true));
        assert_eq!(h.channel_counts(""), [("room".to_string(), 1)]);
        assert_eq!(h.channel_counts("x"), []);
        assert_eq!(h.take_changed(), [Arc::<str>::from("room")]);
        assert!(h.take_changed().is_empty());
        assert_eq!(h.close_user("alice", Disconnect::Revoked), 2);
        assert_eq!(h.close_user("alice", Disconnect::Revoked), 0, "already closed");
        assert_eq!(drained(&a1), ["closed:revoked"]);
        assert_eq!(drained(&a2), ["closed:revoked"]);
        assert!(drained(&b).is_empty());
        drop(b);
        assert_eq!(h.take_changed(), [Arc::<str>::from("room")], "leaving changes the channel too");
        assert_eq!(h.channel_counts(""), []);
    }

    #[test]
    fn close_all_closes_late_registrations_too() {
        let h = hub();
        let a = h.register("a");
        assert_eq!(h.close_all(Disconnect::Shutdown), 1);
        let late = h.register("b");
        assert_eq!(drained(&a), ["closed:shutdown"]);
        assert_eq!(drained(&late), ["closed:shutdown"]);
    }
}
