//! Prometheus metrics (prometheus-client: typed families, text encoding, no HTTP server of its
//! own, few dependencies).
//!
//! Hot-path counters are plain atomics: a broadcast adds its delivery count once, never once
//! per socket.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::AuthError;
use crate::disconnect::Disconnect;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub users: Gauge,
    pub connections_opened: Counter,
    pub events_published: Counter,
    pub deliveries: Counter,
    pub slow_consumer_closes: Counter,
    auth_failures: Family<Labels, Counter>,
    disconnects: Family<Labels, Counter>,
    publish_rejected: Family<Labels, Counter>,
    /// Seconds from accepting a publish to its frame sitting in every local outbox.
    pub publish_enqueue: Histogram,
    pub redis_reconnects: Counter,
    pub redis_publish_failures: Counter,
    pub redis_messages_received: Counter,
    pub redis_bad_messages: Counter,
    /// Messages lost because the subscriber task fell behind fred's buffer.
    pub redis_messages_lost: Counter,
    resumes: Family<Labels, Counter>,
    /// Redis mode: where resumes were read, `memory` (the instance's newest entries) or `redis`.
    resume_reads: Family<Labels, Counter>,
    pub replayed_events: Counter,
    /// Times a subscriber found a hole in the stream ids and filled it from the stream.
    pub history_gaps: Counter,
    pub history_gap_events: Counter,
    pub redis_outbox_events: Gauge,
    pub redis_outbox_flushed: Counter,
    pub idempotent_replays: Counter,
    pub channels: Gauge,
    pub channel_subscriptions: Gauge,
    channel_refusals: Family<Labels, Counter>,
    pub redis_channel_subscriptions: Gauge,
    limit_refusals: Family<Labels, Counter>,
    /// `resync` frames sent because Redis lost events, by reason (one per affected stream and
    /// instance, not per connection).
    resyncs: Family<Labels, Counter>,
    /// Loss markers this instance appended to a stream.
    pub redis_loss_markers: Counter,
    /// The link to Redis, set from the broker's status when `/metrics` is read (see
    /// [`Metrics::set_status`]): 1/0 each.
    redis_enabled: Gauge,
    redis_connected: Gauge,
    redis_local_only: Gauge,
    ready: Gauge,
}

