//! Gratuitous ARP from an AF_PACKET socket.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use nix::sys::socket::{sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag, SockType};
use tracing::warn;

use crate::error::{Error, Result};

/// Sends gratuitous ARP requests on one interface.
#[derive(Debug)]
pub(crate) struct Garp {
    fd: OwnedFd,
    link: LinkAddr,
    mac: [u8; 6],
}

impl Garp {
    /// An AF_PACKET socket with protocol 0: it sends, and receives nothing.
    pub(crate) fn open(interface: &str, link: LinkAddr) -> Result<Self> {
        let mac = link.addr().ok_or_else(|| Error::Interface {
            interface: interface.to_owned(),
            reason: "no hardware address".into(),
        })?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| Error::io(format!("AF_PACKET socket on {interface}"), e.into()))?;
        Ok(Self { fd, link, mac })
    }

    /// Sends `count` gratuitous ARPs for `addr`.
    pub(crate) fn send(&self, addr: Ipv4Addr, count: u32) {
        let frame = frame(self.mac, addr);
        for _ in 0..count {
            if let Err(e) = sendto(
                std::os::fd::AsRawFd::as_raw_fd(&self.fd),
                &frame,
                &self.link,
                MsgFlags::empty(),
            ) {
                warn!(%addr, error = %e, "gratuitous ARP failed");
                return;
            }
        }
    }
}

/// An Ethernet broadcast ARP request announcing `addr` at `mac`
/// (sender and target protocol address both `addr`).
pub(crate) fn frame(mac: [u8; 6], addr: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]); // Ethernet/IPv4, request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&addr.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&addr.octets());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garp_frame_layout() {
        let f = frame([2, 0, 0, 0, 0, 1], Ipv4Addr::new(192, 168, 1, 5));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[192, 168, 1, 5]);
        assert_eq!(&f[38..42], &[192, 168, 1, 5]);
    }
}
