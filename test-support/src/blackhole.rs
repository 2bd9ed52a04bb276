//! A backend that receives everything and answers nothing.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How often the background threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// UDP and TCP sockets on one port of 127.0.0.1 that accept connections and
/// read queries but never answer, for "backend never answers" tests.
///
/// TCP connections are kept open until the blackhole is dropped. Counters
/// tell how much reached it, so a test can check that queries were sent.
#[derive(Debug)]
pub struct Blackhole {
    addr: SocketAddr,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Counters {
    stop: AtomicBool,
    datagrams: AtomicUsize,
    connections: AtomicUsize,
    tcp_bytes: AtomicUsize,
}

impl Blackhole {
    /// Binds UDP and TCP on the same free port of 127.0.0.1 and starts
    /// reading. Panics if no port can be bound.
    pub fn start() -> Self {
        let (udp, tcp) = bind_pair();
        let addr = udp
            .local_addr()
            .unwrap_or_else(|e| panic!("blackhole address: {e}"));
        let counters = Arc::new(Counters::default());
        let udp_thread = {
            let counters = Arc::clone(&counters);
            thread::spawn(move || swallow_udp(&udp, &counters))
        };
        let tcp_thread = {
            let counters = Arc::clone(&counters);
            thread::spawn(move || swallow_tcp(&tcp, &counters))
        };
        Self {
            addr,
            counters,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    /// The address, for both UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many UDP datagrams were received.
    pub fn datagrams(&self) -> usize {
        self.counters.datagrams.load(Ordering::Relaxed)
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::Relaxed)
    }

    /// How many bytes were read over TCP, all connections together.
    pub fn tcp_bytes(&self) -> usize {
        self.counters.tcp_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.counters.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP socket and a TCP listener on the same port of 127.0.0.1.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(addr) = udp.local_addr() else {
            continue;
        };
        if let Ok(tcp) = TcpListener::bind(addr) {
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

fn swallow_udp(socket: &UdpSocket, counters: &Counters) {
    if socket.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = vec![0u8; 65_535];
    while !counters.stop.load(Ordering::Relaxed) {
        if socket.recv_from(&mut buf).is_ok() {
            counters.datagrams.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn swallow_tcp(listener: &TcpListener, counters: &Arc<Counters>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let mut readers = Vec::new();
    while !counters.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let counters = Arc::clone(counters);
                readers.push(thread::spawn(move || swallow_stream(stream, &counters)));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(5)),
            Err(_) => thread::sleep(POLL),
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
}

/// Reads and discards until the peer closes or the blackhole stops; the
/// connection stays open meanwhile.
fn swallow_stream(mut stream: TcpStream, counters: &Counters) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !counters.stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                counters.tcp_bytes.fetch_add(n, Ordering::Relaxed);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hickory_proto::rr::RecordType;

    use super::*;
    use crate::client::{query_tcp, query_udp, wait_tcp};

    #[test]
    fn receives_but_never_answers() {
        let hole = Blackhole::start();
        let timeout = Duration::from_millis(300);
        let err = query_udp(hole.addr(), "www.example.test.", RecordType::A, timeout).unwrap_err();
        assert!(err.contains("timed out"), "{err}");
        let err = query_tcp(hole.addr(), "www.example.test.", RecordType::A, timeout).unwrap_err();
        assert!(err.contains("read length"), "{err}");
        wait_tcp(hole.addr(), timeout).unwrap();

        let deadline = Instant::now() + Duration::from_secs(2);
        while (hole.datagrams() < 1 || hole.connections() < 2 || hole.tcp_bytes() == 0)
            && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(hole.datagrams(), 1);
        assert!(hole.connections() >= 2);
        assert!(hole.tcp_bytes() > 12);
    }
}
