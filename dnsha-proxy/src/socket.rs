//! Socket setup shared by the frontends: SO_REUSEPORT and IP_FREEBIND, so a
//! listener may bind a virtual IP this node does not hold yet.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

fn base(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let domain = Domain::for_address(addr);
    let s = Socket::new(domain, ty, Some(proto))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        s.set_freebind_ipv6(true)?;
    } else {
        s.set_freebind(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A non-blocking UDP socket bound to `addr` with SO_REUSEPORT and IP_FREEBIND.
/// When `addr` is a wildcard, IP_PKTINFO is enabled so answers can leave from
/// the address each query arrived on.
pub fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = base(addr, Type::DGRAM, Protocol::UDP)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    if addr.ip().is_unspecified() {
        crate::sys::enable_pktinfo(&s, addr.is_ipv6())?;
    }
    s.bind(&SockAddr::from(addr))?;
    Ok(s.into())
}

/// A non-blocking TCP listener bound to `addr` with SO_REUSEPORT and
/// IP_FREEBIND.
pub fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let s = base(addr, Type::STREAM, Protocol::TCP)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(backlog)?;
    Ok(s.into())
}

/// A non-blocking UDP socket connected to `backend` from a kernel-chosen
/// (random) local port. Being connected, it only receives datagrams from the
/// backend and reports ICMP port unreachable as ECONNREFUSED.
pub fn connect_udp(backend: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = Domain::for_address(backend);
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_nonblocking(true)?;
    let _ = s.set_recv_buffer_size(4 << 20);
    let local: SocketAddr = if backend.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    s.bind(&SockAddr::from(local))?;
    s.connect(&SockAddr::from(backend))?;
    Ok(s.into())
}
