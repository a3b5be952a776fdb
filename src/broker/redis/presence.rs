//! Who is in which channel across the fleet: presence and channel counts.
//!
//! Each instance writes, for every channel whose local membership changed, its users into the
//! hash `{prefix}presence:{<name>}` (field = instance id) and its subscriber count into the
//! hash `{prefix}chancount:{<instance id>}` (field = channel), and removes both fields when its
//! last local subscriber left. Writes happen on change, coalesced per [`WRITE_EVERY`], not every
//! channel every heartbeat; every [`REFRESH_BEATS`] heartbeats and after every reconnect the
//! instance rewrites all of them (Redis may have restarted empty). An entry counts only while
//! its instance's heartbeat is live (see [`super::fleet`]): a reader sums the live instances'
//! entries (this one counts with its live registry) and deletes the entries of dead ones.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::prelude::*;
use serde::{Deserialize, Serialize};

use super::fleet::FleetView;
use super::keys::Keys;
use crate::event::now_ms;
use crate::hub::Hub;

/// How often changed channels are written.
pub const WRITE_EVERY: Duration = Duration::from_millis(250);
/// Every this many heartbeats, all channels are written again.
pub const REFRESH_BEATS: u32 = 12;

/// This instance's entry in a channel's presence hash.
#[derive(Serialize, Deserialize)]
struct PresenceEntry {
    /// Kept for readers of an older version, which judge an entry by it (newer ones judge by
    /// the instance's heartbeat).
    expires_at: u64,
    users: Vec<(String, usize)>,
}

pub struct Presence {
    hub: Arc<Hub>,
    instance_id: String,
    /// `{prefix}chancount:{instance id}`.
    counts_key: String,
    /// How long a presence hash lives without a write: several full refreshes.
    ttl: Duration,
    /// Channels whose entries are in Redis, and channels changed but not yet written (a
    /// failed write leaves them here for the next). Only the heartbeat task touches them; a
    /// std Mutex because it is never held across an await.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    written: HashSet<Arc<str>>,
    dirty: HashSet<Arc<str>>,
}

