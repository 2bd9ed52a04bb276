//! Linux socket calls that socket2 and tokio do not cover: receiving the
//! destination address of a datagram (IP_PKTINFO / IPV6_RECVPKTINFO),
//! sending from a chosen source address, and batches (recvmmsg/sendmmsg).
//! Sending goes through nix's safe wrappers. Receiving batches is this
//! crate's only `unsafe` code: one `recvmmsg` call over headers allocated
//! once and reused (see [`RecvBatch`]), each block with its `SAFETY` note.
//! Also the reuseport steering programs of UDP listeners
//! ([`steer_reuseport`]) and a thread's CPU clock ([`thread_cpu_ns`]).
#![deny(unsafe_op_in_unsafe_fn)]

use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, SockaddrStorage};

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

/// Control buffer of one datagram: room for one IPv6 packet-info message
/// (the largest the listener asks for), as `u64`s for `cmsghdr` alignment.
type Control = [u64; 8];

/// Buffers and kernel headers for receiving up to `n` datagrams in one
/// `recvmmsg`, allocated once and reused by every call: receiving allocates
/// nothing.
///
/// nix's `recvmmsg` builds its headers per call (its reusable headers are
/// not reset between calls, so a shorter address or control message from one
/// call would truncate the next), hence this module's own call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    iovs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
    received: Vec<Received>,
}

// SAFETY: the raw pointers in `iovs` and `headers` point only into this
// value's own heap buffers (`bufs`, `names`, `controls`, `iovs`), which move
// with it, and every pointer is rewritten by `recv` before the kernel sees
// it; nothing is shared with another thread.
#[allow(unsafe_code)]
unsafe impl Send for RecvBatch {}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("slots", &self.bufs.len())
            .finish()
    }
}

/// An all-zero value of a plain C struct of the kernel ABI.
#[allow(unsafe_code)]
fn zeroed<T: Copy>() -> T {
    // SAFETY: only used for libc's sockaddr_storage, iovec and mmsghdr:
    // plain C structs of integers and raw pointers, for which all-zero bytes
    // are a valid value (null pointers, zero lengths).
    unsafe { std::mem::zeroed() }
}

impl RecvBatch {
    /// Room for `n` datagrams of up to [`BATCH_SLOT`] bytes.
    pub fn new(n: usize) -> Self {
        Self {
            bufs: (0..n).map(|_| vec![0u8; BATCH_SLOT]).collect(),
            names: vec![zeroed(); n],
            controls: vec![[0u64; 8]; n],
            iovs: vec![zeroed(); n],
            headers: vec![zeroed(); n],
            received: Vec::with_capacity(n),
        }
    }

    /// Receives what is queued on `s` (non-blocking), up to the batch size;
    /// returns how many datagrams arrived (WouldBlock when none).
    pub fn recv(&mut self, s: &impl AsRawFd) -> io::Result<usize> {
        self.recv_with(s, libc::MSG_DONTWAIT)
    }

    /// Waits in the kernel for at least one datagram on `s` (a socket in
    /// blocking mode), then takes what is queued with it, up to the batch
    /// size (MSG_WAITFORONE): one system call where waiting through the
    /// reactor costs two. Gives up after the socket's receive timeout
    /// (WouldBlock).
    pub fn recv_wait(&mut self, s: &impl AsRawFd) -> io::Result<usize> {
        self.recv_with(s, libc::MSG_WAITFORONE)
    }

