//! `check = "dns"` over DNS over TLS (RFC 7858): a new TLS connection per
//! probe, ALPN `dot`, SNI and verification as the backend's `tls_name`,
//! `tls_verify` and `tls_ca` say, one length-prefixed query and its answer.
//! The query and the judgement of the answer are [`DnsCheck`]'s.
//!
//! [`DnsCheck`]: super::dns::DnsCheck

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::exchange::framed_exchange;
use super::tls::TlsCheck;
use super::ProbeFailure;

/// Sends `query` to `backend` over a new TLS connection made by `tls` and
/// reads one answer.
pub(crate) async fn exchange(
    tls: &TlsCheck,
    backend: SocketAddr,
    query: &[u8],
    timeout: Duration,
) -> Result<Vec<u8>, ProbeFailure> {
    let mut stream = tls.connect(backend, timeout).await?;
    let answer = framed_exchange(&mut stream, query, timeout).await?;
    // close_notify, so the server sees a clean close rather than an abort.
    let _ = stream.shutdown().await;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};

    use dnsha_core::config::{
        BackendConfig, BackendTls, CheckKind, CheckTransport, HealthConfig, Transport,
    };
    use dnsha_core::frame::{framed, FrameDecoder};
    use hickory_proto::op::{Message, MessageType, ResponseCode};
    use rustls::ServerConfig;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use test_support::{CertFiles, TestCa};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::super::Checker;
    use super::*;
    use crate::check::Target;
    use crate::state::FailureReason;

    const T: Duration = Duration::from_secs(3);

    /// What the responder answers.
    #[derive(Clone, Copy)]
    enum Answer {
        /// The question back, NOERROR.
        Good,
        /// The same, under another ID.
        WrongId,
    }

    /// A DoT server on loopback for one certificate.
    struct DotServer {
        addr: SocketAddr,
        /// The ALPN protocol negotiated on each connection.
        alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
        _task: tokio::task::JoinHandle<()>,
    }

    async fn dot_server(files: &CertFiles, answer: Answer) -> DotServer {
        let chain = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
        config.alpn_protocols = vec![b"dot".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let alpn = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&alpn);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let proto = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    seen.lock().unwrap().push(proto);
                    // Queries until the client closes.
                    let mut decoder = FrameDecoder::new();
                    loop {
                        let Some(q) = decoder.next_message() else {
                            match tls.read_buf(decoder.read_buf()).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => continue,
                            }
                        };
                        let q = Message::from_vec(&q).unwrap();
                        let mut a = q.clone();
                        a.set_message_type(MessageType::Response)
                            .set_response_code(ResponseCode::NoError);
                        if let Answer::WrongId = answer {
                            a.set_id(q.id().wrapping_add(1));
                        }
                        let wire = framed(&a.to_vec().unwrap()).unwrap();
                        if tls.write_all(&wire).await.is_err() || tls.flush().await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        DotServer {
            addr,
            alpn,
            _task: task,
        }
    }

    /// A CA and a certificate for `dot.test` in a temporary directory.
    fn pki() -> (tempfile::TempDir, CertFiles) {
        let dir = tempfile::tempdir().unwrap();
        let files = TestCa::new().write(dir.path(), "dot", &["dot.test"]);
        (dir, files)
    }

    /// A `transport = "dot"` backend at `addr` with these TLS settings.
    fn backend(addr: SocketAddr, name: &str, verify: bool, ca: Option<PathBuf>) -> BackendConfig {
        BackendConfig {
            transport: Transport::Dot,
            tls: Some(BackendTls {
                verify,
                name: Some(name.into()),
                ca,
                ca_span: None,
            }),
            ..BackendConfig::new("d", addr, 1)
        }
    }

    /// The default `[pool.health]` (`check = "dns"`, no transport) as it runs
    /// against `b`, probed once.
    async fn probe(b: &BackendConfig) -> Result<(), ProbeFailure> {
        let config = HealthConfig::default().for_backend(b);
        let checker = Checker::new(&config).unwrap();
        assert_eq!(checker.kind(), CheckKind::Dns);
        let Checker::Dns(dns) = &checker else {
            panic!("{checker:?}")
        };
        assert_eq!(dns.transport(), CheckTransport::Dot);
        let target = Target {
            name: b.name.clone(),
            address: b.address,
        };
        checker.probe(&target, T).await
    }

    #[tokio::test]
    async fn healthy_answer_over_tls_with_alpn_dot() {
        let (_dir, files) = pki();
        let server = dot_server(&files, Answer::Good).await;
        let b = backend(server.addr, "dot.test", true, Some(files.ca.clone()));
        assert_eq!(probe(&b).await, Ok(()));
        assert_eq!(probe(&b).await, Ok(()));
        // A new connection per probe, each with ALPN dot.
        assert_eq!(
            *server.alpn.lock().unwrap(),
            [Some(b"dot".to_vec()), Some(b"dot".to_vec())]
        );
    }

    #[tokio::test]
    async fn wrong_name_fails_verification_unless_it_is_off() {
        let (_dir, files) = pki();
        let server = dot_server(&files, Answer::Good).await;
        let wrong = backend(server.addr, "other.test", true, Some(files.ca.clone()));
        let e = probe(&wrong).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Tls, "{e}");
        // An unknown CA (system roots only) fails the same way.
        let no_ca = backend(server.addr, "dot.test", true, None);
        assert_eq!(probe(&no_ca).await.unwrap_err().reason, FailureReason::Tls);
        // tls_verify = false: any name, any CA.
        let lax = backend(server.addr, "other.test", false, None);
        assert_eq!(probe(&lax).await, Ok(()));
        // No query was answered on the connections that failed verification.
        assert_eq!(server.alpn.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn backend_down_is_refused() {
        let (_dir, files) = pki();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let b = backend(addr, "dot.test", true, Some(files.ca.clone()));
        let e = probe(&b).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Refused, "{e}");
    }

    #[tokio::test]
    async fn answer_id_is_checked() {
        let (_dir, files) = pki();
        let server = dot_server(&files, Answer::WrongId).await;
        let b = backend(server.addr, "dot.test", true, Some(files.ca.clone()));
        let e = probe(&b).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::BadAnswer, "{e}");
        assert!(e.detail.contains("does not match query ID"), "{e}");
    }

    #[tokio::test]
    async fn explicit_transport_wins_over_the_backend() {
        let (_dir, files) = pki();
        let server = dot_server(&files, Answer::Good).await;
        let b = backend(server.addr, "dot.test", true, Some(files.ca.clone()));
        // transport = "tcp" in [pool.health]: a plain TCP query to a TLS
        // server gets no DNS answer.
        let tcp = HealthConfig {
            transport: Some(CheckTransport::Tcp),
            ..HealthConfig::default()
        }
        .for_backend(&b);
        assert_eq!(tcp.transport, Some(CheckTransport::Tcp));
        let checker = Checker::new(&tcp).unwrap();
        let target = Target {
            name: "d".into(),
            address: server.addr,
        };
        assert!(checker
            .probe(&target, Duration::from_millis(500))
            .await
            .is_err());
        // transport = "dot" against a udp backend: the health table's TLS
        // settings alone.
        let udp_backend = BackendConfig::new("u", server.addr, 1);
        let dot = HealthConfig {
            transport: Some(CheckTransport::Dot),
            tls_name: Some("dot.test".into()),
            tls_ca: Some(files.ca.clone()),
            ..HealthConfig::default()
        }
        .for_backend(&udp_backend);
        let checker = Checker::new(&dot).unwrap();
        assert_eq!(checker.probe(&target, T).await, Ok(()));
    }
}
