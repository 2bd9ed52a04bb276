//! The DNS-over-HTTPS frontend over HTTP/3 (RFC 8484 on RFC 9114), on
//! quinn and the `h3` crate.
//!
//! Connections come through the QUIC accept loop ([`super::quic`]: ACL,
//! Retry under load, handshake and connection limits; ALPN `h3`, TLS 1.3,
//! no 0-RTT). Each request stream is decoded by the same pure functions as
//! the HTTP/2 listener's ([`super::doh::check_head`],
//! [`super::doh::decode_body`]) and answered by the same
//! [`super::doh::answer`], so paths, methods, statuses, the per-client
//! request rate and `max-age` are those of the table in [`super::doh`].
//! Limits: `max_streams` request streams open at once per connection (QUIC
//! stream credit), `max_header_bytes` of request headers (h3's
//! `SETTINGS_MAX_FIELD_SECTION_SIZE`), a body within `read_timeout_ms`, the
//! connection closed when idle for `idle_timeout_ms` (QUIC idle timeout),
//! and a connection whose client abandons or overruns more than
//! [`super::doh::ABUSE_LIMIT`] requests in [`super::doh::ABUSE_WINDOW`] is
//! closed (as the HTTP/2 listener does against rapid reset).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use dnsha_core::config::Protocol;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::debug;

use super::ctx::ListenerCtx;
use super::doh::{
    answer, decode_body, head_of, text, Active, ConnState, DohError, Head, RateLimiter,
    DRAIN_LIMIT, MAX_BODY,
};
use super::quic::accept_loop;
use crate::metrics::inc;
use crate::upstream::Upstreams;

type H3Conn = h3::server::Connection<h3_quinn::Connection, Bytes>;
type H3Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// Serves DoH3 on `endpoint` until `ctx.stop` is cancelled; open
/// connections are then sent GOAWAY and finish the requests they have.
pub async fn serve(ctx: Arc<ListenerCtx>, endpoint: quinn::Endpoint, upstreams: Upstreams) {
    let limiter = Arc::new(RateLimiter::default());
    let ctx2 = Arc::clone(&ctx);
    accept_loop(ctx, endpoint, move |conn, peer| {
        let (ctx, up, lim) = (Arc::clone(&ctx2), upstreams.clone(), Arc::clone(&limiter));
        connection(ctx, conn, peer, up, lim)
    })
    .await;
}

/// One client connection: its HTTP/3 control streams, and a task per
/// request, until the client closes, the connection idles out or is closed
/// for abuse, or the listener stops.
async fn connection(
    ctx: Arc<ListenerCtx>,
    conn: quinn::Connection,
    peer: SocketAddr,
    upstreams: Upstreams,
    limiter: Arc<RateLimiter>,
) {
    let max_header = ctx.shared.load().config.max_header_bytes as u64;
    let built = h3::server::builder()
        .max_field_section_size(max_header)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await;
    let mut h3: H3Conn = match built {
        Ok(c) => c,
        Err(e) => {
            inc(&ctx.metrics.http_protocol_errors);
            debug!(listener = %ctx.metrics.name, client = %peer, error = %e, "doh3 connection not set up");
            return;
        }
    };
    let state = Arc::new(ConnState::new());
    let requests = TaskTracker::new();
    let mut closing = false;
    loop {
        let accepted = tokio::select! {
            r = h3.accept() => r,
            () = ctx.stop.cancelled(), if !closing => {
                closing = true;
                let _ = h3.shutdown(0).await;
                continue;
            }
            () = state.close.notified(), if !closing => {
                inc(&ctx.metrics.http_abusive_closed);
                debug!(listener = %ctx.metrics.name, client = %peer, "doh3 connection closed for abuse");
                closing = true;
                let _ = h3.shutdown(0).await;
                continue;
            }
        };
        match accepted {
            Ok(Some(resolver)) => {
                let (ctx, up, lim, st) = (
                    Arc::clone(&ctx),
                    upstreams.clone(),
                    Arc::clone(&limiter),
                    Arc::clone(&state),
                );
                requests.spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => request(ctx, up, lim, st, peer, req, stream).await,
                        Err(e) => {
                            inc(&ctx.metrics.http_cancelled);
                            debug!(listener = %ctx.metrics.name, client = %peer, error = %e, "doh3 request head not read");
                        }
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                // A local error is HTTP/3 the server refused (h3 closed
                // the connection); a remote one is the client or QUIC
                // (idle timeout, client gone).
                if !e.is_h3_no_error() && matches!(e, h3::error::ConnectionError::Local { .. }) {
                    inc(&ctx.metrics.http_protocol_errors);
                }
                debug!(listener = %ctx.metrics.name, client = %peer, error = %e, "doh3 connection ended");
                break;
            }
        }
    }
    requests.close();
    requests.wait().await;
    conn.close(quinn::VarInt::from_u32(0x100), b"");
}

