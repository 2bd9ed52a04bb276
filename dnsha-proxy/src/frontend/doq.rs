//! The DNS-over-QUIC frontend (RFC 9250), on quinn.
//!
//! One QUIC endpoint per worker socket (SO_REUSEPORT, as the UDP
//! listener's). A connection is admitted by the QUIC accept loop
//! ([`super::quic`]: ACL, Retry under load, handshake and connection
//! limits), its handshake is quinn's (TLS 1.3, ALPN `doq`, no 0-RTT); each
//! bidirectional stream then carries one query, read whole (at most
//! [`doq::MAX_STREAM`] bytes, within `read_timeout_ms`), checked by
//! [`doq::query_of`] (a framing error closes the connection with
//! DOQ_PROTOCOL_ERROR), balanced by [`super::forward`], and answered on the
//! same stream with ID 0. A query the pool drops cancels its stream
//! (DOQ_REQUEST_CANCELLED).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::Protocol;
use tokio::time::timeout;
use tracing::debug;

use super::ctx::ListenerCtx;
use super::forward::forward;
use super::quic::accept_loop;
use crate::pipeline::{admit, Admission};
use crate::upstream::Upstreams;
use crate::wire::dns::DropReason;
use crate::wire::doq;

/// Serves DoQ on `endpoint` until `ctx.stop` is cancelled; open
/// connections then finish the queries they have and close.
pub async fn serve(ctx: Arc<ListenerCtx>, endpoint: quinn::Endpoint, upstreams: Upstreams) {
    let ctx2 = Arc::clone(&ctx);
    accept_loop(ctx, endpoint, move |conn, peer| {
        connection(Arc::clone(&ctx2), conn, peer, upstreams.clone())
    })
    .await;
}

/// One client connection: a task per query stream, until the client
/// closes, the connection idles out, or the listener stops (then what is
/// in flight is answered and the connection closed with DOQ_NO_ERROR).
async fn connection(
    ctx: Arc<ListenerCtx>,
    conn: quinn::Connection,
    peer: SocketAddr,
    upstreams: Upstreams,
) {
    let streams = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            () = ctx.stop.cancelled() => break,
            s = conn.accept_bi() => s,
        };
        match accepted {
            Ok((send, recv)) => {
                let (ctx, conn2, up) = (Arc::clone(&ctx), conn.clone(), upstreams.clone());
                streams.spawn(async move { stream(ctx, conn2, send, recv, peer, up).await });
            }
            Err(e) => {
                debug!(client = %peer, error = %e, "doq connection closed");
                break;
            }
        }
    }
    streams.close();
    streams.wait().await;
    conn.close(quinn::VarInt::from_u32(doq::NO_ERROR), b"");
}

/// One query stream.
async fn stream(
    ctx: Arc<ListenerCtx>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: SocketAddr,
    upstreams: Upstreams,
) {
    let read_limit = Duration::from_millis(ctx.shared.load().config.read_timeout_ms);
    let data = match timeout(read_limit, recv.read_to_end(doq::MAX_STREAM)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            // Too long, or reset by the client.
            ctx.metrics.dropped(DropReason::Malformed);
            debug!(client = %peer, error = %e, "doq stream not read");
            let _ = send.reset(quinn::VarInt::from_u32(doq::PROTOCOL_ERROR));
            return;
        }
        Err(_) => {
            ctx.metrics.dropped(DropReason::Malformed);
            let _ = send.reset(quinn::VarInt::from_u32(doq::REQUEST_CANCELLED));
            return;
        }
    };
    let msg = match doq::query_of(&data) {
        Ok(m) => m.to_vec(),
        Err(e) => {
            ctx.metrics.dropped(DropReason::Malformed);
            debug!(client = %peer, error = %e, "doq protocol error, closing");
            conn.close(
                quinn::VarInt::from_u32(doq::PROTOCOL_ERROR),
                e.to_string().as_bytes(),
            );
            return;
        }
    };
    let shared = ctx.shared.load_full();
    let answer = match admit(&shared, &ctx.metrics, peer.ip(), Protocol::Doq, &msg) {
        Admission::Reply(reply, _) => Some(reply),
        Admission::Drop(_) => None,
        Admission::Forward(admitted) => {
            forward(&ctx, &upstreams, peer, &msg, admitted, Protocol::Doq).await
        }
    };
    let Some(framed) = answer.as_deref().and_then(doq::frame_answer) else {
        let _ = send.reset(quinn::VarInt::from_u32(doq::REQUEST_CANCELLED));
        return;
    };
    let write_limit = Duration::from_millis(shared.config.write_timeout_ms);
    let written = timeout(write_limit, async {
        send.write_all(&framed).await?;
        send.finish()?;
        Ok::<_, std::io::Error>(())
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        debug!(client = %peer, "doq answer not written");
    }
}
