//! The DNS-over-HTTPS frontend (RFC 8484), on hyper: HTTP/2 (ALPN `h2`, or
//! prior knowledge without TLS) and HTTP/1.1.
//!
//! Requests are decoded by pure functions — [`check_head`], [`decode_body`]
//! and [`decode_request`] which combines them (the fuzz target's entry) —
//! into a DNS query; the query is admitted as on every other frontend
//! ([`crate::pipeline::admit`]) and balanced by [`super::forward`], so pools,
//! retries and SERVFAIL behave as over TCP. `udp` backends are asked over
//! UDP first, over TCP only for a truncated answer. Answers carry `content-type: application/dns-message`
//! and `cache-control: max-age=` the smallest TTL in the answer.
//!
//! | request | status |
//! | --- | --- |
//! | `GET path?dns=` (base64url) or `POST path` with `application/dns-message` | 200 |
//! | bad base64, no `dns` parameter, body not a DNS query | 400 |
//! | another path | 404 |
//! | another method | 405 |
//! | body over 65 535 bytes | 413 |
//! | another content type | 415 |
//! | over `max_requests_per_second` for the client | 429 |
//! | no backend and the pool says `drop` | 503 |
//!
//! Limits: `max_streams` concurrent HTTP/2 streams per connection (more are
//! refused with `REFUSED_STREAM`), `max_header_bytes` of request headers
//! (HTTP/1.1 gets 431, HTTP/2 a stream or connection error), a body must
//! arrive within `read_timeout_ms` (408), a connection idle for
//! `idle_timeout_ms` is closed (for HTTP/1.1 this also bounds the time to
//! send a request head), and `max_requests_per_second` per client.
//! A connection whose client abandons or overruns more than
//! [`ABUSE_LIMIT`] requests within [`ABUSE_WINDOW`] (HTTP/2 open-and-reset
//! churn, "rapid reset") is sent GOAWAY and closed; streams reset before the
//! server even accepted them are bounded by h2's own pending-reset limit.
//!
//! With `tls = false` the listener speaks plain HTTP behind a reverse
//! proxy; the client address is then read from `X-Forwarded-For` when the
//! peer is in `trusted_proxies` ([`client_addr`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use dnsha_core::config::Protocol;

use super::accept::{accept_loop, ClientStream};
use super::ctx::ListenerCtx;
use super::forward::forward;
use crate::metrics::inc;
use crate::pipeline::{admit, Admission};
use crate::tls::ServerTls;
use crate::upstream::Upstreams;
use crate::wire::dns::DropReason;

/// Abandoned or over-rate requests tolerated on one connection per
/// [`ABUSE_WINDOW`] before it is closed.
pub const ABUSE_LIMIT: u32 = 200;

/// The window [`ABUSE_LIMIT`] is counted over.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// Streams reset by the client before the server accepted them, per
/// connection, before h2 sends GOAWAY.
const MAX_PENDING_RESETS: usize = 32;

/// Streams reset by the server (protocol errors), per connection, before
/// h2 sends GOAWAY.
const MAX_LOCAL_RESETS: usize = 1024;

/// How often a connection checks its idle time.
const TICK: Duration = Duration::from_millis(500);

/// What a connection's requests share: activity for the idle timeout and
/// the abuse count that closes it.
#[derive(Debug)]
pub(super) struct ConnState {
    in_flight: AtomicUsize,
    last_active: Mutex<Instant>,
    abuse: Mutex<(Instant, u32)>,
    pub(super) close: Notify,
}

impl ConnState {
    pub(super) fn new() -> Self {
        let now = Instant::now();
        Self {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(now),
            abuse: Mutex::new((now, 0)),
            close: Notify::new(),
        }
    }

