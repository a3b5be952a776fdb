//! Caps that keep one client (or one address) from taking the instance: connections per
//! instance, per user and per client IP, upgrades per second per IP, and (in the session)
//! messages per second per connection. Every refusal is counted by reason.
//!
//! The client IP is the socket's peer address, unless that peer is a trusted proxy
//! (`TRUSTED_PROXIES`): then it is the nearest untrusted address in the one header the proxies
//! write (`CLIENT_IP_HEADER`). Headers from anyone else, and other headers, are ignored, so a
//! client cannot pick its own address to dodge a per-IP limit or charge it to someone else.
//! Per-IP limits count an IPv6 client by its /64.

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

use crate::config::{ClientIpConfig, ClientIpHeader, ConnectionLimits};

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
        l.check_key(&limit_key(ip))
            .map_err(|not_until| Refusal::UpgradeRate(not_until.wait_time_from(DefaultClock::default().now())))
    }

    /// Admits a connection of `user` from `ip`, or says which cap it hits. Checked and counted
    /// in one step, so concurrent upgrades cannot overshoot a cap.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, user: &str) -> Result<Admission, Refusal> {
        let ip = limit_key(ip);
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

/// The client's address: `peer`, or, when `peer` is a trusted proxy, what the proxies say in
/// the one header they write (`CLIENT_IP_HEADER`).
///
/// Each proxy appends the address it saw, so the chain is read from the right: past our own
/// proxies (trusted addresses), the first address they did not add is the client. A hop that
/// cannot be parsed (`for=unknown`, an obfuscated name, garbage) ends the walk: nothing left of
/// it can be believed, so the client is the proxy that wrote it, the last trusted hop seen.
/// Another header the client may have sent (its own `X-Forwarded-For` when the proxies write
/// `Forwarded`) is never read.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, cfg: &ClientIpConfig) -> IpAddr {
    let is_trusted = |ip: IpAddr| cfg.trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    };
    // The hops, nearest last; `None` for one that cannot be parsed.
    let hops: Vec<Option<IpAddr>> = match cfg.header {
        ClientIpHeader::XForwardedFor => values("x-forwarded-for")
            .iter()
            .flat_map(|v| v.split(',').map(|s| parse_ip(s.trim())).collect::<Vec<_>>())
            .collect(),
        ClientIpHeader::Forwarded => {
            values("forwarded").iter().flat_map(|v| v.split(',').map(forwarded_for).collect::<Vec<_>>()).collect()
        }
        // One address, written (not appended) by the proxy in front of us.
        ClientIpHeader::XRealIp => values("x-real-ip").last().map(|v| parse_ip(v.trim())).into_iter().collect(),
    };
    let mut client = peer;
    for hop in hops.into_iter().rev() {
        match hop {
            Some(ip) if is_trusted(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// The `for=` of one `Forwarded` element: `for=192.0.2.60;proto=http`,
/// `for="[2001:db8::1]:4711"`; `None` when it has none or it is not an address.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| parse_ip(v.trim().trim_matches('"')))?
    })
}

/// The address per-IP limits count: an IPv4 address itself, an IPv6 address's /64 (one
/// subscriber's network: a client owns the whole /64 and could take a fresh address for
/// every connection).
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
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

    fn cfg(header: ClientIpHeader) -> ClientIpConfig {
        ClientIpConfig { trusted: vec![crate::config::IpNet::parse("10.0.0.0/8").unwrap()], header }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxy = ip("10.0.0.5");
        let xff = cfg(ClientIpHeader::XForwardedFor);
        let h = headers(&[("x-forwarded-for", "203.0.113.7, 10.0.0.9")]);
        assert_eq!(client_ip(proxy, &h, &xff), ip("203.0.113.7"));
        // From an untrusted peer the header is ignored.
        let stranger = ip("198.51.100.1");
        assert_eq!(client_ip(stranger, &h, &xff), stranger);
        // A client-supplied prefix does not help: the nearest untrusted address wins.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(client_ip(proxy, &h, &xff), ip("203.0.113.7"));
        let fwd = cfg(ClientIpHeader::Forwarded);
        let h = headers(&[("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")]);
        assert_eq!(client_ip(proxy, &h, &fwd), ip("2001:db8::1"));
        let h = headers(&[("forwarded", "for=192.0.2.60:80")]);
        assert_eq!(client_ip(proxy, &h, &fwd), ip("192.0.2.60"));
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &xff), proxy);
        let real = cfg(ClientIpHeader::XRealIp);
        assert_eq!(client_ip(proxy, &headers(&[("x-real-ip", "192.0.2.9")]), &real), ip("192.0.2.9"));
    }

    #[test]
    fn only_the_configured_header_is_read_and_an_unparseable_hop_ends_the_walk() {
        let proxy = ip("10.0.0.5");
        // The audit's case: the proxy writes Forwarded; the client's own X-Forwarded-For (read
        // first before) named any address it liked.
        let h = headers(&[("x-forwarded-for", "192.0.2.66"), ("forwarded", "for=198.51.100.7")]);
        assert_eq!(client_ip(proxy, &h, &cfg(ClientIpHeader::Forwarded)), ip("198.51.100.7"));
        // for=unknown: nothing left of it can be believed; the client is the proxy that wrote it.
        let h = headers(&[("x-forwarded-for", "192.0.2.66"), ("forwarded", "for=192.0.2.66, for=unknown")]);
        assert_eq!(client_ip(proxy, &h, &cfg(ClientIpHeader::Forwarded)), proxy);
        let h = headers(&[("x-forwarded-for", "192.0.2.66, garbage, 10.0.0.9")]);
        assert_eq!(client_ip(proxy, &h, &cfg(ClientIpHeader::XForwardedFor)), ip("10.0.0.9"));
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff:1:2:3")), ip("2001:db8:1:2::"));
        assert_ne!(limit_key(ip("2001:db8:1:3::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let l = Limiter::new(ConnectionLimits { per_ip: 1, ..Default::default() });
        let _a = l.admit(ip("2001:db8:1:2::1"), "u").unwrap();
        assert_eq!(l.admit(ip("2001:db8:1:2::2"), "v").err(), Some(Refusal::PerIp), "same /64");
        assert!(l.admit(ip("2001:db8:1:3::1"), "w").is_ok());
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
