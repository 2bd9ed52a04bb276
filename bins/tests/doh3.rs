//! DNS over HTTPS over HTTP/3 through NSD backends, asked by clients that
//! are not dnsha's own: hickory-proto's DoH3 client, and the `h3` crate's
//! client for the requests a DNS client never sends (wrong path, method,
//! content type, bad base64) and the stream limit; `curl` over HTTP/2 for
//! the `alt-svc` header that points clients to HTTP/3.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Buf, Bytes};
use common::quic::*;
use common::*;
use hickory_proto::h3::H3ClientStream;
use hickory_proto::op::Message;
use hickory_proto::xfer::{DnsRequest, DnsRequestOptions, DnsRequestSender, FirstAnswer};
use test_support::TestCa;

struct Setup {
    _nsd: Nsd,
    _dir: tempfile::TempDir,
    d: Dnsha,
    doh: SocketAddr,
    doh3: SocketAddr,
    admin: SocketAddr,
    ca: std::path::PathBuf,
}

fn setup(extra: &str) -> Setup {
    init_tracing();
    let nsd = Nsd::start(Ipv4Addr::new(10, 0, 0, 1));
    let dir = tempfile::tempdir().unwrap();
    let files = TestCa::new().write(dir.path(), "doh3", &["dns.test", "127.0.0.1"]);
    let (udp, doh, doh3, admin) = (free_addr(), free_addr(), free_addr(), free_addr());
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
name = "doh"
protocol = "doh"
listen = "{doh}"
pool = "p"
tls_cert = "{cert}"
tls_key = "{key}"

[[listener]]
name = "doh3"
protocol = "doh3"
listen = "{doh3}"
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
        doh,
        doh3,
        admin,
        ca: files.ca,
    }
}

/// What an HTTP/3 request got: status, headers, body.
struct Got {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

/// Sends `req` (with `body`) over a new HTTP/3 connection from `ep`.
async fn h3_request(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    req: http::Request<()>,
    body: Option<Vec<u8>>,
) -> Got {
    let conn = ep.connect(addr, "dns.test").unwrap().await.unwrap();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let mut stream = send.send_request(req).await.unwrap();
    if let Some(b) = body {
        stream.send_data(Bytes::from(b)).await.unwrap();
    }
    stream.finish().await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), stream.recv_response())
        .await
        .unwrap()
        .unwrap();
    let mut out = Vec::new();
    while let Some(mut c) = stream.recv_data().await.unwrap() {
        let n = c.remaining();
        out.extend_from_slice(&c.copy_to_bytes(n));
    }
    drop(send);
    drive.abort();
    Got {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: out,
    }
}

fn uri(addr: SocketAddr, target: &str) -> String {
    format!("https://dns.test:{}{target}", addr.port())
}

