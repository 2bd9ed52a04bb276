//! The DNS-over-TCP frontend (RFC 7766): length-prefixed queries, each
//! balanced on its own, answered out of order.
//!
//! One task per client connection reads messages, starts one future per
//! query (polled by the connection task itself: no task per query) and is
//! the only writer: answers go out in completion order. At most [`MAX_IN_FLIGHT_PER_CLIENT`] queries are in
//! flight per connection; at that limit the task stops reading, so a client
//! pipelining thousands of queries costs bounded memory. Queries reach the
//! backends through the shared [`TcpUpstreams`].
//!
//! Timeouts: a message must be complete within `read_timeout_ms` of its first
//! byte, and a connection with nothing in flight and nothing arriving closes
//! after `idle_timeout_ms`. A length prefix of 0 ends the connection once the
//! queries in flight are answered. Connection limits ([`ConnLimiter`]) are
//! shared with the passthrough frontend.
//!
//! The per-connection logic ([`handle_connection`]) is generic over the
//! stream halves, so the DNS-over-TLS frontend ([`crate::dot`]) runs it
//! unchanged after its handshake; [`forward`] is the per-query balancing
//! shared by every stream frontend (and DoH).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use dnsha_core::{BackendId, Millis, OnNoBackend, Transition};
use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::accesslog::LogRecord;
use crate::ctx::ListenerCtx;
use crate::dns::{
    classify_query, refused_for, rewrite_id, synth_reply, DropReason, QueryInfo, Verdict,
    MAX_MESSAGE,
};
use crate::error::{Error, RetryType};
use crate::metrics::{inc, ListenerMetrics};
use crate::upstream_tcp::{TcpUpstreams, UpstreamTarget};
use crate::upstream_udp::{UdpReply, UdpUpstreams};

/// Most queries in flight on one client connection; at the limit the
/// connection stops reading until an answer is written.
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 256;

/// Room made at the end of a [`FrameDecoder`] before a socket read.
const READ_RESERVE: usize = 4 * 1024;

/// Consumed bytes at the front of a [`FrameDecoder`] above which the buffer
/// is compacted.
const COMPACT_AT: usize = 16 * 1024;

/// Answers batched into one write, at most (more when one answer is larger).
const WRITE_BATCH: usize = 64 * 1024;

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A far-away instant for a disarmed timer.
const FAR: Duration = Duration::from_secs(86_400);

/// Sans-IO reassembly of length-prefixed DNS messages (RFC 1035 §4.2.2).
///
/// ```
/// use dnsha_proxy::tcp::FrameDecoder;
///
/// let mut d = FrameDecoder::new();
/// d.push(&[0, 3, b'a']);
/// assert_eq!(d.next_message(), None);
/// assert!(d.partial());
/// d.push(&[b'b', b'c', 0]);
/// assert_eq!(d.next_message(), Some(b"abc".to_vec()));
/// assert!(d.partial());
/// d.push(&[0]);
/// assert_eq!(d.next_message(), Some(Vec::new())); // a zero length prefix
/// assert!(!d.partial());
/// ```
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    pos: usize,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(bytes);
    }

    /// Reads once from `rd` straight into the buffer (cancel safe, as
    /// `read_buf`). Returns the bytes read; 0 means end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> std::io::Result<usize> {
        self.compact();
        if self.buf.capacity() - self.buf.len() < READ_RESERVE / 8 {
            self.buf.reserve(READ_RESERVE);
        }
        rd.read_buf(&mut self.buf).await
    }

    fn compact(&mut self) {
        if self.pos > 0 && (self.pos >= self.buf.len() || self.pos >= COMPACT_AT) {
            self.buf.drain(..self.pos.min(self.buf.len()));
            self.pos = 0;
        }
    }

    /// The next complete message (without its length prefix), if buffered. A
    /// zero length prefix yields an empty message.
    pub fn next_message(&mut self) -> Option<Vec<u8>> {
        let rest = self.buf.get(self.pos..)?;
        let [hi, lo, body @ ..] = rest else {
            return None;
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let msg = body.get(..len)?.to_vec();
        self.pos += 2 + len;
        Some(msg)
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// True when bytes are buffered but do not yet form a complete message.
    pub fn partial(&self) -> bool {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        match rest {
            [] => false,
            [_] => true,
            [hi, lo, body @ ..] => body.len() < usize::from(u16::from_be_bytes([*hi, *lo])),
        }
    }
}

/// Appends `msg` with its length prefix to `out`; messages over 65 535 bytes
/// cannot be framed and are skipped (returns false).
pub fn push_frame(out: &mut Vec<u8>, msg: &[u8]) -> bool {
    let Ok(len) = u16::try_from(msg.len()) else {
        return false;
    };
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    true
}

/// Counts client connections, in total and per client address, against a
/// listener's limits. Shared by the TCP and passthrough frontends.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; releases its place in the [`ConnLimiter`] (and
/// the listener's `connections` gauge) when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
    metrics: Option<Arc<ListenerMetrics>>,
}

