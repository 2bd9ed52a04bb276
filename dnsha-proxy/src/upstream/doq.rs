//! DNS over QUIC to `transport = "doq"` backends (RFC 9250), on quinn: one
//! long-lived QUIC connection per backend (ALPN `doq`, TLS 1.3, kept alive
//! by QUIC pings, made again when it dies), each query on a bidirectional
//! stream of its own, framed by [`crate::wire::doq`]: the ID is 0 on the
//! wire and the query's own ID is written back into the answer.
//!
//! Each connection has its own client endpoint (its own UDP socket), as
//! each TCP connection has its own port. A handshake that fails (a wrong
//! certificate, no `doq`) is a refusal counted as a TLS failure, as for
//! DoT; a silent backend is a timeout. A stream the backend resets, or an
//! answer that breaks the framing or does not answer the question, fails
//! the query as a SERVFAIL would; a connection lost with the query in
//! flight fails it as closed. A query that times out on a connection that
//! received nothing meanwhile (not even an ACK) closes it: the backend is
//! gone, or restarted and cannot reset a connection it no longer knows.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::FailureKind;
use hickory_proto::op::Query;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use super::mux::{ConnectFailure, Slots};
use super::target::{StreamLimits, TcpUpstreamStats, UpstreamTarget};
use crate::error::{Error, Result, RetryType};
use crate::metrics::inc;
use crate::wire::dns::{answer_matches, parse_answer};
use crate::wire::doq::{answer_of, frame_query, MAX_STREAM, NO_ERROR};

/// A QUIC connection and the endpoint (socket) it lives on.
#[derive(Debug, Clone)]
pub(crate) struct Quic {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
}

