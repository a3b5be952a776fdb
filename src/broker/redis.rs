//! The Redis broker: many instances, one audience, one ordered history (fred).
//!
//! # Wire format
//!
//! Every event is appended to the stream `{prefix}stream:all` (field `e`, trimmed with
//! `MAXLEN ~ HISTORY_MAX_EVENTS` and by age) and published to the channel
//! `{prefix}broadcast:all` in one atomic step, a Lua script ([`PUBLISH_SCRIPT`]), so an event
//! is either in both or in neither. The stream entry holds the envelope:
//!
//! ```json
//! {"v":2,"origin":"<instance id>","eid":"<ULID>","type":"...","data":<JSON>,"ts":<ms>,"users":["u1"]}
//! ```
//!
//! and the channel message is the same object with the entry's id and its predecessor's first:
//! `{"sid":"<stream id>","prev":"<previous stream id>","v":2,...}`. `users` is absent for a
//! broadcast; `pre` names the instance that already delivered the event to its own clients
//! (events accepted while Redis was away). Redis work per event: one script call, whatever
//! the number of instances or sockets.
//!
//! # Channels
//!
//! A channel event goes to the channel's own stream `{prefix}chstream:{<name>}` and Redis
//! channel `{prefix}ch:{<name>}` (envelope plus `"channel"`), never to `broadcast:all`. An
//! instance subscribes to a channel's Redis channel while it has local subscribers (from the
//! first join, before it answers `subscribed`, until `CHANNEL_UNSUBSCRIBE_DELAY_MS` after the
//! last leave), so Redis sends channel events only where they are wanted. The braces are a
//! Cluster hash tag: a channel's stream, idempotency keys, presence hash and sharded channel
//! (SPUBLISH/SSUBSCRIBE in a Cluster) share one slot. In standalone Redis the script takes
//! ids from one clock key (`{prefix}clock`) for every stream, so ids order across streams.
//! Presence: every heartbeat each instance writes its users per channel into the hash
//! `{prefix}presence:{<name>}` (field = instance id, with an `expires_at`).
//!
//! # Delivery and order
//!
//! Every instance, the publishing one included, delivers stream events from its subscription,
//! in stream order: the stream id is the event id, and all instances agree on the order. The
//! subscriber remembers the last id it delivered; a message whose `prev` is newer than that
//! means a message was missed (a lagging subscriber, a dropped connection), and the hole is
//! filled from the stream with XRANGE before anything later is delivered
//! (`wsgate_history_gaps_total`). After every reconnect the subscriber also catches up from the
//! stream. Messages already delivered are skipped by id, so nothing arrives twice.
//!
//! # Losing Redis
//!
//! Both clients reconnect forever with exponential backoff (fred's `ReconnectPolicy`), dead
//! connections are detected by fred's unresponsive timeout, and the subscriber resubscribes
//! after each reconnect (`manage_subscriptions`). While Redis is unreachable an accepted event
//! is delivered to local clients at once (with its ULID as id: it has no stream position yet)
//! and kept in a bounded outbox; once Redis is back the outbox is appended in order, marked
//! `pre`, so this instance's clients do not get those events twice. A full outbox makes
//! publishes fail with 503 instead of accepting events that would be dropped. A supervisor
//! task watches the connection state and logs each transition once.
//!
//! # Heartbeats
//!
//! Every `HEARTBEAT_INTERVAL_MS` an instance writes its counts as JSON to
//! `{prefix}instance:{id}` (expiring after 3 periods) and to the field `{id}` of the hash
//! `{prefix}instances` with an `expires_at` inside. `/ws/stats` reads that one hash (HGETALL,
//! never KEYS), sums the entries that have not expired and deletes those that have; the result
//! is cached for a fraction of a period, so polling it often costs Redis nothing more.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{TcpConfig, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::Expiration;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::{Broker, BrokerStatus, FleetStats, PublishError, PublishOptions, Published};
use crate::config::{redact_url, Config as AppConfig, HistoryLimits};
use crate::event::{now_ms, Audience, Event};
use crate::history::{addressed_to, Replay, StreamId};
use crate::hub::{Hub, HubClosed};
use crate::idempotency::{IdemKey, LocalStore, Seen};
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
/// Stream entries read per XRANGE when filling a gap.
const FILL_PAGE: usize = 1000;
/// `MAXLEN ~` trims whole stream nodes (100 entries by default), so the stream may hold a
/// little more than asked: a replay reads this many extra before calling itself truncated.
const TRIM_SLACK: usize = 1000;

const DISABLED: u8 = 0;
const CONNECTING: u8 = 1;
const CONNECTED: u8 = 2;
const DISCONNECTED: u8 = 3;

/// Appends an event and publishes it, atomically, honouring an idempotency key.
///
/// KEYS: stream, idempotency key (the stream again when there is none), id clock key, genesis
/// key (set to the first id ever given, see [`REPLAY_SCRIPT`]).
/// ARGV: Redis channel, envelope JSON (an object), MAXLEN, max age in ms, key fingerprint (""
/// for none), key window in ms, an event ULID to look for among the newest entries first (""
/// for none), PUBLISH or SPUBLISH, "1" to take the id from the clock key (one clock for every
/// stream: ids then order across streams) or "0" for XADD's own. Returns
/// `{"new"|"dup"|"conflict", id}`.
const PUBLISH_SCRIPT: &str = r#"
if ARGV[7] ~= '' then
  local needle = '"eid":"' .. ARGV[7] .. '"'
  for _, entry in ipairs(redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1000)) do
    if string.find(entry[2][2], needle, 1, true) then return {'dup', entry[1]} end
  end
end
if ARGV[5] ~= '' then
  local prior = redis.call('GET', KEYS[2])
  if prior then
    local sep = string.find(prior, ' ', 1, true)
    if string.sub(prior, 1, sep - 1) == ARGV[5] then
      return {'dup', string.sub(prior, sep + 1)}
    end
    return {'conflict', ''}
  end
