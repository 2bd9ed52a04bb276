//! `check = "tls"`: a TLS handshake with the backend (a DoT or DoH server),
//! with optional SNI (`tls_name`) and certificate verification
//! (`tls_verify`, against `tls_ca` or the system roots). Also the TLS client
//! of `doh` and of `dns` over DoT.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::HealthConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::{ProbeFailure, ProbeResult};
use crate::error::{Error, Result};
use crate::state::FailureReason;

/// A `tls` check (also the TLS half of `doh`).
#[derive(Clone)]
pub struct TlsCheck {
    connector: TlsConnector,
    config: Arc<ClientConfig>,
    /// `None`: the backend's IP address (no SNI is sent for an address).
    name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsCheck {
    /// The check `config` describes.
    pub fn new(config: &HealthConfig) -> Result<Self> {
        Self::with_alpn(config, Vec::new())
    }

    /// The same, offering `alpn` protocols.
    pub(crate) fn with_alpn(config: &HealthConfig, alpn: Vec<Vec<u8>>) -> Result<Self> {
        let roots = match &config.tls_ca {
            Some(path) => Roots::File(path),
            None => Roots::System,
        };
        Self::build(config, alpn, roots)
    }

    /// The client of a `dns` check over DoT, set up as the data path's
    /// client to a `transport = "dot"` backend: ALPN `dot`, and `tls_ca`
    /// alone when given (a backend pinned to a private CA must not accept a
    /// certificate any public CA issued for its name), the system roots
    /// otherwise.
    pub(crate) fn dot(config: &HealthConfig) -> Result<Self> {
        Self::with_alpn(config, vec![ALPN_DOT.to_vec()])
    }

    /// The TLS half of a `dns` check over DoQ: TLS 1.3 only (QUIC has no
    /// other), ALPN `doq`, the same roots as [`Self::dot`]. Only its
    /// [`Self::client_config`] and [`Self::server_name`] are used.
    pub(crate) fn doq(config: &HealthConfig) -> Result<Self> {
        let roots = match &config.tls_ca {
            Some(path) => Roots::File(path),
            None => Roots::System,
        };
        Self::build_with(
            config,
            vec![ALPN_DOQ.to_vec()],
            roots,
            &[&rustls::version::TLS13],
        )
    }

    /// The rustls configuration.
    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }

    /// The name sent and verified for `backend`: `tls_name`, or its IP.
    pub(crate) fn server_name(&self, backend: SocketAddr) -> ServerName<'static> {
        self.name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(backend.ip().into()))
    }

    fn build(config: &HealthConfig, alpn: Vec<Vec<u8>>, roots: Roots<'_>) -> Result<Self> {
        Self::build_with(config, alpn, roots, rustls::DEFAULT_VERSIONS)
    }

    fn build_with(
        config: &HealthConfig,
        alpn: Vec<Vec<u8>>,
        roots: Roots<'_>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| Error::Tls {
                message: e.to_string(),
            })?;
        let mut client = if config.tls_verify {
            let roots = match roots {
                Roots::System => system_roots(),
                Roots::File(path) => roots_from_file(path)?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth()
        };
        client.alpn_protocols = alpn;
        let name = match &config.tls_name {
            None => None,
            Some(n) => Some(
                ServerName::try_from(n.clone()).map_err(|_| Error::TlsName { name: n.clone() })?,
            ),
        };
        let client = Arc::new(client);
        Ok(Self {
            connector: TlsConnector::from(Arc::clone(&client)),
            config: client,
            name,
        })
    }

    /// Connects and completes the handshake.
    pub async fn connect(
        &self,
        backend: SocketAddr,
        timeout: Duration,
    ) -> std::result::Result<TlsStream<TcpStream>, ProbeFailure> {
        let tcp = TcpStream::connect(backend)
            .await
            .map_err(|e| ProbeFailure::io("connect", &e, timeout))?;
        let name = self.server_name(backend);
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|e| ProbeFailure::new(FailureReason::Tls, format!("handshake: {e}")))
    }

    /// One probe: a full handshake.
    pub async fn probe(&self, backend: SocketAddr, timeout: Duration) -> ProbeResult {
        self.connect(backend, timeout).await.map(drop)
    }
}

/// ALPN of DNS over TLS (RFC 7858), as the data path offers it.
pub(crate) const ALPN_DOT: &[u8] = b"dot";
/// ALPN of DNS over QUIC (RFC 9250).
pub(crate) const ALPN_DOQ: &[u8] = b"doq";
/// ALPN of HTTP/2, all the data path offers a DoH backend.
pub(crate) const ALPN_H2: &[u8] = b"h2";

