//! The Redis broker: many instances, one audience, one ordered history (fred).
//!
//! Every event is appended to its stream and published on its Redis channel in one atomic
//! step (`publish.lua`); every instance, the publishing one included, delivers stream events
//! from its subscription, in stream order, so the whole fleet sees one order and the stream id
//! is the event id. The files, one job each:
//!
//! - [`keys`]: every key and channel name (hash tags, Cluster vs standalone);
//! - [`wire`]: stream entries and pub/sub messages (the frame is stored encoded: fan-out and
//!   replays never encode it again);
//! - [`scripts`]: the Lua scripts (`publish.lua`, `mark.lua`, `check.lua`, `replay.lua`);
//! - [`relay`]: the task that owns delivery state: cursors, epochs, own events in flight, the
//!   outage outbox, channel subscriptions; it documents how gaps, outages and lost data are
//!   handled;
//! - [`held`]: the outage outbox; [`outage`]: how the relay holds and flushes it; [`routing`]:
//!   which channels an instance follows; [`supervisor`]: the link state;
//! - [`fleet`]: heartbeats and totals; [`presence`]: who is in a channel, fleet-wide.
//!
//! # Start-up
//!
//! The instance listens at once. Until the relay is subscribed and knows where every stream
//! stands (`Link::Starting`, at most `REDIS_STARTUP_WAIT_MS`), `/ready` is 503, sessions wait
//! before they register (and get `connected`), and publishes wait. So a connection that got
//! `connected` gets every event accepted after it. If Redis is not there by the end of the
//! wait, the instance serves local clients only (`local_only` in `/health`) and keeps trying;
//! once it follows the fleet, those clients get a `resync` (they could not see other
//! instances' events meanwhile).
//!
//! # `recovered: true`
//!
//! A resume from `since` is recovered only if, in the streams the connection follows (the
//! broadcast stream and its channels):
//!
//! 1. `since` is an entry of one of them: it was given by this dataset (not by one Redis lost,
//!    whose ids may come again) and was not lost itself;
//! 2. nothing after `since` was trimmed from any of them (Redis's `max-deleted-entry-id`);
//! 3. no entry after `since` was held during an outage (its publishing instance's clients got
//!    it under its ULID: a client that was connected there may have it already) and none is a
//!    loss marker (Redis lost entries there);
//! 4. at most `HISTORY_MAX_EVENTS` (+ trim slack) entries follow.
//!
//! Otherwise the answer is `recovered: false`.
//!
//! # Losing Redis
//!
//! Both clients reconnect forever with exponential backoff (fred's `ReconnectPolicy`) and dead
//! connections are detected by fred's unresponsive timeout; the relay resubscribes and catches
//! up after every reconnect. While Redis is unreachable an accepted event is delivered to local
//! clients at once (under its ULID: it has no stream position yet) and held; once Redis is
//! back the held events are appended in order, marked as held. A full outbox makes publishes
//! fail with 503 instead of accepting events that would be lost.

mod control;
mod fleet;
mod held;
mod keys;
mod outage;
mod presence;
mod recent;
mod relay;
mod routing;
mod scripts;
mod supervisor;
mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{TcpConfig, UnresponsiveConfig};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::control::Control;
use self::fleet::FleetView;
use self::held::Held;
use self::keys::{Keys, StreamKey};
use self::presence::Presence;
use self::recent::Recent;
use self::relay::{Cmd, Own, Positions, Relay, RelayParts};
use self::scripts::{Append, Appended, Lookup, Scripts};
use self::supervisor::{Link, Supervisor};
pub use self::wire::decode_for_fuzzing;
use self::wire::Body;
use super::{
    Broker, BrokerStatus, Fleet, FleetStats, HistoryPage, HistoryQuery, PublishError, PublishOptions, Published,
    Unavailable,
};
use crate::config::{redact_url, HistoryLimits, InstanceConfig, RedisConfig};
use crate::disconnect::Disconnect;
use crate::error::StartError;
use crate::event::{Audience, Event};
use crate::history::{addressed_to, Replay, StreamId};
use crate::hub::Hub;
use crate::idempotency::{LocalStore, Seen};
use crate::metrics::Metrics;