    #[allow(unsafe_code)]
    fn recv_with(&mut self, s: &impl AsRawFd, flags: libc::c_int) -> io::Result<usize> {
        self.received.clear();
        let n = self.bufs.len();
        for i in 0..n {
            let (Some(buf), Some(iov)) = (self.bufs.get_mut(i), self.iovs.get_mut(i)) else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
        }
        for (i, h) in self.headers.iter_mut().enumerate() {
            let (Some(name), Some(control), Some(iov)) = (
                self.names.get_mut(i),
                self.controls.get_mut(i),
                self.iovs.get_mut(i),
            ) else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            point_header(
                h,
                std::ptr::from_mut(name).cast(),
                size_of::<libc::sockaddr_storage>() as libc::socklen_t,
                iov,
                control.as_mut_ptr().cast(),
                size_of::<Control>(),
            );
        }
        let vlen = libc::c_uint::try_from(n).unwrap_or(libc::c_uint::MAX);
        // SAFETY: `headers` holds `n` initialised mmsghdr whose name, iovec
        // and control pointers were set just above to buffers owned by
        // `self` with the lengths given; they stay alive and unaliased for
        // the call (`&mut self`), and the kernel writes at most those
        // lengths. With MSG_DONTWAIT the call never blocks; with
        // MSG_WAITFORONE it blocks until one datagram (or the socket's
        // receive timeout), holding nothing but `self`.
        let got = unsafe {
            libc::recvmmsg(
                s.as_raw_fd(),
                self.headers.as_mut_ptr(),
                vlen,
                flags,
                std::ptr::null_mut(),
            )
        };
        let got = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
        for (i, h) in self.headers.iter().enumerate().take(got) {
            // A source address that cannot be read (not IPv4 or IPv6) keeps
            // its place, so datagram `i` stays slot `i`, flagged as
            // truncated: the caller drops it and counts it.
            let src = self
                .names
                .get(i)
                .and_then(|a| to_socket_addr(a, h.msg_hdr.msg_namelen));
            let info = pktinfo_of_header(&h.msg_hdr);
            let len = usize::try_from(h.msg_len).unwrap_or(0);
            self.received.push(Received {
                len: len.min(BATCH_SLOT),
                src: src.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
                info,
                truncated: src.is_none() || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
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

    /// The whole slot of datagram `i` ([`BATCH_SLOT`] bytes, the datagram
    /// first), to write an answer over it; [`Self::set_len`] then says how
    /// much of it [`Self::datagram`] gives.
    pub fn slot_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        self.received.get(i)?;
        self.bufs.get_mut(i).map(Vec::as_mut_slice)
    }

    /// Sets the length of datagram `i` (at most [`BATCH_SLOT`]).
    pub fn set_len(&mut self, i: usize, len: usize) {
        if let Some(r) = self.received.get_mut(i) {
            r.len = len.min(BATCH_SLOT);
        }
    }
}

/// Points one batch header at its address, its one iovec and its control
/// buffer, and clears what the kernel wrote into it last time.
fn point_header(
    h: &mut libc::mmsghdr,
    name: *mut libc::c_void,
    namelen: libc::socklen_t,
    iov: &mut libc::iovec,
    control: *mut libc::c_void,
    controllen: usize,
) {
    let m = &mut h.msg_hdr;
    m.msg_name = name;
    m.msg_namelen = namelen;
    m.msg_iov = std::ptr::from_mut(iov);
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = controllen as _;
    m.msg_flags = 0;
    h.msg_len = 0;
}

/// The source address the kernel wrote into `a` (`len` bytes), if it is an
/// IPv4 or IPv6 one.
#[allow(unsafe_code)]
fn to_socket_addr(a: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len.min(size_of::<libc::sockaddr_storage>() as libc::socklen_t);
    // SAFETY: `a` is a sockaddr_storage the kernel filled by recvmmsg and
    // `len` (clamped to its size) is the length the kernel reported.
    let addr = unsafe { socket2::SockAddr::new(*a, len) };
    addr.as_socket()
}

/// The packet-info control message of a received datagram, if any.
#[allow(unsafe_code)]
fn pktinfo_of_header(m: &libc::msghdr) -> Option<PktInfo> {
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        return None;
    }
    // SAFETY: `m` is a header recvmmsg just filled: msg_control points to
    // its control buffer (owned by the RecvBatch, alive for this borrow)
    // and msg_controllen is the length the kernel wrote, so the CMSG_*
    // walk stays inside it; CMSG_DATA of a message of the checked level and
    // type holds that type's struct, read unaligned.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(m);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IP && h.cmsg_type == libc::IP_PKTINFO {
                let p = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                return Some(PktInfo {
                    dst: IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))),
                    ifindex: u32::try_from(p.ipi_ifindex).unwrap_or(0),
                });
            }
            if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let p = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in6_pktinfo>());
                return Some(PktInfo {
                    dst: IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)),
                    ifindex: p.ipi6_ifindex,
                });
            }
            c = libc::CMSG_NXTHDR(m, c);
        }
    }
    None
}

