//! # dnsha-proxy
//!
//! The data path of dnsha: DNS frontends over UDP and TCP (RFC 7766), DNS
//! over TLS (RFC 7858, [`dot`]) and over HTTPS (RFC 8484, [`doh`]), an L4
//! TCP passthrough, and the upstream side that sends each query to a
//! backend chosen by a [`dnsha_core::Pool`], over UDP, TCP or TLS.
//!
//! The protocol logic is sans-IO and unit-tested on its own: [`dns`]
//! (validation, ID rewrite, answer matching) and [`pending`] (the table of
//! queries in flight with their deadlines). The socket loops around them are
//! thin.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod accesslog;
pub mod acl;
pub mod ctx;
pub mod dns;
pub mod doh;
pub mod dot;
pub mod error;
pub mod handshake;
pub mod metrics;
pub mod passthrough;
pub mod pending;
pub mod routes;
pub mod server;
pub mod socket;
pub mod sys;
pub mod tcp;
#[cfg(test)]
pub(crate) mod testing;
pub mod tls;
pub mod udp;
pub mod udp_stream;
pub mod upstream_tcp;
pub mod upstream_udp;

pub use error::{Error, RetryType};
