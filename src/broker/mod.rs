//! The broker contract: how an accepted event reaches the hubs of every instance.
//!
//! # Delivery guarantee
//!
//! [`Broker::publish`] returns `Ok` once the event has been handed to the transport that
//! carries it to every instance (for the memory broker: once it is queued on every local
//! socket). Each instance's hub then receives each event at most once and queues it on each
//! targeted local connection exactly once. Events published one after another through one
//! instance reach every hub, and so every connection, in publish order. Delivery is at most
//! once: an event is not stored, so a connection that is not open when it is delivered misses
//! it (history and resume extend this later).
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

/// Why a publish was not accepted (the HTTP layer answers 503).
#[derive(Debug)]
pub struct PublishError(pub String);

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub trait Broker: Send + Sync + 'static {
    /// Hands `event` to every instance's hub, this one included (see the module docs for the
    /// guarantee). `accepted_at` is when the HTTP layer accepted it, for latency metrics.
    fn publish(&self, event: Event, accepted_at: std::time::Instant) -> BoxFuture<'_, Result<(), PublishError>>;

    /// Connection and instance totals across the fleet.
    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats>;

    fn status(&self) -> BrokerStatus;

    /// Stops background work and removes this instance from the fleet (heartbeat key).
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}
