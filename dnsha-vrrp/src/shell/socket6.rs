//! The raw IPv6 sockets of an IPv6 instance: protocol 112 for adverts, and
//! ICMPv6 for the unsolicited neighbour advertisements that announce its
//! addresses (the IPv6 counterpart of gratuitous ARP, RFC 4861 section
//! 7.2.6).
//!
//! An IPv6 raw socket hands over the payload only, so the source comes
//! from `recvmsg`'s address, and the destination and hop limit from
//! `IPV6_PKTINFO` and `IPV6_HOPLIMIT` control messages (both needed: the
//! VRRPv3 checksum covers the destination, and an advert must arrive with
//! hop limit 255). Adverts leave with hop limit 255 from the interface's
//! link-local address, set per packet with `IPV6_PKTINFO` so that the
//! checksum we computed covers the source the packet really has.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrIn6,
};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::warn;

use crate::codec::v3::VRRP_GROUP_V6;
use crate::codec::{IPPROTO_VRRP, VRRP_TTL};
use crate::error::{Error, Result};

/// IPv6 link-local all-nodes: where unsolicited neighbour advertisements go.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// One received advert.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Received {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) hop_limit: u8,
    pub(crate) len: usize,
}

fn raw(interface: &str, index: u32, protocol: Protocol) -> Result<UdpSocket> {
    let ctx = |what: &str| format!("IPv6 socket on {interface}: {what}");
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(protocol))
        .map_err(|e| Error::io(ctx("socket"), e))?;
    s.bind_device(Some(interface.as_bytes()))
        .map_err(|e| Error::io(ctx("SO_BINDTODEVICE"), e))?;
    s.set_unicast_hops_v6(u32::from(VRRP_TTL))
        .map_err(|e| Error::io(ctx("IPV6_UNICAST_HOPS"), e))?;
    s.set_multicast_hops_v6(u32::from(VRRP_TTL))
        .map_err(|e| Error::io(ctx("IPV6_MULTICAST_HOPS"), e))?;
    s.set_multicast_if_v6(index)
        .map_err(|e| Error::io(ctx("IPV6_MULTICAST_IF"), e))?;
    s.set_multicast_loop_v6(false)
        .map_err(|e| Error::io(ctx("IPV6_MULTICAST_LOOP"), e))?;
    s.set_nonblocking(true)
        .map_err(|e| Error::io(ctx("O_NONBLOCK"), e))?;
    let std_sock = std::net::UdpSocket::from(std::os::fd::OwnedFd::from(s));
    UdpSocket::from_std(std_sock).map_err(|e| Error::io(ctx("register with tokio"), e))
}

/// Sends `payload` to `dst` from `src` on interface `index`.
fn send_from(
    sock: &UdpSocket,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    index: u32,
    payload: &[u8],
) -> io::Result<()> {
    let info = nix::libc::in6_pktinfo {
        ipi6_addr: nix::libc::in6_addr {
            s6_addr: src.octets(),
        },
        ipi6_ifindex: index,
    };
    let to = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, index));
    sock.try_io(Interest::WRITABLE, || {
        sendmsg(
            sock.as_raw_fd(),
            &[IoSlice::new(payload)],
            &[ControlMessage::Ipv6PacketInfo(&info)],
            MsgFlags::empty(),
            Some(&to),
        )
        .map(|_| ())
        .map_err(io::Error::from)
    })
}

/// The VRRP socket of an IPv6 instance (ff02::12, multicast only).
#[derive(Debug)]
pub(crate) struct VrrpSocket6 {
    sock: UdpSocket,
    src: Ipv6Addr,
    index: u32,
}

