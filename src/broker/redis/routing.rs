//! Channel routing: an instance follows a channel's stream (its Redis channel subscribed, a
//! cursor in its stream) while it has local subscribers, from the first join (before the
//! connection is told `subscribed`) until `CHANNEL_UNSUBSCRIBE_DELAY_MS` after the last leave,
//! so Redis sends channel events only where they are wanted. Joins and leaves are counted by
//! the relay, which owns the subscriptions; a join during the delay keeps the subscription.

use std::sync::Arc;
use std::time::Instant;

use fred::prelude::*;

use super::keys::StreamKey;
use super::relay::{Follow, Relay};
use super::supervisor::Link;

impl Relay {
    /// Subscribes the broadcast channel and every channel followed (after each (re)connect).
    pub(super) async fn subscribe_all(&mut self) -> bool {
        let sub = &self.sh.subscriber;
        let r = sub.subscribe(self.sh.keys.broadcast().topic.as_str()).await;
        if let Err(e) = r {
            tracing::debug!(error = %e, "subscribe failed; retrying");
            return false;
        }
        for name in self.topics.keys() {
            let route = self.sh.keys.route(Some(name));
            let r = if route.sharded {
                sub.ssubscribe(route.topic.as_str()).await
            } else {
                sub.subscribe(route.topic.as_str()).await
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, channel = %name, "channel subscribe failed; retrying");
                return false;
            }
        }
        self.sh.metrics.redis_channel_subscriptions.set(self.topics.len() as i64);
        true
    }

    /// A local connection left `channel`; the last one starts the unsubscribe delay.
    pub(super) fn leave(&mut self, channel: Arc<str>) {
        if let Some(refs) = self.topics.get_mut(&channel) {
            *refs = refs.saturating_sub(1);
            if *refs == 0 {
                self.idle.insert(channel, Instant::now());
            }
        }
    }

    /// Follows `channel`'s stream from now on (subscribe, then start at its end and fill).
    pub(super) async fn join(&mut self, channel: Arc<str>) {
        *self.topics.entry(channel.clone()).or_default() += 1;
        self.idle.remove(&channel);
        let key: StreamKey = Some(channel.clone());
        if self.follows.contains_key(&key) {
            return;
        }
        self.follows.insert(key.clone(), Follow::default());
        self.sh.metrics.redis_channel_subscriptions.set(self.topics.len() as i64);
        if self.link.get() != Link::Live || self.stale {
            return; // the catch-up subscribes it
        }
        let route = self.sh.keys.route(Some(&channel));
        let sub = &self.sh.subscriber;
        let r = if route.sharded {
            sub.ssubscribe(route.topic.as_str()).await
        } else {
            sub.subscribe(route.topic.as_str()).await
        };
        let ok = match r {
            Ok(()) => match self.check_stream(&key, false, true).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::debug!(error = %e, channel = %channel, "could not start following a channel");
                    false
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, channel = %channel, "channel subscribe failed; retried on reconnect");
                false
            }
        };
        if !ok {
            self.stale = true;
        }
    }

    /// Stops following channels nobody here joined again within the unsubscribe delay.
    pub(super) async fn expire_topics(&mut self) {
        if self.idle.is_empty() {
            return;
        }
        let now = Instant::now();
        let due: Vec<Arc<str>> = self
            .idle
            .iter()
            .filter(|(_, at)| now >= **at + self.unsubscribe_delay)
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            self.idle.remove(&name);
            self.topics.remove(&name);
            let key: StreamKey = Some(name.clone());
            self.follows.remove(&key);
            self.window.forget(&key);
            self.positions.send_if_modified(|p| {
                p.remove(&key);
                false
            });
            self.pending.retain(|_, (s, _)| *s != key);
            let route = self.sh.keys.route(Some(&name));
            let r = if route.sharded {
                self.sh.subscriber.sunsubscribe(route.topic.as_str()).await
            } else {
                self.sh.subscriber.unsubscribe(route.topic.as_str()).await
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, channel = %name, "channel unsubscribe failed");
            }
        }
        self.sh.metrics.redis_channel_subscriptions.set(self.topics.len() as i64);
    }
}
