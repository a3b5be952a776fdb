//! Caps that keep one client (or one address) from taking the instance: connections per
//! instance, per user and per client IP, upgrades per second per IP, and (in the session)
//! messages per second per connection. Every refusal is counted by reason.
//!
//! The client IP is the socket's peer address, unless that peer is a trusted proxy
//! (`TRUSTED_PROXIES`): then it is the nearest untrusted address in `X-Forwarded-For`, or the
//! `for=` of `Forwarded`. Headers from anyone else are ignored, so a client cannot pick its
//! own address to dodge a per-IP limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use hyper::HeaderMap;

use crate::config::{ConnectionLimits, IpNet};

/// Why an upgrade was refused; the label of `wsgate_limit_refusals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// MAX_CONNECTIONS reached: 503.
    Full,
    /// MAX_CONNECTIONS_PER_USER: 429.
    PerUser,
    /// MAX_CONNECTIONS_PER_IP: 429.
    PerIp,
    /// UPGRADES_PER_SEC_PER_IP: 429 with Retry-After.
    UpgradeRate(Duration),
}

impl Refusal {
    /// Every label, including the session's `message_rate`.
    pub const LABELS: [&'static str; 5] = ["max_connections", "per_user", "per_ip", "upgrade_rate", "message_rate"];

    pub fn label(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::PerUser => "per_user",
            Refusal::PerIp => "per_ip",
            Refusal::UpgradeRate(_) => "upgrade_rate",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Refusal::Full => 503,
            _ => 429,
        }
    }

    pub fn message(self, l: &ConnectionLimits) -> String {
        match self {
            Refusal::Full => format!("this instance is full ({} connections); try another", l.max_connections),
            Refusal::PerUser => format!("too many connections for this user (at most {})", l.per_user),
            Refusal::PerIp => format!("too many connections from this address (at most {})", l.per_ip),
            Refusal::UpgradeRate(_) => {
                format!("too many connection attempts from this address (at most {}/s)", l.upgrades_per_sec_per_ip)
            }
        }
    }
}

type KeyedLimiter = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock>;

pub struct Limiter {
    limits: ConnectionLimits,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    per_user: Mutex<HashMap<String, usize>>,
    upgrades: Option<KeyedLimiter>,
}

/// An admitted connection's share of the limits, given back on drop.
pub struct Admission {
    limiter: Arc<Limiter>,
    ip: IpAddr,
    user: String,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
        release(&self.limiter.per_ip, &self.ip);
        release(&self.limiter.per_user, &self.user);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, usize>>, key: &K) {
    let mut m = lock(map);
    if let Some(n) = m.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            m.remove(key);
        }
    }
}

/// Takes one from `map[key]` unless it is at `max` (0 = no limit).
fn take<K: std::hash::Hash + Eq + Clone>(map: &Mutex<HashMap<K, usize>>, key: &K, max: usize) -> bool {
    let mut m = lock(map);
    let n = m.entry(key.clone()).or_insert(0);
    if max > 0 && *n >= max {
        if *n == 0 {
            m.remove(key);
        }
        return false;
    }
    *n += 1;
    true
}

