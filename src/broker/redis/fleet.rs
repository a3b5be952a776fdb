//! Heartbeats and fleet totals.
//!
//! Every `HEARTBEAT_INTERVAL_MS` an instance writes its counts as JSON to
//! `{prefix}instance:{id}` (expiring after 3 periods) and to the field `{id}` of the hash
//! `{prefix}instances` with an `expires_at` inside. `/ws/stats` reads that one hash (HGETALL,
//! never KEYS), sums the entries that have not expired and deletes those that have; the result
//! is cached for a fraction of a period, so polling it often costs Redis nothing more.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::Expiration;
use serde::{Deserialize, Serialize};

use crate::broker::FleetStats;
use crate::event::now_ms;
use crate::hub::Hub;

/// One instance's heartbeat, in `{prefix}instance:{id}` and `{prefix}instances`.
#[derive(Serialize, Deserialize, Debug)]
struct Heartbeat {
    instance_id: String,
    connections: usize,
    users: usize,
    /// ms since the epoch after which this heartbeat no longer counts.
    expires_at: u64,
}

pub struct FleetView {
    pub hub: Arc<Hub>,
    pub instance_id: String,
    pub interval: Duration,
    pub heartbeat_key: String,
    pub instances_key: String,
    cache: Mutex<Option<(Instant, FleetStats)>>,
}

impl FleetView {
    pub fn new(hub: Arc<Hub>, instance_id: &str, interval: Duration, heartbeat_key: &str, instances_key: &str) -> Self {
        FleetView {
            hub,
            instance_id: instance_id.to_string(),
            interval,
            heartbeat_key: heartbeat_key.to_string(),
            instances_key: instances_key.to_string(),
            cache: Mutex::new(None),
        }
    }

    pub async fn beat(&self, client: &Client) {
        let ttl = self.interval * 3;
        let hb = Heartbeat {
            instance_id: self.instance_id.clone(),
            connections: self.hub.connection_count(),
            users: self.hub.user_count(),
            expires_at: now_ms() + ttl.as_millis() as u64,
        };
        let json = serde_json::to_string(&hb).unwrap_or_default();
        let set = client.set::<(), _, _>(
            self.heartbeat_key.as_str(),
            json.as_str(),
            Some(Expiration::PX(ttl.as_millis() as i64)),
            None,
            false,
        );
        let hset = client.hset::<(), _, _>(self.instances_key.as_str(), (self.instance_id.as_str(), json.as_str()));
        if let Err(e) = set.await.and(hset.await) {
            tracing::debug!(error = %e, "heartbeat failed");
        }
    }

    /// Removes this instance from the fleet (shutdown).
    pub async fn remove(&self, client: &Client) {
        let del = client.del::<(), _>(self.heartbeat_key.as_str());
        let hdel = client.hdel::<(), _, _>(self.instances_key.as_str(), self.instance_id.as_str());
        if let Err(e) = del.await.and(hdel.await) {
            tracing::warn!(error = %e, "could not remove the heartbeat key");
        }
    }

    pub fn local(&self) -> FleetStats {
        FleetStats { total_instances: 1, total_connections: self.hub.connection_count(), total_users: None }
    }

    /// The fleet's totals, at most a fraction of a period old.
    pub async fn stats(&self, client: &Client) -> FleetStats {
        if !client.is_connected() {
            return self.local();
        }
        let max_age = (self.interval / 5).min(Duration::from_secs(1));
        if let Some((at, f)) = self.cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if at.elapsed() < max_age {
                return f.clone();
            }
        }
        match self.read(client).await {
            Ok(f) => {
                *self.cache.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), f.clone()));
                f
            }
            Err(_) => self.local(),
        }
    }

    async fn read(&self, client: &Client) -> Result<FleetStats, Error> {
        let mut fleet = self.local();
        // This instance counts with its live figures, not its last heartbeat.
        for hb in self.live_heartbeats(client).await? {
            fleet.total_instances += 1;
            fleet.total_connections += hb.connections;
        }
        Ok(fleet)
    }

    /// The ids of the other instances whose heartbeat is live, read now (not cached: a reader
    /// that drops the entries of instances it thinks dead must not act on a stale list).
    pub async fn live_others(&self, client: &Client) -> Result<Vec<String>, Error> {
        Ok(self.live_heartbeats(client).await?.into_iter().map(|hb| hb.instance_id).collect())
    }

    /// The live heartbeats of the other instances; deletes the expired ones it finds.
    async fn live_heartbeats(&self, client: &Client) -> Result<Vec<Heartbeat>, Error> {
        let all: HashMap<String, String> = client.hgetall(self.instances_key.as_str()).await?;
        let now = now_ms();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (id, json) in all {
            if id == self.instance_id {
                continue;
            }
            match serde_json::from_str::<Heartbeat>(&json) {
                Ok(hb) if hb.expires_at > now && hb.instance_id == id => live.push(hb),
                _ => dead.push(id),
            }
        }
        if !dead.is_empty() {
            // Another instance may delete them first; either way they are gone.
            let _ = client.hdel::<(), _, _>(self.instances_key.as_str(), dead).await;
        }
        Ok(live)
    }
}