impl Presence {
    pub fn new(hub: Arc<Hub>, instance_id: &str, keys: &Keys, heartbeat: Duration) -> Presence {
        Presence {
            hub,
            instance_id: instance_id.to_string(),
            counts_key: keys.channel_counts(instance_id),
            ttl: heartbeat * REFRESH_BEATS * 3,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the channels changed since the last write; `all`: every local channel, and
    /// removes entries of channels no longer here (after a reconnect, and now and then).
    pub async fn write(&self, client: &Client, keys: &Keys, all: bool) -> Result<(), Error> {
        let names: Vec<Arc<str>> = {
            let changed = self.hub.take_changed();
            let mut st = self.state();
            st.dirty.extend(changed);
            if all {
                let here: HashSet<Arc<str>> = self.hub.channel_names().into_iter().collect();
                let gone: Vec<Arc<str>> = st.written.difference(&here).cloned().collect();
                st.dirty.extend(here);
                st.dirty.extend(gone);
            }
            st.dirty.iter().cloned().collect()
        };
        if names.is_empty() {
            return Ok(());
        }
        let expires_at = now_ms() + self.ttl.as_millis() as u64;
        let pipe = client.pipeline();
        let mut now_written = Vec::new();
        for name in &names {
            let key = keys.presence(name);
            let users = self.hub.presence(name);
            if users.is_empty() {
                pipe.hdel::<(), _, _>(key.as_str(), self.instance_id.as_str()).await?;
                pipe.hdel::<(), _, _>(self.counts_key.as_str(), &**name).await?;
                continue;
            }
            let count: usize = users.iter().map(|(_, n)| n).sum();
            let json = serde_json::to_string(&PresenceEntry { expires_at, users }).unwrap_or_default();
            pipe.hset::<(), _, _>(key.as_str(), (self.instance_id.as_str(), json.as_str())).await?;
            pipe.pexpire::<(), _>(key.as_str(), self.ttl.as_millis() as i64, None).await?;
            pipe.hset::<(), _, _>(self.counts_key.as_str(), (&**name, count as i64)).await?;
            now_written.push(name.clone());
        }
        pipe.pexpire::<(), _>(self.counts_key.as_str(), self.ttl.as_millis() as i64, None).await?;
        pipe.all::<Value>().await?;
        let mut st = self.state();
        for name in &names {
            st.dirty.remove(name);
            st.written.remove(name);
        }
        st.written.extend(now_written);
        Ok(())
    }

    /// Keeps this instance's channel counts alive between full writes (each heartbeat).
    pub async fn touch(&self, client: &Client) -> Result<(), Error> {
        client.pexpire::<(), _>(self.counts_key.as_str(), self.ttl.as_millis() as i64, None).await
    }

    /// Takes this instance out of every channel (shutdown).
    pub async fn remove(&self, client: &Client, keys: &Keys) {
        let written: Vec<Arc<str>> = self.state().written.drain().collect();
        let pipe = client.pipeline();
        for name in &written {
            let _ = pipe.hdel::<(), _, _>(keys.presence(name).as_str(), self.instance_id.as_str()).await;
        }
        let _ = pipe.del::<(), _>(self.counts_key.as_str()).await;
        if let Err(e) = pipe.all::<Value>().await {
            tracing::warn!(error = %e, "could not remove this instance's presence");
        }
    }

    /// The users in `name` across the fleet, sorted; local only when Redis does not answer.
    pub async fn read(&self, client: &Client, keys: &Keys, fleet: &FleetView, name: &str) -> Vec<(String, usize)> {
        if !client.is_connected() {
            return self.hub.presence(name);
        }
        self.read_fleet(client, keys, fleet, name).await.unwrap_or_else(|_| self.hub.presence(name))
    }

    async fn read_fleet(
        &self,
        client: &Client,
        keys: &Keys,
        fleet: &FleetView,
        name: &str,
    ) -> Result<Vec<(String, usize)>, Error> {
        let key = keys.presence(name);
        let all: HashMap<String, String> = client.hgetall(key.as_str()).await?;
        let live: HashSet<String> = fleet.live_others(client).await?.into_iter().collect();
        let mut users: HashMap<String, usize> = self.hub.presence(name).into_iter().collect();
        let mut dead = Vec::new();
        for (instance, json) in all {
            if instance == self.instance_id {
                continue; // this instance counts with its live figures
            }
            match serde_json::from_str::<PresenceEntry>(&json) {
                Ok(e) if live.contains(&instance) => {
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

    /// Channels with subscribers across the fleet whose name starts with `prefix`, sorted;
    /// local only when Redis does not answer.
    pub async fn channels(
        &self,
        client: &Client,
        keys: &Keys,
        fleet: &FleetView,
        prefix: &str,
    ) -> Vec<(String, usize)> {
        if !client.is_connected() {
            return self.hub.channel_counts(prefix);
        }
        match self.channels_fleet(client, keys, fleet, prefix).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the fleet's channels");
                self.hub.channel_counts(prefix)
            }
        }
    }

    async fn channels_fleet(
        &self,
        client: &Client,
        keys: &Keys,
        fleet: &FleetView,
        prefix: &str,
    ) -> Result<Vec<(String, usize)>, Error> {
        let others = fleet.live_others(client).await?;
        let mut counts: HashMap<String, usize> = self.hub.channel_counts(prefix).into_iter().collect();
        if !others.is_empty() {
            let pipe = client.pipeline();
            for id in &others {
                pipe.hgetall::<(), _>(keys.channel_counts(id).as_str()).await?;
            }
            let replies: Vec<HashMap<String, i64>> = pipe.all().await?;
            for (channel, n) in replies.into_iter().flatten() {
                if n > 0 && channel.starts_with(prefix) {
                    *counts.entry(channel).or_default() += n as usize;
                }
            }
        }
        let mut v: Vec<(String, usize)> = counts.into_iter().collect();
        v.sort();
        Ok(v)
    }
}
