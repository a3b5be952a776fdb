//! The state of the link to Redis, as one enum that the relay task owns and everyone else
//! reads through a `watch`.

use std::time::Instant;

use tokio::sync::watch;

/// Where this instance stands with Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Just started, within the start-up wait: not subscribed yet. `/ready` is 503; sessions
    /// and publishes wait (bounded) for the next state.
    Starting,
    /// Subscribed, caught up with every stream followed: events cross instances.
    Live,
    /// Was live, lost Redis: events reach local clients only and are held for later.
    Down,
    /// Redis was not reachable within the start-up wait: serving local clients only (as
    /// `Down`), still trying.
    LocalOnly,
}

impl Link {
    /// The `/health` name of the state.
    pub fn name(self) -> &'static str {
        match self {
            Link::Starting | Link::LocalOnly => "connecting",
            Link::Live => "connected",
            Link::Down => "disconnected",
        }
    }
}

/// The relay's side of the link state: changes it and logs each transition once.
pub struct Supervisor {
    tx: watch::Sender<Link>,
    /// Until when a new instance waits for Redis before serving locally.
    startup_deadline: Instant,
}

impl Supervisor {
    pub fn new(startup_deadline: Instant) -> (Supervisor, watch::Receiver<Link>) {
        let (tx, rx) = watch::channel(Link::Starting);
        (Supervisor { tx, startup_deadline }, rx)
    }

    pub fn get(&self) -> Link {
        *self.tx.borrow()
    }

    pub fn startup_over(&self) -> bool {
        Instant::now() >= self.startup_deadline
    }

    /// Moves to `to`; returns the state it left.
    pub fn set(&self, to: Link, topic: &str) -> Link {
        let from = self.tx.send_replace(to);
        if from != to {
            match (from, to) {
                (Link::Starting | Link::LocalOnly, Link::Live) => {
                    tracing::info!(channel = topic, "Redis pub/sub initialized")
                }
                (_, Link::Live) => tracing::info!("Redis reconnected, cross-instance delivery resumed"),
                (_, Link::Down) => tracing::warn!("Redis connection lost, delivering locally"),
                (_, Link::LocalOnly) => tracing::warn!(
                    "Redis unreachable at start-up: serving local clients only, retrying in the background"
                ),
                (_, Link::Starting) => {}
            }
        }
        from
    }
}
