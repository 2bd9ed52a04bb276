//! DNS over QUIC (RFC 9250) through NSD backends, asked by a client that
//! is not dnsha's own: hickory-proto's DoQ client; quinn directly for
//! what a correct client never sends (a wrong ALPN, a non-zero message ID,
//! a stream reset in the middle of a query).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::quic::*;
use common::*;
use hickory_proto::op::Message;
use hickory_proto::quic::QuicClientStream;
use hickory_proto::xfer::{DnsRequest, DnsRequestOptions, DnsRequestSender, FirstAnswer};
use test_support::TestCa;

struct Setup {
    _nsd: Nsd,
    _dir: tempfile::TempDir,
    d: Dnsha,
    doq: SocketAddr,
    admin: SocketAddr,
    ca: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn setup() -> Setup {
    setup_with("")
}

/// `extra` goes into the DoQ listener's table.
fn setup_with(extra: &str) -> Setup {
    init_tracing();
    let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let dir = tempfile::tempdir().unwrap();
    let files = TestCa::new().write(dir.path(), "doq", &["dns.test"]);
    let (udp, doq, admin) = (free_addr(), free_addr(), free_addr());
    let cfg = format!(
        r#"
[admin]
listen = "{admin}"

[[listener]]
name = "udp"
protocol = "udp"
listen = "{udp}"
pool = "p"

[[listener]]
name = "doq"
protocol = "doq"
listen = "{doq}"
pool = "p"
tls_cert = "{cert}"
tls_key = "{key}"
{extra}

[[pool]]
name = "p"

[[pool.backend]]
name = "nsd"
address = "{backend}"
"#,
        cert = files.cert.display(),
        key = files.key.display(),
        backend = nsd.addr(),
    );
    let mut d = Dnsha::start(bin(), &cfg);
    d.wait_udp(udp);
    Setup {
        _nsd: nsd,
        _dir: dir,
        d,
        doq,
        admin,
        ca: files.ca,
        cert: files.cert,
        key: files.key,
    }
}

#[test]
fn hickorys_doq_client_gets_answers_from_the_backends() {
    let s = setup();
    let rt = runtime();
    let answers = rt.block_on(async {
        let mut b = QuicClientStream::builder();
        b.crypto_config(client_tls(&s.ca, &[]));
        let client = b.build(s.doq, "dns.test".into()).await.unwrap();
        // Twenty queries at once on one connection, a stream each.
        let asks = (0..20).map(|i| {
            let mut c = client.clone();
            async move {
                let req = DnsRequest::new(query(i), DnsRequestOptions::default());
                c.send_message(req).first_answer().await
            }
        });
        futures_util::future::join_all(asks).await
    });
    for a in answers {
        let a = a.unwrap();
        assert_eq!(a_record(&a), Some(Ipv4Addr::new(10, 0, 0, 1)), "{a:?}");
    }
    let m = http_get(s.admin, "/metrics");
    assert!(
        m.contains("dnsha_queries_total{listener=\"doq\",protocol=\"doq\"} 20"),
        "{m}"
    );
    assert!(
        m.contains("dnsha_connections_total{listener=\"doq\",protocol=\"doq\"} 1"),
        "{m}"
    );
    assert!(s.d.log().contains("protocol=\"doq\""), "{}", s.d.log());
    // quinn-udp's view of the sockets: this kernel (Linux >= 4.18) has UDP
    // segmentation offload, so sends are batched.
    let log = s.d.log();
    let gso = log
        .lines()
        .find(|l| l.contains("quic sockets"))
        .and_then(|l| l.split("gso_segments=").nth(1))
        .and_then(|v| {
            v.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse::<u32>()
                .ok()
        });
    assert!(gso.is_some_and(|n| n > 1), "gso {gso:?} in {log}");
}

#[test]
fn a_wrong_alpn_a_nonzero_id_and_a_reset_stream_are_refused_alone() {
    let s = setup();
    let rt = runtime();
    rt.block_on(async {
        // ALPN h3: no common protocol, no connection.
        let e = quinn_client(&s.ca, &[b"h3"]);
        let r = e.connect(s.doq, "dns.test").unwrap().await;
        assert!(r.is_err(), "a connection without ALPN doq");

        let e = quinn_client(&s.ca, &[b"doq"]);
        let conn = e.connect(s.doq, "dns.test").unwrap().await.unwrap();
        // A stream reset in the middle of its query: that stream only.
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0, 40, 0, 0, 1]).await.unwrap();
        send.reset(quinn::VarInt::from_u32(0x3)).unwrap();
        // The connection still answers.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let q = query(0).to_vec().unwrap();
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        send.write_all(&framed).await.unwrap();
        send.finish().unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(4096))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&answer[2..4], &[0, 0], "answers carry ID 0");
        let msg = Message::from_vec(&answer[2..]).unwrap();
        assert_eq!(a_record(&msg), Some(Ipv4Addr::new(10, 0, 0, 1)));
        // A non-zero ID: the connection is closed with DOQ_PROTOCOL_ERROR.
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let q = query(7).to_vec().unwrap();
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        send.write_all(&framed).await.unwrap();
        send.finish().unwrap();
        let why = tokio::time::timeout(Duration::from_secs(5), conn.closed())
            .await
            .unwrap();
        match why {
            quinn::ConnectionError::ApplicationClosed(c) => {
                assert_eq!(c.error_code, quinn::VarInt::from_u32(0x2), "{c:?}");
            }
            other => panic!("closed with {other:?}"),
        }
    });
    let m = http_get(s.admin, "/metrics");
    assert!(
        m.contains("dnsha_dropped_total{listener=\"doq\",protocol=\"doq\",reason=\"malformed\"} 2"),
        "{m}"
    );
}

