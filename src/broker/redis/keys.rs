//! Every key and channel name the Redis broker uses, in one place.
//!
//! Standalone Redis: one id clock and one epoch for every stream, so ids order across streams.
//! Redis Cluster: a channel's keys share the hash tag `{<name>}` (its stream, clock, epoch,
//! idempotency keys, presence hash and sharded pub/sub channel live on one node, as a script
//! may touch one slot only); the broadcast stream's keys share the tag `{<prefix>stream:all}`.

use std::sync::Arc;

/// Which stream an event belongs to: `None` for events published without a channel (the
/// broadcast stream), else the channel's own stream.
pub type StreamKey = Option<Arc<str>>;

/// Where one stream's events live in Redis.
#[derive(Clone, Debug)]
pub struct Route {
    pub stream: String,
    /// The Redis pub/sub channel its events are published on.
    pub topic: String,
    /// The id clock: the newest id any stream sharing it gave (the publish script keeps ids
    /// increasing even if Redis's clock steps back, and moves it past ids Redis lost).
    pub clock: String,
    /// The dataset's identity: a random token created when missing. A different value than
    /// the one an instance followed means Redis lost its data (restarted empty).
    pub epoch: String,
    /// Idempotency keys are `{idem_prefix}{scoped key}`.
    pub idem_prefix: String,
    /// SPUBLISH/SSUBSCRIBE (a channel in a Cluster) rather than PUBLISH/SUBSCRIBE.
    pub sharded: bool,
}

pub struct Keys {
    prefix: String,
    /// Redis Cluster: per-channel clocks and epochs, sharded pub/sub.
    clustered: bool,
    broadcast: Route,
    /// `{prefix}ch:`: a channel's topic is `{prefix}ch:{<name>}`.
    topic_prefix: String,
    pub instances: String,
    pub heartbeat: String,
}

impl Keys {
    pub fn new(prefix: &str, instance_id: &str, clustered: bool) -> Keys {
        let stream = format!("{prefix}stream:all");
        let (clock, epoch) = if clustered {
            (format!("{prefix}clock:{{{stream}}}"), format!("{prefix}epoch:{{{stream}}}"))
        } else {
            (format!("{prefix}clock"), format!("{prefix}epoch"))
        };
        let broadcast = Route {
            topic: format!("{prefix}broadcast:all"),
            idem_prefix: format!("{prefix}idem:{{{stream}}}:"),
            stream,
            clock,
            epoch,
            sharded: false,
        };
        Keys {
            prefix: prefix.to_string(),
            clustered,
            broadcast,
            topic_prefix: format!("{prefix}ch:"),
            instances: format!("{prefix}instances"),
            heartbeat: format!("{prefix}instance:{instance_id}"),
        }
    }

    /// The route of a stream.
    pub fn route(&self, stream: Option<&str>) -> Route {
        match stream {
            None => self.broadcast.clone(),
            Some(name) => self.channel(name),
        }
    }

    pub fn broadcast(&self) -> &Route {
        &self.broadcast
    }

    fn channel(&self, name: &str) -> Route {
        let p = &self.prefix;
        let (clock, epoch) = if self.clustered {
            (format!("{p}clock:{{{name}}}"), format!("{p}epoch:{{{name}}}"))
        } else {
            (self.broadcast.clock.clone(), self.broadcast.epoch.clone())
        };
        Route {
            stream: format!("{p}chstream:{{{name}}}"),
            topic: format!("{}{{{name}}}", self.topic_prefix),
            clock,
            epoch,
            idem_prefix: format!("{p}idem:{{{name}}}:"),
            sharded: self.clustered,
        }
    }

    /// The stream whose events arrive on the Redis channel `topic`; `None` for a topic that is
    /// not ours.
    pub fn stream_of_topic(&self, topic: &str) -> Option<StreamKey> {
        if topic == self.broadcast.topic {
            return Some(None);
        }
        let name = topic.strip_prefix(self.topic_prefix.as_str())?.strip_prefix('{')?.strip_suffix('}')?;
        Some(Some(Arc::from(name)))
    }

    pub fn presence(&self, channel: &str) -> String {
        format!("{}presence:{{{channel}}}", self.prefix)
    }

    /// An instance's subscriber count per channel (hash: channel → connections).
    pub fn channel_counts(&self, instance_id: &str) -> String {
        format!("{}chancount:{instance_id}", self.prefix)
    }

    /// The pub/sub channel of operator requests to every instance.
    pub fn control(&self) -> String {
        format!("{}control", self.prefix)
    }

    /// The pub/sub channel of answers to one instance's requests.
    pub fn control_replies(&self, instance_id: &str) -> String {
        format!("{}control:{instance_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_hash_tags() {
        let k = Keys::new("ws:", "i1", false);
        let b = k.broadcast();
        assert_eq!((b.stream.as_str(), b.topic.as_str()), ("ws:stream:all", "ws:broadcast:all"));
        assert_eq!((b.clock.as_str(), b.epoch.as_str()), ("ws:clock", "ws:epoch"));
        let c = k.route(Some("room:1"));
        assert_eq!((c.stream.as_str(), c.topic.as_str()), ("ws:chstream:{room:1}", "ws:ch:{room:1}"));
        assert_eq!(c.clock, "ws:clock", "one clock for every stream in standalone Redis");
        assert!(!c.sharded);
        assert_eq!(k.stream_of_topic("ws:ch:{room:1}"), Some(Some(Arc::from("room:1"))));
        assert_eq!(k.stream_of_topic("ws:broadcast:all"), Some(None));
        assert_eq!(k.stream_of_topic("other"), None);
        assert_eq!(k.heartbeat, "ws:instance:i1");
        assert_eq!(k.channel_counts("i1"), "ws:chancount:i1");
        assert_eq!((k.control(), k.control_replies("i1")), ("ws:control".to_string(), "ws:control:i1".to_string()));
        let k = Keys::new("ws:", "i1", true);
        let c = k.route(Some("room:1"));
        assert_eq!((c.clock.as_str(), c.epoch.as_str()), ("ws:clock:{room:1}", "ws:epoch:{room:1}"));
        assert!(c.sharded);
        assert_eq!(k.broadcast().epoch, "ws:epoch:{ws:stream:all}");
    }
}
