//! The broker contract: how an accepted event reaches the hubs of every instance.
//!
//! # Delivery guarantee
//!
//! [`Broker::publish`] gives the event its stream position (its id, see [`crate::history`]) and
//! returns `Ok` once the event is kept: appended to the history (memory ring or Redis stream)
//! and queued for every instance's hub, or, in Redis mode while Redis is away, delivered
//! locally and held in a bounded outbox to be appended once Redis is back. Each instance's hub
//! receives each event once and queues it on each targeted local connection exactly once, in
//! stream order. A connection that was away asks [`Broker::replay`] for what it missed.
//!
//! Implementations: [`memory::MemoryBroker`] (one instance, no external service) and
//! [`redis::RedisBroker`] (many instances through Redis pub/sub; it documents its wire format).

pub mod memory;
pub mod redis;

#[cfg(test)]
mod conformance;

use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::event::Event;
use crate::history::Replay;
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

pub trait Broker: Send + Sync + 'static {
    /// Gives `event` its id, keeps it and hands it to every instance's hub, this one included
    /// (see the module docs for the guarantee). The id `event` arrives with is a ULID, kept as
    /// the event's identity for de-duplication and logs.
    fn publish(&self, event: Event, opts: PublishOptions) -> BoxFuture<'_, Result<Published, PublishError>>;

    /// The events after `since` addressed to `user`, if every event after `since` is still
    /// kept. Called after the connection is registered, so nothing falls between the replay
    /// and the live events (the session drops live events the replay already holds).
    fn replay<'a>(&'a self, since: &'a str, user: &'a str, channels: &'a [String]) -> BoxFuture<'a, Replay>;

    /// Makes sure this instance receives `channel`'s events from every instance; resolves once
    /// it does (or, with Redis away, once the subscription is queued for the reconnect). Called
    /// after a local connection joined the channel, before it is told `subscribed`. The hub
    /// reports channels whose last local subscriber left ([`crate::hub::Hub::report_vacated_to`]).
    fn join<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, ()>;

    /// The users in `channel` across the fleet with their connection counts, sorted by user.
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Vec<(String, usize)>>;

    /// The id of the newest event this instance has handed to its hub, if it knows one. A
    /// connection registered before this call receives every later event, so a client that
    /// gets no event before it drops can resume from here (`connected` carries it).
    fn position(&self) -> BoxFuture<'_, Option<String>>;

    /// Connection and instance totals across the fleet.
    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats>;

    fn status(&self) -> BrokerStatus;

    /// Stops background work and removes this instance from the fleet (heartbeat key).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