/// `n` QUIC Initial packets, each opening a new connection (its own
/// connection IDs and keys), as a real client's first datagram: made by
/// quinn-proto's client, sans-IO, never sent by it.
fn initials(ca: &std::path::Path, to: SocketAddr, n: usize) -> Vec<Vec<u8>> {
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(ca, &[b"doq"])).unwrap();
    let config = quinn_proto::ClientConfig::new(Arc::new(crypto));
    let mut ep = quinn_proto::Endpoint::new(
        Arc::new(quinn_proto::EndpointConfig::default()),
        None,
        false,
        None,
    );
    let now = std::time::Instant::now();
    (0..n)
        .map(|_| {
            let (_, mut conn) = ep.connect(now, config.clone(), to, "dns.test").unwrap();
            let mut buf = Vec::new();
            let t = conn.poll_transmit(now, 1, &mut buf).unwrap();
            buf.truncate(t.size);
            buf
        })
        .collect()
}

#[test]
fn a_flood_of_initials_from_spoofed_addresses_gets_retries_and_bounded_memory() {
    let s = setup_with("workers = 1");
    let packets = initials(&s.ca, s.doq, 3000);
    let before = rss_kib(s.d.pid());
    // Each Initial from a new address of 127/8 that never answers (the
    // spoofed victims of a reflection attempt, or a handshake flood).
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for (i, p) in packets.iter().enumerate() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let src = Ipv4Addr::new(
            127,
            1 + (rng as u8 % 250),
            (rng >> 8) as u8,
            (rng >> 16) as u8,
        );
        let sock = std::net::UdpSocket::bind((src, 0)).unwrap();
        sock.send_to(p, s.doq).unwrap();
        // Paced (60 kB per 10 ms) so that the socket's receive buffer, not
        // dnsha, is never what drops them.
        if i % 50 == 49 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let retries = metric(s.admin, "dnsha_quic_retries_total{listener=\"doq\"");
    let started = metric(s.admin, "dnsha_connections_total{listener=\"doq\"");
    let grown = rss_kib(s.d.pid()).saturating_sub(before);
    eprintln!("3000 initials: {retries} retries, {started} handshakes started, rss +{grown} KiB");
    // Handshakes began only up to the bound; every other address was sent
    // a Retry and holds nothing.
    assert!(
        started <= dnsha_core::config::QUIC_RETRY_HANDSHAKES as u64,
        "{started} handshakes started"
    );
    assert!(retries >= 2500, "only {retries} retries");
    assert!(grown < 32 * 1024, "rss grew by {grown} KiB");
    // A real client still gets in (through a Retry: the stalled handshakes
    // are still under way) and is answered.
    let rt = runtime();
    let answer = rt.block_on(async {
        let mut b = QuicClientStream::builder();
        b.crypto_config(client_tls(&s.ca, &[]));
        let mut client = b.build(s.doq, "dns.test".into()).await.unwrap();
        let req = DnsRequest::new(query(1), DnsRequestOptions::default());
        client.send_message(req).first_answer().await
    });
    assert_eq!(a_record(&answer.unwrap()), Some(Ipv4Addr::new(10, 0, 0, 1)));
    let after = metric(s.admin, "dnsha_quic_retries_total{listener=\"doq\"");
    assert_eq!(after, retries + 1, "the real client was not retried");
}