/// One request stream: decoded, answered, the response sent.
async fn request(
    ctx: Arc<ListenerCtx>,
    upstreams: Upstreams,
    limiter: Arc<RateLimiter>,
    conn: Arc<ConnState>,
    peer: SocketAddr,
    req: Request<()>,
    mut stream: H3Stream,
) {
    let active = Active::start(&ctx, &conn);
    let resp = handle(&ctx, &upstreams, &limiter, &conn, peer, &req, &mut stream).await;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let status = parts.status;
    let write_limit = Duration::from_millis(ctx.shared.load().config.write_timeout_ms);
    let sent = tokio::time::timeout(write_limit, async {
        stream
            .send_response(Response::from_parts(parts, ()))
            .await?;
        stream.send_data(body).await?;
        stream.finish().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {
            active.done_with(status.as_u16());
        }
        Ok(Err(e)) => {
            debug!(listener = %ctx.metrics.name, client = %peer, error = %e, "doh3 response not sent");
        }
        Err(_) => {
            debug!(listener = %ctx.metrics.name, client = %peer, "doh3 response not taken in time");
        }
    }
}

/// The response to one request.
async fn handle(
    ctx: &Arc<ListenerCtx>,
    upstreams: &Upstreams,
    limiter: &RateLimiter,
    conn: &ConnState,
    peer: SocketAddr,
    req: &Request<()>,
    stream: &mut H3Stream,
) -> Response<Full<Bytes>> {
    let (per_second, path, read) = {
        let s = ctx.shared.load();
        (
            s.config.max_requests_per_second,
            s.config.path.clone(),
            Duration::from_millis(s.config.read_timeout_ms),
        )
    };
    if per_second > 0 && !limiter.allow(peer.ip(), per_second, Instant::now()) {
        inc(&ctx.metrics.rate_limited);
        conn.abuse();
        return text(DohError::TooManyRequests);
    }
    let (head, _) = head_of(req, &path);
    let wire = match head {
        // The client's body, if any, is not read: the response ends the
        // stream and the client's sending side is stopped by h3.
        Err(e) => return text(e),
        Ok(Head::Get(wire)) => wire,
        Ok(Head::Post) => match read_body(stream, read).await {
            Ok(body) => match decode_body(&body) {
                Ok(w) => w,
                Err(e) => return text(e),
            },
            Err(e) => return text(e),
        },
    };
    answer(ctx, upstreams, peer, &wire, Protocol::Doh3).await
}

/// Reads a request body within `limit`: at most [`MAX_BODY`] bytes; a
/// larger one is read on, discarded, up to [`DRAIN_LIMIT`], then refused
/// with 413. A client that breaks off gets 400, a slow one 408.
async fn read_body(stream: &mut H3Stream, limit: Duration) -> Result<Vec<u8>, DohError> {
    let read = async {
        let mut kept = Vec::new();
        let mut total = 0usize;
        loop {
            match stream.recv_data().await {
                Ok(Some(mut chunk)) => {
                    let n = chunk.remaining();
                    total = total.saturating_add(n);
                    if total > DRAIN_LIMIT {
                        return Err(DohError::PayloadTooLarge);
                    }
                    if total <= MAX_BODY {
                        kept.extend_from_slice(&chunk.copy_to_bytes(n));
                    } else {
                        chunk.advance(n);
                    }
                }
                Ok(None) => break,
                Err(_) => return Err(DohError::BadRequest),
            }
        }
        if total > MAX_BODY {
            Err(DohError::PayloadTooLarge)
        } else {
            Ok(kept)
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Err(DohError::Timeout))
}
