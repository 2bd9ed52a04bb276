//! Free loopback ports for the servers a test starts.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Ports are drawn from this range, below Linux's default ephemeral range
/// (32768–60999), so that a port handed to a server is not taken meanwhile by
/// some client socket's automatic bind.
const RANGE: std::ops::Range<u16> = 20_000..32_000;

/// Ports already handed out by this process, never handed out twice.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a port that is free on 127.0.0.1 for both UDP and TCP.
///
/// The check binds both sockets and closes them again, so another process
/// could still take the port before the caller binds it; drawing ports at
/// random outside the ephemeral range, and never returning the same one twice
/// in a process, makes that unlikely. Panics if no port is found, which on a
/// sane machine does not happen.
pub fn free_port() -> u16 {
    for _ in 0..1000 {
        let port = random_port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.contains(&port) {
            continue;
        }
        if is_free(port) {
            handed_out.insert(port);
            return port;
        }
    }
    // Fall back to a kernel-chosen port, still checked for both protocols.
    for _ in 0..100 {
        let Ok(udp) = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)) else {
            continue;
        };
        let Ok(local) = udp.local_addr() else {
            continue;
        };
        let port = local.port();
        drop(udp);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if !handed_out.contains(&port) && is_free(port) {
            handed_out.insert(port);
            return port;
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1");
}

/// Returns `127.0.0.1:<free_port()>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()))
}

/// Whether `port` can be bound on 127.0.0.1 for both UDP and TCP right now.
fn is_free(port: u16) -> bool {
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, port));
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, port));
    udp.is_ok() && tcp.is_ok()
}

/// A pseudo-random port in [`RANGE`], seeded by the standard library's
/// per-process random hash keys.
fn random_port() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let span = u64::from(RANGE.end - RANGE.start);
    // The remainder is below `span`, which fits in a u16.
    RANGE.start + u16::try_from(hasher.finish() % span).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            assert!(is_free(port), "port {port} is not free");
        }
    }
}
