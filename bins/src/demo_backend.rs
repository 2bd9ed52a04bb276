//! A tiny in-process authoritative DNS server, the backends of `dnsha demo`.
//!
//! Each [`DemoBackend`] serves the zone `example.test.` over UDP and TCP on
//! one address:
//!
//! | name                   | type | data                                  |
//! |------------------------|------|---------------------------------------|
//! | `example.test.`        | SOA  | `ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60` |
//! | `example.test.`        | NS   | `ns1.example.test.`                   |
//! | `ns1.example.test.`    | A    | the listening IPv4 address, if any    |
//! | `www.example.test.`    | A    | the backend's answer address          |
//! | `whoami.example.test.` | TXT  | the backend's name                    |
//!
//! Other names in the zone get NXDOMAIN, names outside it REFUSED, and
//! unparsable queries FORMERR. Messages too short to carry a header, and
//! responses (QR=1), are dropped. It never panics on any input.
//!
//! [`DemoBackend::stop`] closes the sockets, so that queries then meet an
//! ICMP port unreachable (UDP) or a reset (TCP), as with a crashed server;
//! [`DemoBackend::restart`] binds the same address again.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

/// The zone every demo backend serves.
const ZONE: &str = "example.test.";

/// TTL of every record, and the SOA minimum (negative caching TTL).
const TTL: u32 = 60;

/// The UDP payload size advertised in EDNS answers and the largest UDP
/// answer sent to an EDNS client.
const EDNS_PAYLOAD: u16 = 1232;

/// The largest UDP answer sent to a client without EDNS.
const PLAIN_UDP_PAYLOAD: usize = 512;

/// TCP connections served at once; more are closed on accept.
const MAX_TCP_CONNECTIONS: usize = 64;

/// A TCP connection idle (or trickling) for this long is closed.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);

/// A small authoritative server for `example.test.`, run on the current
/// Tokio runtime.
#[derive(Debug)]
pub struct DemoBackend {
    zone: Arc<Zone>,
    addr: SocketAddr,
    server: Option<Server>,
}

/// The tasks serving one bound UDP socket and TCP listener.
#[derive(Debug)]
struct Server {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl DemoBackend {
    /// Binds UDP and TCP on `addr` and starts answering, with `answer` as the
    /// address of `www.example.test.` and `name` as the TXT of
    /// `whoami.example.test.`.
    ///
    /// With port 0, one free port is chosen for both protocols; [`addr`]
    /// tells which. Must be called within a Tokio runtime.
    ///
    /// [`addr`]: DemoBackend::addr
    pub async fn start(name: &str, addr: SocketAddr, answer: Ipv4Addr) -> io::Result<Self> {
        let zone = Arc::new(Zone::new(name, addr.ip(), answer)?);
        let mut backend = Self {
            zone,
            addr,
            server: None,
        };
        backend.bind().await?;
        Ok(backend)
    }

    /// The backend's name, as given to [`DemoBackend::start`].
    pub fn name(&self) -> &str {
        &self.zone.backend
    }

    /// The address it serves on, for UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address it answers for `www.example.test.`.
    pub fn answer(&self) -> Ipv4Addr {
        self.zone.answer
    }

    /// Whether it is serving (started, not stopped).
    pub fn is_running(&self) -> bool {
        self.server
            .as_ref()
            .is_some_and(|server| server.tasks.iter().all(|task| !task.is_finished()))
    }

    /// Stops serving and closes its sockets, including open TCP
    /// connections; returns once they are closed. Does nothing if stopped.
    ///
    /// The sockets are closed in every case; an error only reports that a
    /// serving task had failed (panicked) before.
    pub async fn stop(&mut self) -> io::Result<()> {
        let Some(server) = self.server.take() else {
            return Ok(());
        };
        // Receivers also see the sender dropped; send for clarity.
        let _ = server.shutdown.send(true);
        let mut result = Ok(());
        for task in server.tasks {
            if let Err(e) = task.await {
                warn!(backend = %self.zone.backend, error = %e, "demo backend task failed");
                result = Err(io::Error::other(format!("serving task failed: {e}")));
            }
        }
        info!(backend = %self.zone.backend, addr = %self.addr, "demo backend stopped");
        result
    }

