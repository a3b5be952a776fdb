//! The Redis broker: many instances, one audience (fred).
//!
//! # Wire format
//!
//! Every event is published once to the channel `{prefix}broadcast:all` as one JSON object:
//!
//! ```json
//! {"v":1,"origin":"<instance id>","id":"<ULID>","type":"...","data":<JSON>,"ts":<ms>,"users":["u1"]}
//! ```
//!
//! `users` is absent for a broadcast. Redis work per event is one PUBLISH, whatever the number
//! of instances or sockets; each instance's subscriber task hands the event to its hub, which
//! encodes the client frame once and fans it out locally.
//!
//! # Delivery
//!
//! The publishing instance delivers to its own sockets first, before it talks to Redis, and
//! skips its own messages when they come back on the subscription: local clients get each
//! event exactly once and never wait on a Redis round trip, and they keep getting events while
//! Redis is away. An event published while Redis is unreachable reaches this instance's clients
//! only (counted in `wsgate_redis_publish_failures_total`); other instances miss it.
//!
//! # Heartbeats
//!
//! Every `HEARTBEAT_INTERVAL_MS` an instance writes its counts as JSON to
//! `{prefix}instance:{id}` (expiring after 3 periods) and to the field `{id}` of the hash
//! `{prefix}instances` with an `expires_at` inside. `/ws/stats` reads that one hash (HGETALL,
//! never KEYS), sums the entries that have not expired and deletes those that have; the result
//! is cached for a fraction of a period, so polling it often costs Redis nothing more.
//!
//! # Losing Redis
//!
//! Both clients reconnect forever with exponential backoff (fred's `ReconnectPolicy`), dead
//! connections are detected by fred's unresponsive timeout, and the subscriber resubscribes
//! after each reconnect (`manage_subscriptions`). A supervisor task watches the connection
//! state and logs each transition once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{TcpConfig, UnresponsiveConfig};
use fred::types::Expiration;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

use super::{Broker, BrokerStatus, FleetStats, PublishError};
use crate::config::{redact_url, Config as AppConfig};
use crate::event::{now_ms, Audience, Event};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Commands that take longer than this fail, so a publish never hangs on a sick Redis.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// A connection with a command unanswered this long is dropped and reconnected.
const UNRESPONSIVE_AFTER: Duration = Duration::from_secs(3);
/// Pub/sub messages fred may buffer for the subscriber task before it counts as lagging.
/// fred's default (32) loses messages on the first burst.
const MESSAGE_BUFFER: usize = 16 * 1024;
/// How often the supervisor samples the connection state.
const STATE_POLL: Duration = Duration::from_millis(200);

const DISABLED: u8 = 0;
const CONNECTING: u8 = 1;
const CONNECTED: u8 = 2;
const DISCONNECTED: u8 = 3;

/// The message on `{prefix}broadcast:all`.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    v: u8,
    origin: &'a str,
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    users: Option<Vec<String>>,
}

/// One instance's heartbeat, in `{prefix}instance:{id}` and `{prefix}instances`.
#[derive(Serialize, Deserialize, Debug)]
struct Heartbeat {
    instance_id: String,
    connections: usize,
    users: usize,
    /// ms since the epoch after which this heartbeat no longer counts.
    expires_at: u64,
}

