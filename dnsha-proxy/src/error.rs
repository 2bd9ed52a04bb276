//! The error type of `dnsha-proxy`.

use std::io;
use std::net::SocketAddr;

use dnsha_core::{ConfigError, FailureKind};

/// Errors of the proxy. Each keeps its cause ([`std::error::Error::source`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener socket could not be set up.
    #[error("listener {listener}: cannot bind {address}: {source}")]
    Bind {
        /// Listener name.
        listener: String,
        /// Address it tried to bind.
        address: SocketAddr,
        /// The system error.
        source: io::Error,
    },
    /// A listener names a pool that does not exist.
    #[error("listener {listener}: unknown pool {pool}")]
    UnknownPool {
        /// Listener name.
        listener: String,
        /// The missing pool.
        pool: String,
    },
    /// A listener could not start or take a new configuration.
    #[error("listener {listener}: {source}")]
    Listener {
        /// Listener name.
        listener: String,
        /// Why.
        #[source]
        source: Box<Self>,
    },
    /// A query to a backend failed.
    #[error("backend {backend}: {kind:?}")]
    Upstream {
        /// Backend address.
        backend: SocketAddr,
        /// What went wrong, as passive health counts it.
        kind: FailureKind,
        /// Whether the query may be retried, and where.
        retry: RetryType,
        /// Whether passive health counts this failure against the backend:
        /// false for local overload (no free slot here) and for all but one
        /// of the queries lost together to one refusal of a socket.
        blame: bool,
    },
    /// Certificate, key or CA files that cannot be used, each error located
    /// in the configuration.
    #[error("{context}: {}", join(errors))]
    TlsFiles {
        /// The file or setting concerned.
        context: String,
        /// What is wrong, one error per problem.
        errors: Vec<ConfigError>,
    },
    /// rustls refused to build a TLS configuration.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// rustls's error.
        source: rustls::Error,
    },
    /// A `tls_name` that is not a valid DNS name or address.
    #[error("tls_name `{name}`: {source}")]
    ServerName {
        /// The name.
        name: String,
        /// Why it is not valid.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// A DoT listener without `tls_cert` and `tls_key`.
    #[error("dot needs tls_cert and tls_key")]
    NoCertificate,
    /// Another I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The system error.
        source: io::Error,
    },
    /// A health check could not be set up.
    #[error("health checks: {source}")]
    Health {
        /// The health checker's error.
        source: dnsha_health::Error,
    },
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| e.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// This error, as the cause of listener `name` failing.
    pub fn in_listener(self, name: &str) -> Self {
        Self::Listener {
            listener: name.to_string(),
            source: Box::new(self),
        }
    }
}

/// Whether a failed upstream query may be tried again (as pingora's
/// `RetryType`), and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    /// The query never reached the backend or the backend failed: retry on
    /// another backend.
    Retry,
    /// The query was lost with its upstream socket (an ICMP refusal, which
    /// an outsider can spoof): send it once more to the same backend, on a
    /// new socket, while that backend is up; then as [`Self::Retry`].
    Resend,
    /// The failure is not the backend's fault: do not retry.
    NoRetry,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;