/// Kernel headers for sending up to `n` datagrams in one `sendmmsg`,
/// allocated once and reused: sending a batch allocates nothing.
pub struct SendBatch {
    names: Vec<libc::sockaddr_storage>,
    iovs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: as for RecvBatch: the raw pointers in `iovs` and `headers` are
// rewritten by `send` before every call, point only into this value's own
// buffers or into the caller's messages for the duration of that call, and
// are never read otherwise.
#[allow(unsafe_code)]
unsafe impl Send for SendBatch {}

impl std::fmt::Debug for SendBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatch")
            .field("slots", &self.headers.len())
            .finish()
    }
}

impl SendBatch {
    /// Room for `n` datagrams per call.
    pub fn new(n: usize) -> Self {
        Self {
            names: vec![zeroed(); n],
            iovs: vec![zeroed(); n],
            headers: vec![zeroed(); n],
        }
    }

    /// Sends the first datagrams of `msgs` (as many as the batch holds) with
    /// one non-blocking `sendmmsg`, each to its address, or to the socket's
    /// peer when the address is `None` (a connected socket). Returns how many
    /// the kernel took; an error means the first was not sent.
    #[allow(unsafe_code)]
    pub fn send(
        &mut self,
        s: &impl AsRawFd,
        msgs: &[(&[u8], Option<SocketAddr>)],
    ) -> io::Result<usize> {
        let n = msgs.len().min(self.headers.len());
        if n == 0 {
            return Ok(0);
        }
        for (i, &(buf, to)) in msgs.iter().take(n).enumerate() {
            let (Some(iov), Some(name)) = (self.iovs.get_mut(i), self.names.get_mut(i)) else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            iov.iov_base = buf.as_ptr().cast_mut().cast();
            iov.iov_len = buf.len();
            let namelen = match to {
                Some(a) => {
                    let a = socket2::SockAddr::from(a);
                    let len = a.len();
                    *name = a.as_storage();
                    len
                }
                None => 0,
            };
            let (Some(h), Some(iov), Some(name)) = (
                self.headers.get_mut(i),
                self.iovs.get_mut(i),
                self.names.get_mut(i),
            ) else {
                return Err(io::ErrorKind::InvalidInput.into());
            };
            let name = if namelen == 0 {
                std::ptr::null_mut()
            } else {
                std::ptr::from_mut(name).cast()
            };
            point_header(h, name, namelen, iov, std::ptr::null_mut(), 0);
        }
        let vlen = libc::c_uint::try_from(n).unwrap_or(libc::c_uint::MAX);
        // SAFETY: the first `n` headers were just set to point at `n`
        // addresses owned by `self` (or null for a connected socket) and at
        // iovecs covering the caller's messages, which are borrowed for this
        // call; the kernel only reads through them. MSG_DONTWAIT: never
        // blocks.
        let sent = unsafe {
            libc::sendmmsg(
                s.as_raw_fd(),
                self.headers.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
            )
        };
        usize::try_from(sent).map_err(|_| io::Error::last_os_error())
    }
}

