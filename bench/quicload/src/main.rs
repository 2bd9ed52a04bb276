//! `quicload`: a DNS load generator for `bench/compare`, for the protocols
//! no Debian 12 tool speaks (DNS over QUIC, DNS over HTTP/3; kdig and curl
//! there have no QUIC), and for DoT and DoH over HTTP/2 with the same
//! client model, so the QUIC rows have a baseline measured the same way.
//!
//! `-c` connections, each with `-m` queries in flight at once (DoQ: a
//! stream each; DoH3 and DoH: a request each; DoT: pipelined on the
//! connection, matched by ID), for `-d` seconds; every query is the same
//! `A` question, each awaited at most 2 s (then lost). Prints one line:
//!
//! ```text
//! quicload proto=doq sent=123456 answered=123450 lost=6 errors=0 seconds=10.00 qps=12345 avg_ms=1.234 max_ms=56.7
//! ```
//!
//! Built on quinn and h3 (QUIC, HTTP/3), hyper (HTTP/2), tokio-rustls
//! (DoT) and hickory-proto (the query).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use clap::{Parser, ValueEnum};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long one query is awaited before it counts as lost.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Proto {
    /// DNS over QUIC (RFC 9250).
    Doq,
    /// DNS over HTTPS over HTTP/3.
    Doh3,
    /// DNS over HTTPS over HTTP/2.
    Doh,
    /// DNS over TLS.
    Dot,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Self::Doq => "doq",
            Self::Doh3 => "doh3",
            Self::Doh => "doh",
            Self::Dot => "dot",
        }
    }
}

#[derive(Debug, Parser)]
#[command(about = "DNS load over DoQ, DoH3, DoH (HTTP/2) and DoT")]
struct Args {
    /// Protocol spoken.
    #[arg(long, value_enum)]
    proto: Proto,
    /// Server address.
    #[arg(long)]
    server: SocketAddr,
    /// Name the server's certificate must be valid for.
    #[arg(long, default_value = "bench.test")]
    tls_name: String,
    /// PEM file of the CA (or self-signed certificate) to trust.
    #[arg(long)]
    ca: PathBuf,
    /// Connections.
    #[arg(short = 'c', long, default_value_t = 8)]
    connections: usize,
    /// Queries in flight per connection.
    #[arg(short = 'm', long, default_value_t = 32)]
    streams: usize,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10)]
    seconds: u64,
    /// The name asked (type A).
    #[arg(long, default_value = "www.example.test.")]
    qname: String,
    /// The DoH path.
    #[arg(long, default_value = "/dns-query")]
    path: String,
    /// Threads of the client's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Counters shared by every connection.
#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    answered: AtomicU64,
    lost: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
    max_us: AtomicU64,
}