    fn touch(&self) {
        *self
            .last_active
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(
            *self
                .last_active
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Counts one abandoned or refused request; past the limit, asks the
    /// connection to close.
    pub(super) fn abuse(&self) {
        let now = Instant::now();
        let mut a = self.abuse.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(a.0) > ABUSE_WINDOW {
            *a = (now, 0);
        }
        a.1 += 1;
        if a.1 == ABUSE_LIMIT {
            self.close.notify_one();
        }
    }
}

/// Marks a request in flight; when dropped before [`Active::done`] (the
/// client reset the stream or closed), counts it as abandoned.
pub(super) struct Active {
    ctx: Arc<ListenerCtx>,
    conn: Arc<ConnState>,
    done: bool,
}

impl Active {
    pub(super) fn start(ctx: &Arc<ListenerCtx>, conn: &Arc<ConnState>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.touch();
        Self {
            ctx: Arc::clone(ctx),
            conn: Arc::clone(conn),
            done: false,
        }
    }

    pub(super) fn done(self, resp: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
        self.done_with(resp.status().as_u16());
        resp
    }

    /// Counts the request answered with `status`.
    pub(super) fn done_with(mut self, status: u16) {
        self.done = true;
        self.ctx.metrics.http_response(status);
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.conn.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn.touch();
        if !self.done {
            inc(&self.ctx.metrics.http_cancelled);
            self.conn.abuse();
        }
    }
}

/// Serves DoH on `listener` (over TLS when `tls` is set) until `ctx.stop`
/// is cancelled; open connections are then shut down gracefully.
pub async fn serve(
    ctx: Arc<ListenerCtx>,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    upstreams: Upstreams,
) {
    let limiter = Arc::new(RateLimiter::default());
    let ctx2 = Arc::clone(&ctx);
    accept_loop(ctx, listener, tls, move |stream, peer| {
        let (ctx, up, lim) = (Arc::clone(&ctx2), upstreams.clone(), Arc::clone(&limiter));
        connection(ctx, stream, peer, up, lim)
    })
    .await;
}

async fn connection(
    ctx: Arc<ListenerCtx>,
    stream: ClientStream,
    peer: SocketAddr,
    upstreams: Upstreams,
    limiter: Arc<RateLimiter>,
) {
    let cfg = ctx.shared.load().config.clone();
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    let state = Arc::new(ConnState::new());
    let service = {
        let (ctx, state) = (Arc::clone(&ctx), Arc::clone(&state));
        hyper::service::service_fn(move |req| {
            let active = Active::start(&ctx, &state);
            // Boxed: hyper moves each stream's future a few times (into
            // the stream, into the spawned task), and the request's future
            // with its upstream state is about 2.3 kB.
            let fut = Box::pin(handle(
                Arc::clone(&ctx),
                upstreams.clone(),
                Arc::clone(&limiter),
                Arc::clone(&state),
                peer,
                req,
            ));
            async move { Ok::<_, Infallible>(active.done(fut.await)) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // From the previous response to the end of the next request head:
        // keep-alive connections idle up to `idle_timeout_ms`, and a head
        // sent slowly is cut at the same bound.
        .header_read_timeout(idle)
        .max_buf_size(cfg.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_streams)
        .max_header_list_size(u32::try_from(cfg.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(MAX_PENDING_RESETS)
        .max_local_error_reset_streams(MAX_LOCAL_RESETS)
        .max_send_buf_size(256 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(TICK);
    let mut closing_since: Option<Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    // An I/O error is the client going away; anything else
                    // is HTTP the server refused (hyper answered 431/400 or
                    // h2 sent GOAWAY).
                    if protocol_error(&*e) {
                        inc(&ctx.metrics.http_protocol_errors);
                    }
                    debug!(listener = %ctx.metrics.name, client = %peer, error = %e, "doh connection ended");
                }
                break;
            }
            () = state.close.notified(), if closing_since.is_none() => {
                inc(&ctx.metrics.http_abusive_closed);
                debug!(listener = %ctx.metrics.name, client = %peer, "doh connection closed for abuse");
                conn.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            () = ctx.stop.cancelled(), if closing_since.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            _ = tick.tick() => {
                let now = Instant::now();
                match closing_since {
                    // Requests in flight had their time: cut the rest.
                    Some(t) if now.saturating_duration_since(t) > idle => break,
                    Some(_) => {}
                    None => {
                        if state.idle_since().is_some_and(|t| now.saturating_duration_since(t) > idle) {
                            conn.as_mut().graceful_shutdown();
                            closing_since = Some(now);
                        }
                    }
                }
            }
        }
    }
}

/// Whether a connection error is HTTP the server refused, rather than the
/// client going away or a timeout.
fn protocol_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    let Some(h) = e.downcast_ref::<hyper::Error>() else {
        return false;
    };
    let io = std::error::Error::source(h).is_some_and(|s| s.is::<std::io::Error>());
    h.is_parse()
        || h.is_parse_too_large()
        || !(io || h.is_incomplete_message() || h.is_canceled() || h.is_closed() || h.is_timeout())
}

/// A plain-text error response with the status of `err`.
pub(super) fn text(err: DohError) -> Response<Full<Bytes>> {
    let status = err.status();
    let mut b = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store");
    if err == DohError::MethodNotAllowed {
        b = b.header(header::ALLOW, "GET, POST");
    }
    let reason = status.canonical_reason().unwrap_or("error");
    b.body(Full::new(Bytes::from(format!("{reason}\n"))))
        .unwrap_or_default()
}

fn dns_answer(answer: Vec<u8>) -> Response<Full<Bytes>> {
    let ttl = min_ttl(&answer);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, DNS_MESSAGE)
        .header(header::CACHE_CONTROL, format!("max-age={ttl}"))
        .header(header::CONTENT_LENGTH, answer.len())
        .body(Full::new(Bytes::from(answer)))
        .unwrap_or_default()
}

fn header_str<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .collect()
}

/// Bytes of an oversized body read (and discarded) before answering 413.
pub(super) const DRAIN_LIMIT: usize = 2 << 20;

/// Reads a POST body within `limit`: at most [`MAX_BODY`] bytes are kept
/// (none without `keep`); a larger body is read on, discarded, up to
/// [`DRAIN_LIMIT`], then refused with 413. A client that breaks off gets
/// 400, a slow one 408.
async fn read_body(mut body: Incoming, limit: Duration, keep: bool) -> Result<Vec<u8>, DohError> {
    let read = async {
        let mut kept = Vec::new();
        let mut total = 0usize;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return Err(DohError::BadRequest);
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            total = total.saturating_add(data.len());
            if total > DRAIN_LIMIT {
                return Err(DohError::PayloadTooLarge);
            }
            if keep && total <= MAX_BODY {
                kept.extend_from_slice(&data);
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

async fn handle(
    ctx: Arc<ListenerCtx>,
    upstreams: Upstreams,
    limiter: Arc<RateLimiter>,
    conn: Arc<ConnState>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let shared = ctx.shared.load_full();
    let cfg = &shared.config;
    let m = &ctx.metrics;
    let headers = req.headers();
    let client = client_addr(
        peer,
        &header_str(headers, &header::HeaderName::from_static("x-forwarded-for")),
        &cfg.trusted_proxies,
    );
    if cfg.max_requests_per_second > 0
        && !limiter.allow(client.ip(), cfg.max_requests_per_second, Instant::now())
    {
        inc(&m.rate_limited);
        conn.abuse();
        return text(DohError::TooManyRequests);
    }
    let (head, content_length) = head_of(&req, &cfg.path);
    let read = Duration::from_millis(cfg.read_timeout_ms);
    let wire = match head {
        Err(e) => {
            // Some clients (curl 7.88 over HTTP/2) lose a status sent
            // before their upload ends: take a body of bounded size first,
            // discarding it.
            let has_body = !req.body().is_end_stream();
            if has_body && content_length.is_none_or(|n| n <= DRAIN_LIMIT as u64) {
                let _ = read_body(req.into_body(), read, false).await;
            }
            return text(e);
        }
        Ok(Head::Get(wire)) => wire,
        Ok(Head::Post) => match read_body(req.into_body(), read, true).await {
            Ok(body) => match decode_body(&body) {
                Ok(w) => w,
                Err(e) => return text(e),
            },
            Err(e) => return text(e),
        },
    };
    let alt_svc = cfg.alt_svc.clone();
    let mut resp = answer(&ctx, &upstreams, client, &wire, Protocol::Doh).await;
    if let Some(v) = alt_svc.and_then(|v| HeaderValue::from_str(&v).ok()) {
        resp.headers_mut().insert(header::ALT_SVC, v);
    }
    resp
}

/// What the request line and headers of `req` say ([`check_head`] against
/// the listener's `path`), and the declared body length. Shared by the
/// HTTP/2 and HTTP/3 listeners.
pub(super) fn head_of<B>(req: &Request<B>, path: &str) -> (Result<Head, DohError>, Option<u64>) {
    let headers = req.headers();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path(), |pq| pq.as_str());
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let head = check_head(
        req.method().as_str(),
        target,
        headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
        content_length,
        path,
    );
    (head, content_length)
}

/// The HTTP answer to a DNS query decoded from a request (DoH or DoH3):
/// admitted and forwarded as on every frontend; a message that is not a
/// DNS query is a bad request, no backend a 503.
pub(super) async fn answer(
    ctx: &Arc<ListenerCtx>,
    upstreams: &Upstreams,
    client: SocketAddr,
    wire: &[u8],
    protocol: Protocol,
) -> Response<Full<Bytes>> {
    let shared = ctx.shared.load_full();
    match admit(&shared, &ctx.metrics, client.ip(), protocol, wire) {
        // Not a DNS query at all: the HTTP request was bad.
        Admission::Drop(_) | Admission::Reply(_, DropReason::Malformed | DropReason::Short) => {
            text(DohError::BadRequest)
        }
        Admission::Reply(reply, _) => dns_answer(reply),
        Admission::Forward(admitted) => {
            match forward(ctx, upstreams, client, wire, admitted, protocol).await {
                Some(answer) => dns_answer(answer),
                None => text(DohError::Unavailable),
            }
        }
    }
}

mod request;
#[cfg(test)]
mod tests;

pub use request::{
    check_head, client_addr, decode_body, decode_request, encode_get_param, min_ttl, DohError,
    Head, RateLimiter, DNS_MESSAGE, MAX_BODY,
};
