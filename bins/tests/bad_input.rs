//! Bad input against the running daemon: each gets its expected outcome and
//! the daemon keeps serving.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

struct Setup {
    _nsd: Nsd,
    d: Dnsha,
    listen: SocketAddr,
    admin: SocketAddr,
}

fn setup(extra_listener: &str) -> Setup {
    init_tracing();
    let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config_with(
        listen,
        admin,
        extra_listener,
        "timeout_ms = 500",
        &[("a", nsd.addr(), 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    if !extra_listener.contains("allow") {
        d.wait_udp(listen);
    }
    Setup {
        _nsd: nsd,
        d,
        listen,
        admin,
    }
}

fn still_serves(s: &mut Setup) {
    assert!(s.d.is_running(), "dnsha died:\n{}", s.d.log());
    let m = query_udp(s.listen, "www.example.test.", RecordType::A, T).expect("udp still answered");
    assert_eq!(a_record(&m), Some(Ipv4Addr::new(10, 0, 0, 1)));
    let m = query_tcp(s.listen, "www.example.test.", RecordType::A, T).expect("tcp still answered");
    assert_eq!(a_record(&m), Some(Ipv4Addr::new(10, 0, 0, 1)));
}

fn drops(s: &Setup, reason: &str) -> u64 {
    metric(
        s.admin,
        &format!("dnsha_dropped_total{{listener=\"udp\",protocol=\"udp\",reason=\"{reason}\"}}"),
    )
}

/// The same, over the UDP and the TCP listener.
fn drops_both(s: &Setup, reason: &str) -> u64 {
    drops(s, reason)
        + metric(
            s.admin,
            &format!(
                "dnsha_dropped_total{{listener=\"tcp\",protocol=\"tcp\",reason=\"{reason}\"}}"
            ),
        )
}

fn backend_queries(s: &Setup) -> u64 {
    status(s.admin)["pools"][0]["backends"][0]["queries"]
        .as_u64()
        .unwrap()
}

fn query_bytes(name: &str) -> Vec<u8> {
    build_query(name, RecordType::A).unwrap().to_vec().unwrap()
}

fn rcode(bytes: &[u8]) -> u8 {
    bytes[3] & 0x0f
}

#[test]
fn malformed_datagrams_are_dropped_or_formerr_and_never_forwarded() {
    let mut s = setup("");
    let before = backend_queries(&s);
    let short = Duration::from_millis(400);
    // Shorter than a header: dropped.
    assert!(exchange_udp(s.listen, &[0x12, 0x34, 0x01], short).is_err());
    // A response sent to the listener: dropped.
    let mut resp = query_bytes("www.example.test.");
    resp[2] |= 0x80;
    assert!(exchange_udp(s.listen, &resp, short).is_err());
    // QDCOUNT 0 and 2: FORMERR.
    for qd in [0u8, 2] {
        let mut q = query_bytes("www.example.test.");
        q[5] = qd;
        let a = exchange_udp(s.listen, &q, T).expect("formerr");
        assert_eq!(rcode(&a), 1, "qdcount {qd}");
        assert_eq!(&a[..2], &q[..2]);
    }
    // Compression-pointer loops: FORMERR.
    for name in [
        &[0xC0u8, 0x0C][..],
        &[0x01, 0x41, 0xC0, 0x0C],
        &[0xC0, 0x0E, 0xC0, 0x0C],
    ] {
        let mut q = vec![0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(name);
        q.extend_from_slice(&[0, 1, 0, 1]);
        let a = exchange_udp(s.listen, &q, T).expect("formerr");
        assert_eq!(rcode(&a), 1);
    }
    // Trailing garbage: FORMERR, nothing smuggled to the backend.
    let mut q = query_bytes("www.example.test.");
    q.extend_from_slice(b"smuggled-bytes");
    let a = exchange_udp(s.listen, &q, T).expect("formerr");
    assert_eq!(rcode(&a), 1);
    // Huge counts with a tiny body.
    let mut q = query_bytes("www.example.test.");
    q[6..12].copy_from_slice(&[0xff; 6]);
    let a = exchange_udp(s.listen, &q, T).expect("formerr");
    assert_eq!(rcode(&a), 1);
    assert_eq!(
        backend_queries(&s),
        before,
        "a malformed query reached the backend"
    );
    assert!(drops(&s, "short") >= 1);
    assert!(drops(&s, "response") >= 1);
    assert!(drops(&s, "malformed") >= 7);
    // Same over TCP.
    for bad in [
        &resp[..],
        &[
            0xAB, 0xCD, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 0x0C, 0, 1, 0, 1,
        ],
    ] {
        // QR=1 is dropped (no answer); the pointer loop gets FORMERR.
        if let Ok(a) = exchange_tcp(s.listen, bad, short) {
            assert_eq!(rcode(&a), 1);
        }
    }
    assert_eq!(backend_queries(&s), before);
    still_serves(&mut s);
    assert_eq!(outstanding_total(s.admin), 0);
}

#[test]
fn tcp_zero_length_and_stalled_messages_are_closed() {
    let mut s = setup("read_timeout_ms = 500");
    // Length prefix 0: closed.
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(&[0, 0]).unwrap();
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "connection not closed after a zero length");
    // Length prefix 65535 then silence: closed after the read timeout.
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(&[0xff, 0xff, 1, 2, 3]).unwrap();
    let t = Instant::now();
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // A client dribbling one byte per 100 ms cannot hold the slot forever.
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.set_write_timeout(Some(T)).unwrap();
    let q = query_bytes("www.example.test.");
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    let t = Instant::now();
    let mut closed = false;
    for b in framed.iter().take(10) {
        if c.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Either it was closed while dribbling, or the rest is refused shortly after.
    if !closed {
        std::thread::sleep(Duration::from_millis(600));
        c.set_read_timeout(Some(T)).unwrap();
        let n = c.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "slow client not closed");
    }
    assert!(t.elapsed() < Duration::from_secs(4));
    still_serves(&mut s);
}

#[test]
fn ten_thousand_pipelined_queries_on_one_connection() {
    let mut s = setup("");
    let peak_before = vm_hwm_kb(s.d.pid());
    let mut c = TcpStream::connect(s.listen).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = c.try_clone().unwrap();
    let n = 10_000u16;
    let writer = std::thread::spawn(move || {
        let mut out = Vec::new();
        for i in 0..n {
            let mut m = build_query("www.example.test.", RecordType::A).unwrap();
            m.set_id(i);
            let q = m.to_vec().unwrap();
            out.extend_from_slice(&(q.len() as u16).to_be_bytes());
            out.extend_from_slice(&q);
            if out.len() > 64 * 1024 {
                c.write_all(&out).unwrap();
                out.clear();
            }
        }
        c.write_all(&out).unwrap();
        c
    });
    let mut seen = vec![false; usize::from(n)];
    for _ in 0..n {
        let mut len = [0u8; 2];
        reader.read_exact(&mut len).expect("answer length");
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        reader.read_exact(&mut msg).unwrap();
        let m = Message::from_vec(&msg).unwrap();
        assert_eq!(a_record(&m), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(!seen[usize::from(m.id())], "duplicate answer {}", m.id());
        seen[usize::from(m.id())] = true;
    }
    assert!(seen.iter().all(|&x| x));
    drop(writer.join().unwrap());
    // Bounded memory (case 11): the client's queries wait in the socket
    // while the listener's per-client limit is full, not in dnsha; its
    // peak grows by a few MB at most.
    let grown_mb = vm_hwm_kb(s.d.pid()).saturating_sub(peak_before) / 1024;
    assert!(grown_mb <= 16, "peak RSS grew by {grown_mb} MB");
    still_serves(&mut s);
}

/// A backend that answers every query three times: first with a wrong ID,
/// then with a wrong question, then correctly; and once more from another
/// socket (wrong source address).
fn forging_backend() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let h = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut answer = q.clone();
            answer.set_message_type(hickory_proto::op::MessageType::Response);
            let mut forged_src = answer.clone();
            forged_src.add_answer(a_rr("6.6.6.6"));
            let _ = other.send_to(&forged_src.to_vec().unwrap(), from);
            let mut wrong_id = answer.clone();
            wrong_id.set_id(q.id().wrapping_add(1));
            wrong_id.add_answer(a_rr("6.6.6.7"));
            let _ = sock.send_to(&wrong_id.to_vec().unwrap(), from);
            let mut wrong_q = Message::new();
            wrong_q
                .set_id(q.id())
                .set_message_type(hickory_proto::op::MessageType::Response);
            wrong_q.add_query(
                build_query("evil.example.test.", RecordType::A)
                    .unwrap()
                    .queries()[0]
                    .clone(),
            );
            wrong_q.add_answer(a_rr("6.6.6.8"));
            let _ = sock.send_to(&wrong_q.to_vec().unwrap(), from);
            answer.add_answer(a_rr("10.9.9.9"));
            let _ = sock.send_to(&answer.to_vec().unwrap(), from);
        }
    });
    (addr, h)
}

