//! `check = "doh"`: a DNS query over HTTPS (RFC 8484, POST of
//! `application/dns-message`) over HTTP/2 or HTTP/1.1 as ALPN decides.
//! Healthy when the status is 200 and the body is a valid answer to the
//! query (the same judgement as `dns`). The exchange is shared with a
//! `dns` check over DoH ([`exchange`]), which offers `h2` alone, as the
//! data path does.

use std::net::SocketAddr;
use std::time::Duration;

use dnsha_core::config::HealthConfig;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::dns::DnsCheck;
use super::tls::TlsCheck;
use super::{ProbeFailure, ProbeResult};
use crate::error::Result;
use crate::state::FailureReason;

/// Largest DoH answer body read.
const MAX_BODY: usize = 65_535;

/// The media type of RFC 8484.
const DNS_MESSAGE: &str = "application/dns-message";

/// A `doh` check.
#[derive(Debug, Clone)]
pub struct DohCheck {
    tls: TlsCheck,
    dns: DnsCheck,
    path: String,
    host: Option<String>,
}

impl DohCheck {
    /// The check `config` describes.
    pub fn new(config: &HealthConfig) -> Result<Self> {
        Ok(Self {
            tls: TlsCheck::with_alpn(config, vec![b"h2".to_vec(), b"http/1.1".to_vec()])?,
            dns: DnsCheck::new(config)?,
            path: config.path.clone(),
            host: config.tls_name.clone(),
        })
    }

    /// One probe of `backend`.
    pub async fn probe(&self, backend: SocketAddr, timeout: Duration) -> ProbeResult {
        // RFC 8484 suggests ID 0 for GET caching; POST answers are not
        // cached, so a random ID also checks the answer is ours.
        let id: u16 = rand::random();
        let (query, question) = self.dns.query(id, &mut rand::thread_rng())?;
        let body = exchange(
            &self.tls,
            self.host.as_deref(),
            &self.path,
            backend,
            query,
            timeout,
        )
        .await?;
        self.dns.judge(&body, id, &question)
    }
}

/// POSTs `query` to `path` of `backend` over a new TLS connection made by
/// `tls` (HTTP/2 or HTTP/1.1 as ALPN decides, `host` naming the backend
/// when set) and returns the body of a 200 answer. Shared with `dns` over
/// DoH.
pub(crate) async fn exchange(
    tls: &TlsCheck,
    host: Option<&str>,
    path: &str,
    backend: SocketAddr,
    query: Vec<u8>,
    timeout: Duration,
) -> std::result::Result<Bytes, ProbeFailure> {
    let stream = tls.connect(backend, timeout).await?;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let authority = match host {
        Some(h) if h.parse::<std::net::Ipv6Addr>().is_ok() => format!("[{h}]:{}", backend.port()),
        Some(h) => format!("{h}:{}", backend.port()),
        None => backend.to_string(),
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("https://{authority}{path}"))
        .header(hyper::header::CONTENT_TYPE, DNS_MESSAGE)
        .header(hyper::header::ACCEPT, DNS_MESSAGE)
        .body(Full::new(Bytes::from(query)))
        .map_err(|e| ProbeFailure::new(FailureReason::Local, format!("request: {e}")))?;
    let io = TokioIo::new(stream);
    let http_err = |what: &str, e: hyper::Error| {
        ProbeFailure::new(FailureReason::BadAnswer, format!("HTTP {what}: {e}"))
    };
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| http_err("handshake", e))?;
        tokio::spawn(conn);
        sender
            .send_request(request)
            .await
            .map_err(|e| http_err("request", e))?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| http_err("handshake", e))?;
        tokio::spawn(conn);
        // HTTP/1.1 wants the Host header; the absolute URI is sent as is.
        let mut request = request;
        if let Ok(v) = hyper::header::HeaderValue::from_str(&authority) {
            request.headers_mut().insert(hyper::header::HOST, v);
        }
        sender
            .send_request(request)
            .await
            .map_err(|e| http_err("request", e))?
    };
    let status = response.status();
    if status != StatusCode::OK {
        return Err(ProbeFailure::new(
            FailureReason::HttpStatus(status.as_u16()),
            format!("{status} {path}"),
        ));
    }
    Ok(Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| ProbeFailure::new(FailureReason::BadAnswer, format!("body: {e}")))?
        .to_bytes())
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;

    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use hyper::body::Incoming;
    use hyper::Response;
    use tokio::net::TcpListener;

    use super::super::tls::testing::{cert, TestCert};
    use super::*;

    /// A DoH server: answers POSTs on /dns-query with `rcode`, or `status`
    /// when it is not 200; serves HTTP/2 and HTTP/1.1.
    async fn doh_server(
        alpn: &[&[u8]],
        status: Arc<AtomicU16>,
        rcode: ResponseCode,
    ) -> (SocketAddr, std::path::PathBuf, TestCert) {
        let cert = cert(&["doh.example.test"], alpn);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = cert.acceptor.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let status = Arc::clone(&status);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let status = status.load(Ordering::Relaxed);
                        async move {
                            let ok_path = req.uri().path() == "/dns-query";
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut r = Response::new(Full::new(Bytes::new()));
                            if !ok_path {
                                *r.status_mut() = StatusCode::NOT_FOUND;
                            } else if status != 200 {
                                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                            } else {
                                let q = Message::from_vec(&body).unwrap();
                                let mut a = q.clone();
                                a.set_message_type(MessageType::Response)
                                    .set_response_code(rcode);
                                *r.body_mut() = Full::new(Bytes::from(a.to_vec().unwrap()));
                            }
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let io = TokioIo::new(tls);
                    if h2 {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, svc)
                            .await;
                    } else {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, svc)
                            .await;
                    }
                });
            }
        });
        let ca = cert.ca_file.clone();
        (addr, ca, cert)
    }

    fn config(ca: std::path::PathBuf, f: impl FnOnce(&mut HealthConfig)) -> HealthConfig {
        let mut c = HealthConfig {
            tls_ca: Some(ca),
            tls_name: Some("doh.example.test".into()),
            ..HealthConfig::default()
        };
        f(&mut c);
        c
    }

    #[tokio::test]
    async fn http2_and_http1_answers_statuses_and_rcodes() {
        let t = Duration::from_secs(3);
        let h2: &[&[u8]] = &[b"h2"];
        let h1: &[&[u8]] = &[b"http/1.1"];
        for alpn in [h2, h1] {
            let status = Arc::new(AtomicU16::new(200));
            let (addr, ca, _guard) =
                doh_server(alpn, Arc::clone(&status), ResponseCode::NXDomain).await;
            let check = DohCheck::new(&config(ca.clone(), |_| {})).unwrap();
            assert_eq!(check.probe(addr, t).await, Ok(()), "{alpn:?}");
            let strict = DohCheck::new(&config(ca.clone(), |c| c.must_resolve = true)).unwrap();
            assert_eq!(
                strict.probe(addr, t).await.unwrap_err().reason,
                FailureReason::Rcode(3)
            );
            let wrong_path =
                DohCheck::new(&config(ca.clone(), |c| c.path = "/nope".into())).unwrap();
            assert_eq!(
                wrong_path.probe(addr, t).await.unwrap_err().reason,
                FailureReason::HttpStatus(404)
            );
            status.store(503, Ordering::Relaxed);
            assert_eq!(
                check.probe(addr, t).await.unwrap_err().reason,
                FailureReason::HttpStatus(503)
            );
        }
    }
}