pub struct RedisBroker {
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    publisher: Client,
    subscriber: SubscriberClient,
    channel: String,
    heartbeat_key: String,
    instances_key: String,
    instance_id: String,
    interval: Duration,
    state: AtomicU8,
    fleet_cache: Mutex<Option<(Instant, FleetStats)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl RedisBroker {
    /// Creates both clients and starts connecting in the background. Fails only on a
    /// `REDIS_URL` that cannot be parsed: an unreachable Redis is not an error (the instance
    /// serves its own clients meanwhile).
    pub fn start(cfg: &AppConfig, hub: Arc<Hub>, metrics: Arc<Metrics>) -> Result<Arc<RedisBroker>, String> {
        let url = cfg.redis_url.as_deref().ok_or("REDIS_URL is not set")?;
        let mut config =
            Config::from_url(url).map_err(|e| format!("invalid setting REDIS_URL ({}): {e}", redact_url(url)))?;
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
        let publisher = builder.build().map_err(|e| format!("invalid setting REDIS_URL: {e}"))?;
        let subscriber = builder.build_subscriber_client().map_err(|e| format!("invalid setting REDIS_URL: {e}"))?;
        let prefix = &cfg.redis_key_prefix;
        let broker = Arc::new(RedisBroker {
            hub,
            metrics,
            publisher,
            subscriber,
            channel: format!("{prefix}broadcast:all"),
            heartbeat_key: format!("{prefix}instance:{}", cfg.instance_id),
            instances_key: format!("{prefix}instances"),
            instance_id: cfg.instance_id.clone(),
            interval: cfg.heartbeat_interval,
            state: AtomicU8::new(CONNECTING),
            fleet_cache: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        tracing::info!(redis_url = %redact_url(url), channel = %broker.channel, "Redis mode: connecting");
        // The connection tasks run until `quit`; they are detached, not aborted (fred's advice).
        drop(broker.publisher.connect());
        drop(broker.subscriber.connect());
        // Resubscribe to every channel after each reconnect.
        drop(broker.subscriber.manage_subscriptions());
        let tasks = vec![
            tokio::spawn(broker.clone().relay()),
            tokio::spawn(broker.clone().supervise()),
            tokio::spawn(broker.clone().heartbeat()),
        ];
        *broker.tasks.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        Ok(broker)
    }

    fn connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTED
    }

    /// The subscriber task: every message on the channel goes to the local hub.
    async fn relay(self: Arc<Self>) {
        let mut rx = self.subscriber.message_rx();
        loop {
            match rx.recv().await {
                Ok(msg) => {
                    self.metrics.redis_messages_received.inc();
                    if &*msg.channel != self.channel.as_str() {
                        continue;
                    }
                    let event = match msg.value.as_bytes() {
                        Some(b) => self.decode(b),
                        None => {
                            self.metrics.redis_bad_messages.inc();
                            None
                        }
                    };
                    if let Some(event) = event {
                        if self.hub.submit(event, None).await.is_err() {
                            return;
                        }
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    // We fell behind fred's buffer and n messages are gone; keep going.
                    self.metrics.redis_messages_lost.inc_by(n);
                    tracing::warn!(lost = n, "Redis subscriber lagged; events were lost");
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// The event in a message from another instance; `None` for our own (already delivered
    /// locally) and for undecodable ones (counted).
    fn decode(&self, bytes: &[u8]) -> Option<Event> {
        let env: Envelope = match serde_json::from_slice(bytes) {
            Ok(e) => e,
            Err(e) => {
                self.metrics.redis_bad_messages.inc();
                tracing::warn!(error = %e, "undecodable message on the broadcast channel");
                return None;
            }
        };
        if env.origin == self.instance_id {
            return None;
        }
        Some(Event {
            id: env.id.to_string(),
            kind: env.kind.to_string(),
            data: env.data.to_owned(),
            ts: env.ts,
            audience: env.users.map_or(Audience::All, Audience::Users),
        })
    }

    /// Subscribes once the subscriber is up, then watches the connection state and logs each
    /// transition once.
    async fn supervise(self: Arc<Self>) {
        let mut subscribed = false;
        let mut tick = tokio::time::interval(STATE_POLL);
        let mut reconnects = self.subscriber.reconnect_rx();
        let mut first = true;
        let started = Instant::now();
        let mut warned = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = reconnects.recv() => {
                    if r.is_ok() && !first {
                        self.metrics.redis_reconnects.inc();
                    }
                    continue;
                }
            }
            let up = self.publisher.is_connected() && self.subscriber.is_connected();
            if up && !subscribed {
                match self.subscriber.subscribe(self.channel.as_str()).await {
                    Ok(()) => subscribed = true,
                    Err(e) => tracing::debug!(error = %e, "subscribe failed; retrying"),
                }
            }
            let now = if up && subscribed {
                CONNECTED
            } else if first {
                CONNECTING
            } else {
                DISCONNECTED
            };
            if now == CONNECTING && !warned && started.elapsed() > COMMAND_TIMEOUT {
                warned = true;
                tracing::warn!("Redis unreachable at start-up: serving local clients only, retrying in the background");
            }
            let before = self.state.swap(now, Ordering::AcqRel);
            if before == now {
                continue;
            }
            match (before, now) {
                (CONNECTING, CONNECTED) => {
                    first = false;
                    tracing::info!(channel = %self.channel, "Redis pub/sub initialized");
                }
                (_, CONNECTED) => tracing::info!("Redis reconnected, cross-instance delivery resumed"),
                (_, DISCONNECTED) => tracing::warn!("Redis connection lost, delivering locally"),
                _ => {}
            }
            if now == CONNECTED {
                // A fresh heartbeat right away, so the fleet sees this instance at once.
                self.beat().await;
            }
        }
    }

    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.connected() {
                self.beat().await;
            }
        }
    }

    async fn beat(&self) {
        let ttl = self.interval * 3;
        let hb = Heartbeat {
            instance_id: self.instance_id.clone(),
            connections: self.hub.connection_count(),
            users: self.hub.user_count(),
            expires_at: now_ms() + ttl.as_millis() as u64,
        };
        let json = serde_json::to_string(&hb).unwrap_or_default();
        let set = self.publisher.set::<(), _, _>(
            self.heartbeat_key.as_str(),
            json.as_str(),
            Some(Expiration::PX(ttl.as_millis() as i64)),
            None,
            false,
        );
        let hset =
            self.publisher.hset::<(), _, _>(self.instances_key.as_str(), (self.instance_id.as_str(), json.as_str()));
        if let Err(e) = set.await.and(hset.await) {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }

    async fn read_fleet(&self) -> Result<FleetStats, Error> {
        let all: HashMap<String, String> = self.publisher.hgetall(self.instances_key.as_str()).await?;
        let now = now_ms();
        // This instance counts with its live figures, not its last heartbeat.
        let mut fleet = self.local_fleet();
        let mut dead = Vec::new();
        for (id, json) in all {
            if id == self.instance_id {
                continue;
            }
            match serde_json::from_str::<Heartbeat>(&json) {
                Ok(hb) if hb.expires_at > now => {
                    fleet.total_instances += 1;
                    fleet.total_connections += hb.connections;
                }
                _ => dead.push(id),
            }
        }
        if !dead.is_empty() {
            // Another instance may delete them first; either way they are gone.
            let _ = self.publisher.hdel::<(), _, _>(self.instances_key.as_str(), dead).await;
        }
        Ok(fleet)
    }

    /// The message for `event` on the broadcast channel.
    fn envelope(&self, event: &Event) -> String {
        let users = match &event.audience {
            Audience::All => None,
            Audience::Users(u) => Some(u.clone()),
        };
        let env = Envelope {
            v: 1,
            origin: &self.instance_id,
            id: &event.id,
            kind: &event.kind,
            data: &event.data,
            ts: event.ts,
            users,
        };
        serde_json::to_string(&env).unwrap_or_default()
    }

    fn local_fleet(&self) -> FleetStats {
        FleetStats { total_instances: 1, total_connections: self.hub.connection_count(), total_users: None }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, event: Event, accepted_at: Instant) -> BoxFuture<'_, Result<(), PublishError>> {
        async move {
            let payload = self.connected().then(|| self.envelope(&event));
            // Local clients first: they never wait on Redis, and get events while it is away.
            self.hub
                .submit(event, Some(accepted_at))
                .await
                .map_err(|_| PublishError("the instance is stopping".into()))?;
            let Some(payload) = payload else {
                self.metrics.redis_publish_failures.inc();
                return Ok(());
            };
            if let Err(e) = self.publisher.publish::<i64, _, _>(self.channel.as_str(), payload).await {
                self.metrics.redis_publish_failures.inc();
                tracing::debug!(error = %e, "Redis publish failed; delivered locally only");
            }
            Ok(())
        }
        .boxed()
    }

    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats> {
        async move {
            if !self.connected() {
                return self.local_fleet();
            }
            let max_age = (self.interval / 5).min(Duration::from_secs(1));
            if let Some((at, f)) = self.fleet_cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                if at.elapsed() < max_age {
                    return f.clone();
                }
            }
            match self.read_fleet().await {
                Ok(f) => {
                    *self.fleet_cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), f.clone()));
                    f
                }
                Err(_) => self.local_fleet(),
            }
        }
        .boxed()
    }

    fn status(&self) -> BrokerStatus {
        let state = match self.state.load(Ordering::Acquire) {
            DISABLED => "disabled",
            CONNECTING => "connecting",
            CONNECTED => "connected",
            _ => "disconnected",
        };
        BrokerStatus { mode: "redis", redis_enabled: true, redis_state: state }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        async move {
            for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
                t.abort();
            }
            if self.connected() {
                let del = self.publisher.del::<(), _>(self.heartbeat_key.as_str());
                let hdel = self.publisher.hdel::<(), _, _>(self.instances_key.as_str(), self.instance_id.as_str());
                if let Err(e) = del.await.and(hdel.await) {
                    tracing::warn!(error = %e, "could not remove the heartbeat key");
                }
            }
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.subscriber.quit()).await;
            let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.publisher.quit()).await;
        }
        .boxed()
    }
}