impl Quic {
    fn alive(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

/// The QUIC connections of one upstream pool, by backend.
#[derive(Debug, Default)]
pub(crate) struct DoqUpstreams {
    slots: Slots<Quic>,
}

/// What a DoQ query needs besides its message.
pub(crate) struct DoqQuery<'a> {
    pub(crate) target: &'a UpstreamTarget,
    pub(crate) config: &'a quinn::ClientConfig,
    pub(crate) server_name: &'a str,
    pub(crate) limits: StreamLimits,
    pub(crate) connect_timeout: Duration,
    pub(crate) stats: &'a Arc<TcpUpstreamStats>,
}

/// Whether a QUIC close code is a TLS alert (CRYPTO_ERROR, RFC 9001 §4.8).
fn is_crypto(code: quinn::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

/// Classifies a failed handshake; counts TLS failures.
fn handshake_failure(
    e: &quinn::ConnectionError,
    addr: SocketAddr,
    stats: &TcpUpstreamStats,
) -> ConnectFailure {
    use quinn::ConnectionError as E;
    let tls = match e {
        E::TransportError(t) => is_crypto(t.code),
        E::ConnectionClosed(c) => is_crypto(c.error_code),
        _ => false,
    };
    if tls {
        inc(&stats.tls_failures);
        warn!(backend = %addr, error = %e, "upstream doq handshake failed");
        return (FailureKind::Refused, true);
    }
    debug!(backend = %addr, error = %e, "upstream doq connection failed");
    match e {
        E::TimedOut => (FailureKind::Timeout, true),
        E::LocallyClosed | E::CidsExhausted => (FailureKind::Refused, false),
        _ => (FailureKind::Refused, true),
    }
}

impl DoqUpstreams {
    /// Asks `query` (question `question`) as `q` says, within `timeout`.
    /// The answer carries the query's ID.
    pub(crate) async fn query(
        &self,
        q: DoqQuery<'_>,
        query: &[u8],
        question: &Query,
        timeout: Duration,
    ) -> Result<Vec<u8>> {
        let backend = q.target.addr;
        let deadline = Instant::now() + timeout;
        let upstream = |kind, blame| Error::Upstream {
            backend,
            kind,
            retry: RetryType::Retry,
            blame,
        };
        let Some((frame, id)) = frame_query(query) else {
            return Err(upstream(FailureKind::Closed, false));
        };
        let slot = self.slots.slot(q.target.key(q.limits), q.limits);
        let Ok(Ok(_permit)) = timeout_at(deadline, slot.permits.acquire()).await else {
            inc(&q.stats.overloaded);
            return Err(upstream(FailureKind::Timeout, false));
        };
        let (config, name) = (q.config.clone(), q.server_name.to_string());
        let (limit, stats) = (q.connect_timeout, Arc::clone(q.stats));
        let attempt = slot.get(Quic::alive, move || {
            connect_quic(backend, config, name, limit, stats)
        });
        let quic = match timeout_at(deadline, attempt).await {
            Err(_) => return Err(upstream(FailureKind::Timeout, true)),
            Ok(Err((kind, blame))) => return Err(upstream(kind, blame)),
            Ok(Ok(c)) => c,
        };
        // Datagrams received on the connection so far: none more by the
        // deadline says the backend is gone (a restarted backend cannot
        // even reset a connection it no longer knows).
        let heard = quic.conn.stats().udp_rx.datagrams;
        let exchange = async {
            let (mut send, mut recv) = quic.conn.open_bi().await?;
            send.write_all(&frame).await?;
            send.finish()?;
            let answer = recv.read_to_end(MAX_STREAM).await?;
            Ok::<_, StreamFailure>(answer)
        };
        let stream = match timeout_at(deadline, exchange).await {
            Err(_) => {
                if quic.conn.stats().udp_rx.datagrams == heard {
                    debug!(backend = %backend, "upstream doq connection silent: closed");
                    quic.conn.close(quinn::VarInt::from_u32(NO_ERROR), b"");
                    slot.forget(|c| c.conn.stable_id() == quic.conn.stable_id());
                }
                return Err(upstream(FailureKind::Timeout, true));
            }
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(backend = %backend, error = %e.0, "upstream doq stream failed");
                if !quic.alive() {
                    slot.forget(|c| c.conn.stable_id() == quic.conn.stable_id());
                    return Err(upstream(FailureKind::Closed, true));
                }
                // The backend reset the stream or refused the data: it did
                // not answer this query.
                return Err(upstream(FailureKind::ServFail, true));
            }
        };
        let answer = answer_of(&stream, id).map_err(|why| {
            debug!(backend = %backend, reason = %why, "upstream doq answer breaks the framing");
            inc(&q.stats.unmatched);
            upstream(FailureKind::ServFail, true)
        })?;
        match parse_answer(&answer) {
            Some(info) if answer_matches(&info, question) => Ok(answer),
            _ => {
                inc(&q.stats.unmatched);
                debug!(backend = %backend, "upstream doq answer does not match its query");
                Err(upstream(FailureKind::ServFail, true))
            }
        }
    }
}

/// Any error of a query's stream, with its text for the log.
struct StreamFailure(String);

impl<E: std::fmt::Display> From<E> for StreamFailure {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// A new endpoint and connection to `addr` (handshake within `limit`); a
/// task counts the connection open in `stats` until it closes.
async fn connect_quic(
    addr: SocketAddr,
    config: quinn::ClientConfig,
    server_name: String,
    limit: Duration,
    stats: Arc<TcpUpstreamStats>,
) -> std::result::Result<Quic, ConnectFailure> {
    let local: SocketAddr = if addr.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let mut endpoint = quinn::Endpoint::client(local).map_err(|e| {
        debug!(backend = %addr, error = %e, "upstream doq socket");
        (FailureKind::Refused, false)
    })?;
    endpoint.set_default_client_config(config);
    let connecting = endpoint.connect(addr, &server_name).map_err(|e| {
        debug!(backend = %addr, error = %e, "upstream doq connect");
        (FailureKind::Refused, false)
    })?;
    inc(&stats.connections_opened);
    let conn = match tokio::time::timeout(limit, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(handshake_failure(&e, addr, &stats)),
        Err(_) => {
            debug!(backend = %addr, "upstream doq handshake timed out");
            return Err((FailureKind::Timeout, true));
        }
    };
    inc(&stats.connections_open);
    debug!(backend = %addr, "upstream doq connection open");
    let watched = conn.clone();
    tokio::spawn(async move {
        let why = watched.closed().await;
        stats.connections_open.fetch_sub(1, Ordering::Relaxed);
        debug!(backend = %addr, reason = %why, "upstream doq connection closed");
    });
    Ok(Quic { endpoint, conn })
}

impl Drop for DoqUpstreams {
    /// Closes the connections cleanly (DOQ_NO_ERROR) when the pool goes
    /// (a worker stopping), rather than leaving the backend to time out.
    fn drop(&mut self) {
        self.slots.for_each(|q: &Quic| {
            q.conn.close(quinn::VarInt::from_u32(NO_ERROR), b"");
            q.endpoint.close(quinn::VarInt::from_u32(NO_ERROR), b"");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_alerts_are_told_from_other_close_codes() {
        assert!(is_crypto(quinn::TransportErrorCode::crypto(42)));
        assert!(!is_crypto(quinn::TransportErrorCode::PROTOCOL_VIOLATION));
        assert!(!is_crypto(quinn::TransportErrorCode::NO_ERROR));
    }
}
