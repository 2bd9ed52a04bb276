//! # dnsha-proxy
//!
//! The data path of dnsha: DNS frontends over UDP and TCP (RFC 7766), DNS
//! over TLS (RFC 7858) and over HTTPS (RFC 8484), an L4 TCP passthrough,
//! and the upstream side that sends each query to a backend chosen by a
//! [`dnsha_core::Pool`], over UDP, TCP or TLS.
//!
//! A query flows one way through four folders:
//!
//! ```text
//! frontend/  udp, tcp, dot, doh, passthrough; the accept loop and limits
//!    │  admits each message and drives its Flight
//!    ▼
//! pipeline/  sans-IO per-query core: admission (ACL, validation), pick,
//!    │        retry, passive health, SERVFAIL or drop, the access-log record
//!    ▼
//! upstream/  UDP sockets, pooled TCP/TLS connections, per-backend routes
//!    │
//!    ▼
//! wire/      DNS classification and rewriting, stream framing, the
//!            pending table
//! ```
//!
//! [`server`] composes them: it binds the listeners, applies reloads and
//! renders `/status` and `/metrics`. The protocol logic is sans-IO and
//! unit-tested without sockets: [`wire`] and [`pipeline`].
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod accesslog;
pub mod acl;
pub mod cache;
pub mod error;
pub mod frontend;
pub mod metrics;
pub mod pipeline;
pub mod server;
pub mod socket;
pub mod sys;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod upstream;
pub mod wire;

pub use error::{Error, RetryType};
