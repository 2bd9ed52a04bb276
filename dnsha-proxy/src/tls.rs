//! TLS with rustls (ring provider): certificates of the DoT and DoH
//! listeners, reloadable without dropping connections, the client side of
//! DoT, DoH and DoQ backends, and the file checks `dnsha check` runs.
//!
//! A listener's [`ServerTls`] keeps its `rustls::ServerConfig` (and so its
//! session-ticket keys and session cache) for its whole life; the
//! certificate is served by a [`ReloadableCert`] resolver whose
//! [`CertifiedKey`] sits in an [`ArcSwap`]. A reload reads the new files
//! first ([`load_certified_key`]) and only then swaps the key in: open
//! connections keep going, new handshakes present the new certificate.
//!
//! ```no_run
//! use dnsha_core::config::TlsFiles;
//! use dnsha_proxy::tls::{load_certified_key, ServerTls, ALPN_DOT};
//!
//! let files = TlsFiles {
//!     cert: "/etc/dnsha/fullchain.pem".into(),
//!     key: "/etc/dnsha/key.pem".into(),
//!     cert_span: None,
//!     key_span: None,
//! };
//! let tls = ServerTls::new(&files, &[ALPN_DOT]).unwrap();
//! // ... later, on SIGHUP:
//! let key = load_certified_key(&files).unwrap();
//! tls.install(key);
//! ```

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use dnsha_core::config::{BackendTls, Config, ConfigError, TlsFiles};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

use crate::error::{Error, Result};

/// ALPN of DNS over TLS (RFC 7858 §3.2, IANA "dot").
pub const ALPN_DOT: &[u8] = b"dot";
/// ALPN of DNS over QUIC (RFC 9250).
pub const ALPN_DOQ: &[u8] = b"doq";
/// ALPN of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN of HTTP/3 (RFC 9114), for DoH3.
pub const ALPN_H3: &[u8] = b"h3";

/// Connection attempts a QUIC listener holds, not yet accepted or refused.
pub const QUIC_MAX_INCOMING: usize = 4096;

/// Bytes of early packets held for those attempts, in all.
pub const QUIC_INCOMING_BUFFER: u64 = 8 << 20;

/// The limits of a QUIC listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct QuicLimits {
    /// Close a connection idle this long (also bounds a stalled handshake).
    pub idle_ms: u64,
    /// Request streams open at once per connection.
    pub bidi_streams: u32,
    /// Unidirectional streams the client may open (0 for DoQ; HTTP/3 needs
    /// its control and QPACK streams).
    pub uni_streams: u32,
}
/// ALPN of HTTP/1.1.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// TLS sessions remembered per listener for TLS 1.2 session-ID resumption.
const SESSION_CACHE: usize = 4096;

/// The process's crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A located problem with a TLS file.
fn located(span: &Option<Range<usize>>, message: String) -> ConfigError {
    ConfigError {
        span: span.clone(),
        message,
    }
}

fn read_file(
    path: &Path,
    key: &str,
    span: &Option<Range<usize>>,
) -> std::result::Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        located(
            span,
            format!("{key} `{}`: cannot read: {e}", path.display()),
        )
    })
}

/// Reads a PEM certificate chain; errors are located at `span`.
fn read_chain(
    path: &Path,
    key: &str,
    span: &Option<Range<usize>>,
) -> std::result::Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read_file(path, key, span)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            located(
                span,
                format!("{key} `{}`: not a PEM certificate: {e}", path.display()),
            )
        })?;
    if chain.is_empty() {
        return Err(located(
            span,
            format!("{key} `{}`: no certificate in the file", path.display()),
        ));
    }
    Ok(chain)
}

/// Seconds since the epoch, now.
fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Checks the validity period of the end-entity certificate.
fn check_validity(
    der: &CertificateDer<'_>,
    files: &TlsFiles,
) -> std::result::Result<(), ConfigError> {
    let path = files.cert.display();
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| {
        located(
            &files.cert_span,
            format!("tls_cert `{path}`: cannot parse the certificate: {e}"),
        )
    })?;
    let validity = cert.validity();
    let now = now_secs();
    if validity.not_after.timestamp() < now {
        return Err(located(
            &files.cert_span,
            format!(
                "tls_cert `{path}`: certificate expired on {}",
                validity.not_after
            ),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(located(
            &files.cert_span,
            format!(
                "tls_cert `{path}`: certificate not valid before {}",
                validity.not_before
            ),
        ));
    }
    Ok(())
}

/// Reads a listener's certificate chain and key: both readable PEM, the key
/// matching the end-entity certificate, the certificate within its validity
/// period. Errors point at the `tls_cert` or `tls_key` value.
pub fn load_certified_key(
    files: &TlsFiles,
) -> std::result::Result<Arc<CertifiedKey>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let chain = match read_chain(&files.cert, "tls_cert", &files.cert_span) {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    warn_if_readable_by_others(&files.key);
    let key = read_file(&files.key, "tls_key", &files.key_span).and_then(|bytes| {
        PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
            located(
                &files.key_span,
                format!(
                    "tls_key `{}`: no usable PEM private key: {e}",
                    files.key.display()
                ),
            )
        })
    });
    let key = match key {
        Ok(k) => Some(k),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    if let Some(first) = chain.as_ref().and_then(|c| c.first()) {
        if let Err(e) = check_validity(first, files) {
            errors.push(e);
        }
    }
    let (Some(chain), Some(key), true) = (chain, key, errors.is_empty()) else {
        return Err(errors);
    };
    CertifiedKey::from_der(chain, key, &provider())
        .map(Arc::new)
        .map_err(|e| {
            let message = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "tls_key `{}` does not match the certificate in `{}`",
                    files.key.display(),
                    files.cert.display()
                ),
                other => format!("tls_key `{}`: {other}", files.key.display()),
            };
            vec![located(&files.key_span, message)]
        })
}

