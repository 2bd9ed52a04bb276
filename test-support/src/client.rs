//! A small blocking DNS client for tests, built on hickory-proto and std
//! sockets, plus a wrapper around `dig`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// Where Debian's `bind9-dnsutils` installs `dig`.
const DIG: &str = "/usr/bin/dig";

/// Builds a standard query (RD set, no EDNS) for `name` and `rtype` with a
/// random ID. `name` may omit the final dot.
pub fn build_query(name: &str, rtype: RecordType) -> Result<Message, String> {
    let mut name = Name::from_ascii(name).map_err(|e| format!("bad name {name:?}: {e}"))?;
    name.set_fqdn(true);
    let mut msg = Message::new();
    msg.set_id(random_u16())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, rtype));
    Ok(msg)
}

/// Sends a query for `name`/`rtype` over UDP to `server` and returns the
/// decoded answer, waiting at most `timeout`.
///
/// Datagrams whose ID does not match are ignored, as a stub resolver would.
/// No EDNS is sent, so answers above 512 bytes come back truncated (TC=1).
pub fn query_udp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    send_udp(server, &build_query(name, rtype)?, timeout)
}

/// Sends a query for `name`/`rtype` over TCP (2-byte length prefix) to
/// `server` and returns the decoded answer, waiting at most `timeout`.
pub fn query_tcp(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, String> {
    send_tcp(server, &build_query(name, rtype)?, timeout)
}

/// Sends `query` over UDP to `server` and returns the first answer carrying
/// the same ID, waiting at most `timeout` in all.
pub fn send_udp(server: SocketAddr, query: &Message, timeout: Duration) -> Result<Message, String> {
    let bytes = query.to_vec().map_err(|e| format!("encode query: {e}"))?;
    let deadline = Instant::now() + timeout;
    let socket = udp_socket(server)?;
    socket
        .send(&bytes)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let len = recv_until(&socket, &mut buf, deadline, server)?;
        match Message::from_vec(&buf[..len]) {
            Ok(answer) if answer.id() == query.id() => return Ok(answer),
            // A stray or mangled datagram: keep waiting for the real answer.
            Ok(_) | Err(_) => continue,
        }
    }
}

/// Sends `query` over TCP to `server` and returns the decoded answer,
/// waiting at most `timeout` in all. An answer with another ID is an error.
pub fn send_tcp(server: SocketAddr, query: &Message, timeout: Duration) -> Result<Message, String> {
    let bytes = query.to_vec().map_err(|e| format!("encode query: {e}"))?;
    let answer = exchange_tcp(server, &bytes, timeout)?;
    let answer =
        Message::from_vec(&answer).map_err(|e| format!("decode answer from {server}: {e}"))?;
    if answer.id() != query.id() {
        return Err(format!(
            "answer from {server} has ID {} instead of {}",
            answer.id(),
            query.id()
        ));
    }
    Ok(answer)
}

/// Sends raw `bytes` in one UDP datagram to `server` and returns the first
/// datagram that comes back, whatever it holds. For malformed-input tests.
pub fn exchange_udp(
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let socket = udp_socket(server)?;
    socket
        .send(bytes)
        .map_err(|e| format!("send to {server}: {e}"))?;
    let mut buf = vec![0u8; 65_535];
    let len = recv_until(&socket, &mut buf, deadline, server)?;
    buf.truncate(len);
    Ok(buf)
}

/// Sends raw `bytes` over a new TCP connection to `server`, prefixed with
/// their 2-byte length, and returns the body of the first length-prefixed
/// message that comes back. For malformed-input tests.
pub fn exchange_tcp(
    server: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let len = u16::try_from(bytes.len())
        .map_err(|_| format!("{} bytes do not fit a TCP DNS message", bytes.len()))?;
    let mut stream = TcpStream::connect_timeout(&server, timeout)
        .map_err(|e| format!("connect to {server}: {e}"))?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    set_stream_timeout(&stream, deadline, server)?;
    stream
        .write_all(&framed)
        .map_err(|e| format!("write to {server}: {e}"))?;
    let mut prefix = [0u8; 2];
    set_stream_timeout(&stream, deadline, server)?;
    stream
        .read_exact(&mut prefix)
        .map_err(|e| format!("read length from {server}: {e}"))?;
    let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
    set_stream_timeout(&stream, deadline, server)?;
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("read answer from {server}: {e}"))?;
    Ok(body)
}

