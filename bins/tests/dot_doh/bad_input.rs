//! Bad input on the DoT and DoH listeners (CONVENTIONS items 13–15): each
//! case is bounded, counted, and the listener keeps answering others.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{self, frame, hpack, preface, read_frame};
use super::common::*;
use super::{kdig, stack, HOST};

/// Reads until EOF or `limit`; true when the peer closed.
fn closed_within(s: &mut impl Read, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// Waits (up to 2 s) until a metric reads `want`; false if it does not, or
/// goes past it.
fn wait_metric(admin: SocketAddr, name: &str, want: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let got = metric(admin, name);
        if got == want {
            return true;
        }
        if got > want || Instant::now() > deadline {
            eprintln!("{name}: {got}, expected {want}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

/// The first bytes of a real ClientHello.
fn client_hello() -> Vec<u8> {
    let cfg = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth(),
    );
    let mut conn =
        rustls::ClientConnection::new(cfg, HOST.to_string().try_into().unwrap()).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

fn kdig_from(addr: SocketAddr, ca: &std::path::Path, from: &str, mode: &str) -> String {
    kdig(addr, ca, &[mode, "-b", from])
}

#[test]
fn garbage_and_stalled_handshakes_are_bounded() {
    let s = stack("");
    let ca = &s.pki.files.ca;
    // Garbage instead of a ClientHello: closed at once, counted. (The
    // readiness probe's bare connection counts too: hence the baseline.)
    let failures = || {
        metric(
            s.admin,
            "dnsha_tls_handshake_failures_total{listener=\"dot\"",
        )
    };
    let before = failures();
    let mut g = tcp(s.listen);
    g.write_all(b"GET / HTTP/1.0\r\n\r\n\x16\x03\x01\xff\xff garbage")
        .unwrap();
    assert!(closed_within(&mut g, Duration::from_secs(2)));
    // (The server counts just after it closes.)
    assert!(wait_metric(
        s.admin,
        "dnsha_tls_handshake_failures_total{listener=\"dot\"",
        before + 1
    ));
    // Four stalled handshakes from 127.0.0.1 (the per-client limit): one
    // silent, three stopping in the middle of their ClientHello.
    let hello = client_hello();
    let mut stalled = vec![tcp(s.listen)];
    for _ in 0..3 {
        let mut c = tcp(s.listen);
        c.write_all(&hello[..hello.len() / 2]).unwrap();
        stalled.push(c);
    }
    std::thread::sleep(Duration::from_millis(100));
    // A fifth handshake from the same address is refused at once: closed
    // and counted as refused (not cut at the 1 s handshake timeout, which
    // a loaded machine could make look "at once").
    let refused = "dnsha_connections_refused_total{listener=\"dot\"";
    let refused_before = metric(s.admin, refused);
    let mut fifth = tcp(s.listen);
    assert!(closed_within(&mut fifth, Duration::from_secs(2)));
    assert!(wait_metric(s.admin, refused, refused_before + 1));
    // Another client is served meanwhile, over DoT and DoH.
    let out = kdig_from(s.listen, ca, "127.0.0.2", "+tls");
    assert!(out.contains("10.0.0."), "{out}");
    let out = kdig_from(s.doh, ca, "127.0.0.2", "+https");
    assert!(out.contains("10.0.0."), "{out}");
    // The stalled ones are cut at the handshake timeout (1 s).
    let start = Instant::now();
    for c in &mut stalled {
        assert!(closed_within(c, Duration::from_secs(3)));
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(wait_metric(
        s.admin,
        "dnsha_tls_handshake_timeouts_total{listener=\"dot\"",
        4
    ));
    assert!(metric(s.admin, "dnsha_connections_refused_total{listener=\"dot\"") >= 1);
    // And 127.0.0.1 is welcome again.
    let out = kdig(s.listen, ca, &["+tls"]);
    assert!(out.contains("10.0.0."), "{out}");
}

/// An HTTP/2 connection over TLS, past the SETTINGS exchange.
fn h2(addr: SocketAddr, ca: &std::path::Path) -> client::Tls {
    let cfg = client::client_config(ca, &[b"h2"]);
    let mut c = client::connect(addr, &cfg, HOST).unwrap();
    assert_eq!(c.conn.alpn_protocol(), Some(&b"h2"[..]));
    c.write_all(&preface()).unwrap();
    // Wait for the server's SETTINGS and acknowledge them.
    loop {
        let (ty, flags, _, _) = read_frame(&mut c).expect("server settings");
        if ty == client::SETTINGS && flags & 1 == 0 {
            c.write_all(&frame(client::SETTINGS, 1, 0, &[])).unwrap();
            break;
        }
    }
    c.flush().unwrap();
    c
}

fn request_headers(method: &str, path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut h = vec![
        (":method", method),
        (":scheme", "https"),
        (":path", path),
        (":authority", HOST),
    ];
    h.extend_from_slice(extra);
    hpack(&h)
}

fn get_path() -> String {
    let q = build_query("www.example.test", RecordType::A)
        .unwrap()
        .to_vec()
        .unwrap();
    format!(
        "/dns-query?dns={}",
        dnsha_proxy::frontend::doh::encode_get_param(&q)
    )
}

#[test]
fn a_thousand_concurrent_streams_are_refused_beyond_max_streams() {
    let s = stack("max_streams = 100");
    let mut c = h2(s.doh, &s.pki.files.ca);
    // 1000 POSTs whose bodies never come: each would hold a stream.
    let block = request_headers(
        "POST",
        "/dns-query",
        &[
            ("content-type", "application/dns-message"),
            ("content-length", "33"),
        ],
    );
    let mut burst = Vec::new();
    for i in 0..1000u32 {
        burst.extend(frame(
            client::HEADERS,
            client::END_HEADERS,
            2 * i + 1,
            &block,
        ));
    }
    c.write_all(&burst).unwrap();
    c.flush().unwrap();
    // Another client is served while they are held.
    let out = kdig_from(s.doh, &s.pki.files.ca, "127.0.0.2", "+https");
    assert!(out.contains("status: 200"), "{out}");
    let (mut refused, mut responses, mut goaway) = (0, 0, None);
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline && refused + responses < 1000 && goaway.is_none() {
        let Some((ty, _, stream, payload)) = read_frame(&mut c) else {
            break;
        };
        match ty {
            client::RST_STREAM if payload == 7u32.to_be_bytes() => refused += 1,
            client::HEADERS if stream % 2 == 1 => responses += 1,
            client::GOAWAY => {
                goaway = Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
            _ => {}
        }
    }
    // At most max_streams were ever accepted (each answered 408 after the
    // read timeout); every other one was refused (or cut by a GOAWAY).
    assert!(responses <= 100, "responses {responses}, refused {refused}");
    let cut = goaway.map_or(0, |last| 1000 - (last as usize).div_ceil(2));
    assert!(refused + cut >= 900, "refused {refused}, goaway {goaway:?}");
    assert!(
        metric(
            s.admin,
            "dnsha_http_responses_total{listener=\"doh\",protocol=\"doh\",status=\"408\"}"
        ) <= 100
    );
    let out = kdig(s.doh, &s.pki.files.ca, &["+https"]);
    assert!(out.contains("status: 200"), "{out}");
}

#[test]
fn open_and_reset_churn_gets_goaway() {
    let s = stack("");
    let mut c = h2(s.doh, &s.pki.files.ca);
    let block = request_headers("GET", &get_path(), &[]);
    let mut sent = 0u32;
    let mut write_failed = false;
    for batch in 0..50u32 {
        let mut buf = Vec::new();
        for i in 0..100u32 {
            let id = 2 * (batch * 100 + i) + 1;
            buf.extend(frame(
                client::HEADERS,
                client::END_HEADERS | client::END_STREAM,
                id,
                &block,
            ));
            buf.extend(frame(client::RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        if c.write_all(&buf).and_then(|()| c.flush()).is_err() {
            write_failed = true;
            break;
        }
        sent += 100;
    }
    // The server says GOAWAY (or closes) instead of serving an endless churn.
    let mut goaway = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match read_frame(&mut c) {
            Some((client::GOAWAY, ..)) => {
                goaway = true;
                break;
            }
            Some(_) => {}
            None => break,
        }
    }
    assert!(goaway || write_failed, "sent {sent} without a GOAWAY");
    let forwarded = metric(s.admin, "dnsha_queries_total{listener=\"doh\"");
    assert!(
        forwarded < 2000,
        "{forwarded} of {sent} churned requests were forwarded"
    );
    let counted = metric(s.admin, "dnsha_http_cancelled_total{listener=\"doh\"")
        + metric(s.admin, "dnsha_http_abusive_closed_total{listener=\"doh\"")
        + metric(s.admin, "dnsha_http_protocol_errors_total{listener=\"doh\"");
    assert!(counted > 0);
    let out = kdig(s.doh, &s.pki.files.ca, &["+https"]);
    assert!(out.contains("status: 200"), "{out}");
}

#[test]
fn header_floods_are_cut() {
    let s = stack("max_header_bytes = 8192");
    let ca = &s.pki.files.ca;
    // HTTP/1.1: 2000 header lines (about 200 KB).
    let cfg = client::client_config(ca, &[b"http/1.1"]);
    let mut c = client::connect(s.doh, &cfg, HOST).unwrap();
    let mut req = format!("GET {} HTTP/1.1\r\nHost: {HOST}\r\n", get_path()).into_bytes();
    for i in 0..2000 {
        req.extend(format!("X-Flood-{i}: {}\r\n", "v".repeat(90)).as_bytes());
    }
    req.extend(b"\r\n");
    // Written in pieces, looking for the answer in between: the server
    // answers and closes long before the end, and a client still writing
    // into a closed connection would lose the answer to the reset.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    c.sock
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    for piece in req.chunks(4096) {
        if c.write_all(piece).and_then(|()| c.flush()).is_err() {
            break;
        }
        match c.read(&mut buf) {
            Ok(n) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            _ => {}
        }
    }
    c.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    while let Ok(n) = c.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // HTTP/2: a header block continued over and over.
    let mut c = h2(s.doh, ca);
    let first = request_headers("GET", &get_path(), &[]);
    let _ = c.write_all(&frame(client::HEADERS, 0, 1, &first));
    let chunk = hpack(&[("x-flood", &"v".repeat(4000))]);
    let mut cut = false;
    for _ in 0..1000 {
        if c.write_all(&frame(client::CONTINUATION, 0, 1, &chunk))
            .and_then(|()| c.flush())
            .is_err()
        {
            cut = true;
            break;
        }
    }
    if !cut {
        // Not cut while writing: the answer must be a refusal.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match read_frame(&mut c) {
                Some((client::GOAWAY | client::RST_STREAM, ..)) | None => {
                    cut = true;
                    break;
                }
                Some((client::HEADERS, ..)) => {
                    cut = true;
                    break;
                }
                Some(_) => {}
            }
        }
    }
    assert!(cut, "a 4 MB header block was accepted");
    assert!(metric(s.admin, "dnsha_http_protocol_errors_total{listener=\"doh\"") >= 1);
    assert_eq!(
        metric(
            s.admin,
            "dnsha_http_responses_total{listener=\"doh\",protocol=\"doh\",status=\"200\"}"
        ),
        0
    );
    let out = kdig(s.doh, ca, &["+https"]);
    assert!(out.contains("status: 200"), "{out}");
}

/// A TCP connection to `to` from `from` (any 127/8 address on loopback).
fn tcp_from(from: std::net::Ipv4Addr, to: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    s
}

#[test]
fn handshakes_over_the_listeners_rate_are_closed_at_accept() {
    // 5 handshakes a second on the DoH listener, for every client together.
    let s = stack("max_handshakes_per_second = 5");
    let name = "dnsha_tls_handshake_rate_limited_total{listener=\"doh\"";
    let before = metric(s.admin, name);
    // 20 connections from 20 addresses at once (no per-client limit bites):
    // at most the bucket's 5 reach a handshake, the rest are closed at
    // accept, without a byte of TLS.
    let hello = client_hello();
    let mut conns: Vec<TcpStream> = (0..20u8)
        .map(|i| {
            let mut c = tcp_from(std::net::Ipv4Addr::new(127, 0, 1, 10 + i), s.doh);
            let _ = c.write_all(&hello);
            c
        })
        .collect();
    let mut closed_without_answer = 0;
    for c in &mut conns {
        if closed_within(c, Duration::from_millis(300)) {
            closed_without_answer += 1;
        }
    }
    let limited = metric(s.admin, name) - before;
    assert!(limited >= 14, "only {limited} closed over the rate");
    assert!(closed_without_answer >= 14, "{closed_without_answer}");
    drop(conns);
    // The bucket refills: a client a second later is served.
    std::thread::sleep(Duration::from_millis(1200));
    let out = kdig(s.doh, &s.pki.files.ca, &["+https", "-b", "127.0.0.2"]);
    assert!(out.contains("10.0.0."), "{out}");
    // DoT has its own bucket (the default, 5000 a second): untouched.
    let out = kdig(s.listen, &s.pki.files.ca, &["+tls"]);
    assert!(out.contains("10.0.0."), "{out}");
}
