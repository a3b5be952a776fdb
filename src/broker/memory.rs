//! The single-instance broker: the history ring gives each event its id and keeps it, then the
//! event goes straight to the local hub.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use tokio::sync::Mutex;

use super::{
    Broker, BrokerStatus, Fleet, FleetStats, HistoryPage, HistoryQuery, PublishError, PublishOptions, Published,
    Unavailable,
};
use crate::config::HistoryLimits;
use crate::disconnect::Disconnect;
use crate::event::{Dispatch, Event};
use crate::history::{MemoryHistory, Replay};
use crate::hub::{Hub, Submitter};
use crate::idempotency::{LocalStore, Seen};

pub struct MemoryBroker {
    submit: Submitter,
    /// Presence and counts are the local registry's.
    hub: Arc<Hub>,
    /// Held from giving an event its id until it is in the dispatch queue, so the hub sees
    /// events in id order. A tokio Mutex: `submit` may wait while the dispatch queue is full.
    state: Mutex<State>,
}

struct State {
    history: MemoryHistory,
    keys: LocalStore,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>, history: HistoryLimits, idempotency_window: std::time::Duration) -> Self {
        let state = State { history: MemoryHistory::new(history), keys: LocalStore::new(idempotency_window) };
        MemoryBroker { submit: hub.submitter(), hub, state: Mutex::new(state) }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, mut event: Event, opts: PublishOptions) -> BoxFuture<'_, Result<Published, PublishError>> {
        async move {
            let mut st = self.state.lock().await;
            if let Some(key) = &opts.idempotency {
                match st.keys.check(key) {
                    Seen::New => {}
                    Seen::Replay(id) => return Ok(Published { id, replayed: true }),
                    Seen::Conflict => return Err(PublishError::KeyReused),
                }
            }
            let (id, frame) = st.history.append(&mut event);
            let id = id.to_string();
            if let Some(key) = &opts.idempotency {
                st.keys.remember(key, &id);
            }
            // The ring's frame is the one fanned out: encoded once.
            let dispatch = Dispatch { frame, audience: event.audience, ts: event.ts, before_conn: None };
            self.submit.submit(dispatch, Some(opts.accepted_at)).await.map_err(|_| PublishError::stopping())?;
            Ok(Published { id, replayed: false })
        }
        .boxed()
    }

    fn replay<'a>(&'a self, since: &'a str, user: &'a str, channels: &'a [String]) -> BoxFuture<'a, Replay> {
        async move { self.state.lock().await.history.replay(since, user, channels, usize::MAX) }.boxed()
    }

    fn ready(&self) -> BoxFuture<'_, ()> {
        futures_util::future::ready(()).boxed()
    }

    fn join<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, ()> {
        // One instance: the hub already routes by channel.
        futures_util::future::ready(()).boxed()
    }

    fn leave<'a>(&'a self, _channel: &'a str) -> BoxFuture<'a, ()> {
        futures_util::future::ready(()).boxed()
    }

    fn position<'a>(&'a self, _channels: &'a [String]) -> BoxFuture<'a, Option<String>> {
        async move { self.state.lock().await.history.last().map(|id| id.to_string()) }.boxed()
    }

    fn history<'a>(&'a self, q: HistoryQuery<'a>) -> BoxFuture<'a, Result<HistoryPage, Unavailable>> {
        async move { Ok(self.state.lock().await.history.page(q)) }.boxed()
    }

    fn status(&self) -> BrokerStatus {
        BrokerStatus { mode: "memory", redis_enabled: false, redis_state: "disabled", local_only: false, ready: true }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        futures_util::future::ready(()).boxed()
    }
}

impl Fleet for MemoryBroker {
    fn presence<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Vec<(String, usize)>> {
        futures_util::future::ready(self.hub.presence(channel)).boxed()
    }

    fn fleet_stats(&self) -> BoxFuture<'_, FleetStats> {
        let s = FleetStats {
            total_instances: 1,
            total_connections: self.hub.connection_count(),
            total_users: Some(self.hub.user_count()),
        };
        futures_util::future::ready(s).boxed()
    }

    fn channels<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Vec<(String, usize)>> {
        futures_util::future::ready(self.hub.channel_counts(prefix)).boxed()
    }

    fn disconnect<'a>(&'a self, user: &'a str, how: Disconnect) -> BoxFuture<'a, usize> {
        futures_util::future::ready(self.hub.close_user(user, how)).boxed()
    }
}