/// The certificates a verifying client trusts.
enum Roots<'a> {
    /// The system's.
    System,
    /// Those of a PEM file only.
    File(&'a Path),
}

/// Whether `path` holds PEM certificates a check can trust (what a check
/// with `tls_ca = path` will load when it starts).
pub fn check_ca_file(path: &Path) -> Result<()> {
    roots_from_file(path).map(|_| ())
}

fn roots_from_file(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| Error::TlsCa {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    for cert in certs {
        let cert = cert.map_err(|e| Error::TlsCa {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| Error::TlsCa {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(Error::TlsCa {
            path: path.to_path_buf(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(roots)
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "cannot load a system root certificate");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system root certificates for TLS checks");
    roots
}

/// `tls_verify = false`: any certificate and name are accepted, but the
/// handshake signatures are still checked, so the session is with the
/// holder of the key the server presented. Shared with the data path's DoT
/// upstreams (dnsha-proxy).
#[derive(Debug)]
pub struct NoVerification(pub Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! A TLS server on loopback with a fresh self-signed certificate.

    use std::path::PathBuf;
    use std::sync::Arc;

    use rustls::ServerConfig;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    /// A certificate for `names` and its CA file.
    pub(crate) struct TestCert {
        pub(crate) acceptor: TlsAcceptor,
        pub(crate) ca_file: PathBuf,
        _dir: tempdir::Dir,
    }

    mod tempdir {
        /// A directory removed on drop.
        pub(crate) struct Dir(pub(crate) std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// A self-signed certificate for `names`, served with ALPN `alpn`.
    pub(crate) fn cert(names: &[&str], alpn: &[&[u8]]) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let key = rcgen::generate_simple_self_signed(names).unwrap();
        let der = CertificateDer::from(key.cert.der().to_vec());
        let pkey = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key_pair.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![der], pkey)
                .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let dir = std::env::temp_dir().join(format!(
            "dnsha-health-tls-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, key.cert.pem()).unwrap();
        TestCert {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_file,
            _dir: tempdir::Dir(dir),
        }
    }

    /// Accepts TLS connections forever, completing handshakes, then closes.
    pub(crate) async fn serve_handshakes(acceptor: TlsAcceptor) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = acceptor.accept(tcp).await;
                });
            }
        });
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    fn config(f: impl FnOnce(&mut HealthConfig)) -> HealthConfig {
        let mut c = HealthConfig::default();
        f(&mut c);
        c
    }

    #[tokio::test]
    async fn verification_sni_and_failures() {
        let cert = cert(&["dns.example.test", "127.0.0.1"], &[]);
        let addr = serve_handshakes(cert.acceptor.clone()).await;
        let t = Duration::from_secs(2);
        // Verified against the CA file, by name (SNI) and by IP address.
        let by_name = TlsCheck::new(&config(|c| {
            c.tls_ca = Some(cert.ca_file.clone());
            c.tls_name = Some("dns.example.test".into());
        }))
        .unwrap();
        assert_eq!(by_name.probe(addr, t).await, Ok(()));
        let by_ip = TlsCheck::new(&config(|c| c.tls_ca = Some(cert.ca_file.clone()))).unwrap();
        assert_eq!(by_ip.probe(addr, t).await, Ok(()));
        // Wrong name: a TLS failure.
        let wrong = TlsCheck::new(&config(|c| {
            c.tls_ca = Some(cert.ca_file.clone());
            c.tls_name = Some("other.example.test".into());
        }))
        .unwrap();
        let e = wrong.probe(addr, t).await.unwrap_err();
        assert_eq!(e.reason, FailureReason::Tls, "{e}");
        // Unknown CA (system roots): a TLS failure, unless verification is off.
        let system = TlsCheck::new(&config(|_| {})).unwrap();
        assert_eq!(
            system.probe(addr, t).await.unwrap_err().reason,
            FailureReason::Tls
        );
        let lax = TlsCheck::new(&config(|c| {
            c.tls_verify = false;
            c.tls_name = Some("whatever.test".into());
        }))
        .unwrap();
        assert_eq!(lax.probe(addr, t).await, Ok(()));
        // A plain TCP server that is not TLS.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = plain.accept().await {
                use tokio::io::AsyncWriteExt;
                let _ = s.write_all(b"HTTP/1.0 400 nope\r\n\r\n").await;
            }
        });
        assert_eq!(
            lax.probe(plain_addr, t).await.unwrap_err().reason,
            FailureReason::Tls
        );
    }

    #[test]
    fn bad_ca_file_is_an_error() {
        let e =
            TlsCheck::new(&config(|c| c.tls_ca = Some("/nonexistent/ca.pem".into()))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
    }
}