impl VrrpSocket6 {
    pub(crate) fn open(interface: &str, index: u32, src: Ipv6Addr) -> Result<Self> {
        let sock = raw(interface, index, Protocol::from(i32::from(IPPROTO_VRRP)))?;
        let ctx = |what: &str| format!("IPv6 VRRP socket on {interface}: {what}");
        setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)
            .map_err(|e| Error::io(ctx("IPV6_RECVPKTINFO"), e.into()))?;
        setsockopt(&sock, sockopt::Ipv6RecvHopLimit, &true)
            .map_err(|e| Error::io(ctx("IPV6_RECVHOPLIMIT"), e.into()))?;
        let s = socket2::SockRef::from(&sock);
        s.join_multicast_v6(&VRRP_GROUP_V6, index)
            .map_err(|e| Error::io(ctx("IPV6_ADD_MEMBERSHIP ff02::12"), e))?;
        Ok(Self { sock, src, index })
    }

    /// Receives one advert with its addresses and hop limit.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.sock
            .async_io(Interest::READABLE, || {
                let mut iov = [IoSliceMut::new(buf)];
                let mut cmsg = nix::cmsg_space!(nix::libc::in6_pktinfo, nix::libc::c_int);
                let msg = recvmsg::<SockaddrIn6>(
                    self.sock.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                )
                .map_err(io::Error::from)?;
                let (mut dst, mut hop_limit) = (None, 0u8);
                for c in msg.cmsgs().map_err(io::Error::from)? {
                    match c {
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            dst = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                        }
                        ControlMessageOwned::Ipv6HopLimit(h) => {
                            hop_limit = u8::try_from(h).unwrap_or(0);
                        }
                        _ => {}
                    }
                }
                let src = msg.address.map(|a| a.ip()).unwrap_or(Ipv6Addr::UNSPECIFIED);
                Ok(Received {
                    src: src.into(),
                    dst: dst.unwrap_or(VRRP_GROUP_V6).into(),
                    hop_limit,
                    len: msg.bytes,
                })
            })
            .await
    }

    /// Sends one advert to ff02::12 from our link-local address.
    pub(crate) fn send(&self, adv: &crate::router::Outgoing) {
        let payload = adv.encode(self.src.into(), VRRP_GROUP_V6.into());
        if let Err(e) = send_from(&self.sock, self.src, VRRP_GROUP_V6, self.index, &payload) {
            warn!(error = %e, "sending VRRP advert failed");
        }
    }
}

/// Unsolicited neighbour advertisements (override flag, target link-layer
/// address option), sent from the address they announce to all nodes.
#[derive(Debug)]
pub(crate) struct NeighborAdvert {
    sock: UdpSocket,
    mac: [u8; 6],
    index: u32,
}

impl NeighborAdvert {
    pub(crate) fn open(interface: &str, index: u32, mac: [u8; 6]) -> Result<Self> {
        let sock = raw(interface, index, Protocol::ICMPV6)?;
        Ok(Self { sock, mac, index })
    }

    /// Sends `count` advertisements for `target`.
    pub(crate) fn send(&self, target: Ipv6Addr, count: u32) {
        let body = neighbor_advert(target, self.mac);
        for _ in 0..count {
            if let Err(e) = send_from(&self.sock, target, ALL_NODES, self.index, &body) {
                warn!(%target, error = %e, "sending neighbour advertisement failed");
                return;
            }
        }
    }
}

/// The ICMPv6 body of an unsolicited neighbour advertisement for `target`
/// (RFC 4861 section 4.4): type 136, override flag, the target, and the
/// target link-layer address option; the checksum is left to the kernel,
/// which fills it in for ICMPv6 raw sockets.
pub(crate) fn neighbor_advert(target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut out = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    out.extend_from_slice(&target.octets());
    out.extend_from_slice(&[2, 1]);
    out.extend_from_slice(&mac);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_advertisement_is_keepalived_s_but_for_the_kernel_s_checksum() {
        // keepalived 2.2.7's, for fe80::5 from 6a:3a:94:56:b9:a4
        // (tests/data/keepalived-v3-centisecond-v4-v6.pcap).
        let keepalived: [u8; 32] = [
            0x88, 0x00, 0xa1, 0x5e, 0x20, 0, 0, 0, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0x05, 0x02, 0x01, 0x6a, 0x3a, 0x94, 0x56, 0xb9, 0xa4,
        ];
        let ours = neighbor_advert(
            "fe80::5".parse().unwrap(),
            [0x6a, 0x3a, 0x94, 0x56, 0xb9, 0xa4],
        );
        assert_eq!(ours[..2], keepalived[..2]);
        assert_eq!(ours[4..], keepalived[4..]);
    }
}