impl ConnLimiter {
    /// A limiter with no connection counted.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for a connection from `ip`, or `None` when that would
    /// exceed `max_total` connections or `max_per_client` from one address.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Option<ConnSlot> {
        let ip = ip.to_canonical();
        let mut st = self.state();
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        if st.total >= max_total || from_ip >= max_per_client {
            return None;
        }
        st.total += 1;
        st.per_ip.insert(ip, from_ip + 1);
        Some(ConnSlot {
            limiter: Arc::clone(self),
            ip,
            metrics: None,
        })
    }

    /// Connections counted now.
    pub fn total(&self) -> usize {
        self.state().total
    }

    /// Connections counted now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.state()
            .per_ip
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut st = self.limiter.state();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Waits for the next client connection; `None` once `ctx.stop` is
/// cancelled. A failed accept (e.g. out of file descriptors) is logged and
/// retried after a short pause.
pub async fn accept_next(
    ctx: &ListenerCtx,
    listener: &TcpListener,
) -> Option<(tokio::net::TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            () = ctx.stop.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok(v) => return Some(v),
            Err(e) => {
                warn!(listener = %ctx.metrics.name, error = %e, "accept failed");
                tokio::select! {
                    () = ctx.stop.cancelled() => return None,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
}

/// Applies the listener's connection limits to a new client connection and
/// counts it: `connections` and `connections_total` when admitted,
/// `connections_refused` when not (the caller then closes it).
pub fn admit(ctx: &ListenerCtx, limiter: &Arc<ConnLimiter>, peer: SocketAddr) -> Option<ConnSlot> {
    let (max_total, per_client) = {
        let shared = ctx.shared.load();
        (
            shared.config.max_connections,
            shared.config.max_connections_per_client,
        )
    };
    let m = &ctx.metrics;
    match limiter.try_acquire(peer.ip(), max_total, per_client) {
        Some(mut slot) => {
            inc(&m.connections);
            inc(&m.connections_total);
            slot.metrics = Some(Arc::clone(m));
            Some(slot)
        }
        None => {
            inc(&m.connections_refused);
            debug!(listener = %m.name, client = %peer, "connection over the limits refused");
            None
        }
    }
}

/// Accepts client connections until `ctx.stop` is cancelled, one task per
/// connection tracked by `ctx.tasks`. Open connections then stop reading,
/// answer what is in flight and close.
pub async fn serve(ctx: Arc<ListenerCtx>, listener: TcpListener, upstreams: Arc<TcpUpstreams>) {
    let limiter = Arc::clone(&ctx.conns);
    debug!(listener = %ctx.metrics.name, address = %ctx.metrics.address, "dns tcp listener started");
    while let Some((stream, peer)) = accept_next(&ctx, &listener).await {
        let Some(slot) = admit(&ctx, &limiter, peer) else {
            drop(stream);
            continue;
        };
        let ctx2 = Arc::clone(&ctx);
        let up = Arc::clone(&upstreams);
        ctx.tasks.spawn(async move {
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let (rd, wr) = stream.split();
            handle_connection(ctx2, rd, wr, peer, up, "TCP").await;
            drop(slot);
        });
    }
    info!(listener = %ctx.metrics.name, "dns tcp listener stopped accepting");
}

/// The queries of one connection in flight: futures polled by the
/// connection's own task (no task per query), each yielding what to send the
/// client.
type Queries =
    FuturesUnordered<std::pin::Pin<Box<dyn std::future::Future<Output = Option<Vec<u8>>> + Send>>>;

/// Why a client connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The client closed, sent a zero length, or the listener stopped; all
    /// queries were answered.
    Done,
    ReadTimeout,
    IdleTimeout,
    WriteTimeout,
    Error,
}

/// Serves one client connection of length-prefixed DNS messages (RFC 7766,
/// and RFC 7858 once TLS is set up): reads queries, balances each one, writes
/// answers in completion order, until the client closes, a timeout fires or
/// the listener stops. `proto` labels the access log (`TCP`, `DoT`).
pub async fn handle_connection<R, W>(
    ctx: Arc<ListenerCtx>,
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    upstreams: Arc<TcpUpstreams>,
    proto: &'static str,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (read_timeout, idle_timeout) = {
        let s = ctx.shared.load();
        (
            Duration::from_millis(s.config.read_timeout_ms),
            Duration::from_millis(s.config.idle_timeout_ms),
        )
    };
    let mut decoder = FrameDecoder::new();
    let mut queries: Queries = FuturesUnordered::new();
    let mut out: Vec<u8> = Vec::new();
    let mut reading = true;
    let mut last_activity = Instant::now();
    let mut msg_started: Option<Instant> = None;
    let far = Instant::now() + FAR;
    let timer = tokio::time::sleep_until(far);
    tokio::pin!(timer);
    let close = loop {
        // Start every complete message, within the in-flight limit.
        while reading && queries.len() < MAX_IN_FLIGHT_PER_CLIENT {
            match decoder.next_message() {
                None => break,
                Some(msg) if msg.is_empty() => {
                    ctx.metrics.dropped(DropReason::Short);
                    debug!(client = %peer, "zero length prefix, closing");
                    reading = false;
                }
                Some(msg) => dispatch(&ctx, &upstreams, peer, msg, proto, &mut queries, &mut out),
            }
        }
        if !out.is_empty() {
            if !write_out(&mut wr, &out, idle_timeout).await {
                break Close::WriteTimeout;
            }
            out.clear();
            last_activity = Instant::now();
        }
        if !reading && queries.is_empty() {
            break Close::Done;
        }
        let can_read = reading && queries.len() < MAX_IN_FLIGHT_PER_CLIENT;
        // The read timeout runs from a message's first byte while we read.
        msg_started = if can_read && decoder.partial() {
            msg_started.or_else(|| Some(Instant::now()))
        } else {
            None
        };
        let deadline = match msg_started {
            Some(t) => Some((t + read_timeout, Close::ReadTimeout)),
            None if can_read && queries.is_empty() => {
                Some((last_activity + idle_timeout, Close::IdleTimeout))
            }
            None => None,
        };
        let (at, why) = deadline.unwrap_or((far, Close::Done));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            r = decoder.fill(&mut rd), if can_read => match r {
                Ok(0) => {
                    if decoder.buffered() > 0 {
                        debug!(client = %peer, bytes = decoder.buffered(), "eof inside a message");
                    }
                    reading = false;
                }
                Ok(_) => last_activity = Instant::now(),
                Err(e) => {
                    debug!(client = %peer, error = %e, "client read failed");
                    break Close::Error;
                }
            },
            Some(done) = queries.next(), if !queries.is_empty() => {
                collect(done, &mut out);
                while out.len() < WRITE_BATCH {
                    let Some(Some(done)) = queries.next().now_or_never() else { break };
                    collect(done, &mut out);
                }
            },
            () = ctx.stop.cancelled(), if reading => reading = false,
            () = &mut timer, if deadline.is_some() => break why,
        }
    };
    match close {
        Close::Done => {
            let _ = timeout(idle_timeout, wr.shutdown()).await;
        }
        other => debug!(client = %peer, reason = ?other, "client connection closed"),
    }
}

