//! The DNS wire, sans-IO: what the balancer reads and rewrites in a
//! message ([`dns`]: validation, ID rewrite, answer matching, the answers
//! it makes itself), how messages travel over streams ([`frame`], the one
//! framer shared with the stream upstreams and the health checks), the
//! DNS-over-QUIC stream framing ([`doq`]), the client side of DNS over
//! HTTPS ([`doh`]: the request to a backend, the checks of its response),
//! and the table of UDP queries in flight ([`pending`]).

pub mod dns;
pub mod doh;
pub mod doq;
pub mod pending;

/// Length-prefixed DNS messages over streams (RFC 1035 §4.2.2), from
/// `dnsha-core` so that the health checks use the same framer.
pub use dnsha_core::frame;