    /// Stops it if it runs, then binds the same address again and serves.
    pub async fn restart(&mut self) -> io::Result<()> {
        // A failed task is reported in the log by `stop`; start afresh anyway.
        let _ = self.stop().await;
        self.bind().await
    }

    /// Binds the sockets on `self.addr` (choosing the port if it is 0) and
    /// spawns the tasks serving them.
    async fn bind(&mut self) -> io::Result<()> {
        let (udp, tcp) = bind_pair(self.addr).await?;
        self.addr = udp.local_addr()?;
        let (shutdown, watcher) = watch::channel(false);
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&self.zone), watcher.clone())),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&self.zone), watcher)),
        ];
        self.server = Some(Server { shutdown, tasks });
        info!(
            backend = %self.zone.backend,
            addr = %self.addr,
            answer = %self.zone.answer,
            "demo backend serving"
        );
        Ok(())
    }
}

/// A UDP socket and a TCP listener on the same address. With port 0 the
/// UDP socket picks the port and TCP follows; if that port is taken for
/// TCP, another is tried.
async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| io::Error::other("no port free for UDP and TCP")))
}

/// Answers datagrams until `shutdown` fires (or its sender is dropped).
async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>, mut shutdown: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65_535];
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, peer)) => {
                    let Some(reply) = zone.respond(&buf[..len], Transport::Udp) else {
                        continue;
                    };
                    if let Err(e) = socket.send_to(&reply, peer).await {
                        debug!(backend = %zone.backend, %peer, error = %e, "udp send failed");
                    }
                }
                Err(e) => {
                    // Transient (an ICMP error reported late, a signal): go
                    // on, without spinning if it repeats.
                    debug!(backend = %zone.backend, error = %e, "udp receive failed");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            },
        }
    }
}