#[test]
fn hickorys_doh3_client_gets_answers_from_the_backends() {
    let s = setup("");
    let rt = runtime();
    let answers = rt.block_on(async {
        let mut b = H3ClientStream::builder();
        b.crypto_config(client_tls(&s.ca, &[]));
        let client = b
            .build(s.doh3, "dns.test".into(), "/dns-query".into())
            .await
            .unwrap();
        // Twenty queries at once on one connection, a request stream each.
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
        m.contains("dnsha_queries_total{listener=\"doh3\",protocol=\"doh3\"} 20"),
        "{m}"
    );
    assert!(
        m.contains("dnsha_connections_total{listener=\"doh3\",protocol=\"doh3\"} 1"),
        "{m}"
    );
    assert!(
        m.contains(
            "dnsha_http_responses_total{listener=\"doh3\",protocol=\"doh3\",status=\"200\"} 20"
        ),
        "{m}"
    );
    assert!(s.d.log().contains("protocol=\"doh3\""), "{}", s.d.log());
}

#[test]
fn requests_a_dns_client_never_sends_get_the_http2_listeners_statuses() {
    let s = setup("");
    let rt = runtime();
    let q = query(0).to_vec().unwrap();
    let get = format!(
        "/dns-query?dns={}",
        dnsha_proxy::frontend::doh::encode_get_param(&q)
    );
    let got = rt.block_on(async {
        let ep = quinn_client(&s.ca, &[b"h3"]);
        let req = |method: &str, target: &str, ctype: Option<&str>| {
            let mut b = http::Request::builder()
                .method(method)
                .uri(uri(s.doh3, target));
            if let Some(t) = ctype {
                b = b.header("content-type", t);
            }
            b.body(()).unwrap()
        };
        vec![
            h3_request(&ep, s.doh3, req("GET", &get, None), None).await,
            h3_request(
                &ep,
                s.doh3,
                req("POST", "/dns-query", Some("application/dns-message")),
                Some(q.clone()),
            )
            .await,
            h3_request(&ep, s.doh3, req("GET", "/dns-query?dns=%%%", None), None).await,
            h3_request(&ep, s.doh3, req("GET", "/other", None), None).await,
            h3_request(&ep, s.doh3, req("PUT", "/dns-query", None), None).await,
            h3_request(
                &ep,
                s.doh3,
                req("POST", "/dns-query", Some("text/plain")),
                Some(q.clone()),
            )
            .await,
            h3_request(
                &ep,
                s.doh3,
                req("POST", "/dns-query", Some("application/dns-message")),
                Some(vec![0; 70_000]),
            )
            .await,
        ]
    });
    let statuses: Vec<u16> = got.iter().map(|g| g.status).collect();
    assert_eq!(statuses, [200, 200, 400, 404, 405, 415, 413]);
    for ok in &got[..2] {
        assert_eq!(
            ok.headers.get("content-type").unwrap(),
            "application/dns-message"
        );
        assert!(ok
            .headers
            .get("cache-control")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("max-age="));
        let m = Message::from_vec(&ok.body).unwrap();
        assert_eq!(a_record(&m), Some(Ipv4Addr::new(10, 0, 0, 1)));
    }
    assert_eq!(got[4].headers.get("allow").unwrap(), "GET, POST");
    let m = http_get(s.admin, "/metrics");
    for (status, n) in [
        ("200", 2),
        ("400", 1),
        ("404", 1),
        ("405", 1),
        ("415", 1),
        ("413", 1),
    ] {
        let line = format!(
            "dnsha_http_responses_total{{listener=\"doh3\",protocol=\"doh3\",status=\"{status}\"}} {n}"
        );
        assert!(m.contains(&line), "{line} in {m}");
    }
}

#[test]
fn the_http2_listener_advertises_http3_on_the_same_name() {
    let s = setup("");
    let q = query(0).to_vec().unwrap();
    let url = format!(
        "https://dns.test:{}/dns-query?dns={}",
        s.doh.port(),
        dnsha_proxy::frontend::doh::encode_get_param(&q)
    );
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "--http2", "--cacert"])
        .arg(&s.ca)
        .args(["--resolve", &format!("dns.test:{}:127.0.0.1", s.doh.port())])
        .arg(&url)
        .output()
        .expect("curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(headers.starts_with("http/2 200"), "{headers}");
    let want = format!("alt-svc: h3=\":{}\"; ma=86400", s.doh3.port());
    assert!(headers.contains(&want), "{want} in {headers}");
}

#[test]
fn a_wrong_alpn_gets_no_connection_and_streams_over_max_streams_wait() {
    let s = setup("max_streams = 2");
    let rt = runtime();
    rt.block_on(async {
        let e = quinn_client(&s.ca, &[b"doq"]);
        let r = e.connect(s.doh3, "dns.test").unwrap().await;
        assert!(r.is_err(), "a connection without ALPN h3");

        // Two request streams open and unfinished hold the connection's
        // whole credit: a third is not granted until one ends.
        let e = quinn_client(&s.ca, &[b"h3"]);
        let conn = e.connect(s.doh3, "dns.test").unwrap().await.unwrap();
        let (mut s1, _r1) = conn.open_bi().await.unwrap();
        let (mut s2, _r2) = conn.open_bi().await.unwrap();
        s1.write_all(&[1]).await.unwrap();
        s2.write_all(&[1]).await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await;
        assert!(
            third.is_err(),
            "a third stream was granted over max_streams = 2"
        );
        // Ending one (a reset: these are not HTTP/3 requests) frees credit.
        s1.reset(quinn::VarInt::from_u32(0x10c)).unwrap();
        let third = tokio::time::timeout(Duration::from_secs(5), conn.open_bi()).await;
        assert!(third.is_ok(), "no credit after a stream ended");
    });
}

#[test]
fn a_stream_abandoned_mid_request_is_counted_and_the_connection_goes_on() {
    let s = setup("");
    let rt = runtime();
    rt.block_on(async {
        let ep = quinn_client(&s.ca, &[b"h3"]);
        let conn = ep.connect(s.doh3, "dns.test").unwrap().await.unwrap();
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .unwrap();
        let drive = tokio::spawn(async move {
            let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        // A POST whose body never ends, abandoned.
        let req = http::Request::builder()
            .method("POST")
            .uri(uri(s.doh3, "/dns-query"))
            .header("content-type", "application/dns-message")
            .body(())
            .unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream
            .send_data(Bytes::from_static(&[0, 0, 1]))
            .await
            .unwrap();
        stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        drop(stream);
        // The same connection still answers.
        let q = query(0).to_vec().unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri(uri(s.doh3, "/dns-query"))
            .header("content-type", "application/dns-message")
            .body(())
            .unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.send_data(Bytes::from(q)).await.unwrap();
        stream.finish().await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), stream.recv_response())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        drive.abort();
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let n = metric(s.admin, "dnsha_http_cancelled_total{listener=\"doh3\"");
        if n >= 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no cancelled request counted"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
