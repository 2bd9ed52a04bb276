//! DNS over QUIC (RFC 9250) through NSD backends, asked by a client that
//! is not dnsha's own: hickory-proto's DoQ client; quinn directly for
//! what a correct client never sends (a wrong ALPN, a non-zero message ID,
//! a stream reset in the middle of a query).

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, Query};
use hickory_proto::quic::QuicClientStream;
use hickory_proto::rr::Name;
use hickory_proto::xfer::{DnsRequest, DnsRequestOptions, DnsRequestSender, FirstAnswer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use test_support::TestCa;

fn client_tls(ca: &std::path::Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    c
}

fn query(id: u16) -> Message {
    let mut m = Message::new();
    m.set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(
            Name::from_ascii("www.example.test.").unwrap(),
            RecordType::A,
        ));
    m
}

/// A quinn client endpoint trusting `ca`, offering `alpn`.
fn quinn_client(ca: &std::path::Path, alpn: &[&[u8]]) -> quinn::Endpoint {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls(ca, alpn)).unwrap();
    let mut e = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    e.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    e
}

struct Setup {
    _nsd: Nsd,
    _dir: tempfile::TempDir,
    d: Dnsha,
    doq: SocketAddr,
    admin: SocketAddr,
    ca: std::path::PathBuf,
}

fn setup() -> Setup {
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
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
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
