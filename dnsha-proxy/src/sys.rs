//! Linux socket calls that socket2 and tokio do not cover: receiving the
//! destination address of a datagram (IP_PKTINFO / IPV6_RECVPKTINFO) and
//! sending from a chosen source address. Built on nix's safe wrappers, so no
//! `unsafe` is needed here.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
    SockaddrStorage,
};

/// Where a datagram was addressed to, as the kernel reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PktInfo {
    /// Destination address of the received datagram.
    pub dst: IpAddr,
    /// Interface it arrived on.
    pub ifindex: u32,
}

/// Asks the kernel to report each datagram's destination address.
pub fn enable_pktinfo(s: &impl AsFd, v6: bool) -> io::Result<()> {
    let r = if v6 {
        setsockopt(s, sockopt::Ipv6RecvPacketInfo, &true)
    } else {
        setsockopt(s, sockopt::Ipv4PacketInfo, &true)
    };
    r.map_err(io::Error::from)
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::from((v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
}

/// Receives one datagram (non-blocking) with its source and, when enabled,
/// its destination address.
pub fn recv_with_pktinfo(
    s: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<PktInfo>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = recvmsg::<SockaddrStorage>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let src = msg
        .address
        .as_ref()
        .and_then(to_std)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without source"))?;
    let mut info = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::Ipv4PacketInfo(p) => {
                    info = Some(PktInfo {
                        dst: IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))),
                        ifindex: u32::try_from(p.ipi_ifindex).unwrap_or(0),
                    });
                }
                ControlMessageOwned::Ipv6PacketInfo(p) => {
                    info = Some(PktInfo {
                        dst: IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)),
                        ifindex: p.ipi6_ifindex,
                    });
                }
                _ => {}
            }
        }
    }
    Ok((msg.bytes, src, info))
}

/// Sends one datagram (non-blocking) to `to`, leaving from `from` when given.
pub fn send_with_pktinfo(
    s: &impl AsRawFd,
    buf: &[u8],
    to: SocketAddr,
    from: Option<PktInfo>,
) -> io::Result<usize> {
    let iov = [IoSlice::new(buf)];
    let dest = SockaddrStorage::from(to);
    let flags = MsgFlags::MSG_DONTWAIT;
    let r = match from {
        Some(PktInfo {
            dst: IpAddr::V4(src),
            ifindex,
        }) if to.is_ipv4() => {
            let info = libc::in_pktinfo {
                ipi_ifindex: i32::try_from(ifindex).unwrap_or(0),
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            sendmsg(
                s.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv4PacketInfo(&info)],
                flags,
                Some(&dest),
            )
        }
        Some(PktInfo {
            dst: IpAddr::V6(src),
            ifindex,
        }) if to.is_ipv6() => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            sendmsg(
                s.as_raw_fd(),
                &iov,
                &[ControlMessage::Ipv6PacketInfo(&info)],
                flags,
                Some(&dest),
            )
        }
        _ => sendmsg(s.as_raw_fd(), &iov, &[], flags, Some(&dest)),
    };
    r.map_err(io::Error::from)
}