fn a_rr(ip: &str) -> hickory_proto::rr::Record {
    use hickory_proto::rr::{rdata::A, Name, RData, Record};
    Record::from_rdata(
        Name::from_ascii("www.example.test.").unwrap(),
        60,
        RData::A(A(ip.parse().unwrap())),
    )
}

#[test]
fn forged_answers_are_dropped_and_the_real_one_delivered() {
    init_tracing();
    let (backend, _h) = forging_backend();
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config(
        listen,
        admin,
        "timeout_ms = 1000",
        &[("forger", backend, 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    for _ in 0..5 {
        let m = query_udp(listen, "www.example.test.", RecordType::A, T).expect("real answer");
        assert_eq!(a_record(&m), Some(Ipv4Addr::new(10, 9, 9, 9)), "{m:?}");
    }
    let unmatched = metric(
        admin,
        "dnsha_dropped_total{listener=\"udp\",protocol=\"udp\",reason=\"unmatched_answer\"}",
    );
    let wrong_q = metric(
        admin,
        "dnsha_dropped_total{listener=\"udp\",protocol=\"udp\",reason=\"wrong_question\"}",
    );
    assert!(unmatched >= 5, "unmatched {unmatched}");
    assert!(wrong_q >= 5, "wrong question {wrong_q}");
    assert_eq!(outstanding_total(admin), 0);
    assert!(d.is_running());
}

#[test]
fn acl_refuses_clients_outside_allow() {
    let mut s = setup("allow = [\"10.0.0.0/8\"]");
    // UDP from 127.0.0.1: dropped and counted.
    assert!(query_udp(
        s.listen,
        "www.example.test.",
        RecordType::A,
        Duration::from_millis(500)
    )
    .is_err());
    assert!(drops(&s, "acl") >= 1);
    // TCP: closed at accept, before any message is read.
    assert!(query_tcp(s.listen, "www.example.test.", RecordType::A, T).is_err());
    assert!(
        metric(
            s.admin,
            "dnsha_dropped_total{listener=\"tcp\",protocol=\"tcp\",reason=\"acl\"}"
        ) >= 1
    );
    assert!(s.d.is_running());
    assert_eq!(backend_queries(&s), 0);
    let _ = &mut s;
}

#[test]
fn per_client_connection_limit_refuses_exactly_one() {
    let mut s = setup("max_connections_per_client = 4");
    let conns: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(s.listen).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(s.listen).unwrap();
    extra.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 4];
    assert_eq!(
        extra.read(&mut buf).unwrap_or(0),
        0,
        "5th connection not refused"
    );
    assert_eq!(
        metric(s.admin, "dnsha_connections_refused_total{listener=\"tcp\""),
        1
    );
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    still_serves(&mut s);
}

/// A backend that answers only `legit.example.test` and ignores the rest.
fn selective_backend() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            if q.queries().first().map(|q| q.name().to_ascii())
                != Some("legit.example.test.".into())
            {
                continue;
            }
            let mut a = q.clone();
            a.set_message_type(hickory_proto::op::MessageType::Response);
            a.add_answer(a_rr("10.7.7.7"));
            let _ = sock.send_to(&a.to_vec().unwrap(), from);
        }
    });
    addr
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn flood_of_unanswered_queries_keeps_memory_bounded_and_real_queries_answered() {
    init_tracing();
    let backend = selective_backend();
    let (listen, admin) = (free_addr(), free_addr());
    let cfg = config_with(
        listen,
        admin,
        "workers = 1",
        "timeout_ms = 5000\nretries = 0\nmax_fails = 0\non_no_backend = \"drop\"",
        &[("sel", backend, 1)],
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_tcp(listen);
    let before = vm_hwm_kb(d.pid());
    // Many source sockets, never reading: the answers would not come anyway.
    let flooders: Vec<UdpSocket> = (0..32)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let q = query_bytes("flood.example.test.");
    let t = Instant::now();
    let mut sent = 0u64;
    // About 20 000 queries/s: more than the table holds within the 5 s
    // timeout (32 768), without saturating the proxy's CPU, so what is
    // tested is the table's behaviour, not the kernel's receive queue.
    while t.elapsed() < Duration::from_secs(3) {
        for s in &flooders {
            let _ = s.send_to(&q, listen);
            sent += 1;
        }
        std::thread::sleep(Duration::from_micros(1500));
        if sent.is_multiple_of(4096) {
            // legitimate queries in the middle of the flood are answered
            let m = query_udp(listen, "legit.example.test.", RecordType::A, T)
                .expect("legit query answered during the flood");
            assert_eq!(a_record(&m), Some(Ipv4Addr::new(10, 7, 7, 7)));
        }
    }
    let after = vm_hwm_kb(d.pid());
    let overload = metric(
        admin,
        "dnsha_dropped_total{listener=\"udp\",protocol=\"udp\",reason=\"overload\"}",
    );
    assert!(d.is_running());
    eprintln!("flood: {sent} queries in 3 s; peak RSS {before} kB -> {after} kB; overload drops {overload}");
    assert!(sent > 40_000, "flood too weak to fill the table: {sent}");
    assert!(overload > 0, "the table never filled");
    // 32k pending queries per worker at most: well under 100 MB more.
    assert!(
        after < before + 100_000,
        "peak RSS grew from {before} kB to {after} kB"
    );
}

/// Cases 2 to 4 of the conventions' bad-input list through the daemon:
/// TC=1 in a query is dropped and counted; a label over 63 bytes or a name
/// over 255 gets FORMERR (the header is readable: the client learns its
/// query was bad, as from BIND or NSD) and is counted as malformed; a
/// query whose additional record holds a chain of hundreds of compression
/// pointers gets FORMERR, without recursion in the parser. None reaches
/// the backend.
#[test]
fn truncated_queries_long_names_and_pointer_chains_never_reach_the_backend() {
    let mut s = setup("");
    let before = backend_queries(&s);
    let short = Duration::from_millis(400);
    let truncated_before = drops_both(&s, "truncated");
    let malformed_before = drops_both(&s, "malformed");
    // TC=1: no answer, counted.
    let mut tc = query_bytes("www.example.test.");
    tc[2] |= 0x02;
    assert!(exchange_udp(s.listen, &tc, short).is_err());
    assert!(exchange_tcp(s.listen, &tc, short).is_err());
    assert_eq!(drops_both(&s, "truncated"), truncated_before + 2);
    // A label of 64 bytes, and a name of 256 (four labels of 63 and one of
    // 3, with their length bytes and the root: 4 × 64 + 4 + 1).
    let header = [0x12u8, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    let mut long_label = header.to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut long_name = header.to_vec();
    for _ in 0..4 {
        long_name.push(63);
        long_name.extend_from_slice(&[b'b'; 63]);
    }
    long_name.extend_from_slice(&[3, b'c', b'c', b'c', 0, 0, 1, 0, 1]);
    // A valid question, a record whose opaque data holds the root and 400
    // pointers, each to the one before, and a record whose owner name
    // points at the last: a chain of 400 hops.
    let mut chain = query_bytes("www.example.test.");
    chain[11] = 2;
    chain.extend_from_slice(&[0, 0xff, 0x00, 0, 1, 0, 0, 0, 0]);
    chain.extend_from_slice(&u16::try_from(1 + 2 * 400).unwrap().to_be_bytes());
    let mut last = chain.len();
    chain.push(0);
    for _ in 0..400 {
        let at = chain.len();
        chain.extend_from_slice(&(0xC000 | u16::try_from(last).unwrap()).to_be_bytes());
        last = at;
    }
    chain.extend_from_slice(&(0xC000 | u16::try_from(last).unwrap()).to_be_bytes());
    chain.extend_from_slice(&[0xff, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for (what, bad) in [
        ("long label", &long_label),
        ("long name", &long_name),
        ("pointer chain", &chain),
    ] {
        let a = exchange_udp(s.listen, bad, T).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(rcode(&a), 1, "{what}");
        assert_eq!(&a[..2], &bad[..2], "{what}");
        let a = exchange_tcp(s.listen, bad, T).unwrap_or_else(|e| panic!("{what} over TCP: {e}"));
        assert_eq!(rcode(&a), 1, "{what} over TCP");
    }
    assert_eq!(drops_both(&s, "malformed"), malformed_before + 6);
    assert_eq!(
        backend_queries(&s),
        before,
        "a bad query reached the backend"
    );
    still_serves(&mut s);
}