#[test]
fn quic_retry_always_validates_every_client_before_its_handshake() {
    let s = setup_with("quic_retry = \"always\"");
    let rt = runtime();
    rt.block_on(async {
        for i in 0..3 {
            let e = quinn_client(&s.ca, &[b"doq"]);
            let conn = e.connect(s.doq, "dns.test").unwrap().await.unwrap();
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let q = query(0).to_vec().unwrap();
            let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            send.write_all(&framed).await.unwrap();
            send.finish().unwrap();
            let answer = recv.read_to_end(4096).await.unwrap();
            let msg = Message::from_vec(&answer[2..]).unwrap();
            assert_eq!(
                a_record(&msg),
                Some(Ipv4Addr::new(10, 0, 0, 1)),
                "client {i}"
            );
        }
    });
    assert_eq!(
        metric(s.admin, "dnsha_quic_retries_total{listener=\"doq\""),
        3
    );
}

#[test]
fn a_reloaded_certificate_keeps_open_connections_and_serves_new_ones() {
    use nix::sys::signal::Signal;
    let s = setup();
    let rt = runtime();
    let ask = |conn: quinn::Connection| async move {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let q = query(0).to_vec().unwrap();
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        send.write_all(&framed).await.unwrap();
        send.finish().unwrap();
        let answer = recv.read_to_end(4096).await.unwrap();
        a_record(&Message::from_vec(&answer[2..]).unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    let new = TestCa::new().write(dir.path(), "new", &["dns.test"]);
    rt.block_on(async {
        let old_client = quinn_client(&s.ca, &[b"doq"]);
        let conn = old_client
            .connect(s.doq, "dns.test")
            .unwrap()
            .await
            .unwrap();
        assert!(ask(conn.clone()).await.is_some());
        // A certificate from another CA, same files, same configuration.
        std::fs::copy(&new.cert, &s.cert).unwrap();
        std::fs::copy(&new.key, &s.key).unwrap();
        s.d.signal(Signal::SIGHUP).unwrap();
        assert!(
            s.d.wait_log("configuration reloaded", Duration::from_secs(5)),
            "{}",
            s.d.log()
        );
        // The open connection keeps working.
        assert!(ask(conn.clone()).await.is_some(), "the open connection");
        // New handshakes present the new certificate.
        let fresh_old = quinn_client(&s.ca, &[b"doq"]);
        let r = fresh_old.connect(s.doq, "dns.test").unwrap().await;
        assert!(r.is_err(), "the old CA still verifies a new handshake");
        let fresh_new = quinn_client(&new.ca, &[b"doq"]);
        let conn2 = fresh_new.connect(s.doq, "dns.test").unwrap().await.unwrap();
        assert!(ask(conn2).await.is_some());
        assert!(ask(conn).await.is_some(), "the first connection, still");
    });
}

#[test]
fn connections_over_the_per_client_limit_are_refused_before_the_handshake() {
    let s = setup_with("max_connections_per_client = 2");
    let rt = runtime();
    rt.block_on(async {
        let e = quinn_client(&s.ca, &[b"doq"]);
        let first = e.connect(s.doq, "dns.test").unwrap().await.unwrap();
        let second = e.connect(s.doq, "dns.test").unwrap().await.unwrap();
        // A third from the same address: CONNECTION_REFUSED, no handshake.
        let third = e.connect(s.doq, "dns.test").unwrap().await;
        match third {
            Err(quinn::ConnectionError::ConnectionClosed(c)) => assert_eq!(
                c.error_code,
                quinn::TransportErrorCode::CONNECTION_REFUSED,
                "{c:?}"
            ),
            other => panic!("a third connection: {other:?}"),
        }
        // One closes: a new one is admitted.
        first.close(quinn::VarInt::from_u32(0), b"");
        drop(first);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match e.connect(s.doq, "dns.test").unwrap().await {
                Ok(_) => break,
                Err(err) => assert!(
                    std::time::Instant::now() < deadline,
                    "no slot freed: {err:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(second);
    });
    assert!(metric(s.admin, "dnsha_connections_refused_total{listener=\"doq\"") >= 1);
}
