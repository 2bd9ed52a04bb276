//! The DNS-over-TCP frontend (RFC 7766): length-prefixed queries, each
//! balanced on its own, answered out of order.
//!
//! One task per client connection reads messages, starts one future per
//! query ([`super::forward`], polled by the connection task itself: no task
//! per query) and is the only writer: answers go out in completion order.
//! At most [`MAX_IN_FLIGHT_PER_CLIENT`] queries are in flight per
//! connection; at that limit the task stops reading, so a client
//! pipelining thousands of queries costs bounded memory.
//!
//! Timeouts: a message must be complete within `read_timeout_ms` of its first
//! byte, answers must be taken within `write_timeout_ms`, and a connection
//! with nothing in flight and nothing arriving closes after
//! `idle_timeout_ms`. A length prefix of 0 ends the connection once the
//! queries in flight are answered. Connection limits are the accept loop's
//! ([`super::accept`]).
//!
//! The per-connection logic ([`handle_connection`]) is generic over the
//! stream halves, so the DNS-over-TLS frontend ([`super::dot`]) runs it
//! unchanged after its handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::Protocol;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{timeout, Instant};
use tracing::debug;

use super::accept::{accept_loop, ClientStream};
use super::ctx::ListenerCtx;
use super::forward::forward;
use crate::pipeline::{admit, Admission};
use crate::upstream::Upstreams;
use crate::wire::dns::DropReason;
use crate::wire::frame::{push_frame, FrameDecoder};

/// Most queries in flight on one client connection; at the limit the
/// connection stops reading until an answer is written.
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 256;

/// Answers batched into one write, at most (more when one answer is larger).
const WRITE_BATCH: usize = 64 * 1024;

/// A far-away instant for a disarmed timer.
const FAR: Duration = Duration::from_secs(86_400);

/// Once the listener stops, a connection keeps reading until it has been
/// quiet this long: a query the client sent just before (or just after its
/// connection was accepted) is answered, not cut off by a close.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);

/// And at most this long, however busy: then it stops reading, answers
/// what is in flight and closes.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);

/// Serves DNS over TCP on `listener` until `ctx.stop` is cancelled; open
/// connections then drain ([`DRAIN_IDLE`], [`DRAIN_MAX`]), answer what is
/// in flight and close.
pub async fn serve(ctx: Arc<ListenerCtx>, listener: TcpListener, upstreams: Upstreams) {
    let ctx2 = Arc::clone(&ctx);
    accept_loop(ctx, listener, None, move |stream, peer| {
        let (ctx, up) = (Arc::clone(&ctx2), upstreams.clone());
        serve_stream(ctx, stream, peer, up, Protocol::Tcp)
    })
    .await;
}

/// Serves one accepted connection, plain or TLS, with [`handle_connection`].
pub async fn serve_stream(
    ctx: Arc<ListenerCtx>,
    stream: ClientStream,
    peer: SocketAddr,
    upstreams: Upstreams,
    protocol: Protocol,
) {
    match stream {
        ClientStream::Plain(mut s) => {
            let (rd, wr) = s.split();
            handle_connection(ctx, rd, wr, peer, upstreams, protocol).await;
        }
        ClientStream::Tls(s) => {
            let (rd, wr) = tokio::io::split(s);
            handle_connection(ctx, rd, wr, peer, upstreams, protocol).await;
        }
    }
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
/// the listener stops. `protocol` labels the access log (`TCP`, `DoT`).
pub async fn handle_connection<R, W>(
    ctx: Arc<ListenerCtx>,
    mut rd: R,
    mut wr: W,
    peer: SocketAddr,
    upstreams: Upstreams,
    protocol: Protocol,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (read_timeout, idle_timeout, write_timeout) = {
        let s = ctx.shared.load();
        (
            Duration::from_millis(s.config.read_timeout_ms),
            Duration::from_millis(s.config.idle_timeout_ms),
            Duration::from_millis(s.config.write_timeout_ms),
        )
    };
    let mut decoder = FrameDecoder::new();
    let mut queries: Queries = FuturesUnordered::new();
    let mut out: Vec<u8> = Vec::new();
    let mut reading = true;
    let mut last_activity = Instant::now();
    let mut msg_started: Option<Instant> = None;
    // When the listener stopped.
    let mut draining: Option<Instant> = None;
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
                Some(msg) => dispatch(
                    &ctx,
                    &upstreams,
                    peer,
                    msg,
                    protocol,
                    &mut queries,
                    &mut out,
                ),
            }
        }
        if !out.is_empty() {
            // A client that does not take its answers within
            // `write_timeout_ms` is closed: meanwhile its queries are not
            // polled and would pin their upstream slots.
            if !write_out(&mut wr, &out, write_timeout).await {
                break Close::WriteTimeout;
            }
            out.clear();
            last_activity = Instant::now();
        }
        if draining.is_some_and(|t0| t0.elapsed() >= DRAIN_MAX) {
            reading = false;
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
                Some(quiet_deadline(last_activity, idle_timeout, draining))
            }
            None => None,
        };
        let (at, why) = deadline.unwrap_or((far, Close::Done));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        tokio::select! {
            r = rd.read_buf(decoder.read_buf()), if can_read => match r {
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
            () = ctx.stop.cancelled(), if reading && draining.is_none() => {
                draining = Some(Instant::now());
            }
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

/// When a quiet connection (nothing in flight, no message begun) closes:
/// after `idle_timeout`, or [`DRAIN_IDLE`] once the listener stopped at
/// `draining` (and [`DRAIN_MAX`] after it at the latest).
fn quiet_deadline(
    last_activity: Instant,
    idle_timeout: Duration,
    draining: Option<Instant>,
) -> (Instant, Close) {
    match draining {
        Some(t0) => (
            (last_activity.max(t0) + DRAIN_IDLE).min(t0 + DRAIN_MAX),
            Close::Done,
        ),
        None => (last_activity + idle_timeout, Close::IdleTimeout),
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
    upstreams: &Upstreams,
    peer: SocketAddr,
    msg: Vec<u8>,
    protocol: Protocol,
    queries: &mut Queries,
    out: &mut Vec<u8>,
) {
    let shared = ctx.shared.load();
    match admit(&shared, &ctx.metrics, peer.ip(), protocol, &msg) {
        Admission::Reply(reply, _) => {
            push_frame(out, &reply);
        }
        Admission::Drop(_) => {}
        Admission::Forward(admitted) => {
            let ctx = Arc::clone(ctx);
            let up = upstreams.clone();
            queries.push(Box::pin(async move {
                forward(&ctx, &up, peer, &msg, admitted, protocol).await
            }));
        }
    }
}

#[cfg(test)]
mod tests;