/// Adds a finished query's answer to the output.
fn collect(done: Option<Vec<u8>>, out: &mut Vec<u8>) {
    if let Some(answer) = done {
        push_frame(out, &answer);
    }
}

/// Writes (and flushes, for TLS) `out` within `limit`; false when the
/// client does not take it.
async fn write_out<W: AsyncWrite + Unpin>(wr: &mut W, out: &[u8], limit: Duration) -> bool {
    let write = async {
        wr.write_all(out).await?;
        wr.flush().await
    };
    matches!(timeout(limit, write).await, Ok(Ok(())))
}

/// Handles one complete client message: an immediate reply goes to `out`, a
/// query to forward becomes a future in `queries`.
fn dispatch(
    ctx: &Arc<ListenerCtx>,
    upstreams: &Arc<TcpUpstreams>,
    peer: SocketAddr,
    msg: Vec<u8>,
    proto: &'static str,
    queries: &mut Queries,
    out: &mut Vec<u8>,
) {
    let m = &ctx.metrics;
    if !ctx.shared.load().acl.allows(peer.ip()) {
        m.dropped(DropReason::Acl);
        if let Some(reply) = refused_for(&msg) {
            inc(&m.refused);
            push_frame(out, &reply);
        }
        return;
    }
    match classify_query(&msg) {
        Verdict::Reply(reply, reason) => {
            m.dropped(reason);
            push_frame(out, &reply);
        }
        Verdict::Drop(reason) => m.dropped(reason),
        Verdict::Forward(info) => {
            inc(&m.queries);
            let ctx = Arc::clone(ctx);
            let up = Arc::clone(upstreams);
            queries.push(Box::pin(async move {
                forward(&ctx, &up, None, peer, &msg, &info, proto).await
            }));
        }
    }
}

