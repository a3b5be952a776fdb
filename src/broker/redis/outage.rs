//! Publishing through the relay: what the publish path hands over when it cannot append
//! straight to Redis (the link is not live, events are held, an append failed on the way).
//! While Redis is away events reach local clients at once and wait in the outbox
//! ([`super::held`]); once it is back they are appended first, in order, marked as held.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use fred::prelude::*;

use super::held::HeldEvent;
use super::is_transient;
use super::keys::StreamKey;
use super::relay::{Own, Relay};
use super::scripts::{Append, Appended, Lookup};
use super::supervisor::Link;
use crate::broker::{PublishError, Published};
use crate::event::{Audience, Event};
use crate::idempotency::IdemKey;

impl Relay {
    /// A publish the publish path handed over: appended after the held events when the link
    /// is live, else delivered locally and held.
    pub(super) async fn enqueue(
        &mut self,
        event: Event,
        key: Option<IdemKey>,
        uncertain: bool,
    ) -> Result<Published, PublishError> {
        let stream: StreamKey = event.audience.channel().map(Arc::from);
        let tail = event.frame_tail();
        let users = match &event.audience {
            Audience::Users(u) => Some(serde_json::to_string(u).unwrap_or_default()),
            _ => None,
        };
        if self.link.get() == Link::Live && !self.stale && self.flush_held().await {
            let route = self.sh.keys.route(stream.as_deref());
            let a = Append {
                route: &route,
                frame_tail: &tail,
                eid: &event.id,
                users: users.as_deref(),
                held: false,
                lookup: if uncertain { Lookup::Yes } else { Lookup::No },
                key: key.as_ref(),
            };
            let appended = match self.sh.scripts.append(&self.sh.publisher, a).await {
                Ok(Appended::New(sid)) => Some(sid),
                // The first attempt did append it (its reply was lost): the same as new.
                Ok(Appended::Found(id)) => match id.parse() {
                    Ok(sid) => Some(sid),
                    Err(()) => return Ok(Published { id, replayed: false }),
                },
                Ok(Appended::Duplicate(id)) => return Ok(Published { id, replayed: true }),
                Ok(Appended::Conflict) => return Err(PublishError::KeyReused),
                Err(e) if is_transient(&e) || !self.sh.publisher.is_connected() => {
                    self.sh.metrics.redis_publish_failures.inc();
                    tracing::debug!(error = %e, "Redis publish failed; holding the event");
                    let _ = self.go_down().await;
                    return self.hold(event, stream, tail, users, key, true).await;
                }
                Err(e) => {
                    self.sh.metrics.redis_publish_failures.inc();
                    tracing::error!(error = %e, "Redis refused the event");
                    return Err(PublishError::Unavailable(format!("Redis refused the event: {e}")));
                }
            };
            if let Some(sid) = appended {
                // Kept until the stream brings it, like a direct append's (see `Cmd::Appended`):
                // if the link breaks first, local clients get it before anything held later.
                // (Found: the chaos loop caught an event whose first append Redis ran just
                // before dying, delivered from the stream only after events held later.)
                let watermark = self.hub.watermark();
                let own =
                    Own { eid: event.id.clone(), frame_tail: tail, audience: event.audience, ts: event.ts, watermark };
                let cursor = self.follows.get(&stream).map(|f| f.cursor);
                if cursor.is_some_and(|c| c.is_none_or(|c| sid > c)) {
                    self.pending.insert((sid, own.eid.clone()), (stream, own));
                }
                return Ok(Published { id: sid.to_string(), replayed: false });
            }
        }
        if !uncertain {
            self.sh.metrics.redis_publish_failures.inc();
        }
        self.hold(event, stream, tail, users, key, uncertain).await
    }

    /// Delivers `event` to local clients now, under its ULID, and keeps it for Redis.
    pub(super) async fn hold(
        &mut self,
        event: Event,
        stream: StreamKey,
        frame_tail: String,
        users: Option<String>,
        key: Option<IdemKey>,
        uncertain: bool,
    ) -> Result<Published, PublishError> {
        let id = event.id.clone();
        let followed = self.follows.contains_key(&stream);
        let h = HeldEvent { stream, eid: id.clone(), frame_tail, users, key, uncertain };
        if !self.held.push(h) {
            return Err(PublishError::Unavailable(
                "Redis is unreachable and the outbox of held events is full; retry later".into(),
            ));
        }
        self.held_len.store(self.held.len(), Ordering::Release);
        self.sh.metrics.redis_outbox_events.set(self.held.len() as i64);
        // Own events appended before the link broke go first: local clients keep the order.
        self.deliver_pending_early().await.map_err(|_| PublishError::stopping())?;
        if followed {
            // Skipped when the stream brings it back (a channel nobody here follows has no
            // local subscriber to deliver to, and its stream is not read here).
            self.remember_early(id.clone());
            self.hub.submit(event.dispatch(), None).await.map_err(|_| PublishError::stopping())?;
        }
        Ok(Published { id, replayed: false })
    }

    /// Appends the held events, oldest first, marked as held. False at the first failure (the
    /// rest stay, in order; the link counts as down).
    pub(super) async fn flush_held(&mut self) -> bool {
        let mut flushed = 0usize;
        while let Some(h) = self.held.front() {
            let route = self.sh.keys.route(h.stream.as_deref());
            let a = Append {
                route: &route,
                frame_tail: &h.frame_tail,
                eid: &h.eid,
                users: h.users.as_deref(),
                held: true,
                lookup: if h.uncertain { Lookup::YesDeliveredLocally } else { Lookup::No },
                key: h.key.as_ref(),
            };
            match self.sh.scripts.append(&self.sh.publisher, a).await {
                // A duplicate: the append whose reply was lost did happen, or another instance
                // accepted the same key meanwhile; a conflict: the key was used with another
                // body. Either way the stream needs nothing more (local clients have it).
                Ok(_) => {}
                Err(e) if is_transient(&e) || !self.sh.publisher.is_connected() => {
                    tracing::warn!(error = %e, "could not append held events to Redis; retrying");
                    self.stale = true;
                    return false;
                }
                Err(e) => {
                    tracing::error!(error = %e, eid = %h.eid, "Redis refused a held event; dropping it");
                }
            }
            self.held.pop_front();
            flushed += 1;
            self.held_len.store(self.held.len(), Ordering::Release);
            self.sh.metrics.redis_outbox_events.set(self.held.len() as i64);
            self.sh.metrics.redis_outbox_flushed.inc();
        }
        if flushed > 0 {
            tracing::info!(events = flushed, "appended events held while Redis was away");
        }
        true
    }
}
