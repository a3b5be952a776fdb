//! Channel presence across the fleet.
//!
//! Every heartbeat each instance writes its users per channel into the hash
//! `{prefix}presence:{<name>}` (field = instance id, value = JSON with an `expires_at`), and
//! removes its field from channels it no longer has subscribers in. A reader sums the live
//! fields (this instance counts with its live registry) and deletes expired ones.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::keys::Keys;
use crate::event::now_ms;
use crate::hub::Hub;

/// This instance's entry in a channel's presence hash.
#[derive(Serialize, Deserialize)]
struct PresenceEntry {
    expires_at: u64,
    users: Vec<(String, usize)>,
}

pub struct Presence {
    hub: Arc<Hub>,
    instance_id: String,
    interval: Duration,
    /// Channels whose presence hash holds a field of this instance. Only the heartbeat task
    /// writes it; a std Mutex because it is never held across an await.
    written: Mutex<HashSet<String>>,
}

impl Presence {
    pub fn new(hub: Arc<Hub>, instance_id: &str, interval: Duration) -> Presence {
        Presence { hub, instance_id: instance_id.to_string(), interval, written: Mutex::new(HashSet::new()) }
    }

    /// Writes this instance's presence in each channel it has subscribers for, and removes it
    /// from those it no longer has (one pipeline).
    pub async fn write(&self, client: &Client, keys: &Keys) -> Result<(), Error> {
        let names = self.hub.channel_names();
        let ttl = self.interval * 3;
        let expires_at = now_ms() + ttl.as_millis() as u64;
        let gone: Vec<String> = {
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let now: HashSet<String> = names.iter().map(|n| n.to_string()).collect();
            let gone = written.difference(&now).cloned().collect();
            *written = now;
            gone
        };
        if names.is_empty() && gone.is_empty() {
            return Ok(());
        }
        let pipe = client.pipeline();
        for name in &names {
            let entry = PresenceEntry { expires_at, users: self.hub.presence(name) };
            let json = serde_json::to_string(&entry).unwrap_or_default();
            let key = keys.presence(name);
            pipe.hset::<(), _, _>(key.as_str(), (self.instance_id.as_str(), json.as_str())).await?;
            pipe.pexpire::<(), _>(key.as_str(), ttl.as_millis() as i64, None).await?;
        }
        for name in &gone {
            pipe.hdel::<(), _, _>(keys.presence(name).as_str(), self.instance_id.as_str()).await?;
        }
        pipe.all::<Value>().await.map(|_| ())
    }

    /// The users in `name` across the fleet, sorted; local only when Redis does not answer.
    pub async fn read(&self, client: &Client, keys: &Keys, name: &str) -> Vec<(String, usize)> {
        if !client.is_connected() {
            return self.hub.presence(name);
        }
        self.read_fleet(client, keys, name).await.unwrap_or_else(|_| self.hub.presence(name))
    }

    async fn read_fleet(&self, client: &Client, keys: &Keys, name: &str) -> Result<Vec<(String, usize)>, Error> {
        let key = keys.presence(name);
        let all: HashMap<String, String> = client.hgetall(key.as_str()).await?;
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
            let _ = client.hdel::<(), _, _>(key.as_str(), dead).await;
        }
        let mut v: Vec<(String, usize)> = users.into_iter().collect();
        v.sort();
        Ok(v)
    }
}