end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = '0-0'
if #last > 0 then prev = last[1][1] end
local id = '*'
if ARGV[9] == '1' then
  local function parse(x)
    local d = string.find(x, '-', 1, true)
    return tonumber(string.sub(x, 1, d - 1)), tonumber(string.sub(x, d + 1))
  end
  local t = redis.call('TIME')
  local ms, seq = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), 0
  local clock = redis.call('GET', KEYS[3])
  if clock then
    local cm, cs = parse(clock)
    if cm >= ms then ms, seq = cm, cs + 1 end
  end
  if prev ~= '0-0' then
    local pm, ps = parse(prev)
    if pm > ms or (pm == ms and ps >= seq) then ms, seq = pm, ps + 1 end
  end
  id = string.format('%.0f-%.0f', ms, seq)
  redis.call('SET', KEYS[3], id)
end
id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], id, 'e', ARGV[2])
local age = tonumber(ARGV[4])
if age > 0 then
  local t = redis.call('TIME')
  local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - age
  if cutoff > 0 then redis.call('XTRIM', KEYS[1], 'MINID', cutoff) end
end
redis.call('SET', KEYS[4], id, 'NX')
redis.call(ARGV[8], ARGV[1], '{"sid":"' .. id .. '","prev":"' .. prev .. '",' .. string.sub(ARGV[2], 2))
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[2], ARGV[5] .. ' ' .. id, 'PX', ARGV[6])
end
return {'new', id}
"#;

/// The entries after `since` if every entry after it is still in the stream, else nil.
///
/// KEYS: stream, genesis key. ARGV: since (a valid stream id), most entries to return.
/// Not recoverable: `since` older than the genesis id (the first id this Redis dataset ever
/// gave: an id from before a Redis that lost its data), or, once the stream has been trimmed,
/// older than its first entry. A stream that never lost an entry (Redis 7 counts
/// entries-added) holds everything, and one that never had an entry (a quiet channel) has
/// nothing to replay.
const REPLAY_SCRIPT: &str = r#"
local function older(a, b)
  local da = string.find(a, '-', 1, true)
  local db = string.find(b, '-', 1, true)
  local am, bm = tonumber(string.sub(a, 1, da - 1)), tonumber(string.sub(b, 1, db - 1))
  if am ~= bm then return am < bm end
  return tonumber(string.sub(a, da + 1)) < tonumber(string.sub(b, db + 1))
end
local genesis = redis.call('GET', KEYS[2])
if not genesis or older(ARGV[1], genesis) then return false end
if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local length, added = nil, nil
for i = 1, #info, 2 do
  if info[i] == 'length' then length = info[i + 1] end
  if info[i] == 'entries-added' then added = info[i + 1] end
end
-- Nothing ever removed (Redis 7 counts every entry added): all of it is here.
if not (added and length and added == length) then
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  if #first > 0 and older(ARGV[1], first[1][1]) then return false end
end
return redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
"#;

/// The event as stored in the stream, and (with `sid` and `prev`) as sent on the channel.
#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    sid: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    prev: Option<Cow<'a, str>>,
    v: u8,
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    eid: Option<Cow<'a, str>>,
    /// The instance that already delivered this event to its own clients.
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    pre: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
    ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    users: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none", borrow)]
    channel: Option<Cow<'a, str>>,
}

impl Envelope<'_> {
    /// The event, with `id` as its id.
    fn event(self, id: String) -> Event {
        Event {
            id,
            kind: self.kind.into_owned(),
            data: self.data.to_owned(),
            ts: self.ts,
            audience: match (self.channel, self.users) {
                (Some(c), _) => Audience::Channel(c.into_owned()),
                (None, Some(u)) => Audience::Users(u),
                (None, None) => Audience::All,
            },
        }
    }
}

/// A decoded channel message.
enum Incoming {
    /// From a v1 instance (no stream): deliver unless it is our own.
    Plain(Event),
    /// A stream event: its position, its predecessor's, and the event unless this instance
    /// already delivered it.
    Positioned { sid: StreamId, prev: StreamId, entry: Entry },
}

/// A stream event as this instance sees it.
struct Entry {
    /// `None` when this instance delivered it already (held while Redis was away).
    event: Option<Event>,
    /// The event's ULID when this instance published it.
    own_eid: Option<String>,
}

/// Where an event goes in Redis.
struct Route {
    stream: String,
    /// Holds the first id this Redis dataset gave (one key in standalone Redis, one per slot
    /// tag in a Cluster).
    genesis: String,
    /// The Redis channel.
    topic: String,
    idem_prefix: String,
    /// SPUBLISH (a channel in a Cluster) rather than PUBLISH.
    sharded: bool,
}

/// Channel subscriptions in Redis.
#[derive(Default)]
struct Topics {
    /// Channels with local subscribers: subscribed again after every reconnect.
    wanted: HashSet<String>,
    /// Channels subscribed in Redis now.
    active: HashSet<String>,
}

/// This instance's entry in a channel's presence hash.
#[derive(Serialize, Deserialize)]
struct PresenceEntry {
    expires_at: u64,
    users: Vec<(String, usize)>,
}

/// What the publish script did.
enum Appended {
    New(String),
    Duplicate(String),
    Conflict,
}

/// An event accepted while Redis was away.
struct Held {
    /// The event's ULID.
    eid: String,
    /// Its channel, for a channel event.
    channel: Option<String>,
    /// The connection broke while the event was being appended: it may be in the stream.
    uncertain: bool,
    envelope: Arc<str>,
    key: Option<IdemKey>,
    bytes: usize,
}

/// This instance's delivery position in each stream it follows: the broadcast stream, and
/// the stream of each channel it has local subscribers for.
#[derive(Default)]
struct Delivered {
    streams: HashMap<String, Cursor>,
}

impl Delivered {
    fn cursor(&mut self, stream: &str) -> &mut Cursor {
        if !self.streams.contains_key(stream) {
            self.streams.insert(stream.to_string(), Cursor::default());
        }
        self.streams.get_mut(stream).expect("inserted above")
    }
}