/// Commands that take longer than this fail, so a publish never hangs on a sick Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection with a command unanswered this long is dropped and reconnected.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(3);
/// Pub/sub messages fred may buffer for the relay before it counts as lagging (then it
/// refills from the stream). fred's default (32) loses messages on the first burst.
const MESSAGE_BUFFER: usize = 16 * 1024;
/// Commands waiting for the relay. Bounded: when the relay is busy (filling a gap, flushing
/// the outbox) publishers and joins wait instead of queueing without limit.
const RELAY_QUEUE: usize = 1024;
/// `MAXLEN ~` trims whole stream nodes (100 entries by default), so a stream may hold a little
/// more than asked: a replay may return this many more before it counts as too long.
const TRIM_SLACK: usize = 1000;
/// Stream entries a resume reads from Redis per script call.
const REPLAY_PAGE: usize = 500;
/// Stream entries read per XRANGE for `GET /api/history`.
const HISTORY_PAGE: u64 = 500;

/// What the publish path and the relay share: the clients, names and scripts.
pub(crate) struct Shared {
    publisher: Client,
    subscriber: SubscriberClient,
    keys: Keys,
    scripts: Scripts,
    metrics: Arc<Metrics>,
}

/// Errors after which the command may not have reached Redis (connection trouble), as opposed
/// to Redis refusing it. (Callers also count any error while the link is down: fred reports
/// some of those as `Unknown`, e.g. "Failed to route command".)
fn is_transient(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Routing
    ) || (*e.kind() == ErrorKind::Unknown && e.details().contains("Failed to route"))
}

