//! Sets of client networks (CIDR), matched against a client address.
//!
//! The networks are merged into sorted, disjoint address ranges, one list
//! for IPv4 and one for IPv6; a lookup is a binary search (ten steps for a
//! thousand networks, no allocation). An IPv4-mapped IPv6 client
//! (`::ffff:192.0.2.1`, from a dual-stack socket) is looked up as IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::Error;

/// A set of networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetSet {
    /// The set of `nets` (CIDR text: `10.0.0.0/8`, `2001:db8::/32`, or an
    /// address alone for one host). A network with host bits set
    /// (`10.1.2.3/8`) is refused: it is most likely a typing error.
    pub fn parse<'a>(nets: impl IntoIterator<Item = &'a str>) -> Result<Self, Error> {
        let mut parsed = Vec::new();
        for text in nets {
            parsed.push(parse_net(text)?);
        }
        Ok(Self::new(parsed))
    }

    /// The set of `nets`.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merged(v4, |a: u32| a.checked_add(1)),
            v6: merged(v6, |a: u128| a.checked_add(1)),
        }
    }

    /// Whether the set has no network.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether every address, IPv4 and IPv6, is in the set.
    pub fn is_everything(&self) -> bool {
        self.v4 == [(0, u32::MAX)] && self.v6 == [(0, u128::MAX)]
    }

    /// Whether `ip` is in one of the networks.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(a) => within(&self.v4, u32::from(a)),
                None => within(&self.v6, u128::from(a)),
            },
        }
    }
}

/// One network in CIDR text, or a single address.
pub fn parse_net(text: &str) -> Result<IpNet, Error> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = text.parse().map_err(|source| Error::BadNetwork {
        text: text.to_string(),
        source,
    })?;
    if net.trunc() != net {
        return Err(Error::HostBitsSet {
            text: text.to_string(),
            network: net.trunc().to_string(),
        });
    }
    Ok(net)
}

/// Sorted, disjoint ranges covering the same addresses as `ranges`;
/// `next` is the address after one (none after the last).
fn merged<T: Copy + Ord>(mut ranges: Vec<(T, T)>, next: impl Fn(T) -> Option<T>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if last.1 >= start || next(last.1) == Some(start) => {
                last.1 = last.1.max(end);
            }
            _ => out.push((start, end)),
        }
    }
    out
}

fn within<T: Copy + Ord>(ranges: &[(T, T)], a: T) -> bool {
    // The last range starting at or before `a`.
    let i = ranges.partition_point(|&(start, _)| start <= a);
    i.checked_sub(1)
        .and_then(|i| ranges.get(i))
        .is_some_and(|&(_, end)| a <= end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_in_and_out_of_the_networks() {
        let s = NetSet::parse(["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]).unwrap();
        assert!(s.contains(ip("10.0.0.0")));
        assert!(s.contains(ip("10.255.255.255")));
        assert!(!s.contains(ip("11.0.0.0")));
        assert!(!s.contains(ip("9.255.255.255")));
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(s.contains(ip("2001:db8:ffff::1")));
        assert!(!s.contains(ip("2001:db9::1")));
        // Dual-stack sockets report IPv4 clients as mapped addresses.
        assert!(s.contains(ip("::ffff:10.1.2.3")));
        assert!(!s.contains(ip("::ffff:11.1.2.3")));
    }

    #[test]
    fn overlapping_and_adjacent_networks_merge() {
        let s = NetSet::parse(["10.0.0.0/9", "10.128.0.0/9", "10.0.0.0/16", "0.0.0.0/0"]).unwrap();
        assert_eq!(s.v4, [(0, u32::MAX)]);
        let s = NetSet::parse(["10.0.0.0/9", "10.128.0.0/9"]).unwrap();
        assert_eq!(s.v4.len(), 1);
        assert!(s.contains(ip("10.200.0.1")));
        let all6 = NetSet::parse(["::/0"]).unwrap();
        assert!(all6.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!all6.contains(ip("1.2.3.4")));
    }

    #[test]
    fn bad_networks_are_refused_with_their_text() {
        for bad in ["10.0.0.0/33", "10.0.0/8", "banana", "2001:db8::/129", ""] {
            let e = NetSet::parse([bad]).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        let e = NetSet::parse(["10.1.2.3/8"]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
    }

    #[test]
    fn a_thousand_networks_match_like_a_linear_scan() {
        let nets: Vec<IpNet> = (0..1000u32)
            .map(|i| {
                let a = std::net::Ipv4Addr::from(i.wrapping_mul(2_654_435_761) & 0xffff_ff00);
                IpNet::new(IpAddr::V4(a), 20 + (i % 9) as u8)
                    .unwrap()
                    .trunc()
            })
            .collect();
        let s = NetSet::new(nets.clone());
        for i in 0..20_000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(i.wrapping_mul(2_246_822_519)));
            assert_eq!(s.contains(a), nets.iter().any(|n| n.contains(&a)), "{a}");
        }
    }
}
