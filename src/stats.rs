//! The JSON bodies of `/ws/stats` and `/health`. (`/metrics` is rendered by [`crate::metrics`].)

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::state::AppState;

/// `GET /ws/stats`: this instance's counts and the fleet's totals.
pub async fn ws_stats(st: &AppState) -> Value {
    let fleet = st.fleet.fleet_stats().await;
    let status = st.broker.status();
    let mut v = json!({
        "instance_id": st.hub.instance_id(),
        "local_connections": st.hub.connection_count(),
        "local_users": st.hub.user_count(),
        "local_channels": st.hub.channel_count(),
        "redis_enabled": status.redis_enabled,
        "total_instances": fleet.total_instances,
        "total_connections": fleet.total_connections,
        "mode": status.mode,
        "redis_state": status.redis_state,
    });
    if let Some(users) = fleet.total_users {
        v["total_users"] = users.into();
    }
    v
}

/// `GET /health`: mode, broker state, version, uptime.
pub fn health(st: &AppState) -> Value {
    let status = st.broker.status();
    let draining = st.draining.load(Ordering::Acquire);
    json!({
        "status": if draining { "draining" } else { "ok" },
        "mode": status.mode,
        "redis": {
            "enabled": status.redis_enabled,
            "state": status.redis_state,
            "local_only": status.local_only,
        },
        "ready": status.ready && !draining,
        "instance_id": st.hub.instance_id(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": st.started.elapsed().as_secs(),
        "connections": st.hub.connection_count(),
    })
}
