//! Where a stream query goes and what the stream upstreams count: the
//! types shared by the pipelined TCP/DoT connections ([`super::stream`])
//! and the multiplexed DoH and DoQ ones.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rustls::pki_types::ServerName;

/// TLS towards one backend: the client configuration (roots, ALPN,
/// session cache), the name sent in SNI and verified, and what runs over
/// it.
pub struct UpstreamTls {
    /// rustls client configuration.
    pub config: Arc<rustls::ClientConfig>,
    /// SNI and verification name.
    pub server_name: ServerName<'static>,
    /// Identifies the settings: connections made with equal keys are shared.
    pub key: String,
    /// The protocol over TLS: DoT, DoH or DoQ.
    pub wire: TlsWire,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .field("key", &self.key)
            .field("wire", &self.wire)
            .finish_non_exhaustive()
    }
}

/// What a TLS backend speaks.
#[derive(Clone)]
pub enum TlsWire {
    /// DNS over TLS (RFC 7858), pooled and pipelined connections.
    Dot,
    /// DNS over HTTPS (RFC 8484) over HTTP/2.
    Doh {
        /// The URL path queries are POSTed to.
        path: String,
        /// `host:port` of the request URI.
        authority: String,
    },
    /// DNS over QUIC (RFC 9250); `config` wraps the rustls configuration.
    Doq {
        /// The QUIC client configuration (TLS 1.3, ALPN `doq`, keep-alive).
        config: quinn::ClientConfig,
    },
}

impl std::fmt::Debug for TlsWire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dot => f.write_str("Dot"),
            Self::Doh { path, authority } => f
                .debug_struct("Doh")
                .field("path", path)
                .field("authority", authority)
                .finish(),
            Self::Doq { .. } => f.write_str("Doq"),
        }
    }
}

/// How many connections to one backend, and queries on each, a target may
/// use: a pool's `max_connections_per_backend` and
/// `max_in_flight_per_connection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamLimits {
    /// Most connections open to the backend.
    pub max_connections: usize,
    /// Most queries in flight on one connection.
    pub max_in_flight: usize,
}

/// Where a stream query goes: an address, over TCP or over TLS.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// Backend address.
    pub addr: SocketAddr,
    /// TLS settings for a DoT backend; `None` for plain TCP.
    pub tls: Option<Arc<UpstreamTls>>,
    /// Connection limits of the pool the query comes from; `None` takes the
    /// stream upstreams' own settings. Targets with different limits get
    /// separate connections, so each pool keeps its own.
    pub limits: Option<StreamLimits>,
}

impl UpstreamTarget {
    /// Plain TCP to `addr`, with the stream upstreams' own limits.
    pub fn tcp(addr: SocketAddr) -> Self {
        Self {
            addr,
            tls: None,
            limits: None,
        }
    }

    pub(crate) fn key(&self, limits: StreamLimits) -> ConnKey {
        (self.addr, self.tls.as_ref().map(|t| t.key.clone()), limits)
    }
}

/// Connections are pooled per address, TLS settings and limits.
pub(crate) type ConnKey = (SocketAddr, Option<String>, StreamLimits);

/// Counters of the stream upstreams (TCP, DoT, DoH, DoQ), updated with
/// relaxed atomics.
#[derive(Debug, Default)]
pub struct TcpUpstreamStats {
    /// Backend answers that matched no query in flight on their connection
    /// (unknown ID, wrong question, not a response); dropped.
    pub unmatched: AtomicU64,
    /// Connections opened to backends since start.
    pub connections_opened: AtomicU64,
    /// Connections to backends open now (including ones still connecting).
    pub connections_open: AtomicU64,
    /// TLS handshakes with DoT, DoH and DoQ backends that failed (a
    /// certificate not verified, no common ALPN protocol).
    pub tls_failures: AtomicU64,
    /// Queries that waited their whole timeout for a free slot (the pool's
    /// connection and in-flight limits): not counted against the backend.
    pub overloaded: AtomicU64,
}