/// Waits until `addr` answers a DNS query over UDP (any answer, even
/// SERVFAIL or REFUSED, counts), for at most `timeout`.
pub fn wait_udp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt made");
    while Instant::now() < deadline {
        let attempt = remaining(deadline).min(Duration::from_millis(250));
        match query_udp(addr, "www.example.test.", RecordType::A, attempt) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = e,
        }
        // A refused port fails at once: do not spin.
        thread::sleep(Duration::from_millis(20).min(remaining(deadline)));
    }
    Err(format!(
        "{addr} did not answer over UDP within {timeout:?}: {last_error}"
    ))
}

/// Waits until `addr` accepts a TCP connection, for at most `timeout`.
pub fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last_error = String::from("no attempt made");
    while Instant::now() < deadline {
        let attempt =
            remaining(deadline).clamp(Duration::from_millis(1), Duration::from_millis(250));
        match TcpStream::connect_timeout(&addr, attempt) {
            Ok(_) => return Ok(()),
            Err(e) => last_error = e.to_string(),
        }
        thread::sleep(Duration::from_millis(20).min(remaining(deadline)));
    }
    Err(format!(
        "{addr} did not accept TCP within {timeout:?}: {last_error}"
    ))
}

/// The address of the first A record in the answer section, if any.
pub fn a_record(msg: &Message) -> Option<Ipv4Addr> {
    a_records(msg).into_iter().next()
}

/// The addresses of all A records in the answer section, in order.
pub fn a_records(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// The TXT records of the answer section, one string per record (its
/// character-strings concatenated, decoded lossily as UTF-8).
pub fn txt_strings(msg: &Message) -> Vec<String> {
    msg.answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::TXT(txt) => Some(
                txt.iter()
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect()
}

/// Runs `/usr/bin/dig` with `args` and returns its standard output.
///
/// Pass `+tries=1 +time=2` or similar to keep a failing test short. Panics if
/// `dig` cannot be run (Debian package `bind9-dnsutils`).
pub fn dig(args: &[&str]) -> String {
    let output = Command::new(DIG)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {DIG} (package bind9-dnsutils): {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A UDP socket bound to the wildcard address of `server`'s family and
/// connected to `server`, so that only its datagrams are received and an
/// ICMP port unreachable shows as an error.
fn udp_socket(server: SocketAddr) -> Result<UdpSocket, String> {
    let local = match server {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = UdpSocket::bind(local).map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(server)
        .map_err(|e| format!("connect to {server}: {e}"))?;
    Ok(socket)
}

/// Receives one datagram before `deadline`.
fn recv_until(
    socket: &UdpSocket,
    buf: &mut [u8],
    deadline: Instant,
    server: SocketAddr,
) -> Result<usize, String> {
    loop {
        let left = remaining(deadline);
        if left.is_zero() {
            return Err(format!("no answer from {server}: timed out"));
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| format!("set timeout: {e}"))?;
        match socket.recv(buf) {
            Ok(len) => return Ok(len),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no answer from {server}: timed out"));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("receive from {server}: {e}")),
        }
    }
}

/// Sets both timeouts of `stream` to what is left before `deadline`.
fn set_stream_timeout(
    stream: &TcpStream,
    deadline: Instant,
    server: SocketAddr,
) -> Result<(), String> {
    let left = remaining(deadline);
    if left.is_zero() {
        return Err(format!("no answer from {server}: timed out"));
    }
    stream
        .set_read_timeout(Some(left))
        .and_then(|()| stream.set_write_timeout(Some(left)))
        .map_err(|e| format!("set timeout: {e}"))
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// A pseudo-random message ID.
fn random_u16() -> u16 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    // Truncation to the low 16 bits is the point.
    (hasher.finish() & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_well_formed() {
        let query = build_query("www.example.test", RecordType::A).unwrap();
        let bytes = query.to_vec().unwrap();
        let back = Message::from_vec(&bytes).unwrap();
        assert_eq!(back.id(), query.id());
        assert_eq!(back.queries().len(), 1);
        assert_eq!(back.queries()[0].name().to_ascii(), "www.example.test.");
        assert!(back.recursion_desired());
        assert!(back.extensions().is_none());
    }

    #[test]
    fn refused_port_fails_fast() {
        let addr = crate::free_addr();
        let started = Instant::now();
        let result = query_udp(
            addr,
            "www.example.test.",
            RecordType::A,
            Duration::from_secs(3),
        );
        assert!(result.is_err());
        assert!(started.elapsed() < Duration::from_secs(2), "{result:?}");
        assert!(query_tcp(
            addr,
            "www.example.test.",
            RecordType::A,
            Duration::from_secs(1)
        )
        .is_err());
        assert!(wait_tcp(addr, Duration::from_millis(200)).is_err());
    }
}
