//! Linux socket calls that socket2 and tokio do not cover: receiving the
//! destination address of a datagram (IP_PKTINFO / IPV6_RECVPKTINFO) and
//! sending from a chosen source address. Built on nix's safe wrappers, so no
//! `unsafe` is needed here.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{
    sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrStorage,
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

/// The destination address a control message reports, if it is one.
fn pktinfo_of(c: ControlMessageOwned) -> Option<PktInfo> {
    match c {
        ControlMessageOwned::Ipv4PacketInfo(p) => Some(PktInfo {
            dst: IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))),
            ifindex: u32::try_from(p.ipi_ifindex).unwrap_or(0),
        }),
        ControlMessageOwned::Ipv6PacketInfo(p) => Some(PktInfo {
            dst: IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)),
            ifindex: p.ipi6_ifindex,
        }),
        _ => None,
    }
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

/// Largest datagram one batch slot holds; a longer one arrives truncated
/// (flagged) and is dropped by the caller.
pub const BATCH_SLOT: usize = 4096;

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes received (at most [`BATCH_SLOT`]).
    pub len: usize,
    /// Source address.
    pub src: SocketAddr,
    /// Destination address, when IP_PKTINFO is enabled.
    pub info: Option<PktInfo>,
    /// The datagram was longer than the slot.
    pub truncated: bool,
}

/// Buffers and headers for receiving up to `n` datagrams in one `recvmmsg`.
///
/// The kernel headers (`mmsghdr`, addresses, control buffers) are built per
/// call: nix's `MultiHeaders` holds raw pointers and is not `Send`, and a
/// worker's future must be. That is three small allocations per batch, not
/// per datagram.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    received: Vec<Received>,
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.bufs.len())
            .finish()
    }
}

impl RecvBatch {
    /// Room for `n` datagrams of up to [`BATCH_SLOT`] bytes.
    pub fn new(n: usize) -> Self {
        Self {
            bufs: (0..n).map(|_| vec![0u8; BATCH_SLOT]).collect(),
            received: Vec::with_capacity(n),
        }
    }

    /// Receives what is queued on `s` (non-blocking), up to the batch size;
    /// returns how many datagrams arrived (WouldBlock when none).
    pub fn recv(&mut self, s: &impl AsRawFd) -> io::Result<usize> {
        self.received.clear();
        let cmsg = nix::cmsg_space!(libc::in6_pktinfo);
        let mut headers = nix::sys::socket::MultiHeaders::<SockaddrStorage>::preallocate(
            self.bufs.len(),
            Some(cmsg),
        );
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let results = nix::sys::socket::recvmmsg(
            s.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        for msg in results {
            let Some(src) = msg.address.as_ref().and_then(to_std) else {
                continue;
            };
            let info = msg
                .cmsgs()
                .ok()
                .and_then(|mut cmsgs| cmsgs.find_map(pktinfo_of));
            self.received.push(Received {
                len: msg.bytes.min(BATCH_SLOT),
                src,
                info,
                truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            });
        }
        Ok(self.received.len())
    }

    /// The datagrams of the last [`Self::recv`].
    pub fn received(&self) -> &[Received] {
        &self.received
    }

    /// Datagram `i` of the last receive.
    pub fn datagram(&self, i: usize) -> Option<&[u8]> {
        let r = *self.received.get(i)?;
        self.bufs.get(i).and_then(|b| b.get(..r.len))
    }

    /// Datagram `i` of the last receive, mutable (for an in-place ID rewrite).
    pub fn datagram_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let r = *self.received.get(i)?;
        self.bufs.get_mut(i).and_then(|b| b.get_mut(..r.len))
    }
}

/// Sends several datagrams with one `sendmmsg` (non-blocking); returns how
/// many the kernel took.
pub fn send_batch(s: &impl AsRawFd, msgs: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let iovs: Vec<[IoSlice<'_>; 1]> = msgs.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = msgs
        .iter()
        .map(|(_, a)| Some(SockaddrStorage::from(*a)))
        .collect();
    let mut headers =
        nix::sys::socket::MultiHeaders::<SockaddrStorage>::preallocate(msgs.len(), None);
    let sent = nix::sys::socket::sendmmsg(
        s.as_raw_fd(),
        &mut headers,
        &iovs,
        &addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

/// Sends several datagrams on a connected socket with one `sendmmsg`
/// (non-blocking); returns how many the kernel took. An error means the
/// first datagram was not sent.
pub fn send_connected_batch(s: &impl AsRawFd, msgs: &[&[u8]]) -> io::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    let iovs: Vec<[IoSlice<'_>; 1]> = msgs.iter().map(|b| [IoSlice::new(b)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = vec![None; msgs.len()];
    let mut headers =
        nix::sys::socket::MultiHeaders::<SockaddrStorage>::preallocate(msgs.len(), None);
    let sent = nix::sys::socket::sendmmsg(
        s.as_raw_fd(),
        &mut headers,
        &iovs,
        &addrs,
        [],
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_batch_delivers_each_datagram_to_its_address() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let n = send_batch(&tx, &[(b"one", aa), (b"two", ba), (b"three", aa)]).unwrap();
        assert_eq!(n, 3);
        let mut buf = [0u8; 16];
        a.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = a.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"three");
        let n = b.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        assert_eq!(send_batch(&tx, &[]).unwrap(), 0);
    }

    #[test]
    fn batch_receives_several_datagrams_with_their_sources() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        enable_pktinfo(&rx, false).unwrap();
        let to = rx.local_addr().unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 10], to).unwrap();
        }
        tx.send_to(&vec![9u8; BATCH_SLOT + 10], to).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut b = RecvBatch::new(4);
        assert_eq!(b.recv(&rx).unwrap(), 4);
        assert!(b
            .received()
            .iter()
            .all(|r| r.src == tx.local_addr().unwrap()));
        assert_eq!(b.received()[0].info.map(|i| i.dst), Some(to.ip()));
        assert_eq!(b.datagram_mut(3).unwrap(), &[3u8; 10]);
        assert_eq!(b.recv(&rx).unwrap(), 2);
        assert!(b.received()[1].truncated);
        assert_eq!(b.received()[1].len, BATCH_SLOT);
        let e = b.recv(&rx).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn connected_batch_sends_in_order() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let n = send_connected_batch(&tx, &[b"one", b"two", b"three"]).unwrap();
        assert_eq!(n, 3);
        assert_eq!(send_connected_batch(&tx, &[]).unwrap(), 0);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two", b"three"] {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from, tx.local_addr().unwrap());
        }
    }
}