/// Accepts connections until `shutdown` fires, then closes the listener and
/// every open connection before returning.
async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_TCP_CONNECTIONS {
                        debug!(backend = %zone.backend, %peer, "too many tcp connections, closing");
                        continue;
                    }
                    connections.spawn(serve_connection(stream, Arc::clone(&zone)));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    warn!(backend = %zone.backend, error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// Answers length-prefixed queries on one connection, in order, until the
/// client closes it, goes quiet for [`TCP_TIMEOUT`] or sends garbage.
async fn serve_connection(mut stream: TcpStream, zone: Arc<Zone>) {
    let mut buf = Vec::new();
    loop {
        let mut prefix = [0u8; 2];
        if !matches!(
            tokio::time::timeout(TCP_TIMEOUT, stream.read_exact(&mut prefix)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        buf.resize(usize::from(u16::from_be_bytes(prefix)), 0);
        if !matches!(
            tokio::time::timeout(TCP_TIMEOUT, stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = zone.respond(&buf, Transport::Tcp) else {
            continue;
        };
        // `respond` keeps TCP answers within 65535 bytes.
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(
            tokio::time::timeout(TCP_TIMEOUT, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}

/// How a query arrived, which bounds the answer's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The records of one backend, and how it answers.
#[derive(Debug)]
struct Zone {
    backend: String,
    answer: Ipv4Addr,
    origin: Name,
    ns1: Name,
    www: Name,
    whoami: Name,
    soa: SOA,
    /// Address of `ns1.example.test.`: the listening address if IPv4.
    ns1_addr: Option<Ipv4Addr>,
}

impl Zone {
    fn new(backend: &str, listen: IpAddr, answer: Ipv4Addr) -> io::Result<Self> {
        let name = |s: &str| {
            Name::from_ascii(s).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let origin = name(ZONE)?;
        let ns1 = name("ns1.example.test.")?;
        let soa = SOA::new(
            ns1.clone(),
            name("hostmaster.example.test.")?,
            1,
            3600,
            600,
            86_400,
            TTL,
        );
        let ns1_addr = match listen {
            IpAddr::V4(ip) if !ip.is_unspecified() => Some(ip),
            IpAddr::V4(_) | IpAddr::V6(_) => None,
        };
        Ok(Self {
            backend: backend.to_owned(),
            answer,
            www: name("www.example.test.")?,
            whoami: name("whoami.example.test.")?,
            origin,
            ns1,
            soa,
            ns1_addr,
        })
    }

    /// The wire answer to the wire message `query`, or `None` to drop it.
    fn respond(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        // Without a whole header there is no ID to answer to; a response
        // (QR=1) is never answered, so two servers cannot loop.
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return None;
        }
        let id = u16::from_be_bytes([query[0], query[1]]);
        let reply = match Message::from_vec(query) {
            Ok(query) => self.answer_message(&query),
            Err(e) => {
                debug!(backend = %self.backend, id, error = %e, "unparsable query");
                let op_code = OpCode::from_u8((query[2] >> 3) & 0x0f);
                Message::error_msg(id, op_code, ResponseCode::FormErr)
            }
        };
        encode(&reply, transport)
    }

    /// The answer to a parsed query.
    fn answer_message(&self, query: &Message) -> Message {
        let mut reply = Message::error_msg(query.id(), query.op_code(), ResponseCode::NoError);
        reply.set_recursion_desired(query.recursion_desired());
        if query.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(EDNS_PAYLOAD);
            reply.set_edns(edns);
        }
        if query.op_code() != OpCode::Query {
            reply.set_response_code(ResponseCode::NotImp);
            return reply;
        }
        let [question] = query.queries() else {
            reply.set_response_code(ResponseCode::FormErr);
            return reply;
        };
        reply.add_query(question.clone());
        let rcode = self.lookup(question, &mut reply);
        reply.set_response_code(rcode);
        debug!(
            backend = %self.backend,
            name = %question.name(),
            qtype = %question.query_type(),
            rcode = %rcode,
            "answered"
        );
        reply
    }

    /// Fills the answer and authority sections for `question` and returns
    /// the response code.
    fn lookup(&self, question: &Query, reply: &mut Message) -> ResponseCode {
        let qname = question.name();
        if !matches!(question.query_class(), DNSClass::IN | DNSClass::ANY)
            || !self.origin.zone_of(qname)
        {
            return ResponseCode::Refused;
        }
        reply.set_authoritative(true);
        let Some(rdatas) = self.rdatas(qname) else {
            reply.add_name_server(self.soa_record());
            return ResponseCode::NXDomain;
        };
        let qtype = question.query_type();
        let answers: Vec<Record> = rdatas
            .into_iter()
            .filter(|rdata| qtype == RecordType::ANY || rdata.record_type() == qtype)
            // The owner name as asked, keeping the query's letter case.
            .map(|rdata| Record::from_rdata(qname.clone(), TTL, rdata))
            .collect();
        if answers.is_empty() {
            // NODATA: the name exists, not with this type.
            reply.add_name_server(self.soa_record());
        } else {
            reply.add_answers(answers);
        }
        ResponseCode::NoError
    }

    /// The data at `name` (in the zone), or `None` if there is no such name.
    fn rdatas(&self, name: &Name) -> Option<Vec<RData>> {
        let name = name.to_lowercase();
        if name == self.origin {
            Some(vec![
                RData::SOA(self.soa.clone()),
                RData::NS(NS(self.ns1.clone())),
            ])
        } else if name == self.www {
            Some(vec![RData::A(A(self.answer))])
        } else if name == self.whoami {
            Some(vec![RData::TXT(txt(&self.backend))])
        } else if name == self.ns1 {
            Some(
                self.ns1_addr
                    .map(|ip| RData::A(A(ip)))
                    .into_iter()
                    .collect(),
            )
        } else {
            None
        }
    }

    fn soa_record(&self) -> Record {
        Record::from_rdata(self.origin.clone(), TTL, RData::SOA(self.soa.clone()))
    }
}

/// A TXT record holding `text`, split into character-strings of at most
/// 255 bytes.
fn txt(text: &str) -> TXT {
    let parts: Vec<&[u8]> = if text.is_empty() {
        vec![&[]]
    } else {
        text.as_bytes().chunks(255).collect()
    };
    TXT::from_bytes(parts)
}

/// Encodes `reply`, truncated (TC=1, no records) if it is too big for the
/// transport, or SERVFAIL if it cannot be encoded at all.
fn encode(reply: &Message, transport: Transport) -> Option<Vec<u8>> {
    let limit = match transport {
        Transport::Tcp => usize::from(u16::MAX),
        Transport::Udp if reply.extensions().is_some() => usize::from(EDNS_PAYLOAD),
        Transport::Udp => PLAIN_UDP_PAYLOAD,
    };
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return Some(bytes),
        Ok(_) => {
            if let Ok(bytes) = reply.truncate().to_vec() {
                return Some(bytes);
            }
        }
        Err(e) => debug!(id = reply.id(), error = %e, "cannot encode answer"),
    }
    Message::error_msg(reply.id(), reply.op_code(), ResponseCode::ServFail)
        .to_vec()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use hickory_proto::op::MessageType;
    use test_support::{a_record, build_query, exchange_udp, send_tcp, send_udp, txt_strings};

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(3);
    const WWW: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    async fn backend() -> DemoBackend {
        DemoBackend::start("alpha", "127.0.0.1:0".parse().unwrap(), WWW)
            .await
            .unwrap()
    }

    /// Sends a query from a blocking thread, with test-support's client.
    async fn udp(addr: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, String> {
        let query = build_query(name, rtype)?;
        tokio::task::spawn_blocking(move || send_udp(addr, &query, TIMEOUT))
            .await
            .unwrap()
    }

    async fn tcp(addr: SocketAddr, name: &str, rtype: RecordType) -> Result<Message, String> {
        let query = build_query(name, rtype)?;
        tokio::task::spawn_blocking(move || send_tcp(addr, &query, TIMEOUT))
            .await
            .unwrap()
    }

    async fn raw_udp(addr: SocketAddr, bytes: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let bytes = bytes.to_vec();
        tokio::task::spawn_blocking(move || exchange_udp(addr, &bytes, timeout))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_the_zone_over_udp_and_tcp() {
        let backend = backend().await;
        let addr = backend.addr();
        assert_ne!(addr.port(), 0);
        assert_eq!(backend.name(), "alpha");
        assert_eq!(backend.answer(), WWW);

        for answer in [
            udp(addr, "www.example.test.", RecordType::A).await.unwrap(),
            tcp(addr, "WwW.Example.TEST.", RecordType::A).await.unwrap(),
        ] {
            assert_eq!(answer.response_code(), ResponseCode::NoError);
            assert_eq!(answer.message_type(), MessageType::Response);
            assert!(answer.authoritative());
            assert!(answer.recursion_desired());
            assert_eq!(a_record(&answer), Some(WWW));
            assert_eq!(answer.queries().len(), 1);
            // Question and owner echoed with the client's letter case.
            assert_eq!(answer.answers()[0].name(), answer.queries()[0].name());
        }
        let answer = tcp(addr, "WwW.Example.TEST.", RecordType::A).await.unwrap();
        assert_eq!(answer.queries()[0].name().to_ascii(), "WwW.Example.TEST.");

        let answer = udp(addr, "whoami.example.test.", RecordType::TXT)
            .await
            .unwrap();
        assert_eq!(txt_strings(&answer), ["alpha"]);

        let answer = udp(addr, "example.test.", RecordType::SOA).await.unwrap();
        assert!(matches!(answer.answers()[0].data(), RData::SOA(_)));
        let answer = tcp(addr, "example.test.", RecordType::NS).await.unwrap();
        assert!(matches!(answer.answers()[0].data(), RData::NS(_)));
        let answer = udp(addr, "ns1.example.test.", RecordType::A).await.unwrap();
        assert_eq!(a_record(&answer), Some(Ipv4Addr::LOCALHOST));
        let answer = udp(addr, "example.test.", RecordType::ANY).await.unwrap();
        assert_eq!(answer.answers().len(), 2);

        // NODATA.
        let answer = udp(addr, "www.example.test.", RecordType::AAAA)
            .await
            .unwrap();
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.answers().is_empty());
        assert!(matches!(answer.name_servers()[0].data(), RData::SOA(_)));

        let answer = udp(addr, "nope.example.test.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(answer.response_code(), ResponseCode::NXDomain);
        assert!(answer.authoritative());
        assert!(matches!(answer.name_servers()[0].data(), RData::SOA(_)));

        for name in ["example.org.", "test.", "."] {
            let answer = tcp(addr, name, RecordType::A).await.unwrap();
            assert_eq!(answer.response_code(), ResponseCode::Refused, "{name}");
            assert!(!answer.authoritative());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn edns_is_answered_with_edns() {
        let backend = backend().await;
        let mut query = build_query("www.example.test.", RecordType::A).unwrap();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        query.set_edns(edns);
        let addr = backend.addr();
        let answer = tokio::task::spawn_blocking(move || send_udp(addr, &query, TIMEOUT))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            answer.extensions().as_ref().map(Edns::max_payload),
            Some(EDNS_PAYLOAD)
        );
        assert_eq!(a_record(&answer), Some(WWW));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_input_gets_formerr_or_nothing() {
        let backend = backend().await;
        let addr = backend.addr();
        let short = Duration::from_millis(200);

        // Too short for a header, or a response: dropped.
        for bytes in [&b""[..], b"\x12", b"\x12\x34\x01\x00\x00\x01"] {
            assert!(raw_udp(addr, bytes, short).await.is_err(), "{bytes:?}");
        }
        let mut response = build_query("www.example.test.", RecordType::A)
            .unwrap()
            .to_vec()
            .unwrap();
        response[2] |= 0x80;
        assert!(raw_udp(addr, &response, short).await.is_err());

        // Header claiming a question that is not there, a pointer loop, a
        // label running past the end: FORMERR with the query's ID.
        let garbage: [&[u8]; 3] = [
            b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00",
            b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
            b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc",
        ];
        for bytes in garbage {
            let reply = raw_udp(addr, bytes, TIMEOUT).await.unwrap();
            let reply = Message::from_vec(&reply).unwrap();
            assert_eq!(reply.id(), 0xabcd);
            assert_eq!(reply.message_type(), MessageType::Response);
            assert_eq!(reply.response_code(), ResponseCode::FormErr, "{bytes:?}");
        }

        // No question, two questions: FORMERR. Another opcode: NOTIMP.
        let mut empty = build_query("www.example.test.", RecordType::A).unwrap();
        empty.take_queries();
        let reply = Message::from_vec(
            &raw_udp(addr, &empty.to_vec().unwrap(), TIMEOUT)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::FormErr);
        let mut two = build_query("www.example.test.", RecordType::A).unwrap();
        two.add_query(two.queries()[0].clone());
        let reply = Message::from_vec(
            &raw_udp(addr, &two.to_vec().unwrap(), TIMEOUT)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::FormErr);
        let mut notify = build_query("example.test.", RecordType::SOA).unwrap();
        notify.set_op_code(OpCode::Notify);
        let reply = Message::from_vec(
            &raw_udp(addr, &notify.to_vec().unwrap(), TIMEOUT)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NotImp);

        // Random bytes never kill it.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for len in 0..300_usize {
            let bytes: Vec<u8> = (0..len % 80)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed.to_be_bytes()[0]
                })
                .collect();
            let dropped = bytes.len() < 12 || bytes[2] & 0x80 != 0;
            let reply = backend.zone.respond(&bytes, Transport::Udp);
            assert_eq!(reply.is_none(), dropped, "{bytes:?}");
            if let Some(reply) = reply {
                assert!(reply.len() <= PLAIN_UDP_PAYLOAD);
                assert!(Message::from_vec(&reply).is_ok());
            }
        }
        assert!(udp(addr, "www.example.test.", RecordType::A).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tcp_connection_is_reused_and_survives_partial_writes() {
        let backend = backend().await;
        let mut stream = TcpStream::connect(backend.addr()).await.unwrap();
        for name in [
            "www.example.test.",
            "whoami.example.test.",
            "nope.example.test.",
        ] {
            let query = build_query(name, RecordType::A).unwrap().to_vec().unwrap();
            let mut framed = u16::try_from(query.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&query);
            // One byte at a time.
            for byte in framed {
                stream.write_all(&[byte]).await.unwrap();
                stream.flush().await.unwrap();
            }
            let mut prefix = [0u8; 2];
            stream.read_exact(&mut prefix).await.unwrap();
            let mut reply = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
            stream.read_exact(&mut reply).await.unwrap();
            let reply = Message::from_vec(&reply).unwrap();
            assert_eq!(reply.queries()[0].name().to_ascii(), name);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn long_name_is_split_and_huge_answers_truncated() {
        let name = "n".repeat(600);
        let backend = DemoBackend::start(&name, "127.0.0.1:0".parse().unwrap(), WWW)
            .await
            .unwrap();
        let answer = tcp(backend.addr(), "whoami.example.test.", RecordType::TXT)
            .await
            .unwrap();
        assert_eq!(txt_strings(&answer), [name]);
        let answer = udp(backend.addr(), "whoami.example.test.", RecordType::TXT)
            .await
            .unwrap();
        assert!(answer.truncated());
        assert!(answer.answers().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_refuses_and_restart_serves_the_same_port() {
        let mut backend = backend().await;
        let addr = backend.addr();
        assert!(backend.is_running());

        // An open connection is closed by stop.
        let mut open = TcpStream::connect(addr).await.unwrap();
        backend.stop().await.unwrap();
        assert!(!backend.is_running());
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(TIMEOUT, open.read(&mut byte))
            .await
            .unwrap();
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        let started = Instant::now();
        let err = udp(addr, "www.example.test.", RecordType::A)
            .await
            .unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(1));
        let err = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        backend.stop().await.unwrap();

        backend.restart().await.unwrap();
        assert!(backend.is_running());
        assert_eq!(backend.addr(), addr);
        assert_eq!(
            a_record(&udp(addr, "www.example.test.", RecordType::A).await.unwrap()),
            Some(WWW)
        );
        assert_eq!(
            a_record(&tcp(addr, "www.example.test.", RecordType::A).await.unwrap()),
            Some(WWW)
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_backends_answer_differently() {
        let a = backend().await;
        let b = DemoBackend::start(
            "beta",
            "127.0.0.1:0".parse().unwrap(),
            Ipv4Addr::new(10, 0, 0, 2),
        )
        .await
        .unwrap();
        let answer = udp(b.addr(), "www.example.test.", RecordType::A)
            .await
            .unwrap();
        assert_eq!(a_record(&answer), Some(Ipv4Addr::new(10, 0, 0, 2)));
        let answer = udp(a.addr(), "whoami.example.test.", RecordType::TXT)
            .await
            .unwrap();
        assert_eq!(txt_strings(&answer), ["alpha"]);
        let answer = udp(b.addr(), "whoami.example.test.", RecordType::TXT)
            .await
            .unwrap();
        assert_eq!(txt_strings(&answer), ["beta"]);
    }
}
