//! DNS over HTTPS to `transport = "doh"` backends (RFC 8484): one HTTP/2
//! connection over TLS (ALPN `h2`) per backend, each query a POST of
//! `application/dns-message` to the backend's `doh_path` on a stream of its
//! own, so every query in flight shares the connection (see [`super::mux`]).
//!
//! A failed TCP connect or TLS handshake (a wrong certificate, no `h2`) is
//! a refusal, counted as for DoT, so the query is retried elsewhere and
//! passive health counts it. A response that is not an answer (status not
//! 200, another media type, a body not answering the question) fails the
//! query as a SERVFAIL would. A request that never left because the
//! connection had closed (an idle close by the backend, a GOAWAY) is sent
//! again on a new connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::FailureKind;
use hickory_proto::op::Query;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::{timeout_at, Instant};
use tracing::{debug, warn};

use super::dial::{connect, Connected};
use super::mux::{ConnectFailure, Slots};
use super::target::{StreamLimits, TcpUpstreamStats, UpstreamTarget, UpstreamTls};
use crate::error::{Error, Result, RetryType};
use crate::metrics::inc;
use crate::tls::ALPN_H2;
use crate::wire::dns::MAX_MESSAGE;
use crate::wire::doh::{check_body, check_head, request, AnswerError};

/// The sending half of an HTTP/2 connection (cheap to clone: one per
/// request).
pub(crate) type H2 = http2::SendRequest<Full<Bytes>>;

/// How often a request that never left (connection closed under it) is
/// sent again on a new connection.
const MAX_RESENDS: usize = 2;

/// The HTTP/2 connections of one upstream pool, by backend.
#[derive(Debug, Default)]
pub(crate) struct DohUpstreams {
    slots: Slots<H2>,
}

/// What a DoH query needs besides its message.
pub(crate) struct DohQuery<'a> {
    pub(crate) target: &'a UpstreamTarget,
    pub(crate) tls: &'a Arc<UpstreamTls>,
    pub(crate) path: &'a str,
    pub(crate) authority: &'a str,
    pub(crate) limits: StreamLimits,
    pub(crate) connect_timeout: Duration,
    pub(crate) stats: &'a Arc<TcpUpstreamStats>,
}

impl DohUpstreams {
    /// Asks `query` (question `question`) as `q` says, within `timeout`.
    /// The answer keeps the query's ID (the caller's upstream ID).
    pub(crate) async fn query(
        &self,
        q: DohQuery<'_>,
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
        let id = match query {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => return Err(upstream(FailureKind::Closed, false)),
        };
        let slot = self.slots.slot(q.target.key(q.limits), q.limits);
        let Ok(Ok(_permit)) = timeout_at(deadline, slot.permits.acquire()).await else {
            inc(&q.stats.overloaded);
            return Err(upstream(FailureKind::Timeout, false));
        };
        let body = Bytes::copy_from_slice(query);
        let mut req = request(q.authority, q.path, body).map_err(|e| {
            debug!(backend = %backend, error = %e, "doh request not built");
            upstream(FailureKind::Closed, false)
        })?;
        let mut response = None;
        for _ in 0..MAX_RESENDS {
            let (tls, limit, stats) = (Arc::clone(q.tls), q.connect_timeout, Arc::clone(q.stats));
            let target = q.target.clone();
            let attempt = slot.get(
                |s: &H2| !s.is_closed(),
                move || connect_h2(target, tls, limit, stats),
            );
            let mut sender = match timeout_at(deadline, attempt).await {
                Err(_) => return Err(upstream(FailureKind::Timeout, true)),
                Ok(Err((kind, blame))) => return Err(upstream(kind, blame)),
                Ok(Ok(s)) => s,
            };
            match timeout_at(deadline, sender.try_send_request(req)).await {
                Err(_) => return Err(upstream(FailureKind::Timeout, true)),
                Ok(Ok(r)) => {
                    response = Some(r);
                    break;
                }
                Ok(Err(mut e)) => {
                    slot.forget(|s| s.is_closed());
                    match e.take_message() {
                        // Never sent: again, on a new connection.
                        Some(r) => req = r,
                        None => {
                            debug!(backend = %backend, error = %e.into_error(), "doh request failed");
                            return Err(upstream(FailureKind::Closed, true));
                        }
                    }
                }
            }
        }
        let Some(response) = response else {
            return Err(upstream(FailureKind::Closed, true));
        };
        let bad = |why: AnswerError| {
            debug!(backend = %backend, reason = %why, "doh backend response is no answer");
            upstream(FailureKind::ServFail, true)
        };
        check_head(response.status(), response.headers()).map_err(bad)?;
        let body = timeout_at(
            deadline,
            Limited::new(response.into_body(), MAX_MESSAGE).collect(),
        )
        .await
        .map_err(|_| upstream(FailureKind::Timeout, true))?
        .map_err(|e| {
            debug!(backend = %backend, error = %e, "doh response body failed");
            upstream(FailureKind::Closed, true)
        })?
        .to_bytes();
        if let Err(why) = check_body(&body, id, question) {
            inc(&q.stats.unmatched);
            return Err(bad(why));
        }
        Ok(body.to_vec())
    }
}

/// Connects to `target` over TLS (the connect timeout covering the
/// handshakes), insists on ALPN `h2`, and starts HTTP/2 on it; the
/// connection's task runs until it closes, counted in `stats`.
async fn connect_h2(
    target: UpstreamTarget,
    tls: Arc<UpstreamTls>,
    limit: Duration,
    stats: Arc<TcpUpstreamStats>,
) -> std::result::Result<H2, ConnectFailure> {
    let addr: SocketAddr = target.addr;
    let deadline = Instant::now() + limit;
    inc(&stats.connections_opened);
    inc(&stats.connections_open);
    let closed = |stats: &TcpUpstreamStats| stats.connections_open.fetch_sub(1, Ordering::Relaxed);
    let stream = match connect(&target, limit, &stats).await {
        Ok(Connected::Tls(s)) => s,
        Ok(Connected::Tcp(_)) => {
            closed(&stats);
            return Err((FailureKind::Refused, false));
        }
        Err(failure) => {
            closed(&stats);
            return Err(failure);
        }
    };
    if stream.get_ref().1.alpn_protocol() != Some(ALPN_H2) {
        inc(&stats.tls_failures);
        closed(&stats);
        warn!(backend = %addr, server_name = ?tls.server_name, "doh backend did not agree to ALPN h2");
        return Err((FailureKind::Refused, true));
    }
    let handshake = http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(*stream));
    let (sender, conn) = match timeout_at(deadline, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            closed(&stats);
            debug!(backend = %addr, error = %e, "doh http/2 handshake failed");
            return Err((FailureKind::Refused, true));
        }
        Err(_) => {
            closed(&stats);
            return Err((FailureKind::Timeout, true));
        }
    };
    debug!(backend = %addr, "upstream doh connection open");
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(backend = %addr, error = %e, "upstream doh connection failed");
        }
        closed(&stats);
        debug!(backend = %addr, "upstream doh connection closed");
    });
    Ok(sender)
}
