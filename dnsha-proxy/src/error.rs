//! The error type of `dnsha-proxy`.

use std::io;
use std::net::SocketAddr;

use dnsha_core::FailureKind;

/// Errors of the proxy.
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
    /// A query to a backend failed.
    #[error("backend {backend}: {kind:?}")]
    Upstream {
        /// Backend address.
        backend: SocketAddr,
        /// What went wrong, as passive health counts it.
        kind: FailureKind,
        /// Whether the query may be retried on another backend.
        retry: RetryType,
    },
    /// A certificate, key or CA file could not be used, or a TLS
    /// configuration could not be built.
    #[error("{context}: {message}")]
    Tls {
        /// What was being done (listener or backend, file).
        context: String,
        /// What is wrong.
        message: String,
    },
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

/// Whether a failed upstream query may be tried again on another backend
/// (as pingora's `RetryType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryType {
    /// The query never reached the backend or the backend failed: retry.
    Retry,
    /// The failure is not the backend's fault: do not retry.
    NoRetry,
}

pub(crate) type Result<T> = std::result::Result<T, Error>;
