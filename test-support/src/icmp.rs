//! Spoofed ICMP errors, as an outsider can send them: a port unreachable
//! that quotes the 4-tuple of someone else's UDP exchange makes the kernel
//! report ECONNREFUSED on the matching connected socket. Packets are built
//! with etherparse and sent from a raw socket (root, or CAP_NET_RAW).

use std::fs;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use etherparse::icmpv4::DestUnreachableHeader;
use etherparse::{Icmpv4Header, Icmpv4Type, IpNumber, Ipv4Header, UdpHeader};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The local addresses of the IPv4 UDP sockets of this network namespace
/// connected to `peer`, from `/proc/net/udp` (the upstream sockets of a
/// balancer that talk to one backend).
pub fn udp_sockets_connected_to(peer: SocketAddrV4) -> io::Result<Vec<SocketAddrV4>> {
    let table = fs::read_to_string("/proc/net/udp")?;
    Ok(table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace().skip(1);
            let local = parse_proc_addr(cols.next()?)?;
            let remote = parse_proc_addr(cols.next()?)?;
            (remote == peer).then_some(local)
        })
        .collect())
}

/// `0100007F:1F90` (address as the kernel stores it, little-endian on
/// x86, and port) as `127.0.0.1:8080`.
fn parse_proc_addr(s: &str) -> Option<SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip.swap_bytes()), port))
}

/// An ICMP port unreachable (type 3, code 3) about a UDP datagram that
/// went from `from` to `to`: ICMP header and the quoted IP and UDP headers.
pub fn port_unreachable(from: SocketAddrV4, to: SocketAddrV4) -> io::Result<Vec<u8>> {
    let udp = UdpHeader {
        source_port: from.port(),
        destination_port: to.port(),
        length: 40,
        checksum: 0,
    };
    let mut ip = Ipv4Header::new(
        udp.length,
        64,
        IpNumber::UDP,
        from.ip().octets(),
        to.ip().octets(),
    )
    .map_err(io::Error::other)?;
    ip.header_checksum = ip.calc_header_checksum();
    let mut quoted = Vec::with_capacity(28);
    ip.write(&mut quoted)?;
    udp.write(&mut quoted)?;
    let icmp = Icmpv4Header::with_checksum(
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port),
        &quoted,
    );
    let mut packet = Vec::with_capacity(8 + quoted.len());
    icmp.write(&mut packet)?;
    packet.extend_from_slice(&quoted);
    Ok(packet)
}

/// A raw ICMP socket to send spoofed errors from.
#[derive(Debug)]
pub struct Spoofer {
    sock: Socket,
}

impl Spoofer {
    /// Opens the raw socket (needs root or CAP_NET_RAW).
    pub fn new() -> io::Result<Self> {
        let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        Ok(Self { sock })
    }

    /// Tells the host of `from` that `to` refused a datagram from `from`:
    /// a connected UDP socket bound to `from` and connected to `to` then
    /// reports ECONNREFUSED.
    pub fn port_unreachable(&self, from: SocketAddrV4, to: SocketAddrV4) -> io::Result<()> {
        let packet = port_unreachable(from, to)?;
        let dst = SocketAddr::V4(SocketAddrV4::new(*from.ip(), 0));
        self.sock.send_to(&packet, &SockAddr::from(dst))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(parse_proc_addr("garbage"), None);
    }

    #[test]
    fn the_packet_is_a_port_unreachable_quoting_the_exchange() {
        let p = port_unreachable(
            "127.0.0.1:40000".parse().unwrap(),
            "127.0.0.2:53".parse().unwrap(),
        )
        .unwrap();
        let (icmp, rest) = Icmpv4Header::from_slice(&p).unwrap();
        assert_eq!(
            icmp.icmp_type,
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port)
        );
        assert_eq!(icmp.checksum, icmp.icmp_type.calc_checksum(rest));
        let (ip, udp) = Ipv4Header::from_slice(rest).unwrap();
        assert_eq!(ip.source, [127, 0, 0, 1]);
        assert_eq!(ip.destination, [127, 0, 0, 2]);
        let (udp, _) = UdpHeader::from_slice(udp).unwrap();
        assert_eq!((udp.source_port, udp.destination_port), (40000, 53));
    }

    #[test]
    fn a_spoofed_error_reaches_the_connected_socket() {
        let Ok(spoofer) = Spoofer::new() else {
            crate::skip("raw sockets need root (CAP_NET_RAW)");
            return;
        };
        // A peer that is alive: nothing it sends would refuse.
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.connect(peer.local_addr().unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (SocketAddr::V4(from), SocketAddr::V4(to)) =
            (s.local_addr().unwrap(), peer.local_addr().unwrap())
        else {
            panic!("ipv4");
        };
        assert_eq!(udp_sockets_connected_to(to).unwrap(), vec![from]);
        spoofer.port_unreachable(from, to).unwrap();
        let err = s.recv(&mut [0u8; 16]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }
}
