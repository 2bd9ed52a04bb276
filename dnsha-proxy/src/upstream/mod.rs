//! How queries reach the backends: [`udp`] (connected sockets with random
//! source ports, answers matched by ID and question), [`stream`] (pooled
//! TCP and TLS connections with pipelining, and the entry point of the
//! multiplexed transports: `doh`, HTTP/2 streams, and `doq`, QUIC streams,
//! each one connection per backend kept by `mux`), and [`Routes`], which
//! says per backend which of them to use. The UDP frontend keeps its own connected
//! sockets per worker (see `frontend::udp`); every other frontend goes
//! through [`Upstreams`].

mod dial;
mod doh;
mod doq;
mod mux;
pub mod routes;
pub mod stream;
mod target;
pub mod udp;
pub mod udp_sockets;

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::{Backend, FailureKind};
use hickory_proto::op::Query;

pub use routes::Routes;

use crate::error::Result;
use crate::metrics::inc;
use crate::wire::dns::is_truncated;
use stream::TcpUpstreams;
use udp::{UdpReply, UdpUpstreams};

/// How passive health counts a socket error on a backend's socket: the
/// backend refused (ICMP unreachable, RST) or the exchange was cut.
pub fn failure_kind(e: &io::Error) -> FailureKind {
    match e.kind() {
        io::ErrorKind::ConnectionRefused
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => FailureKind::Refused,
        _ => FailureKind::Closed,
    }
}

/// The upstream side of one stream worker: pooled TCP/TLS connections and,
/// for frontends that may use it (DoH), UDP sockets to `udp` backends.
#[derive(Debug, Clone)]
pub struct Upstreams {
    /// Pooled TCP and TLS connections.
    pub stream: Arc<TcpUpstreams>,
    /// UDP sockets to `transport = "udp"` backends; `None` sends every
    /// query over a stream (TCP and DoT frontends, whose clients already
    /// chose a stream).
    pub udp: Option<Arc<UdpUpstreams>>,
}

impl Upstreams {
    /// Over streams only.
    pub fn stream(stream: Arc<TcpUpstreams>) -> Self {
        Self { stream, udp: None }
    }

    /// One attempt of `msg` (question `question`) on `backend`, waiting at
    /// most `per_try`: over UDP first when this side has UDP sockets and the
    /// backend speaks UDP (spread over `udp_sockets` sockets), asked again
    /// over the stream when that answer is truncated or did not fit
    /// (counted in `fallbacks`); over TCP or TLS otherwise, as `routes`
    /// says. The answer keeps the upstream ID.
    #[allow(clippy::too_many_arguments)]
    pub async fn query(
        &self,
        routes: &Routes,
        backend: &Backend,
        udp_sockets: usize,
        msg: &[u8],
        question: &Query,
        per_try: Duration,
        fallbacks: &AtomicU64,
    ) -> Result<Vec<u8>> {
        let target = routes.target(backend);
        if let Some(udp) = &self.udp {
            if target.tls.is_none() && routes.uses_udp(backend) {
                match udp
                    .query_over(target.addr, udp_sockets, msg, question, per_try)
                    .await?
                {
                    UdpReply::Answer(a) if !is_truncated(&a) => return Ok(a),
                    UdpReply::Answer(_) | UdpReply::TooBig => inc(fallbacks),
                }
            }
        }
        self.stream
            .query_target(&target, msg, question, per_try)
            .await
    }
}