/// Logs a warning when a private key file can be read by every local user.
/// Returns whether it can.
pub fn warn_if_readable_by_others(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let open = meta.permissions().mode() & 0o004 != 0;
    if open {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "tls_key is readable by every local user (chmod 600 or 640)"
        );
    }
    open
}

/// Reads a backend's `tls_ca` file.
fn load_ca(tls: &BackendTls) -> std::result::Result<Vec<CertificateDer<'static>>, ConfigError> {
    match &tls.ca {
        Some(path) => read_chain(path, "tls_ca", &tls.ca_span),
        None => Ok(Vec::new()),
    }
}

/// Every problem with the TLS files a configuration names: listener
/// certificates and keys (readable, matching, not expired) and backend CA
/// files. `dnsha check` and the daemon's (re)load report them as
/// `FILE:LINE:COL: message` like the other configuration errors.
pub fn check_files(cfg: &Config) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let admin = cfg.admin.as_ref().and_then(|a| a.tls.as_ref());
    for files in cfg
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .chain(admin)
    {
        if let Err(e) = load_certified_key(files) {
            errors.extend(e);
        }
    }
    for p in &cfg.pools {
        for b in &p.backends {
            if let Some(tls) = &b.tls {
                if let Err(e) = load_ca(tls) {
                    errors.push(e);
                }
            }
        }
    }
    errors.sort_by_key(|e| e.span.as_ref().map_or(0, |s| s.start));
    errors
}

/// Makes the relative TLS file paths of `cfg` (certificates, keys, CA
/// files) relative to `base`, the configuration file's directory.
pub fn resolve_relative(cfg: &mut Config, base: &Path) {
    let fix = |p: &mut std::path::PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    let admin = cfg.admin.as_mut().and_then(|a| a.tls.as_mut());
    for files in cfg
        .listeners
        .iter_mut()
        .filter_map(|l| l.tls.as_mut())
        .chain(admin)
    {
        fix(&mut files.cert);
        fix(&mut files.key);
    }
    for p in &mut cfg.pools {
        for b in &mut p.backends {
            if let Some(ca) = b.tls.as_mut().and_then(|t| t.ca.as_mut()) {
                fix(ca);
            }
        }
    }
}

/// The certificate resolver of a listener: always the current key, swapped
/// atomically on reload.
pub struct ReloadableCert {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for ReloadableCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadableCert").finish_non_exhaustive()
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server side of a DoT or DoH listener.
pub struct ServerTls {
    resolver: Arc<ReloadableCert>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("alpn", &self.config.alpn_protocols)
            .finish_non_exhaustive()
    }
}

fn rustls_error(context: &str) -> impl FnOnce(rustls::Error) -> Error + '_ {
    move |source| Error::Rustls {
        context: context.to_string(),
        source,
    }
}

