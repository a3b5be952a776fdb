//! The broker contract: how an accepted event reaches the hubs of every instance.
//!
//! # Delivery guarantee
//!
//! [`Broker::publish`] gives the event its stream position (its id, see [`crate::history`]) and
//! returns `Ok` once the event is kept: appended to the history (memory ring or Redis stream)
//! and on its way to every instance's hub, or, in Redis mode while Redis is away, delivered
//! locally and held in a bounded outbox to be appended once Redis is back. Each instance's hub
//! receives each event once and queues it on each targeted local connection exactly once, in
//! stream order.
//!
//! **From `connected` on.** A connection registered after [`Broker::ready`] resolved receives
//! every event accepted anywhere after that, exactly once, unless the broker tells it
//! otherwise with a `resync` frame (Redis lost events it may not have received).
//!
//! **`recovered: true` is a promise.** [`Broker::replay`] answers [`Replay::Recovered`] only
//! if it can prove that the frames it returns are every event after `since` addressed to the
//! connection, and that the client cannot already hold any of them (it has not seen them
//! under another id, as events accepted during a Redis outage were). Anything else is
//! [`Replay::NotRecovered`]: the client reloads its state.
//!
//! Implementations: [`memory::MemoryBroker`] (one instance, no external service) and
//! [`redis::RedisBroker`] (many instances through Redis; it documents its wire format and
//! how it keeps these promises across outages and data loss).

pub mod memory;
pub mod redis;

#[cfg(test)]
mod conformance;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::disconnect::Disconnect;
use crate::event::Event;
use crate::history::Replay;
pub use crate::history::{HistoryPage, HistoryQuery};
use crate::idempotency::IdemKey;

/// The fleet as one instance sees it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FleetStats {
    pub total_instances: usize,
    pub total_connections: usize,
    /// Distinct users, where they can be counted honestly (one instance: yes; a fleet: a user
    /// connected to two instances would count twice, so it is left out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_users: Option<usize>,
}

/// What `/health` and `/ws/stats` report about the broker.
#[derive(Clone, Debug, Serialize)]
pub struct BrokerStatus {
    /// `memory` or `redis`.
    pub mode: &'static str,
    /// True when events cross instances (Redis configured).
    pub redis_enabled: bool,
    /// `disabled`, `connecting`, `connected` or `disconnected`.
    pub redis_state: &'static str,
    /// True while the instance serves its own clients only because Redis was not reachable
    /// within the start-up wait (it keeps trying).
    pub local_only: bool,
    /// False until the broker is ready (Redis mode: subscribed and following the stream, or the
    /// start-up wait is over). `/ready` answers 503 meanwhile.
    pub ready: bool,
}

/// How a publish is to be done.
pub struct PublishOptions {
    /// When the HTTP layer accepted the event, for latency metrics.
    pub accepted_at: std::time::Instant,
    pub idempotency: Option<IdemKey>,
}

/// An accepted event.
#[derive(Debug, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    /// True when this is the answer of an earlier publish with the same `Idempotency-Key`.
    pub replayed: bool,
}

/// Why a publish was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishError {
    /// The event cannot be kept now (503 with `Retry-After`).
    Unavailable(String),
    /// The `Idempotency-Key` was used before with another body (422).
    KeyReused,
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Unavailable(m) => f.write_str(m),
            PublishError::KeyReused => {
                f.write_str("Idempotency-Key was already used with a different body within the window")
            }
        }
    }
}

impl PublishError {
    pub fn stopping() -> PublishError {
        PublishError::Unavailable("the instance is stopping".into())
    }
}

/// The history cannot be read now (Redis unreachable): 503.
#[derive(Debug, thiserror::Error)]
#[error("history unavailable: {0}")]
pub struct Unavailable(pub String);

/// Delivery: publishing, following channels, resuming.
pub trait Broker: Send + Sync + 'static {
    /// Gives `event` its id, keeps it and hands it to every instance's hub, this one included
    /// (see the module docs for the guarantee). The id `event` arrives with is a ULID, kept as
    /// the event's identity for de-duplication and logs.
    fn publish(&self, event: Event, opts: PublishOptions) -> BoxFuture<'_, Result<Published, PublishError>>;

    /// Resolves once a connection registered from now on gets every event accepted anywhere
    /// later (Redis mode: the instance is subscribed and knows where the stream stands), or
    /// once the start-up wait is over (the instance then serves in local-only mode). Sessions
    /// wait for it before they register; it resolves at once after start-up.
    fn ready(&self) -> BoxFuture<'_, ()>;

    /// The events after `since` addressed to `user` and `channels`, if the broker can promise
    /// them (see the module docs). Called after the connection is registered, so nothing
    /// falls between the replay and the live events (the session drops live events that the
    /// replay already holds, by stream and position).
    fn replay<'a>(&'a self, since: &'a str, user: &'a str, channels: &'a [String]) -> BoxFuture<'a, Replay>;

    /// Makes sure this instance receives `channel`'s events from every instance; resolves once
    /// it does (or, with Redis away, once the subscription is queued for the reconnect). Called
    /// each time a local connection joins the channel, before it is told `subscribed`.
    fn join<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()>;

    /// A local connection left `channel` (each [`Broker::join`] is matched by one leave). After
    /// the last one the instance stops receiving the channel, after a delay.
    fn leave<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()>;

    /// The id of the newest event this instance has handed to its hub from the streams a
    /// connection in `channels` follows, if it knows one. A connection registered before this
    /// call receives every later event, so a client that gets no event before it drops can
    /// resume from here (`connected` carries it).
    fn position<'a>(&'a self, channels: &'a [String]) -> BoxFuture<'a, Option<String>>;

    /// A page of one stream's history, for operators (`GET /api/history`).
    fn history<'a>(&'a self, q: HistoryQuery<'a>) -> BoxFuture<'a, Result<HistoryPage, Unavailable>>;

    fn status(&self) -> BrokerStatus;

    /// Stops background work (tracked tasks are cancelled and awaited) and removes this
    /// instance from the fleet. Called after the sessions and the HTTP server have stopped.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// How long an instance waits for the others to say how many connections an operator's
/// disconnect closed. The closes themselves happen as each instance gets the request.
pub const DISCONNECT_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// What the fleet looks like and what operators do to it: presence, totals, channel counts,
/// disconnects. Apart from delivery: nothing here touches an event.
pub trait Fleet: Send + Sync + 'static {
    /// The users in `channel` across the fleet with their connection counts, sorted by user.
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Vec<(String, usize)>>;

    /// Connection and instance totals across the fleet.
    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats>;

    /// Channels with at least one subscriber across the fleet whose name starts with `prefix`,
    /// with their subscriber (connection) counts, sorted by name.
    fn channels<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Vec<(String, usize)>>;

    /// Closes every connection of `user` on every instance with `how` ([`Disconnect::Revoked`]
    /// or [`Disconnect::Reconnect`]). Returns the connections closed, as far as the instances
    /// answered within [`DISCONNECT_WAIT`] (this one's count is always in).
    fn disconnect<'a>(&'a self, user: &'a str, how: Disconnect) -> BoxFuture<'a, usize>;
}