/// This instance's delivery position in one stream.
#[derive(Default)]
struct Cursor {
    /// The newest stream id handed to the hub (or skipped as delivered already).
    last: Option<StreamId>,
    /// Own events appended to the stream whose message has not come back yet. If Redis goes
    /// away now, they are delivered before the first held event, so local clients keep the
    /// publish order.
    pending: BTreeMap<StreamId, Event>,
    /// Own events delivered that way: skipped when the stream brings them.
    early: BTreeSet<StreamId>,
    /// Own events whose append may or may not have happened (the connection broke while the
    /// script ran), by event ULID: delivered locally when held, so skipped if the stream has
    /// them after all.
    early_eids: HashSet<String>,
    /// The last own events the subscription brought, by ULID: an append whose reply was lost
    /// but whose message arrived is not held (and delivered) a second time.
    own_recent: VecDeque<(String, StreamId)>,
}

/// How many own events `own_recent` remembers.
const OWN_RECENT: usize = 256;

/// Most own events remembered as pending; older ones are left to the stream.
const MAX_PENDING: usize = 10_000;

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Held>,
    bytes: usize,
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
    stream_key: String,
    /// Idempotency keys: `{idem_prefix}{subject}:{key}`. The prefix carries the stream key as
    /// a hash tag so that, in a Cluster, both keys of the publish script share a slot.
    idem_prefix: String,
    heartbeat_key: String,
    instances_key: String,
    instance_id: String,
    interval: Duration,
    history: HistoryLimits,
    idempotency_window: Duration,
    publish_script: Script,
    replay_script: Script,
    state: AtomicU8,
    outbox: Mutex<Outbox>,
    outbox_max_events: usize,
    outbox_max_bytes: usize,
    /// Keys seen by this instance: answers retries without a round trip, and while Redis is away.
    keys: Mutex<LocalStore>,
    /// Woken after each reconnect: the relay catches up from the stream.
    resync: Notify,
    /// `{prefix}`: channel keys are built from it (see [`RedisBroker::route_channel`]).
    key_prefix: String,
    /// `{prefix}ch:`: a channel's Redis channel is `{prefix}ch:{<name>}`.
    topic_prefix: String,
    /// The id clock shared by every stream (standalone Redis).
    clock_key: String,
    /// Redis Cluster: channel events use sharded pub/sub, and streams keep their own clocks.
    clustered: bool,
    unsubscribe_delay: Duration,
    /// Channels this instance wants from Redis (local subscribers) and those it holds.
    topics: tokio::sync::Mutex<Topics>,
    /// Channels whose presence hash holds a field of this instance.
    presence_written: Mutex<HashSet<String>>,
    /// When each channel last lost its last local subscriber: only the timer of the latest
    /// leave may unsubscribe, so the delay counts from the last leave.
    vacated_at: Mutex<HashMap<String, Instant>>,
    /// What of the stream this instance has delivered. A tokio Mutex: held while handing
    /// events to the hub, so the relay and the outage path never interleave deliveries.
    delivered: tokio::sync::Mutex<Delivered>,
    fleet_cache: Mutex<Option<(Instant, FleetStats)>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section here is a few field updates: a panic cannot leave them half done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Errors after which the command may not have reached Redis (connection trouble), as opposed
