//! Where queries come in: one module per protocol, each a thin driver of
//! the [`crate::pipeline`].
//!
//! - [`udp`]: one worker per SO_REUSEPORT socket, batched, lock-free; its
//!   queries go to backends over the worker's own sockets, or through
//!   [`udp_stream`] when the pool has `tcp` or `dot` backends.
//! - [`tcp`], [`dot`], [`doh`]: connections accepted by the one
//!   [`accept`] loop (connection limits, TLS handshakes), each query a
//!   future run by [`forward`] over [`crate::upstream::Upstreams`].
//! - [`doq`], [`doh3`]: DNS over QUIC and DoH over HTTP/3, a quinn
//!   endpoint per worker socket whose connections the one [`quic`] accept
//!   loop admits (ACL, Retry under load, limits); each stream's query run
//!   by [`forward`].
//! - [`passthrough`]: an L4 byte pipe, one backend per connection.
//!
//! [`ctx`] holds what a listener's tasks share.

pub mod accept;
pub mod ctx;
pub mod doh;
pub mod doh3;
pub mod doq;
pub mod dot;
pub mod forward;
pub mod limits;
pub mod passthrough;
pub mod quic;
pub mod steer;
pub mod tcp;
pub mod udp;
pub mod udp_steer;
pub mod udp_stream;

pub use ctx::ListenerCtx;