impl Limiter {
    pub fn new(limits: ConnectionLimits) -> Arc<Limiter> {
        let upgrades = NonZeroU32::new(limits.upgrades_per_sec_per_ip).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 > 0"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Arc::new(Limiter {
            limits,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            per_user: Mutex::new(HashMap::new()),
            upgrades,
        })
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Counts an upgrade attempt from `ip` (before the token is checked: cheap refusals first).
    pub fn check_upgrade_rate(&self, ip: IpAddr) -> Result<(), Refusal> {
        let Some(l) = &self.upgrades else { return Ok(()) };
        l.check_key(&ip)
            .map_err(|not_until| Refusal::UpgradeRate(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Admits a connection of `user` from `ip`, or says which cap it hits. Checked and counted
    /// in one step, so concurrent upgrades cannot overshoot a cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, user: &str) -> Result<Admission, Refusal> {
        let max = self.limits.max_connections;
        let admitted =
            self.total.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1));
        if admitted.is_err() {
            return Err(Refusal::Full);
        }
        if !take(&self.per_user, &user.to_string(), self.limits.per_user) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerUser);
        }
        if !take(&self.per_ip, &ip, self.limits.per_ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            release(&self.per_user, &user.to_string());
            return Err(Refusal::PerIp);
        }
        Ok(Admission { limiter: self.clone(), ip, user: user.to_string() })
    }

    /// Forgets rate-limiter state of addresses not seen for a while (the janitor calls this).
    pub fn tidy(&self) {
        if let Some(l) = &self.upgrades {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The client's address: `peer`, or, when `peer` is a trusted proxy, what the proxy says.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    // X-Forwarded-For: client, proxy1, proxy2 (each proxy appends the address it saw). Walk
    // from the right past our own proxies; the first address they did not add is the client.
    let xff: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| parse_ip(s.trim()))
        .collect();
    if let Some(ip) = xff.iter().rev().find(|ip| !is_trusted(**ip)) {
        return *ip;
    }
    // Forwarded: for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"
    let fwd: Vec<IpAddr> = headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|el| {
            el.split(';').find_map(|kv| {
                let (k, v) = kv.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| parse_ip(v.trim().trim_matches('"')))?
            })
        })
        .collect();
    if let Some(ip) = fwd.iter().rev().find(|ip| !is_trusted(**ip)) {
        return *ip;
    }
    xff.first().or(fwd.first()).copied().unwrap_or(peer)
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.rsplit_once(':').and_then(|(h, _)| h.parse::<std::net::Ipv4Addr>().ok()).map(IpAddr::V4)
}

/// A connection's inbound message budget: `rate` per second, bursts of twice that.
pub struct MessageBudget {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl MessageBudget {
    /// `None` when there is no limit.
    pub fn new(per_sec: u32) -> Option<MessageBudget> {
        (per_sec > 0).then(|| MessageBudget { rate: per_sec as f64, tokens: 2.0 * per_sec as f64, at: Instant::now() })
    }

    /// Spends one message; false when the budget is exhausted.
    pub fn spend(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(2.0 * self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let trusted = vec![IpNet::parse("10.0.0.0/8").unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.9")]);
        assert_eq!(client_ip(proxy, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        // From an untrusted peer the header is ignored.
        let stranger: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(client_ip(stranger, &h, &trusted), stranger);
        // A client-supplied prefix does not help: the nearest untrusted address wins.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(client_ip(proxy, &h, &trusted), "203.0.113.7".parse::<IpAddr>().unwrap());
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client_ip(proxy, &h, &trusted), "2001:db8::1".parse::<IpAddr>().unwrap());
        let h = headers(&[("forwarded", "for=192.0.2.60:80")]);
        assert_eq!(client_ip(proxy, &h, &trusted), "192.0.2.60".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn caps_are_taken_and_given_back() {
        let l = Limiter::new(ConnectionLimits { max_connections: 3, per_user: 2, per_ip: 2, ..Default::default() });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let x1 = l.admit(a, "u").unwrap();
        let _x2 = l.admit(a, "v").unwrap();
        assert_eq!(l.admit(a, "w").err(), Some(Refusal::PerIp));
        let _x3 = l.admit(b, "u").unwrap();
        assert_eq!(l.admit(b, "u").err(), Some(Refusal::Full));
        assert_eq!(l.admit(b, "z").err(), Some(Refusal::Full));
        drop(x1);
        // x1's slot, user share and address share are back.
        let _x4 = l.admit(b, "u").unwrap();
        assert_eq!(l.admit(b, "q").err(), Some(Refusal::Full));
        let m = Limiter::new(ConnectionLimits { per_user: 1, ..Default::default() });
        let _y = m.admit(a, "u").unwrap();
        assert_eq!(m.admit(b, "u").err(), Some(Refusal::PerUser));
        assert!(m.admit(b, "v").is_ok());
    }

    #[test]
    fn message_budget_allows_bursts_then_refills() {
        let mut b = MessageBudget::new(10).unwrap();
        assert!((0..20).all(|_| b.spend()));
        assert!(!b.spend());
        std::thread::sleep(Duration::from_millis(150));
        assert!(b.spend());
        assert!(MessageBudget::new(0).is_none());
    }
}
