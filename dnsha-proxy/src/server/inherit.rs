//! Listening sockets handed over by a previous process (a restart through
//! systemd's file descriptor store, or any supervisor that passes
//! `LISTEN_FDS`): a listener takes an inherited socket bound to its address
//! instead of binding a new one, so the datagrams and connections queued on
//! it while no process ran are served, not refused.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

use socket2::{Socket, Type};

/// What a listening socket carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// A UDP socket.
    Udp,
    /// A listening TCP socket.
    Tcp,
}

impl SocketKind {
    /// `udp` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// The name a listening socket is stored under: kind, address, port and
/// worker index (`udp-192.0.2.1-53-0`; an IPv6 address's colons become
/// `_`, as a descriptor name cannot hold a colon).
pub fn socket_name(kind: SocketKind, addr: SocketAddr, index: usize) -> String {
    let ip = addr.ip().to_string().replace(':', "_");
    format!("{}-{ip}-{}-{index}", kind.as_str(), addr.port())
}

/// One inherited socket.
#[derive(Debug)]
struct Entry {
    name: String,
    kind: SocketKind,
    addr: SocketAddr,
    socket: Socket,
}

/// Sockets inherited at start, taken by the listeners that want them.
#[derive(Debug, Default)]
pub struct Inherited {
    entries: Vec<Entry>,
}

/// A descriptor that is not a socket a listener can take.
#[derive(Debug)]
pub struct Unusable {
    /// Its name.
    pub name: String,
    /// Why.
    pub reason: String,
}

impl Inherited {
    /// Sorts the named descriptors into sockets a listener can take (a UDP
    /// socket, or a TCP socket that listens, bound to an address) and the
    /// others, which are closed and returned with the reason.
    pub fn new(fds: Vec<(String, OwnedFd)>) -> (Self, Vec<Unusable>) {
        let mut entries = Vec::new();
        let mut unusable = Vec::new();
        for (name, fd) in fds {
            match classify(fd.as_fd()) {
                Ok((kind, addr)) => entries.push(Entry {
                    name,
                    kind,
                    addr,
                    socket: Socket::from(fd),
                }),
                Err(reason) => unusable.push(Unusable { name, reason }),
            }
        }
        (Self { entries }, unusable)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An inherited socket of `kind` bound to `addr`, in the order they
    /// were handed over (the workers of a listener take theirs in turn).
    pub(crate) fn take(&mut self, kind: SocketKind, addr: SocketAddr) -> Option<Socket> {
        let i = self
            .entries
            .iter()
            .position(|e| e.kind == kind && e.addr == addr)?;
        Some(self.entries.remove(i).socket)
    }

    /// The names of the sockets no listener took, closing them.
    pub fn close_rest(&mut self) -> Vec<String> {
        self.entries.drain(..).map(|e| e.name).collect()
    }
}

/// The kind and local address of a listening socket, or why it is not one.
fn classify(fd: std::os::fd::BorrowedFd<'_>) -> Result<(SocketKind, SocketAddr), String> {
    let sock = socket2::SockRef::from(&fd);
    let ty = sock.r#type().map_err(|e| format!("not a socket: {e}"))?;
    let addr = sock
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?
        .as_socket()
        .ok_or("not an IP socket")?;
    if addr.port() == 0 {
        return Err("not bound".into());
    }
    if ty == Type::DGRAM {
        Ok((SocketKind::Udp, addr))
    } else if ty == Type::STREAM && sock.is_listener().unwrap_or(false) {
        Ok((SocketKind::Tcp, addr))
    } else {
        Err("neither a UDP nor a listening TCP socket".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_sockets_are_sorted_by_kind_and_address() {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (ua, ta) = (udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        let stream = std::net::TcpStream::connect(ta).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let (mut inh, unusable) = Inherited::new(vec![
            ("u".into(), OwnedFd::from(udp)),
            ("t".into(), OwnedFd::from(tcp)),
            ("s".into(), OwnedFd::from(stream)),
            ("f".into(), OwnedFd::from(file)),
        ]);
        let reasons: Vec<(&str, &str)> = unusable
            .iter()
            .map(|u| (u.name.as_str(), u.reason.as_str()))
            .collect();
        assert_eq!(
            reasons[0],
            ("s", "neither a UDP nor a listening TCP socket")
        );
        assert_eq!(reasons[1].0, "f");
        assert!(reasons[1].1.starts_with("not a socket"), "{reasons:?}");
        assert!(inh.take(SocketKind::Tcp, ua).is_none());
        assert!(inh.take(SocketKind::Udp, ua).is_some());
        assert!(inh.take(SocketKind::Udp, ua).is_none());
        assert!(!inh.is_empty());
        assert_eq!(inh.close_rest(), ["t"]);
        assert!(inh.is_empty());
    }

    #[test]
    fn names_hold_no_colon() {
        let v6: SocketAddr = "[2001:db8::1]:53".parse().unwrap();
        assert_eq!(socket_name(SocketKind::Udp, v6, 1), "udp-2001_db8__1-53-1");
        let v4: SocketAddr = "192.0.2.1:853".parse().unwrap();
        assert_eq!(socket_name(SocketKind::Tcp, v4, 0), "tcp-192.0.2.1-853-0");
    }
}