/// Balances one query over streams: tries backends (over TCP, or TLS for
/// `dot` backends) until one answers or the pool's retries are spent.
/// Returns what to send the client (with the client's ID): the answer, the
/// pool's SERVFAIL, or `None` when the pool says `drop`. `proto` labels the
/// access log. With `udp` given (DoH), `udp` backends are asked over UDP
/// first and over TCP only when their answer is truncated or too large.
pub async fn forward(
    ctx: &ListenerCtx,
    upstreams: &TcpUpstreams,
    udp: Option<&UdpUpstreams>,
    peer: SocketAddr,
    msg: &[u8],
    info: &QueryInfo,
    proto: &'static str,
) -> Option<Vec<u8>> {
    let started = Instant::now();
    let time = SystemTime::now();
    let shared = ctx.shared.load_full();
    let pool = &shared.pool;
    let set = pool.snapshot();
    let settings = set.settings().clone();
    let per_try = Duration::from_millis(settings.timeout_ms);
    let m = &ctx.metrics;
    let mut tried: Vec<BackendId> = Vec::new();
    let mut last_backend = None;
    let mut answer = None;
    while tried.len() <= settings.retries as usize {
        let Some(flight) = set.pick(&tried, Millis::now()) else {
            break;
        };
        let backend = Arc::clone(flight.backend());
        if !tried.is_empty() {
            inc(&m.retries);
        }
        tried.push(backend.id());
        last_backend = Some(backend.address());
        let target = shared.routes.target(&backend);
        let udp = udp.filter(|_| target.tls.is_none() && shared.routes.uses_udp(&backend));
        let udp = udp.map(|u| (u, settings.udp_sockets_per_backend));
        match query_backend(upstreams, udp, &target, msg, &info.question, per_try, m).await {
            Ok(mut a) => {
                // SERVFAIL: alive, but counted by passive health checking.
                let servfail = crate::dns::parse_answer(&a)
                    .is_some_and(|ai| ai.rcode == ResponseCode::ServFail);
                let recorded = if servfail {
                    pool.record_servfail(&backend)
                } else {
                    backend.record_success()
                };
                if recorded == Some(Transition::Up) {
                    info!(pool = %pool.name(), backend = %backend.name(), "backend up (answered)");
                }
                rewrite_id(&mut a, info.id);
                inc(&m.answers);
                answer = Some(a);
                break;
            }
            Err(Error::Upstream { kind, retry, .. }) => {
                if kind == dnsha_core::FailureKind::Timeout {
                    inc(&m.timeouts);
                }
                if pool.record_failure(&backend, kind, Millis::now()) == Some(Transition::Down) {
                    warn!(
                        pool = %pool.name(),
                        backend = %backend.name(),
                        reason = kind.as_str(),
                        "backend down (passive)"
                    );
                }
                debug!(backend = %backend.name(), reason = kind.as_str(), "tcp query failed");
                if retry == RetryType::NoRetry {
                    break;
                }
            }
            Err(e) => {
                debug!(backend = %backend.name(), error = %e, "tcp query not sent");
                break;
            }
        }
    }
    let reply = answer.or_else(|| match settings.on_no_backend {
        OnNoBackend::Servfail => {
            inc(&m.servfail);
            Some(synth_reply(info, ResponseCode::ServFail))
        }
        OnNoBackend::Drop => {
            m.dropped(DropReason::NoBackend);
            None
        }
    });
    if let Some(log) = &shared.access_log {
        log.log(LogRecord {
            time,
            client: peer,
            backend: last_backend,
            protocol: proto,
            rcode: crate::dns::rcode_label(reply.as_deref()),
            duration: started.elapsed(),
            qname: info.question.name().to_ascii(),
            qtype: info.question.query_type().to_string(),
        });
    }
    reply.filter(|r| r.len() <= MAX_MESSAGE)
}

/// One try on one backend: over UDP when `udp` is given (with the pool's
/// sockets per backend), then over the stream if the UDP answer is
/// truncated or did not fit.
async fn query_backend(
    upstreams: &TcpUpstreams,
    udp: Option<(&UdpUpstreams, usize)>,
    target: &UpstreamTarget,
    msg: &[u8],
    question: &hickory_proto::op::Query,
    per_try: Duration,
    m: &ListenerMetrics,
) -> crate::error::Result<Vec<u8>> {
    if let Some((udp, sockets)) = udp {
        match udp
            .query_over(target.addr, sockets, msg, question, per_try)
            .await?
        {
            UdpReply::Answer(a) if !crate::dns::is_truncated(&a) => return Ok(a),
            UdpReply::Answer(_) | UdpReply::TooBig => inc(&m.tcp_fallbacks),
        }
    }
    upstreams.query_target(target, msg, question, per_try).await
}

#[cfg(test)]
mod tests;