/// to Redis refusing it.
fn is_transient(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure | ErrorKind::Routing
    )
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
        let prefix = cfg.redis_key_prefix.clone();
        let stream_key = format!("{prefix}stream:all");
        let broker = Arc::new(RedisBroker {
            hub,
            metrics,
            publisher,
            subscriber,
            channel: format!("{prefix}broadcast:all"),
            idem_prefix: format!("{prefix}idem:{{{stream_key}}}:"),
            stream_key,
            heartbeat_key: format!("{prefix}instance:{}", cfg.instance_id),
            instances_key: format!("{prefix}instances"),
            instance_id: cfg.instance_id.clone(),
            interval: cfg.heartbeat_interval,
            history: cfg.history,
            idempotency_window: cfg.idempotency_window,
            publish_script: Script::from_lua(PUBLISH_SCRIPT),
            replay_script: Script::from_lua(REPLAY_SCRIPT),
            state: AtomicU8::new(CONNECTING),
            outbox: Mutex::new(Outbox::default()),
            outbox_max_events: cfg.redis_outbox_max_events,
            outbox_max_bytes: cfg.redis_outbox_max_bytes,
            keys: Mutex::new(LocalStore::new(cfg.idempotency_window)),
            resync: Notify::new(),
            key_prefix: prefix.clone(),
            topic_prefix: format!("{prefix}ch:"),
            clock_key: format!("{prefix}clock"),
            clustered: cfg.redis_url.as_deref().is_some_and(|u| u.contains("-cluster://")),
            unsubscribe_delay: cfg.channel_unsubscribe_delay,
            topics: tokio::sync::Mutex::new(Topics::default()),
            presence_written: Mutex::new(HashSet::new()),
            vacated_at: Mutex::new(HashMap::new()),
            delivered: tokio::sync::Mutex::new(Delivered::default()),
            fleet_cache: Mutex::new(None),
            tasks: Mutex::new(Vec::new()),
        });
        tracing::info!(redis_url = %redact_url(url), channel = %broker.channel, "Redis mode: connecting");
        // The connection tasks run until `quit`; they are detached, not aborted (fred's advice).
        drop(broker.publisher.connect());
        drop(broker.subscriber.connect());
        // Resubscribe to every channel after each reconnect.
        drop(broker.subscriber.manage_subscriptions());
        let (vacated_tx, vacated_rx) = tokio::sync::mpsc::unbounded_channel();
        broker.hub.report_vacated_to(vacated_tx);
        let tasks = vec![
            tokio::spawn(broker.clone().router(vacated_rx)),
            tokio::spawn(broker.clone().relay()),
            tokio::spawn(broker.clone().supervise()),
            tokio::spawn(broker.clone().heartbeat()),
        ];
        *lock(&broker.tasks) = tasks;
        Ok(broker)
    }

    fn connected(&self) -> bool {
        self.state.load(Ordering::Acquire) == CONNECTED
    }

    /// The subscriber task: hands every event on the channel to the local hub, in stream
    /// order, filling holes from the stream (see the module docs).
    async fn relay(self: Arc<Self>) {
        let mut rx = self.subscriber.message_rx();
        loop {
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = self.resync.notified() => {
                    // After a reconnect: whatever was appended meanwhile.
                    self.fill_all().await;
                    continue;
                }
            };
            let msg = match msg {
                Ok(msg) => msg,
                Err(RecvError::Lagged(n)) => {
                    // We fell behind fred's buffer: n messages are gone from the channel, but
                    // not from the stream.
                    self.metrics.redis_messages_lost.inc_by(n);
                    tracing::warn!(lost = n, "Redis subscriber lagged; refilling from the stream");
                    self.fill_all().await;
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            self.metrics.redis_messages_received.inc();
            let Some(stream) = self.stream_of(&msg.channel) else { continue };
            let Some(incoming) = msg.value.as_bytes().and_then(|b| self.decode(b)) else { continue };
            let closed = match incoming {
                Incoming::Plain(event) => self.hub.submit(event, None).await.is_err(),
                Incoming::Positioned { sid, prev, entry } => {
                    let mut d = self.delivered.lock().await;
                    let c = d.cursor(&stream);
                    if c.last.is_some_and(|l| sid <= l) {
                        continue; // already delivered by a fill
                    }
                    // A hole: fill it before delivering this one. If the fill fails, this
                    // event is not delivered either (it is in the stream): the next message or
                    // reconnect retries from `last`. `prev < last` means a new stream (Redis
                    // lost its data): nothing before this entry can be recovered.
                    if c.last.is_some_and(|l| prev > l) && self.fill(&stream, c, Some(sid)).await.is_err() {
                        continue;
                    }
                    self.deliver(c, sid, entry).await.is_err()
                }
            };
            if closed {
                return;
            }
        }
    }

    /// The stream a Redis channel's events come from: the broadcast channel's, or a channel's.
    fn stream_of(&self, topic: &str) -> Option<String> {
        if topic == self.channel {
            return Some(self.stream_key.clone());
        }
        let name = topic.strip_prefix(self.topic_prefix.as_str())?.strip_prefix('{')?.strip_suffix('}')?;
        Some(self.route_channel(name).stream)
    }

    fn route(&self, audience: &Audience) -> Route {
        match audience.channel() {
            Some(c) => self.route_channel(c),
            None => self.route_all(),
        }
    }

    fn route_all(&self) -> Route {
        let genesis = if self.clustered {
            format!("{}genesis:{{{}}}", self.key_prefix, self.stream_key)
        } else {
            format!("{}genesis", self.key_prefix)
        };
        Route {
            genesis,
            stream: self.stream_key.clone(),
            topic: self.channel.clone(),
            idem_prefix: self.idem_prefix.clone(),
            sharded: false,
        }
    }

    /// A channel's keys share the hash tag `{<name>}`, so in a Cluster the publish script's
    /// keys and the sharded channel live on one node.
    fn route_channel(&self, name: &str) -> Route {
        let p = &self.key_prefix;
        Route {
            genesis: if self.clustered { format!("{p}genesis:{{{name}}}") } else { format!("{p}genesis") },
            stream: format!("{p}chstream:{{{name}}}"),
            topic: format!("{}{{{name}}}", self.topic_prefix),
            idem_prefix: format!("{p}idem:{{{name}}}:"),
            sharded: self.clustered,
        }
    }

    fn presence_key(&self, name: &str) -> String {
        format!("{}presence:{{{name}}}", self.key_prefix)
    }

    /// Subscribes to a channel's Redis channel, starting its cursor at the stream's end first
    /// so that the first message already shows a gap. False when Redis did not do it.
    async fn subscribe_topic(&self, name: &str) -> bool {
        let route = self.route_channel(name);
        {
            let mut d = self.delivered.lock().await;
            if !self.start_cursor(d.cursor(&route.stream), &route.stream).await {
                return false;
            }
        }
        let r = if route.sharded {
            self.subscriber.ssubscribe(route.topic.as_str()).await
        } else {
            self.subscriber.subscribe(route.topic.as_str()).await
        };
        r.inspect_err(|e| tracing::debug!(error = %e, channel = name, "channel subscribe failed; retried on reconnect"))
            .is_ok()
    }

    /// After a reconnect: every wanted channel is subscribed again.
    async fn resubscribe_topics(&self) {
        let mut t = self.topics.lock().await;
        t.active.clear();
        let wanted: Vec<String> = t.wanted.iter().cloned().collect();
        for name in wanted {
            if self.subscribe_topic(&name).await {
                t.active.insert(name);
            }
        }
        self.metrics.redis_channel_subscriptions.set(t.active.len() as i64);
    }

    /// Unsubscribes from channels whose last local subscriber left, after the delay, unless
    /// someone joined again meanwhile.
    async fn router(self: Arc<Self>, mut vacated: tokio::sync::mpsc::UnboundedReceiver<Arc<str>>) {
        while let Some(name) = vacated.recv().await {
            let me = self.clone();
            let at = Instant::now();
            lock(&self.vacated_at).insert(name.to_string(), at);
            tokio::spawn(async move {
                tokio::time::sleep(me.unsubscribe_delay).await;
                let mut t = me.topics.lock().await;
                {
                    let mut v = lock(&me.vacated_at);
                    if v.get(&*name) != Some(&at) {
                        return; // a later leave's timer decides
                    }
                    v.remove(&*name);
                }
                if me.hub.has_subscribers(&name) || !t.wanted.remove(&*name) {
                    return;
                }
                if t.active.remove(&*name) {
                    let route = me.route_channel(&name);
                    let r = if route.sharded {
                        me.subscriber.sunsubscribe(route.topic.as_str()).await
                    } else {
                        me.subscriber.unsubscribe(route.topic.as_str()).await
                    };
                    if let Err(e) = r {
                        tracing::debug!(error = %e, channel = %name, "channel unsubscribe failed");
                    }
                    me.delivered.lock().await.streams.remove(&route.stream);
                }
                me.metrics.redis_channel_subscriptions.set(t.active.len() as i64);
            });
        }
    }

    /// Writes this instance's presence in each channel it has subscribers for, and removes it
    /// from those it no longer has (one pipeline).
    async fn write_presence(&self) -> Result<(), Error> {
        let names = self.hub.channel_names();
        let ttl = self.interval * 3;
        let expires_at = now_ms() + ttl.as_millis() as u64;
        let gone: Vec<String> = {
            let mut written = lock(&self.presence_written);
            let now: HashSet<String> = names.iter().map(|n| n.to_string()).collect();
            let gone = written.difference(&now).cloned().collect();
            *written = now;
            gone
        };
        if names.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let pipe = self.publisher.pipeline();
        for name in &names {
            let entry = PresenceEntry { expires_at, users: self.hub.presence(name) };
            let json = serde_json::to_string(&entry).unwrap_or_default();
            let key = self.presence_key(name);
            pipe.hset::<(), _, _>(key.as_str(), (self.instance_id.as_str(), json.as_str())).await?;
            pipe.pexpire::<(), _>(key.as_str(), ttl.as_millis() as i64, None).await?;
        }
        for name in &gone {
            pipe.hdel::<(), _, _>(self.presence_key(name).as_str(), self.instance_id.as_str()).await?;
        }
        pipe.all::<Value>().await.map(|_| ())
    }

    async fn read_presence(&self, name: &str) -> Result<Vec<(String, usize)>, Error> {
        let key = self.presence_key(name);
        let all: HashMap<String, String> = self.publisher.hgetall(key.as_str()).await?;
        let now = now_ms();
        let mut users: HashMap<String, usize> = self.hub.presence(name).into_iter().collect();
        let mut dead = Vec::new();
        for (instance, json) in all {
            if instance == self.instance_id {
                continue; // this instance counts with its live figures
            }
            match serde_json::from_str::<PresenceEntry>(&json) {
                Ok(e) if e.expires_at > now => {
                    for (u, n) in e.users {
                        *users.entry(u).or_default() += n;
                    }
                }
                _ => dead.push(instance),
            }
        }
        if !dead.is_empty() {
            let _ = self.publisher.hdel::<(), _, _>(key.as_str(), dead).await;
        }
        let mut v: Vec<(String, usize)> = users.into_iter().collect();
        v.sort();
        Ok(v)
    }

    /// The entries of a stream after `since`, if it still holds all of them (see
    /// [`REPLAY_SCRIPT`]).
    async fn read_since(&self, route: &Route, since: &str) -> Option<Vec<(StreamId, Vec<u8>)>> {
        let max = self.history.max_events + TRIM_SLACK;
        let args: Vec<Value> = vec![since.into(), (max as i64).into()];
        let keys = vec![route.stream.as_str(), route.genesis.as_str()];
        let stream = route.stream.as_str();
        let reply: Value = match self.replay_script.evalsha_with_reload(&self.publisher, keys, args).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, stream, "could not read an event stream for a resume");
                return None;
            }
        };
        if reply.is_null() {
            return None;
        }
        let entries = stream_entries(reply);
        // As many as asked for: there may be more, too many to replay.
        (entries.len() < max).then_some(entries)
    }

    /// Catches up every stream this instance follows.
    async fn fill_all(&self) {
        let mut d = self.delivered.lock().await;
        for (stream, c) in d.streams.iter_mut() {
            let _ = self.fill(stream, c, None).await;
        }
    }

    /// Hands the stream event `sid` to the hub, unless this instance delivered it already.
    async fn deliver(&self, d: &mut Cursor, sid: StreamId, entry: Entry) -> Result<(), HubClosed> {
        d.last = Some(sid);
        d.pending.remove(&sid);
        if d.early.remove(&sid) {
            return Ok(());
        }
        if let Some(eid) = entry.own_eid {
            if d.early_eids.remove(&eid) {
                return Ok(());
            }
            d.own_recent.push_back((eid, sid));
            if d.own_recent.len() > OWN_RECENT {
                d.own_recent.pop_front();
            }
        }
        // Early deliveries older than this one will never come (the stream lost them).
        if d.early.first().is_some_and(|&e| e < sid) {
            d.early = d.early.split_off(&sid);
        }
        match entry.event {
            Some(e) => self.hub.submit(e, None).await,
            None => Ok(()),
        }
    }

    /// Delivers the entries of `stream` after `d.last` (and before `upto`) in order.
    async fn fill(&self, stream: &str, d: &mut Cursor, upto: Option<StreamId>) -> Result<(), Error> {
        let Some(mut from) = d.last else { return Ok(()) };
        let end = upto.map_or_else(|| "+".to_string(), |u| format!("({u}"));
        let mut filled = 0u64;
        loop {
            let entries: Value = self
                .publisher
                .xrange(stream, format!("({from}"), end.as_str(), Some(FILL_PAGE as u64))
                .await
                .inspect_err(|e| tracing::warn!(error = %e, "could not read the stream to fill a gap"))?;
            let entries = stream_entries(entries);
            let n = entries.len();
            for (id, bytes) in entries {
                from = id;
                let Some(entry) = self.decode_stored(id, &bytes) else {
                    d.last = Some(id);
                    continue;
                };
                if entry.event.is_some() && !d.early.contains(&id) {
                    filled += 1;
                }
                if self.deliver(d, id, entry).await.is_err() {
                    return Ok(());
                }
            }
            if n < FILL_PAGE {
                break;
            }
        }
        if filled > 0 {
            self.metrics.history_gaps.inc();
            self.metrics.history_gap_events.inc_by(filled);
            tracing::info!(events = filled, stream, "filled a gap in the event stream from Redis");
        }
        Ok(())
    }

    /// A channel message; `None` for undecodable ones (counted).
    fn decode(&self, bytes: &[u8]) -> Option<Incoming> {
        match decode_message(bytes, &self.instance_id) {
            Ok(m) => m,
            Err(e) => {
                self.metrics.redis_bad_messages.inc();
                tracing::warn!(error = %e, "undecodable message on a Redis channel");
                None
            }
        }
    }

    fn entry(&self, sid: StreamId, env: Envelope) -> Entry {
        entry_for(&self.instance_id, sid, env)
    }

    /// A stream entry; `None` when it cannot be decoded (counted).
    fn decode_stored(&self, id: StreamId, bytes: &[u8]) -> Option<Entry> {
        match serde_json::from_slice::<Envelope>(bytes) {
            Ok(env) => Some(self.entry(id, env)),
            Err(e) => {
                self.metrics.redis_bad_messages.inc();
                tracing::warn!(error = %e, stream_id = %id, "undecodable entry in the event stream");
                None
            }
        }
    }

    /// Subscribes once the subscriber is up, then watches the connection state and logs each
    /// transition once; after each (re)connect the relay catches up and the outbox is flushed.
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
            if up && !subscribed && self.start_position().await {
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
            if now == CONNECTED {
                self.flush_outbox().await;
            }
            if before == now {
                continue;
            }
            match (before, now) {
                (CONNECTING, CONNECTED) => {
                    first = false;
                    tracing::info!(channel = %self.channel, stream = %self.stream_key, "Redis pub/sub initialized");
                }
                (_, CONNECTED) => tracing::info!("Redis reconnected, cross-instance delivery resumed"),
                (_, DISCONNECTED) => tracing::warn!("Redis connection lost, delivering locally"),
                _ => {}
            }
            if now == CONNECTED {
                self.resubscribe_topics().await;
                self.resync.notify_one();
                // A fresh heartbeat right away, so the fleet sees this instance at once.
                self.beat().await;
            }
        }
    }

    /// Before the first subscribe: the stream's newest id is where this instance starts, so
    /// the first message already tells whether one was missed. False if Redis did not answer.
    async fn start_position(&self) -> bool {
        let mut d = self.delivered.lock().await;
        self.start_cursor(d.cursor(&self.stream_key), &self.stream_key).await
    }

    /// Starts `c` at the end of `stream` if it has no position yet. False if Redis did not answer.
    async fn start_cursor(&self, c: &mut Cursor, stream: &str) -> bool {
        if c.last.is_some() {
            return true;
        }
        match self.publisher.xrevrange::<Value, _, _, _>(stream, "+", "-", Some(1)).await {
            Ok(v) => {
                c.last = Some(newest_id(v).unwrap_or(StreamId::ZERO));
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "could not read the stream's end; retrying");
                false
            }
        }
    }

    /// Appends what was accepted while Redis was away, oldest first. Stops at the first
    /// failure; the next tick retries. New publishes queue behind the outbox until it is empty,
    /// so the order holds.
    async fn flush_outbox(&self) {
        let mut flushed = 0usize;
        loop {
            let front = lock(&self.outbox).queue.front().map(|h| {
                let route = h.channel.as_deref().map_or_else(|| self.route_all(), |c| self.route_channel(c));
                (route, h.envelope.clone(), h.key.clone(), h.uncertain.then(|| h.eid.clone()))
            });
            let Some((route, envelope, key, check)) = front else { break };
            if let Err(e) = self.append(&route, &envelope, key.as_ref(), check.as_deref()).await {
                tracing::warn!(error = %e, "could not append held events to Redis; retrying");
                break;
            }
            // A duplicate means another instance accepted the same key meanwhile, or the
            // append whose reply was lost did happen: the stream has the event already, and
            // our clients too. Nothing to append.
            let mut ob = lock(&self.outbox);
            if let Some(h) = ob.queue.pop_front() {
                ob.bytes -= h.bytes;
            }
            self.metrics.redis_outbox_events.set(ob.queue.len() as i64);
            drop(ob);
            self.metrics.redis_outbox_flushed.inc();
            flushed += 1;
        }
        if flushed > 0 {
            tracing::info!(events = flushed, "appended events held while Redis was away");
        }
    }

    /// Remembers an own event until the subscription brings it (see [`Delivered::pending`]).
    async fn track(&self, mut event: Event, id: &str) {
        let Ok(sid) = id.parse::<StreamId>() else { return };
        let stream = self.route(&event.audience).stream;
        let mut d = self.delivered.lock().await;
        let d = d.cursor(&stream);
        if d.last.is_some_and(|l| sid <= l) {
            return; // the subscription was faster than the reply
        }
        event.id = id.to_string();
        d.pending.insert(sid, event);
        if d.pending.len() > MAX_PENDING {
            d.pending.pop_first();
        }
    }

    /// Runs the publish script. `check_eid`: first look for an entry of that event among the
    /// newest ones (an append that may have happened).
    async fn append(
        &self,
        route: &Route,
        envelope: &str,
        key: Option<&IdemKey>,
        check_eid: Option<&str>,
    ) -> Result<Appended, Error> {
        let idem_key = key.map_or_else(|| route.stream.clone(), |k| format!("{}{}", route.idem_prefix, k.scoped));
        // One id clock for every stream (standalone Redis), so ids order across channels; in a
        // Cluster each stream keeps its own (a script may only touch one slot).
        let clock = if self.clustered { route.stream.as_str() } else { self.clock_key.as_str() };
        let args: Vec<Value> = vec![
            route.topic.as_str().into(),
            envelope.into(),
            (self.history.max_events.max(100) as i64).into(),
            (self.history.max_age.as_millis() as i64).into(),
            key.map_or("", |k| k.fingerprint.as_str()).into(),
            (self.idempotency_window.as_millis() as i64).into(),
            check_eid.unwrap_or("").into(),
            (if route.sharded { "SPUBLISH" } else { "PUBLISH" }).into(),
            (if self.clustered { "0" } else { "1" }).into(),
        ];
        let r: Vec<String> = self
            .publish_script
            .evalsha_with_reload(
                &self.publisher,
                vec![route.stream.as_str(), idem_key.as_str(), clock, route.genesis.as_str()],
                args,
            )
            .await?;
        match (r.first().map(String::as_str), r.get(1)) {
            (Some("new"), Some(id)) => Ok(Appended::New(id.clone())),
            (Some("dup"), Some(id)) => Ok(Appended::Duplicate(id.clone())),
            (Some("conflict"), _) => Ok(Appended::Conflict),
            _ => Err(Error::new(ErrorKind::Parse, format!("unexpected publish script reply {r:?}"))),
        }
    }

    /// Keeps an event accepted while Redis is away: delivered locally now, appended later.
    /// `uncertain`: the append was attempted and may have happened.
    async fn hold(&self, event: Event, opts: &PublishOptions, uncertain: bool) -> Result<Published, PublishError> {
        let mut all = self.delivered.lock().await;
        let stream = self.route(&event.audience).stream;
        if uncertain {
            // Its message may have come back already: then it is appended and delivered.
            if let Some((_, sid)) = all.cursor(&stream).own_recent.iter().find(|(eid, _)| *eid == event.id) {
                return Ok(Published { id: sid.to_string(), replayed: false });
            }
        }
        let envelope: Arc<str> = self.envelope(&event, true).into();
        let bytes = envelope.len();
        {
            let mut ob = lock(&self.outbox);
            if ob.queue.len() >= self.outbox_max_events || ob.bytes + bytes > self.outbox_max_bytes {
                return Err(PublishError::Unavailable(
                    "Redis is unreachable and the outbox of held events is full; retry later".into(),
                ));
            }
            ob.queue.push_back(Held {
                eid: event.id.clone(),
                uncertain,
                channel: event.audience.channel().map(str::to_string),
                envelope,
                key: opts.idempotency.clone(),
                bytes,
            });
            ob.bytes += bytes;
            self.metrics.redis_outbox_events.set(ob.queue.len() as i64);
        }
        let id = event.id.clone();
        if let Some(k) = &opts.idempotency {
            lock(&self.keys).remember(k, &id);
        }
        if uncertain {
            all.cursor(&stream).early_eids.insert(id.clone());
        }
        // Own events appended before Redis went away may never come back on the subscription
        // before this one: deliver them first (in id order), so local clients keep the
        // publish order.
        let mut early: Vec<(StreamId, Event)> = Vec::new();
        for c in all.streams.values_mut() {
            for (sid, e) in std::mem::take(&mut c.pending) {
                c.early.insert(sid);
                early.push((sid, e));
            }
        }
        early.sort_by_key(|(sid, _)| *sid);
        for (_, e) in early {
            self.hub.submit(e, None).await.map_err(|_| PublishError::stopping())?;
        }
        self.hub.submit(event, Some(opts.accepted_at)).await.map_err(|_| PublishError::stopping())?;
        Ok(Published { id, replayed: false })
    }

    async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.connected() {
                self.beat().await;
                if let Err(e) = self.write_presence().await {
                    tracing::debug!(error = %e, "presence update failed");
                }
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

    /// The envelope for `event` (see the module docs); `held` marks it as already delivered
    /// by this instance.
    fn envelope(&self, event: &Event, held: bool) -> String {
        let (users, channel) = match &event.audience {
            Audience::All => (None, None),
            Audience::Users(u) => (Some(u.clone()), None),
            Audience::Channel(c) => (None, Some(Cow::Borrowed(c.as_str()))),
        };
        let env = Envelope {
            sid: None,
            prev: None,
            v: 2,
            origin: Cow::Borrowed(&self.instance_id),
            eid: Some(Cow::Borrowed(&event.id)),
            pre: held.then_some(Cow::Borrowed(self.instance_id.as_str())),
            kind: Cow::Borrowed(&event.kind),
            data: &event.data,
            ts: event.ts,
            users,
            channel,
        };
        serde_json::to_string(&env).unwrap_or_default()
    }

    fn local_fleet(&self) -> FleetStats {
        FleetStats { total_instances: 1, total_connections: self.hub.connection_count(), total_users: None }
    }
}