/// A UDP socket the runtime watches for reading only.
///
/// The data path sends with direct non-blocking syscalls (`sendmmsg`,
/// `sendmsg`) and never waits for writability. tokio's `UdpSocket` registers
/// for writability as well, edge-triggered: every time the kernel frees the
/// socket's send buffer (the peer read a datagram) epoll reports the socket
/// writable and the worker wakes for nothing. Registered for reading only,
/// a worker wakes when there is something to read.
/// [`udp_reader`] makes one.
pub type UdpReader = tokio::io::unix::AsyncFd<std::net::UdpSocket>;

/// Registers `socket` (made non-blocking) with the current runtime for
/// reading only (see [`UdpReader`]). Must be called within a
/// runtime.
pub fn udp_reader(socket: std::net::UdpSocket) -> io::Result<UdpReader> {
    socket.set_nonblocking(true)?;
    register_readable(socket)
}

/// The same for a UDP worker's listening socket, left in blocking mode
/// with a receive timeout of `wait`, so that [`RecvBatch::recv_wait`] can
/// wait on it; every other call on it passes MSG_DONTWAIT (receives, and
/// the sends of [`send_to`], [`send_with_pktinfo`] and [`SendBatch`]).
pub fn udp_listener_reader(
    socket: std::net::UdpSocket,
    wait: std::time::Duration,
) -> io::Result<UdpReader> {
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(wait))?;
    register_readable(socket)
}

/// Sends `buf` to `to` without waiting, whatever the socket's mode.
pub fn send_to(s: &std::net::UdpSocket, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
    socket2::SockRef::from(s).send_to_with_flags(buf, &to.into(), libc::MSG_DONTWAIT)
}

#[allow(unsafe_code)]
fn register_readable(socket: std::net::UdpSocket) -> io::Result<UdpReader> {
    // SAFETY: the `AsyncFd` takes ownership of `socket`, a std `UdpSocket`
    // that owns its descriptor: the descriptor stays open and is the same
    // one for the whole life of the `AsyncFd`, and `as_raw_fd` always
    // returns it.
    let r = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(socket, tokio::io::Interest::READABLE)
    };
    r.map_err(|e| e.into_parts().1)
}

/// Classic BPF opcodes of the steering programs (linux/filter.h).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_MOD_K: u16 = 0x94;
const BPF_RET_K: u16 = 0x06;
const BPF_RET_A: u16 = 0x16;
/// `ld #rand`: a random 32-bit number (SKF_AD_OFF + SKF_AD_RANDOM).
const LD_RANDOM: u32 = 0xffff_f000 + 56;