impl Stats {
    fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an answer that arrived `since` after its query; one that is
    /// not a DNS response (QR clear, too short) or says SERVFAIL/REFUSED
    /// counts as an error.
    fn answer(&self, msg: &[u8], since: Instant) {
        let ok = msg.len() >= 12 && msg[2] & 0x80 != 0 && matches!(msg[3] & 0x0f, 0 | 3);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.answered.fetch_add(1, Ordering::Relaxed);
        self.latency_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn failed(&self, timed_out: bool) {
        let c = if timed_out { &self.lost } else { &self.errors };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection needs.
struct Plan {
    args: Args,
    tls: Arc<rustls::ClientConfig>,
    query: Vec<u8>,
    deadline: Instant,
    stats: Stats,
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> Result<(), Error> {
    let mut q = Message::new();
    q.set_id(0)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(&args.qname)?, RecordType::A));
    let query = q.to_vec()?;
    let alpn: &[u8] = match args.proto {
        Proto::Doq => b"doq",
        Proto::Doh3 => b"h3",
        Proto::Doh => b"h2",
        Proto::Dot => b"dot",
    };
    let tls = Arc::new(client_tls(&args.ca, alpn)?);
    let start = Instant::now();
    let plan = Arc::new(Plan {
        deadline: start + Duration::from_secs(args.seconds),
        args,
        tls,
        query,
        stats: Stats::default(),
    });
    let conns: Vec<_> = (0..plan.args.connections)
        .map(|_| {
            let plan = Arc::clone(&plan);
            tokio::spawn(async move {
                let r = match plan.args.proto {
                    Proto::Doq => doq(&plan).await,
                    Proto::Doh3 => doh3(&plan).await,
                    Proto::Doh => doh(&plan).await,
                    Proto::Dot => dot(&plan).await,
                };
                if let Err(e) = r {
                    eprintln!("quicload: connection failed: {e}");
                }
            })
        })
        .collect();
    for c in conns {
        c.await?;
    }
    let secs = start
        .elapsed()
        .as_secs_f64()
        .min(plan.args.seconds as f64)
        .max(0.001);
    let s = &plan.stats;
    let (answered, lat) = (
        s.answered.load(Ordering::Relaxed),
        s.latency_us.load(Ordering::Relaxed),
    );
    println!(
        "quicload proto={} sent={} answered={answered} lost={} errors={} seconds={secs:.2} qps={:.0} avg_ms={:.3} max_ms={:.1}",
        plan.args.proto.name(),
        s.sent.load(Ordering::Relaxed),
        s.lost.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
        answered as f64 / secs,
        if answered > 0 { lat as f64 / answered as f64 / 1000.0 } else { 0.0 },
        s.max_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    Ok(())
}

fn client_tls(ca: &std::path::Path, alpn: &[u8]) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca)? {
        roots.add(c?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![alpn.to_vec()];
    Ok(c)
}

/// A QUIC connection to the server from its own endpoint (its own source
/// port, so connections spread over the server's workers).
async fn quic_connect(plan: &Plan) -> Result<(quinn::Endpoint, quinn::Connection), Error> {
    let bind: SocketAddr = if plan.args.server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let mut ep = quinn::Endpoint::client(bind)?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&plan.tls))?;
    ep.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = ep.connect(plan.args.server, &plan.args.tls_name)?.await?;
    Ok((ep, conn))
}

/// Runs `one` `-m` times at once, each in a loop until the deadline.
async fn in_flight<F, Fut>(plan: &Plan, one: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<u8>, Error>>,
{
    let loops = (0..plan.args.streams).map(|_| async {
        while Instant::now() < plan.deadline {
            let t0 = Instant::now();
            plan.stats.sent();
            match tokio::time::timeout(QUERY_TIMEOUT, one()).await {
                Ok(Ok(answer)) => plan.stats.answer(&answer, t0),
                Ok(Err(_)) => plan.stats.failed(false),
                Err(_) => plan.stats.failed(true),
            }
        }
    });
    futures_util::future::join_all(loops).await;
}

async fn doq(plan: &Plan) -> Result<(), Error> {
    let (ep, conn) = quic_connect(plan).await?;
    let len = u16::try_from(plan.query.len())?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&plan.query);
    in_flight(plan, || async {
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(&framed).await?;
        send.finish()?;
        let answer = recv.read_to_end(65_537).await?;
        Ok(answer.get(2..).unwrap_or_default().to_vec())
    })
    .await;
    conn.close(0u32.into(), b"");
    ep.wait_idle().await;
    Ok(())
}

async fn doh3(plan: &Plan) -> Result<(), Error> {
    let (ep, conn) = quic_connect(plan).await?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
    let drive = tokio::spawn(async move {
        let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let uri = format!(
        "https://{}:{}{}",
        plan.args.tls_name,
        plan.args.server.port(),
        plan.args.path
    );
    let body = Bytes::from(plan.query.clone());
    in_flight(plan, || {
        let (mut send, uri, body) = (send.clone(), uri.clone(), body.clone());
        async move {
            let req = http::Request::post(uri)
                .header("content-type", "application/dns-message")
                .body(())?;
            let mut stream = send.send_request(req).await?;
            stream.send_data(body).await?;
            stream.finish().await?;
            let resp = stream.recv_response().await?;
            if resp.status() != http::StatusCode::OK {
                return Err(format!("status {}", resp.status()).into());
            }
            let mut out = Vec::new();
            while let Some(mut chunk) = stream.recv_data().await? {
                let n = chunk.remaining();
                out.extend_from_slice(&chunk.copy_to_bytes(n));
            }
            Ok(out)
        }
    })
    .await;
    drop(send);
    drive.abort();
    conn.close(0x100u32.into(), b"");
    ep.wait_idle().await;
    Ok(())
}

/// A TLS connection over TCP.
async fn tls_connect(
    plan: &Plan,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, Error> {
    let tcp = tokio::net::TcpStream::connect(plan.args.server).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(plan.args.tls_name.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&plan.tls))
        .connect(name, tcp)
        .await?;
    Ok(tls)
}

async fn doh(plan: &Plan) -> Result<(), Error> {
    use http_body_util::{BodyExt, Full};
    let tls = tls_connect(plan).await?;
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await?;
    let drive = tokio::spawn(conn);
    let uri = format!(
        "https://{}:{}{}",
        plan.args.tls_name,
        plan.args.server.port(),
        plan.args.path
    );
    let body = Bytes::from(plan.query.clone());
    in_flight(plan, || {
        let (mut send, uri, body) = (send.clone(), uri.clone(), body.clone());
        async move {
            let req = http::Request::post(uri)
                .header("content-type", "application/dns-message")
                .body(Full::new(body))?;
            let resp = send.send_request(req).await?;
            if resp.status() != http::StatusCode::OK {
                return Err(format!("status {}", resp.status()).into());
            }
            Ok(resp.into_body().collect().await?.to_bytes().to_vec())
        }
    })
    .await;
    drop(send);
    drive.abort();
    Ok(())
}

/// DoT: one task per connection keeps `-m` queries in flight, pipelined,
/// answers matched by ID (they may come in any order).
async fn dot(plan: &Plan) -> Result<(), Error> {
    let tls = tls_connect(plan).await?;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut framed = u16::try_from(plan.query.len())?.to_be_bytes().to_vec();
    framed.extend_from_slice(&plan.query);
    let mut outstanding: HashMap<u16, Instant> = HashMap::new();
    let mut next_id: u16 = 0;
    let mut buf = vec![0u8; 65_535];
    loop {
        let mut wrote = false;
        while outstanding.len() < plan.args.streams && Instant::now() < plan.deadline {
            next_id = next_id.wrapping_add(1);
            while outstanding.contains_key(&next_id) {
                next_id = next_id.wrapping_add(1);
            }
            framed[2..4].copy_from_slice(&next_id.to_be_bytes());
            wr.write_all(&framed).await?;
            outstanding.insert(next_id, Instant::now());
            plan.stats.sent();
            wrote = true;
        }
        if wrote {
            wr.flush().await?;
        }
        if outstanding.is_empty() {
            break;
        }
        let read = async {
            let len = usize::from(rd.read_u16().await?);
            rd.read_exact(&mut buf[..len]).await?;
            Ok::<_, std::io::Error>(len)
        };
        match tokio::time::timeout(QUERY_TIMEOUT, read).await {
            Ok(Ok(len)) => {
                let msg = &buf[..len];
                let id = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                match id.and_then(|id| outstanding.remove(&id)) {
                    Some(t0) => plan.stats.answer(msg, t0),
                    None => plan.stats.failed(false),
                }
            }
            Ok(Err(e)) => {
                for _ in outstanding.drain() {
                    plan.stats.failed(false);
                }
                return Err(e.into());
            }
            Err(_) => {
                // Nothing for 2 s: what is still out is lost.
                for _ in outstanding.drain() {
                    plan.stats.failed(true);
                }
                if Instant::now() >= plan.deadline {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    Ok(())
}
