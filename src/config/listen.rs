//! The listeners' settings: addresses, allowed origins, trusted proxies, the demo page.

use std::net::SocketAddr;

use super::{bad, ClientIpHeader, ConfigError};

#[derive(Clone, Debug)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    /// `ADMIN_LISTEN_ADDR`: operators' endpoints on their own listener.
    pub admin_addr: Option<SocketAddr>,
    /// `None` = any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Whom to believe about the client's address.
    pub client_ip: ClientIpConfig,
    pub demo_page: bool,
}

/// `TRUSTED_PROXIES` and `CLIENT_IP_HEADER`.
#[derive(Clone, Debug)]
pub struct ClientIpConfig {
    /// Empty: the socket's peer is the client.
    pub trusted: Vec<IpNet>,
    pub header: ClientIpHeader,
}

/// An IP network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl IpNet {
    /// `10.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p.trim().parse::<u8>().ok().filter(|&p| p <= max)?,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4-mapped IPv6 peer (::ffff:a.b.c.d) counts as its IPv4 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (std::net::IpAddr::V4(n), std::net::IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (std::net::IpAddr::V6(n), std::net::IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

pub(super) fn allowed_origins(list: Option<&str>) -> Result<Option<Vec<String>>, ConfigError> {
    match list.map(str::trim) {
        None | Some("") | Some("*") => Ok(None),
        Some(list) => {
            let v: Vec<String> = list.split(',').map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase()).collect();
            if let Some(o) = v.iter().find(|o| !(o.starts_with("http://") || o.starts_with("https://"))) {
                return Err(bad("ALLOWED_ORIGINS", format!("{o:?} is not an origin like https://app.example.com")));
            }
            Ok(Some(v))
        }
    }
}

pub(super) fn trusted_proxies(list: Option<&str>) -> Result<Vec<IpNet>, ConfigError> {
    match list.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Vec::new()),
        Some(list) => list
            .split(',')
            .map(|p| {
                IpNet::parse(p).ok_or_else(|| {
                    bad("TRUSTED_PROXIES", format!("{:?} is not an IP address or CIDR like 10.0.0.0/8", p.trim()))
                })
            })
            .collect(),
    }
}
