//! DNS over QUIC framing (RFC 9250 §4.2): the sans-IO functions live in
//! [`dnsha_core::doq`], shared with the health checks; re-exported here for
//! the frontend, the upstreams and the fuzz target.

pub use dnsha_core::doq::*;