pub struct RedisBroker {
    sh: Arc<Shared>,
    /// Read for the hub's connection watermark when an own event is appended.
    watermark: crate::hub::Submitter,
    relay: mpsc::Sender<Cmd>,
    link: watch::Receiver<Link>,
    positions: watch::Receiver<Positions>,
    /// Events held by the relay (the publish path goes straight to Redis only when none are).
    held_len: Arc<AtomicUsize>,
    /// Idempotency keys seen by this instance: answers retries without a round trip, and while
    /// Redis is away. A std Mutex: a lookup or an insert, never held across an await.
    keys: Mutex<LocalStore>,
    fleet: FleetView,
    presence: Presence,
    control: Arc<Control>,
    /// Until when publishes and sessions wait for the link at start-up.
    startup_deadline: Instant,
    history_on: bool,
    max_replay: usize,
    /// The newest entries the relay delivered, which answer most resumes without Redis.
    recent: Arc<Recent>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl RedisBroker {
    /// Creates both clients and starts connecting in the background. Fails only on a
    /// `REDIS_URL` that cannot be parsed: an unreachable Redis is not an error (the instance
    /// serves its own clients meanwhile). Tasks start on the current runtime.
    pub fn start(
        cfg: &RedisConfig,
        instance: &InstanceConfig,
        history: HistoryLimits,
        idempotency_window: Duration,
        hub: &Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<RedisBroker>, StartError> {
        let url = cfg.url.as_str();
        let bad_url = |source| StartError::RedisUrl { url: redact_url(url), source };
        let mut config = Config::from_url(url).map_err(bad_url)?;
        // Keep retrying the first connection instead of failing start-up.
        config.fail_fast = false;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
                c.max_command_attempts = 1;
                c.unresponsive =
                    UnresponsiveConfig { max_timeout: Some(UNRESPONSIVE_AFTER), interval: Duration::from_secs(1) };
                // Without TCP_NODELAY a PUBLISH waits on Nagle and Redis's delayed ACK: the
                // fleet benchmark measured ~25 ms per sequential publish.
                c.tcp = TcpConfig { nodelay: Some(true), ..Default::default() };
            })
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = MESSAGE_BUFFER;
            })
            // Forever (0 attempts = no limit), 100 ms doubling to 5 s.
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2));
        let publisher = builder.build().map_err(bad_url)?;
        let subscriber = builder.build_subscriber_client().map_err(bad_url)?;
        // Operator requests travel on a connection of their own (see `control`).
        let control_sub = builder.build_subscriber_client().map_err(bad_url)?;
        let clustered = url.contains("-cluster://");
        let keys = Keys::new(&cfg.key_prefix, &instance.id, clustered);
        let fleet =
            FleetView::new(hub.clone(), &instance.id, instance.heartbeat_interval, &keys.heartbeat, &keys.instances);
        let sh = Arc::new(Shared {
            publisher,
            subscriber,
            scripts: Scripts::new(history.max_events, history.max_age, idempotency_window),
            keys,
            metrics,
        });
        let startup_deadline = Instant::now() + cfg.startup_wait;
        let (supervisor, link) = Supervisor::new(startup_deadline);
        let (positions_tx, positions) = watch::channel(Positions::new());
        let (relay_tx, relay_rx) = mpsc::channel(RELAY_QUEUE);
        let held_len = Arc::new(AtomicUsize::new(0));
        let cancel = CancellationToken::new();
        let recent = Arc::new(Recent::new(history.max_events, history.max_bytes, history.max_age));
        let broker = Arc::new(RedisBroker {
            sh: sh.clone(),
            watermark: hub.submitter(),
            relay: relay_tx,
            link,
            positions,
            held_len: held_len.clone(),
            keys: Mutex::new(LocalStore::new(idempotency_window)),
            fleet,
            presence: Presence::new(hub.clone(), &instance.id, &sh.keys, instance.heartbeat_interval),
            control: Arc::new(Control::new(control_sub, sh.publisher.clone(), hub.clone(), &sh.keys, &instance.id)),
            startup_deadline,
            history_on: history.max_events > 0,
            max_replay: history.max_events + TRIM_SLACK,
            recent: recent.clone(),
            tasks: TaskTracker::new(),
            cancel: cancel.clone(),
        });
        tracing::info!(redis_url = %redact_url(url), channel = %sh.keys.broadcast().topic, "Redis mode: connecting");
        // The connection tasks run until `quit`; they are detached, not aborted (fred's advice).
        drop(sh.publisher.connect());
        drop(sh.subscriber.connect());
        let relay = Relay::new(
            sh,
            hub.submitter(),
            RelayParts {
                cmds: relay_rx,
                link: supervisor,
                positions: positions_tx,
                held_len,
                held: Held::new(cfg.outbox_max_events, cfg.outbox_max_bytes),
                unsubscribe_delay: cfg.channel_unsubscribe_delay,
                recent,
                cancel,
            },
        );
        broker.tasks.spawn(relay.run());
        broker.tasks.spawn(broker.clone().heartbeat());
        broker.tasks.spawn(broker.control.clone().run(broker.cancel.clone()));
        Ok(broker)
    }

    fn link(&self) -> Link {
        *self.link.borrow()
    }

    /// Waits (bounded by the start-up wait) until the link is past `Starting`.
    async fn wait_started(&self) {
        if self.link() != Link::Starting {
            return;
        }
        let mut rx = self.link.clone();
        // The relay moves to LocalOnly on its first tick after the deadline.
        let until = self.startup_deadline + Duration::from_millis(500);
        let _ = tokio::time::timeout_at(until.into(), rx.wait_for(|l| *l != Link::Starting)).await;
    }

    /// Every heartbeat period this instance's counts; presence when it changes (coalesced per
    /// [`presence::WRITE_EVERY`]), all of it every [`presence::REFRESH_BEATS`] heartbeats; both
    /// at once after each (re)connect, so the fleet sees this instance without waiting a period.
    async fn heartbeat(self: Arc<Self>) {
        let mut beat = tokio::time::interval(self.fleet.interval);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut changes = tokio::time::interval(presence::WRITE_EVERY);
        changes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut link = self.link.clone();
        let mut beats = 0u32;
        loop {
            let all = tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = beat.tick() => {
                    if self.sh.publisher.is_connected() {
                        self.fleet.beat(&self.sh.publisher).await;
                        let _ = self.presence.touch(&self.sh.publisher).await;
                    }
                    beats = beats.wrapping_add(1);
                    beats.is_multiple_of(presence::REFRESH_BEATS)
                }
                _ = changes.tick() => false,
                r = link.changed() => {
                    if r.is_err() {
                        return;
                    }
                    if *link.borrow_and_update() != Link::Live {
                        continue;
                    }
                    // (Re)connected: Redis may have come back empty.
                    self.fleet.beat(&self.sh.publisher).await;
                    true
                }
            };
            if self.sh.publisher.is_connected() {
                if let Err(e) = self.presence.write(&self.sh.publisher, &self.sh.keys, all).await {
                    tracing::debug!(error = %e, "presence update failed");
                }
            }
        }
    }

    /// A page of one stream: XRANGE after `since`, or XREVRANGE for the newest, in pages of
    /// [`HISTORY_PAGE`] entries (loss markers and notes take room in the stream, not in the
    /// answer).
    async fn read_history(&self, q: HistoryQuery<'_>) -> Result<HistoryPage, Error> {
        let route = self.sh.keys.route(q.channel);
        let stream = route.stream.as_str();
        let client = &self.sh.publisher;
        let events_of = |reply: Value| {
            wire::stream_entries(reply).into_iter().filter_map(|(_, e)| match e.ok()?.body {
                Body::Event { frame, .. } => Some(frame),
                Body::Marker { .. } | Body::Note { .. } => None,
            })
        };
        let mut last_id = None;
        let mut newest: Vec<Utf8Bytes> = Vec::new();
        let mut upper = "+".to_string();
        // The newest entries, paged backwards: they give `last_id`, and the page when there is
        // no `since`.
        loop {
            let reply: Value = client.xrevrange(stream, upper.as_str(), "-", Some(HISTORY_PAGE)).await?;
            let ids = wire::stream_entries(reply.clone());
            let Some((oldest, _)) = ids.last() else { break };
            let oldest = *oldest;
            let full = ids.len() as u64 == HISTORY_PAGE;
            for frame in events_of(reply) {
                if last_id.is_none() {
                    last_id = crate::history::frame_position(&frame);
                }
                if q.since.is_none() && newest.len() < q.limit {
                    newest.push(frame);
                }
            }
            let done = if q.since.is_none() { newest.len() >= q.limit } else { last_id.is_some() };
            if done || !full {
                break;
            }
            upper = format!("({oldest}");
        }
        if q.since.is_none() {
            newest.reverse();
            return Ok(HistoryPage { events: newest, last_id });
        }
        let mut events = Vec::new();
        let mut lower = format!("({}", q.since.unwrap_or(StreamId::ZERO));
        while events.len() < q.limit {
            let reply: Value = client.xrange(stream, lower.as_str(), "+", Some(HISTORY_PAGE)).await?;
            let ids = wire::stream_entries(reply.clone());
            let Some((newest_id, _)) = ids.last() else { break };
            let newest_id = *newest_id;
            let full = ids.len() as u64 == HISTORY_PAGE;
            events.extend(events_of(reply).take(q.limit - events.len()));
            if !full {
                break;
            }
            lower = format!("({newest_id}");
        }
        Ok(HistoryPage { events, last_id })
    }

    /// Hands a publish to the relay (see [`Relay`]).
    async fn enqueue(&self, event: Event, opts: &PublishOptions, uncertain: bool) -> Result<Published, PublishError> {
        let (reply, answer) = oneshot::channel();
        let cmd = Cmd::Enqueue { event, key: opts.idempotency.clone(), uncertain, reply };
        self.relay.send(cmd).await.map_err(|_| PublishError::stopping())?;
        answer.await.map_err(|_| PublishError::stopping())?
    }

    /// Appends straight to Redis (the link is live and nothing is held).
    async fn append(&self, event: Event, opts: &PublishOptions) -> Result<Published, PublishError> {
        let stream: StreamKey = event.audience.channel().map(Arc::from);
        let route = self.sh.keys.route(stream.as_deref());
        let frame_tail = event.frame_tail();
        let users = match &event.audience {
            Audience::Users(u) => Some(serde_json::to_string(u).unwrap_or_default()),
            _ => None,
        };
        let a = Append {
            route: &route,
            frame_tail: &frame_tail,
            eid: &event.id,
            users: users.as_deref(),
            held: false,
            lookup: Lookup::No,
            key: opts.idempotency.as_ref(),
        };
        match self.sh.scripts.append(&self.sh.publisher, a).await {
            Ok(Appended::New(sid)) => {
                let watermark = self.watermark.watermark();
                let own = Own { eid: event.id, frame_tail, audience: event.audience, ts: event.ts, watermark };
                let cmd = Cmd::Appended { stream, sid, own };
                self.relay.send(cmd).await.map_err(|_| PublishError::stopping())?;
                Ok(Published { id: sid.to_string(), replayed: false })
            }
            Ok(Appended::Duplicate(id)) => Ok(Published { id, replayed: true }),
            Ok(Appended::Found(id)) => Ok(Published { id, replayed: false }),
            Ok(Appended::Conflict) => Err(PublishError::KeyReused),
            Err(e) if is_transient(&e) || !self.sh.publisher.is_connected() => {
                tracing::debug!(error = %e, "Redis publish failed; holding the event");
                self.sh.metrics.redis_publish_failures.inc();
                self.enqueue(event, opts, true).await
            }
            Err(e) => {
                self.sh.metrics.redis_publish_failures.inc();
                tracing::error!(error = %e, "Redis refused the event");
                Err(PublishError::Unavailable(format!("Redis refused the event: {e}")))
            }
        }
    }

    /// One stream's part of a resume from Redis: its events after `since`, read in pages of
    /// [`REPLAY_PAGE`] (never the whole stream, never more than `max_replay` entries), or why
    /// there is no promise.
    async fn replay_stream(
        &self,
        stream: Option<&str>,
        since: StreamId,
    ) -> Result<(bool, Vec<(StreamId, Body)>), &'static str> {
        let route = self.sh.keys.route(stream);
        let mut entries = Vec::new();
        let (mut from, mut present) = (since, false);
        loop {
            let part = match self.sh.scripts.replay(&self.sh.publisher, &route, since, from, REPLAY_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, stream = %route.stream, "could not read an event stream for a resume");
                    return Err("redis");
                }
            };
            if from == since {
                present = part.since_present;
                if !present && part.max_deleted > since {
                    return Err("trimmed");
                }
            } else if part.max_deleted > from {
                return Err("trimmed between pages");
            }
            if part.unsure {
                return Err("unsure"); // held events, a note or a loss marker after `since`
            }
            let full = part.entries.len() >= REPLAY_PAGE;
            for (id, e) in part.entries {
                match e {
                    Ok(e) => entries.push((id, e.body)),
                    Err(e) => {
                        // Its event cannot be replayed (e.g. an entry of an older wire format):
                        // no promise across it.
                        self.sh.metrics.redis_bad_messages.inc();
                        tracing::warn!(error = %e, stream_id = %id, "undecodable entry in the event stream");
                        return Err("undecodable entry");
                    }
                }
                from = id;
            }
            if entries.len() > self.max_replay {
                return Err("too many");
            }
            if !full {
                return Ok((present, entries));
            }
        }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, event: Event, opts: PublishOptions) -> BoxFuture<'_, Result<Published, PublishError>> {
        async move {
            if let Some(k) = &opts.idempotency {
                match self.keys.lock().unwrap_or_else(|p| p.into_inner()).check(k) {
                    Seen::New => {}
                    Seen::Replay(id) => return Ok(Published { id, replayed: true }),
                    Seen::Conflict => return Err(PublishError::KeyReused),
                }
            }
            // At start-up, wait for the link rather than give the event a provisional id.
            self.wait_started().await;
            let published = if self.link() == Link::Live && self.held_len.load(Ordering::Acquire) == 0 {
                self.append(event, &opts).await
            } else {
                // Held events go first (the relay appends them, then this one), or Redis is away.
                self.enqueue(event, &opts, false).await
            }?;
            if let Some(k) = &opts.idempotency {
                self.keys.lock().unwrap_or_else(|p| p.into_inner()).remember(k, &published.id);
            }
            Ok(published)
        }
        .boxed()
    }

    fn ready(&self) -> BoxFuture<'_, ()> {
        self.wait_started().boxed()
    }

    fn replay<'a>(&'a self, since: &'a str, user: &'a str, channels: &'a [String]) -> BoxFuture<'a, Replay> {
        async move {
            let Ok(since) = since.parse::<StreamId>() else { return Replay::NotRecovered };
            if !self.history_on {
                return Replay::NotRecovered;
            }
            if let Some(r) = self.recent.replay(since, user, channels, self.max_replay) {
                self.sh.metrics.resume_read("memory");
                return r;
            }
            self.sh.metrics.resume_read("redis");
            let mut present = false;
            let mut all: Vec<(StreamId, Option<&str>, Body)> = Vec::new();
            let mut upto = Vec::with_capacity(channels.len() + 1);
            let streams = std::iter::once(None).chain(channels.iter().map(|c| Some(c.as_str())));
            for stream in streams {
                match self.replay_stream(stream, since).await {
                    Ok((here, entries)) => {
                        present |= here;
                        let last = entries.last().map_or(since, |(id, _)| *id);
                        upto.push((stream.map(str::to_string), last));
                        all.extend(entries.into_iter().map(|(id, b)| (id, stream, b)));
                    }
                    Err(why) => {
                        tracing::debug!(%since, why, "resume not recovered");
                        return Replay::NotRecovered;
                    }
                }
            }
            if !present {
                // Not an entry of any stream followed: from a dataset Redis lost, lost itself,
                // or not an id this fleet gave.
                return Replay::NotRecovered;
            }
            // Standalone Redis gives ids from one clock: merging by id is the fleet's order.
            all.sort_by_key(|(id, _, _)| *id);
            let frames = all
                .into_iter()
                .filter_map(|(_, stream, body)| match body {
                    Body::Event { frame, users, .. } => {
                        addressed_to(&Body::audience(&users, stream), user, channels).then_some(frame)
                    }
                    Body::Marker { .. } | Body::Note { .. } => None,
                })
                .collect();
            Replay::Recovered { frames, upto }
        }
        .boxed()
    }

    fn join<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let (reply, joined) = oneshot::channel();
            if self.relay.send(Cmd::Join { channel: Arc::from(channel), reply }).await.is_ok() {
                let _ = joined.await;
            }
        }
        .boxed()
    }

    fn leave<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let _ = self.relay.send(Cmd::Leave { channel: Arc::from(channel) }).await;
        }
        .boxed()
    }

    fn position<'a>(&'a self, channels: &'a [String]) -> BoxFuture<'a, Option<String>> {
        let p = self.positions.borrow();
        let newest = std::iter::once(p.get(&None))
            .chain(channels.iter().map(|c| p.get(&Some(Arc::from(c.as_str())))))
            .flatten()
            .copied()
            .filter(|id| *id != StreamId::ZERO)
            .max();
        // Only ids that are entries can be resumed from (see the module docs).
        futures_util::future::ready(newest.filter(|_| self.history_on).map(|id| id.to_string())).boxed()
    }

    fn history<'a>(&'a self, q: HistoryQuery<'a>) -> BoxFuture<'a, Result<HistoryPage, Unavailable>> {
        async move {
            if !self.sh.publisher.is_connected() {
                return Err(Unavailable("Redis is not reachable".into()));
            }
            self.read_history(q).await.map_err(|e| Unavailable(e.to_string()))
        }
        .boxed()
    }

    fn status(&self) -> BrokerStatus {
        let link = self.link();
        BrokerStatus {
            mode: "redis",
            redis_enabled: true,
            redis_state: link.name(),
            local_only: link == Link::LocalOnly,
            ready: link != Link::Starting,
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            // The relay and the heartbeat select on the token: they finish what they are doing
            // (a Redis call is bounded by the command timeout) and return.
            self.cancel.cancel();
            self.tasks.close();
            if tokio::time::timeout(COMMAND_TIMEOUT * 2, self.tasks.wait()).await.is_err() {
                tracing::warn!("Redis broker tasks did not stop in time");
            }
            if self.sh.publisher.is_connected() {
                self.presence.remove(&self.sh.publisher, &self.sh.keys).await;
                self.fleet.remove(&self.sh.publisher).await;
            }
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.sh.subscriber.quit()).await;
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.sh.publisher.quit()).await;
        }
        .boxed()
    }
}

impl Fleet for RedisBroker {
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Vec<(String, usize)>> {
        self.presence.read(&self.sh.publisher, &self.sh.keys, &self.fleet, channel).boxed()
    }

    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats> {
        self.fleet.stats(&self.sh.publisher).boxed()
    }

    fn channels<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Vec<(String, usize)>> {
        self.presence.channels(&self.sh.publisher, &self.sh.keys, &self.fleet, prefix).boxed()
    }

    fn disconnect<'a>(&'a self, user: &'a str, how: Disconnect) -> BoxFuture<'a, usize> {
        self.control.disconnect(&self.fleet, user, how).boxed()
    }
}
