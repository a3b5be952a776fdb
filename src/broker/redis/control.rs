//! Operator requests across the fleet: a disconnect asked of one instance closes the user's
//! connections on every instance, and the asking instance adds up how many.
//!
//! Every instance subscribes, on a Redis connection of its own (apart from the relay's event
//! subscription, so that nothing here can delay or reorder delivery), to `{prefix}control`
//! (requests to everyone) and `{prefix}control:{instance id}` (answers to this instance), and
//! subscribes again after every reconnect. A request is one JSON message:
//!
//! ```json
//! {"op":"disconnect","req":"<ULID>","from":"<instance>","user":"<sub>","reconnect":false}
//! {"op":"disconnected","req":"<ULID>","from":"<instance>","n":2}
//! ```
//!
//! The asking instance closes its own connections at once, publishes the request, and waits
//! (at most [`DISCONNECT_WAIT`]) for an answer from each instance whose heartbeat is live. An
//! instance that is cut off from Redis gets the request only if it reconnects within fred's
//! buffering; its count is then missing from the answer (`disconnected` counts what the
//! instances said in time).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::fleet::FleetView;
use super::keys::Keys;
use crate::broker::DISCONNECT_WAIT;
use crate::disconnect::Disconnect;
use crate::hub::Hub;

/// Until the first subscription works, how often it is tried again.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Msg {
    Disconnect { req: String, from: String, user: String, reconnect: bool },
    Disconnected { req: String, from: String, n: usize },
}

pub struct Control {
    sub: SubscriberClient,
    publisher: Client,
    hub: Arc<Hub>,
    instance_id: String,
    to_all: String,
    to_me: String,
    /// Requests of this instance waiting for answers: request id → where they go. A std Mutex:
    /// an insert, a lookup or a remove, never held across an await.
    waiting: Mutex<HashMap<String, mpsc::Sender<(String, usize)>>>,
}

impl Control {
    pub fn new(sub: SubscriberClient, publisher: Client, hub: Arc<Hub>, keys: &Keys, instance_id: &str) -> Control {
        Control {
            sub,
            publisher,
            hub,
            instance_id: instance_id.to_string(),
            to_all: keys.control(),
            to_me: keys.control_replies(instance_id),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::Sender<(String, usize)>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes (again after every reconnect) and answers requests until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        drop(self.sub.connect());
        let mut messages = self.sub.message_rx();
        let mut reconnects = self.sub.reconnect_rx();
        let mut subscribed = false;
        let mut retry = tokio::time::interval(RETRY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = reconnects.recv() => {
                    if r.is_err() {
                        break;
                    }
                    subscribed = false;
                }
                _ = retry.tick(), if !subscribed => {}
                m = messages.recv() => match m {
                    Ok(m) => self.handle(&m.value).await,
                    // Lagged: requests in the lost messages time out at their senders.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                },
            }
            if !subscribed && self.sub.is_connected() {
                subscribed = self.sub.subscribe(vec![self.to_all.as_str(), self.to_me.as_str()]).await.is_ok();
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.sub.quit()).await;
    }

    async fn handle(&self, value: &Value) {
        let Some(text) = value.as_bytes().and_then(|b| std::str::from_utf8(b).ok()) else { return };
        match serde_json::from_str::<Msg>(text) {
            Ok(Msg::Disconnect { req, from, user, reconnect }) if from != self.instance_id => {
                let how = if reconnect { Disconnect::Reconnect } else { Disconnect::Revoked };
                let n = self.hub.close_user(&user, how);
                let answer = Msg::Disconnected { req, from: self.instance_id.clone(), n };
                let json = serde_json::to_string(&answer).unwrap_or_default();
                let topic = format!("{}:{from}", self.to_all);
                if let Err(e) = self.publisher.publish::<(), _, _>(topic.as_str(), json.as_str()).await {
                    tracing::debug!(error = %e, "could not answer a disconnect request");
                }
            }
            Ok(Msg::Disconnect { .. }) => {} // our own request: handled before it was sent
            Ok(Msg::Disconnected { req, from, n }) => {
                let tx = self.waiting().get(&req).cloned();
                if let Some(tx) = tx {
                    let _ = tx.try_send((from, n));
                }
            }
            Err(e) => tracing::debug!(error = %e, "ignored a control message that is not one of ours"),
        }
    }

    /// Closes `user`'s connections here and on every instance that answers in time; the count.
    pub async fn disconnect(&self, fleet: &FleetView, user: &str, how: Disconnect) -> usize {
        let mut total = self.hub.close_user(user, how);
        if !self.publisher.is_connected() {
            return total;
        }
        let deadline = tokio::time::Instant::now() + DISCONNECT_WAIT;
        let others: HashSet<String> = match tokio::time::timeout_at(deadline, fleet.live_others(&self.publisher)).await
        {
            Ok(Ok(ids)) => ids.into_iter().collect(),
            _ => return total,
        };
        if others.is_empty() {
            return total;
        }
        let req = ulid::Ulid::new().to_string();
        let (tx, mut rx) = mpsc::channel(others.len() + 8);
        self.waiting().insert(req.clone(), tx);
        let msg = Msg::Disconnect {
            req: req.clone(),
            from: self.instance_id.clone(),
            user: user.to_string(),
            reconnect: how == Disconnect::Reconnect,
        };
        let json = serde_json::to_string(&msg).unwrap_or_default();
        let sent =
            tokio::time::timeout_at(deadline, self.publisher.publish::<(), _, _>(self.to_all.as_str(), json)).await;
        if matches!(sent, Ok(Ok(()))) {
            let mut answered = HashSet::new();
            while answered.len() < others.len() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some((from, n))) => {
                        if answered.insert(from) {
                            total += n;
                        }
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if answered.len() < others.len() {
                tracing::warn!(
                    answered = answered.len(),
                    instances = others.len(),
                    "not every instance answered a disconnect request in time"
                );
            }
        }
        self.waiting().remove(&req);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Msg::Disconnect { req: "r".into(), from: "a".into(), user: "u".into(), reconnect: true };
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"op":"disconnect","req":"r","from":"a","user":"u","reconnect":true}"#);
        assert_eq!(serde_json::from_str::<Msg>(&json).unwrap(), m);
        let a: Msg = serde_json::from_str(r#"{"op":"disconnected","req":"r","from":"b","n":2}"#).unwrap();
        assert_eq!(a, Msg::Disconnected { req: "r".into(), from: "b".into(), n: 2 });
    }
}
