//! Per-listener access control by client network.

use std::net::IpAddr;

use ipnet::IpNet;

/// The networks a listener accepts queries from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    nets: Vec<IpNet>,
}

impl Acl {
    /// An ACL allowing exactly `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets }
    }

    /// Whether `ip` may query. IPv4-mapped IPv6 addresses are checked as IPv4.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnsha_core::config::default_allow;

    #[test]
    fn default_allows_private_and_refuses_public() {
        let acl = Acl::new(default_allow());
        for ok in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.0.1",
            "192.168.3.1",
            "100.64.0.9",
            "::1",
            "fd00::1",
            "::ffff:192.168.1.1",
        ] {
            assert!(acl.allows(ok.parse().unwrap()), "{ok}");
        }
        for no in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!acl.allows(no.parse().unwrap()), "{no}");
        }
    }
}
