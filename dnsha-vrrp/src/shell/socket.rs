//! The raw IPv4 socket for protocol 112.
//!
//! One socket per instance, bound to the interface (`SO_BINDTODEVICE`),
//! with `IP_HDRINCL` so that adverts leave with our chosen source address,
//! TOS 0xc0 and TTL 255 exactly as keepalived builds them. The kernel hands
//! a raw socket the whole IP datagram, so the received TTL and source are
//! read from the IP header itself (no `IP_RECVTTL` control message needed).
//!
//! The configured socket2 socket is handed to tokio as a
//! [`tokio::net::UdpSocket`]: tokio only issues `recvfrom`/`sendto` on it,
//! which a raw socket answers the same way (ports are 0), and the
//! conversion goes through an owned fd, so no `unsafe` registration is
//! needed.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tracing::warn;

use crate::codec::{build_ipv4, IPPROTO_VRRP, VRRP_GROUP, VRRP_TTL};
use crate::error::{Error, Result};

/// Largest datagram we read: IP header with options plus the longest advert.
pub(crate) const RECV_BUF: usize = 60 + crate::codec::MAX_LEN + 64;

/// Where adverts go.
#[derive(Clone, Debug)]
pub(crate) enum Destination {
    /// 224.0.0.18 on the interface.
    Multicast,
    /// Each of these peers.
    Unicast(Vec<Ipv4Addr>),
}

#[derive(Debug)]
pub(crate) struct VrrpSocket {
    sock: UdpSocket,
    src: Ipv4Addr,
    dst: Destination,
    next_id: u16,
}

impl VrrpSocket {
    pub(crate) fn open(
        interface: &str,
        index: u32,
        src: Ipv4Addr,
        dst: Destination,
    ) -> Result<Self> {
        let ctx = |what: &str| format!("VRRP socket on {interface}: {what}");
        let s = Socket::new(
            Domain::IPV4,
            Type::RAW,
            Some(Protocol::from(i32::from(IPPROTO_VRRP))),
        )
        .map_err(|e| Error::io(ctx("socket"), e))?;
        s.set_header_included_v4(true)
            .map_err(|e| Error::io(ctx("IP_HDRINCL"), e))?;
        s.bind_device(Some(interface.as_bytes()))
            .map_err(|e| Error::io(ctx("SO_BINDTODEVICE"), e))?;
        s.set_ttl(u32::from(VRRP_TTL))
            .map_err(|e| Error::io(ctx("IP_TTL"), e))?;
        s.set_multicast_ttl_v4(u32::from(VRRP_TTL))
            .map_err(|e| Error::io(ctx("IP_MULTICAST_TTL"), e))?;
        s.set_multicast_loop_v4(false)
            .map_err(|e| Error::io(ctx("IP_MULTICAST_LOOP"), e))?;
        if matches!(dst, Destination::Multicast) {
            s.set_multicast_if_v4(&src)
                .map_err(|e| Error::io(ctx("IP_MULTICAST_IF"), e))?;
            s.join_multicast_v4_n(&VRRP_GROUP, &InterfaceIndexOrAddress::Index(index))
                .map_err(|e| Error::io(ctx("IP_ADD_MEMBERSHIP 224.0.0.18"), e))?;
        }
        s.set_nonblocking(true)
            .map_err(|e| Error::io(ctx("O_NONBLOCK"), e))?;
        let std_sock = std::net::UdpSocket::from(std::os::fd::OwnedFd::from(s));
        let sock =
            UdpSocket::from_std(std_sock).map_err(|e| Error::io(ctx("register with tokio"), e))?;
        Ok(Self {
            sock,
            src,
            dst,
            next_id: 1,
        })
    }

    /// Receives one IP datagram.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf).await
    }

    /// Sends one advert to every destination, encoded for each (VRRPv3's
    /// checksum covers the addresses); failures are logged (a link that is
    /// down makes sending fail, which is expected).
    pub(crate) fn send(&mut self, adv: &crate::router::Outgoing) {
        let dsts = match &self.dst {
            Destination::Multicast => vec![VRRP_GROUP],
            Destination::Unicast(peers) => peers.clone(),
        };
        for dst in dsts {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1).max(1);
            let payload = adv.encode(self.src.into(), dst.into());
            let packet = build_ipv4(self.src, dst, VRRP_TTL, IPPROTO_VRRP, id, &payload);
            if let Err(e) = self
                .sock
                .try_send_to(&packet, SocketAddrV4::new(dst, 0).into())
            {
                warn!(%dst, error = %e, "sending VRRP advert failed");
            }
        }
    }
}