impl ServerTls {
    /// TLS 1.2 and 1.3 with `alpn` offered (in preference order), session
    /// resumption by tickets (stateless, rotating keys) and by session ID,
    /// serving the certificate in `files`.
    pub fn new(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Self> {
        Self::with_versions(
            files,
            alpn,
            &[&rustls::version::TLS13, &rustls::version::TLS12],
        )
    }

    /// The TLS side of a QUIC listener (DoQ: ALPN `doq`; DoH3: ALPN `h3`):
    /// TLS 1.3 only (QUIC has no other), no early data (0-RTT off), the
    /// same certificate handling as DoT.
    pub fn new_quic(files: &TlsFiles, alpn: &[u8]) -> Result<Self> {
        Self::with_versions(files, &[alpn], &[&rustls::version::TLS13])
    }

    /// The QUIC server configuration of a DoQ or DoH3 listener: this
    /// certificate (reloaded in place as for DoT) and `limits`. Memory
    /// for connection attempts not yet accepted is bounded (at most
    /// [`QUIC_MAX_INCOMING`] of them, [`QUIC_INCOMING_BUFFER`] bytes of
    /// their early packets in all); Retry tokens live 15 s.
    pub fn quic_server_config(&self, limits: QuicLimits) -> Result<quinn::ServerConfig> {
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(self.config()).map_err(|e| {
                Error::Rustls {
                    context: "quic server configuration".into(),
                    source: rustls::Error::General(e.to_string()),
                }
            })?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(quinn::VarInt::from_u32(limits.bidi_streams))
            .max_concurrent_uni_streams(quinn::VarInt::from_u32(limits.uni_streams))
            .max_idle_timeout(
                quinn::IdleTimeout::try_from(std::time::Duration::from_millis(limits.idle_ms)).ok(),
            );
        config
            .transport_config(Arc::new(transport))
            .max_incoming(QUIC_MAX_INCOMING)
            .incoming_buffer_size(64 * 1024)
            .incoming_buffer_size_total(QUIC_INCOMING_BUFFER)
            .retry_token_lifetime(std::time::Duration::from_secs(15));
        Ok(config)
    }

    fn with_versions(
        files: &TlsFiles,
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Result<Self> {
        let key = load_certified_key(files).map_err(|errors| Error::TlsFiles {
            context: files.cert.display().to_string(),
            errors,
        })?;
        let resolver = Arc::new(ReloadableCert {
            current: ArcSwap::new(key),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .map_err(rustls_error("tls server configuration"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(rustls_error("session tickets"))?;
        config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
        Ok(Self {
            resolver,
            config: Arc::new(config),
        })
    }

    /// The rustls configuration (shared by every connection).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.config)
    }

    /// An acceptor for new connections.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config())
    }

    /// Serves `key` to the handshakes that start from now on.
    pub fn install(&self, key: Arc<CertifiedKey>) {
        self.resolver.current.store(key);
    }

    /// The key served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.resolver.current.load_full()
    }
}

/// The rustls client configuration for a DoT backend: ALPN `dot`, TLS 1.2
/// and 1.3, session resumption; verifying against `tls_ca` alone when given
/// (a backend pinned to a private CA must not accept a certificate that any
/// public CA issued for its name) or the system's roots, no verification
/// with `tls_verify = false`.
pub fn client_config(tls: &BackendTls) -> Result<Arc<rustls::ClientConfig>> {
    client_config_with(
        tls,
        ALPN_DOT,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .map(Arc::new)
}

/// The same for a DoH backend: ALPN `h2` alone (dnsha speaks HTTP/2 only
/// to its backends).
pub fn doh_client_config(tls: &BackendTls) -> Result<Arc<rustls::ClientConfig>> {
    client_config_with(
        tls,
        ALPN_H2,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
    .map(Arc::new)
}

/// How often a DoQ backend connection with no traffic is pinged, so that
/// it stays open (below the 10 s idle timeout dnsha's own DoQ listener
/// sets by default).
pub const DOQ_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(4);

/// The QUIC client configuration for a DoQ backend: TLS 1.3 only (QUIC
/// has no other), ALPN `doq`, no 0-RTT, the same verification as DoT;
/// pinged every [`DOQ_KEEP_ALIVE`], closed after 30 s without an answer to
/// anything; the backend may open no streams of its own (RFC 9250 has
/// none from servers).
pub fn doq_client_config(
    tls: &BackendTls,
) -> Result<(Arc<rustls::ClientConfig>, quinn::ClientConfig)> {
    let rustls = Arc::new(client_config_with(
        tls,
        ALPN_DOQ,
        &[&rustls::version::TLS13],
    )?);
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(Arc::clone(&rustls)).map_err(|e| {
            Error::Rustls {
                context: "quic client configuration".into(),
                source: rustls::Error::General(e.to_string()),
            }
        })?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(DOQ_KEEP_ALIVE))
        .max_idle_timeout(quinn::IdleTimeout::try_from(std::time::Duration::from_secs(30)).ok())
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(0))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
    config.transport_config(Arc::new(transport));
    Ok((rustls, config))
}

fn client_config_with(
    tls: &BackendTls,
    alpn: &[u8],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(rustls_error("tls client configuration"))?;
    let mut config = if tls.verify {
        builder
            .with_root_certificates(root_store(tls)?)
            .with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(dnsha_health::check::tls::NoVerification(
                provider,
            )))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The roots a verifying DoT, DoH or DoQ client trusts: the certificates of `tls_ca`
/// only, or the system's when there is none.
pub fn root_store(tls: &BackendTls) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let Some(ca_name) = tls.ca.as_ref().map(|p| p.display().to_string()) else {
        let native = rustls_native_certs::load_native_certs();
        // A system certificate rustls cannot use is skipped, as browsers do.
        roots.add_parsable_certificates(native.certs);
        return Ok(roots);
    };
    let extra = load_ca(tls).map_err(|e| Error::TlsFiles {
        context: "tls_ca".into(),
        errors: vec![e],
    })?;
    for cert in extra {
        roots
            .add(cert)
            .map_err(rustls_error(&format!("tls_ca `{ca_name}`")))?;
    }
    Ok(roots)
}

/// The server name to send and verify for a backend: `tls_name`, or the
/// backend's IP address.
pub fn server_name(tls: &BackendTls, addr: std::net::SocketAddr) -> Result<ServerName<'static>> {
    match &tls.name {
        Some(n) => ServerName::try_from(n.clone()).map_err(|source| Error::ServerName {
            name: n.clone(),
            source,
        }),
        None => Ok(ServerName::IpAddress(addr.ip().into())),
    }
}

#[cfg(test)]
pub(crate) mod tests;
