//! The single-instance broker: publish hands the event straight to the local hub.

use std::sync::Arc;
use std::time::Instant;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::{Broker, BrokerStatus, FleetStats, PublishError};
use crate::event::Event;
use crate::hub::Hub;

pub struct MemoryBroker {
    hub: Arc<Hub>,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>) -> Self {
        MemoryBroker { hub }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, event: Event, accepted_at: Instant) -> BoxFuture<'_, Result<(), PublishError>> {
        // Returns once the event is in the hub's dispatch queue: sequential publishes keep
        // their order through that one queue.
        async move {
            self.hub.submit(event, Some(accepted_at)).await.map_err(|_| PublishError("the instance is stopping".into()))
        }
        .boxed()
    }

    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats> {
        let s = FleetStats {
            total_instances: 1,
            total_connections: self.hub.connection_count(),
            total_users: Some(self.hub.user_count()),
        };
        futures_util::future::ready(s).boxed()
    }

    fn status(&self) -> BrokerStatus {
        BrokerStatus { mode: "memory", redis_enabled: false, redis_state: "disabled" }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        futures_util::future::ready(()).boxed()
    }
}