fn insn(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

/// Makes the SO_REUSEPORT group of `s` hand each datagram to one of its
/// first `active` sockets (in the order they joined the group), at random;
/// with `active` 1, all to the first. A classic BPF program on the group
/// (SO_ATTACH_REUSEPORT_CBPF), replacing any before it; an index past the
/// group's end makes the kernel fall back to its own hash.
pub fn steer_reuseport(s: &impl AsFd, active: usize) -> io::Result<()> {
    let active = u32::try_from(active.max(1)).unwrap_or(u32::MAX);
    let mut code = if active == 1 {
        vec![insn(BPF_RET_K, 0)]
    } else {
        vec![
            insn(BPF_LD_W_ABS, LD_RANDOM),
            insn(BPF_ALU_MOD_K, active),
            insn(BPF_RET_A, 0),
        ]
    };
    let prog = libc::sock_fprog {
        len: u16::try_from(code.len()).unwrap_or(u16::MAX),
        filter: code.as_mut_ptr(),
    };
    setsockopt(s, sockopt::AttachReusePortCbpf, &prog).map_err(io::Error::from)
}

/// Removes the program of [`steer_reuseport`] from the group of `s`: the
/// kernel spreads datagrams by its own hash again. Nothing to remove is
/// not an error.
#[allow(unsafe_code)]
pub fn unsteer_reuseport(s: &impl AsFd) -> io::Result<()> {
    let zero: libc::c_int = 0;
    // SAFETY: SO_DETACH_REUSEPORT_BPF reads no option value (the kernel
    // ignores it); a valid pointer to an int and its size are passed
    // anyway, both alive for the call, on a descriptor `s` keeps open.
    let r = unsafe {
        libc::setsockopt(
            s.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_DETACH_REUSEPORT_BPF,
            std::ptr::from_ref(&zero).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        _ => Err(e),
    }
}

/// Takes the listening UDP socket `s` out of its SO_REUSEPORT group's
/// share of new datagrams, for a listener that a reload replaced: it is
/// connected to its own address (the loopback one for a wildcard), so the
/// kernel's pick among the group skips it (a connected member) or, for a
/// wildcard socket, rehashes it out of the group. Datagrams already queued
/// stay readable, and answers still go out with explicit addresses. The
/// steering program, if any, is removed first: it picks members by index.
pub fn leave_reuseport_group(s: &impl AsFd) -> io::Result<()> {
    unsteer_reuseport(s)?;
    let sock = socket2::SockRef::from(s);
    let local = sock
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let ip = match local.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    sock.connect(&SocketAddr::new(ip, local.port()).into())
}

/// CPU time the calling thread has used (user and system), in
/// nanoseconds; 0 if the clock cannot be read.
pub fn thread_cpu_ns() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0, |t| {
        let ns = i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec());
        u64::try_from(ns).unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn reused_send_batch_sends_in_order_to_peer_or_address() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.connect(rx.local_addr().unwrap()).unwrap();
        let mut b = SendBatch::new(2);
        let msgs: [(&[u8], Option<SocketAddr>); 3] =
            [(b"one", None), (b"two", None), (b"three", None)];
        // Two fit per call; the next call takes the rest.
        assert_eq!(b.send(&tx, &msgs).unwrap(), 2);
        assert_eq!(b.send(&tx, &msgs[2..]).unwrap(), 1);
        assert_eq!(b.send(&tx, &[]).unwrap(), 0);
        rx.set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut buf = [0u8; 16];
        for want in [&b"one"[..], b"two", b"three"] {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], want);
            assert_eq!(from, tx.local_addr().unwrap());
        }
        // An unconnected socket, an address per datagram, headers reused.
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ra, oa) = (rx.local_addr().unwrap(), other.local_addr().unwrap());
        assert_eq!(
            b.send(&u, &[(b"x", Some(oa)), (b"y", Some(ra))]).unwrap(),
            2
        );
        other
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let n = other.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"x");
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"y");
        // A connected-style send on an unconnected socket fails: reported.
        assert!(b.send(&u, &[(b"z", None)]).is_err());
    }

    /// The headers are reused: every call must reset the lengths the kernel
    /// shrank on the previous one (address and control message).
    #[test]
    fn reused_headers_report_sources_and_destinations_on_every_call() {
        for (any, lo) in [("0.0.0.0:0", "127.0.0.1"), ("[::]:0", "::1")] {
            let Ok(rx) = std::net::UdpSocket::bind(any) else {
                continue;
            };
            enable_pktinfo(&rx, lo.contains(':')).unwrap();
            let port = rx.local_addr().unwrap().port();
            let to: SocketAddr = (lo.parse::<IpAddr>().unwrap(), port).into();
            let Ok(tx) = std::net::UdpSocket::bind((lo.parse::<IpAddr>().unwrap(), 0)) else {
                continue;
            };
            let mut b = RecvBatch::new(2);
            for round in 0..4u8 {
                tx.send_to(&[round; 3], to).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(20));
                assert_eq!(b.recv(&rx).unwrap(), 1, "{lo} round {round}");
                let r = b.received()[0];
                assert_eq!(r.src, tx.local_addr().unwrap());
                assert_eq!(r.info.map(|i| i.dst), Some(to.ip()), "{lo} round {round}");
                assert_eq!(b.datagram(0).unwrap(), &[round; 3]);
                assert_eq!(b.recv(&rx).unwrap_err().kind(), io::ErrorKind::WouldBlock);
            }
        }
    }

    /// Datagrams from `senders` distinct source ports to the group of
    /// `socks`: how many each socket got.
    fn spread_of(socks: &[std::net::UdpSocket], senders: usize) -> Vec<usize> {
        let to = socks[0].local_addr().unwrap();
        for _ in 0..senders {
            let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            tx.send_to(b"q", to).unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        socks
            .iter()
            .map(|s| {
                let mut b = RecvBatch::new(64);
                let mut got = 0;
                while let Ok(n) = b.recv(s) {
                    got += n;
                }
                got
            })
            .collect()
    }

    #[test]
    fn steering_program_sends_datagrams_to_the_first_sockets_of_the_group() {
        let first = crate::socket::bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let mut socks = vec![first];
        for _ in 0..2 {
            socks.push(crate::socket::bind_udp(addr).unwrap());
        }
        // The kernel's hash: 60 source ports reach all three.
        assert!(spread_of(&socks, 60).iter().all(|&n| n > 0));
        // One active: all to the first socket, attached from any member.
        steer_reuseport(&socks[2], 1).unwrap();
        assert_eq!(spread_of(&socks, 40), [40, 0, 0]);
        // Two active: both of the first two, never the third.
        steer_reuseport(&socks[0], 2).unwrap();
        let two = spread_of(&socks, 60);
        assert!(two[0] > 0 && two[1] > 0 && two[2] == 0, "{two:?}");
        // More than the group holds: the kernel falls back to its hash,
        // nothing is lost.
        steer_reuseport(&socks[0], 5).unwrap();
        assert_eq!(spread_of(&socks, 60).iter().sum::<usize>(), 60);
        // Removed: the hash again; removing twice is not an error.
        steer_reuseport(&socks[0], 1).unwrap();
        unsteer_reuseport(&socks[1]).unwrap();
        unsteer_reuseport(&socks[1]).unwrap();
        assert!(spread_of(&socks, 60).iter().all(|&n| n > 0));
    }

    #[test]
    fn a_socket_that_leaves_its_group_gets_no_new_datagrams_but_keeps_its_queue() {
        for bind in ["127.0.0.1:0", "0.0.0.0:0"] {
            let first = crate::socket::bind_udp(bind.parse().unwrap()).unwrap();
            let port = first.local_addr().unwrap().port();
            let mut socks = vec![first];
            for _ in 0..2 {
                let at = SocketAddr::new(bind.parse::<SocketAddr>().unwrap().ip(), port);
                socks.push(crate::socket::bind_udp(at).unwrap());
            }
            // Queued before it leaves: still read after.
            let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut queued = 0;
            for _ in 0..60 {
                let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                tx.send_to(b"q", to).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            steer_reuseport(&socks[0], 1).unwrap();
            leave_reuseport_group(&socks[0]).unwrap();
            let mut b = RecvBatch::new(64);
            while let Ok(n) = b.recv(&socks[0]) {
                queued += n;
            }
            assert!(queued > 0, "{bind}");
            // Drain the others, then: nothing new for the one that left,
            // even with a steering program that had picked it (removed).
            for s in &socks[1..] {
                while b.recv(s).is_ok() {}
            }
            let spread = spread_of(&socks, 60);
            assert_eq!(spread[0], 0, "{bind}: {spread:?}");
            assert_eq!(spread.iter().sum::<usize>(), 60, "{bind}: {spread:?}");
            // It still answers with an explicit destination.
            let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            send_to(&socks[0], b"a", client.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 4];
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(1)))
                .unwrap();
            assert_eq!(client.recv(&mut buf).unwrap(), 1, "{bind}");
        }
    }

    #[test]
    fn thread_cpu_clock_counts_this_threads_work_only() {
        let before = thread_cpu_ns();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let busy = thread_cpu_ns() - before;
        assert!(busy >= 10_000_000, "{busy} ns");
        let before = thread_cpu_ns();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(thread_cpu_ns() - before < 10_000_000);
    }
}