impl Broker for RedisBroker {
    fn publish(&self, event: Event, opts: PublishOptions) -> BoxFuture<'_, Result<Published, PublishError>> {
        async move {
            if let Some(k) = &opts.idempotency {
                match lock(&self.keys).check(k) {
                    Seen::New => {}
                    Seen::Replay(id) => return Ok(Published { id, replayed: true }),
                    Seen::Conflict => return Err(PublishError::KeyReused),
                }
            }
            // Straight to Redis only when nothing is held: held events go first.
            let connected = self.connected();
            if !connected || !lock(&self.outbox).queue.is_empty() {
                // Queued behind held events while connected is not a failure; Redis away is.
                if !connected {
                    self.metrics.redis_publish_failures.inc();
                }
                return self.hold(event, &opts, false).await;
            }
            let route = self.route(&event.audience);
            let appended = self.append(&route, &self.envelope(&event, false), opts.idempotency.as_ref(), None).await;
            let (id, replayed) = match appended {
                Ok(Appended::New(id)) => {
                    self.track(event, &id).await;
                    (id, false)
                }
                Ok(Appended::Duplicate(id)) => (id, true),
                Ok(Appended::Conflict) => return Err(PublishError::KeyReused),
                Err(e) if is_transient(&e) => {
                    tracing::debug!(error = %e, "Redis publish failed; holding the event");
                    self.metrics.redis_publish_failures.inc();
                    return self.hold(event, &opts, true).await;
                }
                Err(e) => {
                    self.metrics.redis_publish_failures.inc();
                    tracing::error!(error = %e, "Redis refused the event");
                    return Err(PublishError::Unavailable(format!("Redis refused the event: {e}")));
                }
            };
            if let Some(k) = &opts.idempotency {
                lock(&self.keys).remember(k, &id);
            }
            Ok(Published { id, replayed })
        }
        .boxed()
    }

    fn replay<'a>(&'a self, since: &'a str, user: &'a str, channels: &'a [String]) -> BoxFuture<'a, Replay> {
        async move {
            if self.history.max_events == 0 || since.parse::<StreamId>().is_err() {
                return Replay::NotRecovered;
            }
            // Right after start-up the link is usually a moment away: wait for it rather than
            // make every client of a new instance reload its state.
            let deadline = Instant::now() + COMMAND_TIMEOUT;
            while self.state.load(Ordering::Acquire) == CONNECTING && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if !self.connected() {
                return Replay::NotRecovered;
            }
            // The broadcast stream, then each channel's: every one must still hold everything
            // after `since`. Ids order across streams (one clock), so merging sorts them.
            let mut entries = match self.read_since(&self.route_all(), since).await {
                Some(e) => e,
                None => return Replay::NotRecovered,
            };
            for c in channels {
                match self.read_since(&self.route_channel(c), since).await {
                    Some(e) => entries.extend(e),
                    None => return Replay::NotRecovered,
                }
            }
            entries.sort_by_key(|(id, _)| *id);
            let upto = entries.last().map(|(id, _)| *id);
            let mut frames = Vec::new();
            for (id, bytes) in entries {
                match serde_json::from_slice::<Envelope>(&bytes) {
                    Ok(env) => {
                        let event = env.event(id.to_string());
                        if addressed_to(&event.audience, user, channels) {
                            frames.push(event.frame());
                        }
                    }
                    Err(_) => {
                        self.metrics.redis_bad_messages.inc();
                    }
                }
            }
            Replay::Recovered { frames, upto }
        }
        .boxed()
    }

    fn join<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()> {
        async move {
            let mut t = self.topics.lock().await;
            t.wanted.insert(channel.to_string());
            // Redis away: the supervisor subscribes every wanted channel on reconnect.
            if !t.active.contains(channel) && self.connected() && self.subscribe_topic(channel).await {
                t.active.insert(channel.to_string());
            }
            self.metrics.redis_channel_subscriptions.set(t.active.len() as i64);
        }
        .boxed()
    }

    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Vec<(String, usize)>> {
        async move {
            if !self.connected() {
                return self.hub.presence(channel);
            }
            self.read_presence(channel).await.unwrap_or_else(|_| self.hub.presence(channel))
        }
        .boxed()
    }

    fn position(&self) -> BoxFuture<'_, Option<String>> {
        async move {
            if self.history.max_events == 0 || !self.connected() {
                return None;
            }
            // 0-0 (the stream was empty at start) cannot be told apart from a trimmed stream.
            let d = self.delivered.lock().await;
            d.streams.values().filter_map(|c| c.last).max().filter(|&l| l != StreamId::ZERO).map(|id| id.to_string())
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

/// Decodes a message from a Redis channel as the instance `instance_id` sees it: `Ok(None)` for
/// a message it must not deliver (its own, from a v1 instance), `Err` for an undecodable one.
fn decode_message(bytes: &[u8], instance_id: &str) -> Result<Option<Incoming>, String> {
    let env: Envelope = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let (Some(sid), Some(prev)) = (env.sid.as_deref(), env.prev.as_deref()) else {
        // A v1 instance during a rolling upgrade: it delivered its own events locally.
        if env.origin == instance_id {
            return Ok(None);
        }
        let id = env.eid.as_deref().unwrap_or("").to_string();
        return Ok(Some(Incoming::Plain(env.event(id))));
    };
    let (Ok(sid), Ok(prev)) = (sid.parse::<StreamId>(), prev.parse::<StreamId>()) else {
        return Err(format!("malformed stream id {sid:?} or {prev:?}"));
    };
    Ok(Some(Incoming::Positioned { sid, prev, entry: entry_for(instance_id, sid, env) }))
}

fn entry_for(instance_id: &str, sid: StreamId, env: Envelope) -> Entry {
    let own = env.origin == instance_id;
    let own_eid = if own { env.eid.as_deref().map(str::to_string) } else { None };
    let held_here = env.pre.as_deref() == Some(instance_id);
    Entry { event: (!held_here).then(|| env.event(sid.to_string())), own_eid }
}

/// The Redis message decoder, for fuzzing: decodes `bytes` as a channel message and as a
/// stream entry's envelope, and encodes what it got back into client frames. Returns whether
/// the message was accepted. Never panics (that is what the fuzz target checks).
pub fn decode_for_fuzzing(bytes: &[u8]) -> bool {
    let ok = match decode_message(bytes, "fuzz") {
        Ok(Some(Incoming::Plain(e))) => !e.frame().is_empty(),
        Ok(Some(Incoming::Positioned { entry, .. })) => entry.event.map_or(true, |e| !e.frame().is_empty()),
        Ok(None) => true,
        Err(_) => false,
    };
    if let Ok(env) = serde_json::from_slice::<Envelope>(bytes) {
        let _ = entry_for("fuzz", StreamId::ZERO, env).event.map(|e| e.frame());
    }
    ok
}

/// The id of the first entry of an XREVRANGE reply.
fn newest_id(reply: Value) -> Option<StreamId> {
    let Value::Array(entries) = reply else { return None };
    let Value::Array(parts) = entries.into_iter().next()? else { return None };
    parts.into_iter().next()?.as_string()?.parse().ok()
}

/// `(id, field e)` of each entry in an XRANGE reply; malformed entries are skipped.
fn stream_entries(reply: Value) -> Vec<(StreamId, Vec<u8>)> {
    let Value::Array(entries) = reply else { return Vec::new() };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(mut parts) = entry else { continue };
        if parts.len() != 2 {
            continue;
        }
        let fields = parts.pop();
        let Some(id) = parts.pop().and_then(|v| v.as_string()).and_then(|s| s.parse::<StreamId>().ok()) else {
            continue;
        };
        let Some(Value::Array(fields)) = fields else { continue };
        let mut it = fields.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if k.as_str().as_deref() == Some("e") {
                if let Some(b) = v.as_bytes() {
                    out.push((id, b.to_vec()));
                }
                break;
            }
        }
    }
    out
}
