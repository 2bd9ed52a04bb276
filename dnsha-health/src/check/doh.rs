//! `check = "doh"`: a DNS query over HTTPS (RFC 8484, POST of
//! `application/dns-message`) over HTTP/2 or HTTP/1.1 as ALPN decides.
//! Healthy when the status is 200 and the body is a valid answer to the
//! query (the same judgement as `dns`). The exchange is
//! [`super::https::exchange`], shared with a `dns` check over DoH, which
//! offers `h2` alone, as the data path does.

use std::net::SocketAddr;
use std::time::Duration;

use dnsha_core::config::HealthConfig;

use super::dns::DnsCheck;
use super::https::exchange;
use super::tls::TlsCheck;
use super::ProbeResult;
use crate::error::Result;

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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU16, Ordering};
    use std::sync::Arc;

    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response, StatusCode};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;

    use super::super::tls::testing::{cert, TestCert};
    use super::*;
    use crate::state::FailureReason;

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
