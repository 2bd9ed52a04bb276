//! Interface facts (getifaddrs) and address changes (rtnetlink).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::stream::TryStreamExt;
use nix::errno::Errno;
use nix::sys::socket::{LinkAddr, SockaddrLike};
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::LinkFlags;
use rtnetlink::packet_route::route::{RouteMessage, RouteScope, RouteType};
use rtnetlink::{AddressMessageBuilder, Handle, RouteMessageBuilder};
use tracing::debug;

use crate::error::{Error, Result};
use crate::router::Vip;

/// What the shell needs to know about an interface.
#[derive(Clone, Debug)]
pub(crate) struct InterfaceInfo {
    pub(crate) name: String,
    pub(crate) index: u32,
    /// First IPv4 address (the primary one).
    pub(crate) primary_ip: Option<Ipv4Addr>,
    /// The IPv6 link-local address (IPv6 adverts come from it).
    pub(crate) link_local: Option<Ipv6Addr>,
    /// Hardware address and index as an AF_PACKET address.
    pub(crate) link: Option<LinkAddr>,
}

impl InterfaceInfo {
    /// Looks `name` up in the current network namespace.
    pub(crate) fn lookup(name: &str) -> Result<Self> {
        let index = nix::net::if_::if_nametoindex(name).map_err(|e| Error::Interface {
            interface: name.to_owned(),
            reason: format!("no such interface ({e})"),
        })?;
        let mut primary_ip = None;
        let mut link_local = None;
        let mut link = None;
        let addrs = nix::ifaddrs::getifaddrs()
            .map_err(|e| Error::io("getifaddrs", std::io::Error::from(e)))?;
        for ifa in addrs.filter(|a| a.interface_name == name) {
            let Some(addr) = ifa.address else { continue };
            if let Some(sin) = addr.as_sockaddr_in() {
                if primary_ip.is_none() {
                    primary_ip = Some(sin.ip());
                }
            } else if let Some(sin6) = addr.as_sockaddr_in6() {
                let ip = sin6.ip();
                if link_local.is_none() && ip.segments()[0] & 0xffc0 == 0xfe80 {
                    link_local = Some(ip);
                }
            } else if let Some(ll) = addr.as_link_addr() {
                if ll.family().is_some() {
                    link = Some(*ll);
                }
            }
        }
        Ok(Self {
            name: name.to_owned(),
            index,
            primary_ip,
            link_local,
            link,
        })
    }
}

/// The kernel's local routing table.
const LOCAL_TABLE: u32 = 255;

/// The metric of the local routes [`Netlink::add_local_route`] adds: not
/// the kernel's own (0), so removing one never removes the other.
pub(crate) const LOCAL_METRIC: u32 = 1024;

/// An rtnetlink connection running on the current tokio runtime.
#[derive(Clone, Debug)]
pub(crate) struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub(crate) fn new() -> Result<Self> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::io("rtnetlink socket", e))?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Adds `vip` to interface `index`; already present is fine. An IPv6
    /// address is added without duplicate address detection (usable at
    /// once, as keepalived adds its IPv6 VIPs: the VRRP election already
    /// decided who holds it).
    pub(crate) async fn add_vip(&self, index: u32, vip: Vip) -> Result<()> {
        let mut req = self.handle.address().add(index, vip.addr, vip.prefix_len);
        if vip.addr.is_ipv6() {
            req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        }
        let res = req.execute().await;
        match res {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(Errno::EEXIST) => {
                debug!(%vip, "VIP already present");
                Ok(())
            }
            Err(e) => Err(Error::Netlink {
                operation: "add",
                address: vip.addr,
                reason: e.to_string(),
            }),
        }
    }

    /// Removes `vip` from interface `index`; already absent is fine.
    pub(crate) async fn del_vip(&self, index: u32, vip: Vip) -> Result<()> {
        let msg = match vip.addr {
            IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(index)
                .address(a, vip.prefix_len)
                .build(),
            IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(index)
                .address(a, vip.prefix_len)
                .build(),
        };
        match self.handle.address().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(Errno::EADDRNOTAVAIL | Errno::ENODEV)) => Ok(()),
            Err(e) => Err(Error::Netlink {
                operation: "del",
                address: vip.addr,
                reason: e.to_string(),
            }),
        }
    }

    /// A route of type `local` for `addr`/`prefix_len` on interface
    /// `index`, in the local table at metric [`LOCAL_METRIC`]: the kernel
    /// delivers packets for `addr` to local sockets even without the
    /// address (which also has one there, at metric 0, while it is held).
    fn local_route(index: u32, addr: IpAddr, prefix_len: u8) -> RouteMessage {
        match addr {
            IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(a, prefix_len)
                .output_interface(index)
                .table_id(LOCAL_TABLE)
                .kind(RouteType::Local)
                .scope(RouteScope::Host)
                .priority(LOCAL_METRIC)
                .build(),
            IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
                .destination_prefix(a, prefix_len)
                .output_interface(index)
                .table_id(LOCAL_TABLE)
                .kind(RouteType::Local)
                .scope(RouteScope::Host)
                .priority(LOCAL_METRIC)
                .build(),
        }
    }

    /// Adds the [`Self::local_route`] of `addr` (present already is fine).
    pub(crate) async fn add_local_route(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        let msg = Self::local_route(index, addr, prefix_len);
        match self.handle.route().add(msg).replace().execute().await {
            Ok(()) => Ok(()),
            Err(e) => Err(Error::Netlink {
                operation: "add local route",
                address: addr,
                reason: e.to_string(),
            }),
        }
    }

    /// Removes the [`Self::local_route`] of `addr` (absent is fine).
    pub(crate) async fn del_local_route(
        &self,
        index: u32,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<()> {
        let msg = Self::local_route(index, addr, prefix_len);
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    errno(&e),
                    Some(Errno::ESRCH | Errno::ENOENT | Errno::ENODEV)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Error::Netlink {
                operation: "del local route",
                address: addr,
                reason: e.to_string(),
            }),
        }
    }

    /// Whether the link is up and has carrier; a missing link is down.
    pub(crate) async fn link_running(&self, name: &str) -> bool {
        let req = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        futures_util::pin_mut!(req);
        match req.try_next().await {
            Ok(Some(msg)) => {
                let f = msg.header.flags;
                f.contains(LinkFlags::Up) && f.contains(LinkFlags::LowerUp)
            }
            Ok(None) | Err(_) => false,
        }
    }
}

fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io().raw_os_error().map(Errno::from_raw),
        _ => None,
    }
}