/// The statuses a refused publish is counted under (anything else: `other`).
const PUBLISH_STATUSES: [&str; 8] = ["400", "401", "403", "413", "415", "422", "429", "503"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wsgate");
        let m = Metrics {
            connections: Gauge::default(),
            users: Gauge::default(),
            connections_opened: Counter::default(),
            events_published: Counter::default(),
            deliveries: Counter::default(),
            slow_consumer_closes: Counter::default(),
            auth_failures: Family::default(),
            disconnects: Family::default(),
            publish_rejected: Family::default(),
            // 50 µs .. ~1.6 s, doubling: local fan-out to 10k sockets is a few ms; Redis adds
            // a round trip. Buckets (not a summary) so fleets can aggregate.
            publish_enqueue: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_05, 2.0, 16,
            )),
            redis_reconnects: Counter::default(),
            redis_publish_failures: Counter::default(),
            redis_messages_received: Counter::default(),
            redis_bad_messages: Counter::default(),
            redis_messages_lost: Counter::default(),
            resumes: Family::default(),
            resume_reads: Family::default(),
            replayed_events: Counter::default(),
            history_gaps: Counter::default(),
            history_gap_events: Counter::default(),
            redis_outbox_events: Gauge::default(),
            redis_outbox_flushed: Counter::default(),
            idempotent_replays: Counter::default(),
            channels: Gauge::default(),
            channel_subscriptions: Gauge::default(),
            channel_refusals: Family::default(),
            redis_channel_subscriptions: Gauge::default(),
            limit_refusals: Family::default(),
            resyncs: Family::default(),
            redis_loss_markers: Counter::default(),
            redis_enabled: Gauge::default(),
            redis_connected: Gauge::default(),
            redis_local_only: Gauge::default(),
            ready: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("connections", "Open WebSocket connections on this instance", m.connections.clone());
        registry.register("users", "Distinct users connected to this instance", m.users.clone());
        registry.register("connections_opened", "WebSocket connections accepted", m.connections_opened.clone());
        registry.register("events_published", "Events accepted through POST /api/events", m.events_published.clone());
        registry.register("deliveries", "Event frames queued to local sockets", m.deliveries.clone());
        registry.register(
            "slow_consumer_closes",
            "Connections closed with 1013 because their outbound queue overflowed",
            m.slow_consumer_closes.clone(),
        );
        registry.register("auth_failures", "Rejected tokens by reason", m.auth_failures.clone());
        registry.register("disconnects", "Closed WebSocket connections by reason", m.disconnects.clone());
        registry.register(
            "publish_rejected",
            "POST /api/events answered with an error, by status",
            m.publish_rejected.clone(),
        );
        registry.register(
            "publish_enqueue_seconds",
            "Time from accepting an event to its frame being queued on every local socket",
            m.publish_enqueue.clone(),
        );
        registry.register("redis_reconnects", "Redis connections re-established", m.redis_reconnects.clone());
        registry.register(
            "redis_publish_failures",
            "Events that could not be published to Redis",
            m.redis_publish_failures.clone(),
        );
        registry.register(
            "redis_messages_received",
            "Messages received on the Redis subscription",
            m.redis_messages_received.clone(),
        );
        registry.register(
            "redis_bad_messages",
            "Undecodable messages received from Redis",
            m.redis_bad_messages.clone(),
        );
        registry.register(
            "redis_messages_lost",
            "Redis messages dropped because the subscriber fell behind",
            m.redis_messages_lost.clone(),
        );
        registry.register("resumes", "Connections that asked to resume (since=), by result", m.resumes.clone());
        registry.register(
            "resume_reads",
            "Redis mode: resumes answered from this instance's newest entries (memory) or read from Redis",
            m.resume_reads.clone(),
        );
        registry.register(
            "resyncs",
            "Resync notices sent to local connections because Redis lost events they may not have, by reason",
            m.resyncs.clone(),
        );
        registry.register(
            "redis_loss_markers",
            "Loss markers appended to a stream by this instance (Redis lost entries it had seen or acknowledged)",
            m.redis_loss_markers.clone(),
        );
        registry.register("replayed_events", "Missed events sent to resuming connections", m.replayed_events.clone());
        registry.register(
            "history_gaps",
            "Holes in the stream ids seen on the Redis subscription (or a lagging subscriber), filled from the stream",
            m.history_gaps.clone(),
        );
        registry.register(
            "history_gap_events",
            "Events recovered from the stream to fill such holes",
            m.history_gap_events.clone(),
        );
        registry.register(
            "redis_outbox_events",
            "Events accepted while Redis was unreachable, waiting to be appended",
            m.redis_outbox_events.clone(),
        );
        registry.register(
            "redis_outbox_flushed",
            "Events appended to Redis from the outbox after a reconnect",
            m.redis_outbox_flushed.clone(),
        );
        registry.register(
            "idempotent_replays",
            "Publishes answered from an earlier one with the same Idempotency-Key",
            m.idempotent_replays.clone(),
        );
        registry.register("channels", "Channels with at least one subscriber on this instance", m.channels.clone());
        registry.register(
            "channel_subscriptions",
            "Channel subscriptions of this instance's connections",
            m.channel_subscriptions.clone(),
        );
        registry.register("channel_refusals", "Refused channel subscriptions by reason", m.channel_refusals.clone());
        registry.register(
            "redis_channel_subscriptions",
            "Redis channels this instance subscribes to for its channel subscribers",
            m.redis_channel_subscriptions.clone(),
        );
        registry.register(
            "limit_refusals",
            "Upgrades refused and connections closed by a connection or rate limit, by reason",
            m.limit_refusals.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        build_info.get_or_create(&vec![("version", env!("CARGO_PKG_VERSION"))]).set(1);
        registry.register("build_info", "Always 1; the running version as a label", build_info);
        registry.register("redis_enabled", "1 when REDIS_URL is set (Redis mode)", m.redis_enabled.clone());
        registry.register("redis_connected", "1 while the link to Redis is up", m.redis_connected.clone());
        registry.register(
            "redis_local_only",
            "1 while serving only local clients because Redis was not reachable within the start-up wait",
            m.redis_local_only.clone(),
        );
        registry.register("ready", "1 while /ready answers 200", m.ready.clone());
        for r in crate::limits::Refusal::LABELS {
            let _ = m.limit_refusals.get_or_create(&vec![("reason", r)]);
        }
        for r in crate::channel::Refusal::ALL {
            let _ = m.channel_refusals.get_or_create(&vec![("reason", r.code())]);
        }
        for s in PUBLISH_STATUSES.into_iter().chain(["other"]) {
            let _ = m.publish_rejected.get_or_create(&vec![("status", s)]);
        }
        for r in crate::protocol::resync::ALL {
            let _ = m.resyncs.get_or_create(&vec![("reason", r)]);
        }
        for source in ["memory", "redis"] {
            let _ = m.resume_reads.get_or_create(&vec![("source", source)]);
        }
        for r in ["recovered", "not_recovered"] {
            let _ = m.resumes.get_or_create(&vec![("result", r)]);
        }
        for r in AuthError::REASONS {
            let _ = m.auth_failures.get_or_create(&vec![("reason", r)]);
        }
        for d in Disconnect::ALL {
            let _ = m.disconnects.get_or_create(&vec![("reason", d.reason())]);
        }
        Metrics { registry, ..m }
    }

    pub fn auth_failure(&self, e: &AuthError) {
        self.auth_failures.get_or_create(&vec![("reason", e.reason())]).inc();
    }

    pub fn disconnect(&self, d: Disconnect) {
        self.disconnects.get_or_create(&vec![("reason", d.reason())]).inc();
    }

    pub fn channel_refused(&self, r: crate::channel::Refusal) {
        self.channel_refusals.get_or_create(&vec![("reason", r.code())]).inc();
    }

    pub fn limit_refused(&self, reason: &'static str) {
        self.limit_refusals.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn resync(&self, reason: &'static str) {
        self.resyncs.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn resume(&self, recovered: bool) {
        let r = if recovered { "recovered" } else { "not_recovered" };
        self.resumes.get_or_create(&vec![("result", r)]).inc();
    }

    /// `source`: `memory` or `redis`.
    pub fn resume_read(&self, source: &'static str) {
        self.resume_reads.get_or_create(&vec![("source", source)]).inc();
    }

    pub fn publish_rejected(&self, status: u16) {
        let s = PUBLISH_STATUSES.into_iter().find(|s| s.parse() == Ok(status)).unwrap_or("other");
        self.publish_rejected.get_or_create(&vec![("status", s)]).inc();
    }

    /// The state gauges, from the broker's status and the drain flag (called before a render).
    pub fn set_status(&self, redis_enabled: bool, redis_connected: bool, local_only: bool, ready: bool) {
        self.redis_enabled.set(redis_enabled.into());
        self.redis_connected.set(redis_connected.into());
        self.redis_local_only.set(local_only.into());
        self.ready.set(ready.into());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
