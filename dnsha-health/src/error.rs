//! The error type of `dnsha-health`.

use std::path::PathBuf;

/// Errors of the health checker: a check that cannot be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The monitor was started outside a tokio runtime.
    #[error("the health monitor must be started inside a tokio runtime")]
    NoRuntime,
    /// The `tls_ca` file cannot be used.
    #[error("tls_ca {path}: {message}")]
    TlsCa {
        /// The configured file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// `tls_name` is not a DNS name or IP address rustls accepts.
    #[error("tls_name `{name}` is not a valid server name")]
    TlsName {
        /// The configured name.
        name: String,
    },
    /// The TLS client could not be configured.
    #[error("TLS setup: {message}")]
    Tls {
        /// The rustls error.
        message: String,
    },
    /// One backend's check could not be set up.
    #[error("pool {pool}, backend {backend}: {source}")]
    Backend {
        /// Pool name.
        pool: String,
        /// Backend name.
        backend: String,
        /// What went wrong.
        source: Box<Self>,
    },
}

pub(crate) type Result<T> = std::result::Result<T, Error>;
