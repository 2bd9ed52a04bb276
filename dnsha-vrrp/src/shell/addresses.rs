//! Addresses on an interface, for callers besides the VRRP instances (the
//! daemon's `[[anycast]]` sections): the same rtnetlink requests the
//! instances use for their VIPs.

use std::net::IpAddr;

use crate::error::{Error, Result};
use crate::router::Vip;

use super::netlink::{InterfaceInfo, Netlink};

/// Adds and removes host addresses on interfaces of the current network
/// namespace. Needs a tokio runtime (its rtnetlink connection runs there).
#[derive(Clone, Debug)]
pub struct Addresses {
    netlink: Netlink,
}

impl Addresses {
    /// An rtnetlink connection on the current runtime.
    pub fn new() -> Result<Self> {
        Ok(Self {
            netlink: Netlink::new()?,
        })
    }

    /// The index of interface `name`.
    pub fn index(name: &str) -> Result<u32> {
        InterfaceInfo::lookup(name).map(|i| i.index)
    }

    /// Adds `addr`/`prefix_len` to interface `index` (present already is
    /// fine; IPv6 without duplicate address detection).
    pub async fn add(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        self.netlink.add_vip(index, Vip { addr, prefix_len }).await
    }

    /// Removes `addr`/`prefix_len` from interface `index` (absent is fine).
    pub async fn del(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        self.netlink.del_vip(index, Vip { addr, prefix_len }).await
    }

    /// Keeps `addr` delivered to local sockets after its address goes
    /// (a route of type `local` in the local table): for a withdraw whose
    /// routers take a few milliseconds to stop sending, while the
    /// listeners drain. Present already is fine.
    pub async fn keep_local(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        self.netlink.add_local_route(index, addr, prefix_len).await
    }

    /// Removes what [`Self::keep_local`] added (absent is fine).
    pub async fn release_local(&self, index: u32, addr: IpAddr, prefix_len: u8) -> Result<()> {
        self.netlink.del_local_route(index, addr, prefix_len).await
    }

    /// Whether interface `name` holds `addr` now.
    pub fn holds(name: &str, addr: IpAddr) -> Result<bool> {
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(|e| Error::io("getifaddrs", std::io::Error::from(e)))?;
        Ok(addrs.filter(|a| a.interface_name == name).any(|a| {
            a.address.as_ref().is_some_and(|s| {
                s.as_sockaddr_in().map(|v| IpAddr::V4(v.ip())) == Some(addr)
                    || s.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip())) == Some(addr)
            })
        }))
    }
}
