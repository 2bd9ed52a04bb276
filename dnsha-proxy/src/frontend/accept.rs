//! The one accept loop of every stream frontend (TCP, DoT, DoH,
//! passthrough): the listener's connection limits ([`ConnLimiter`], in total
//! and per client address), then for DoT and DoH a TLS handshake bounded in
//! time (`handshake_timeout_ms`) and in number per client address
//! (`max_handshakes_per_client`), then the protocol handler.
//!
//! A client that sends garbage instead of a ClientHello fails the handshake
//! at once; one that stalls is cut at the timeout; one that opens many
//! handshakes is refused beyond its share. Each case is counted in the
//! listener's metrics and costs one task with a small buffer.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dnsha_core::config::Protocol;
use rustls::HandshakeKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::ctx::ListenerCtx;
pub use super::limits::{ConnLimiter, ConnSlot};
use crate::metrics::inc;
use crate::tls::ServerTls;
use crate::wire::dns::DropReason;

/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Whether the listener's ACL lets `peer` connect. DoH behind a reverse
/// proxy (`trusted_proxies`) is judged per request instead, on the client
/// address the proxy forwards.
fn admitted_by_acl(ctx: &ListenerCtx, peer: SocketAddr) -> bool {
    let shared = ctx.shared.load();
    let ip = peer.ip().to_canonical();
    if shared.acl.allows(ip) {
        return true;
    }
    ctx.metrics.protocol == Protocol::Doh
        && shared
            .config
            .trusted_proxies
            .iter()
            .any(|n| n.contains(&ip))
}

/// Waits for the next client connection; `None` once `ctx.stop` is
/// cancelled. A failed accept (e.g. out of file descriptors) is logged and
/// retried after a short pause.
pub async fn accept_next(
    ctx: &ListenerCtx,
    listener: &TcpListener,
) -> Option<(TcpStream, SocketAddr)> {
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
    let (max_total, per_client, prefix) = {
        let shared = ctx.shared.load();
        (
            shared.config.max_connections,
            shared.config.max_connections_per_client,
            shared.config.client_prefix_v6,
        )
    };
    let m = &ctx.metrics;
    match limiter.try_acquire(peer.ip(), prefix, max_total, per_client) {
        Some(slot) => {
            inc(&m.connections);
            inc(&m.connections_total);
            Some(slot.counted_in(Arc::clone(m)))
        }
        None => {
            inc(&m.connections_refused);
            debug!(listener = %m.name, client = %peer, "connection over the limits refused");
            None
        }
    }
}

/// A client connection after the handshake: TLS, or plain TCP for DoH with
/// `tls = false`.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl ClientStream {
    /// The ALPN protocol agreed in the handshake, if any.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.get_ref().1.alpn_protocol(),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Accepts connections until `ctx.stop` is cancelled; each admitted one
/// gets its TLS handshake (when `tls` is set) and then `handler`, in a task
/// tracked by `ctx.tasks`. Open connections then finish on their own
/// (each handler watches `ctx.stop`).
pub async fn accept_loop<F, Fut>(
    ctx: Arc<ListenerCtx>,
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    handler: F,
) where
    F: Fn(ClientStream, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    let limiter = Arc::clone(&ctx.conns);
    let handshakes = Arc::clone(&ctx.handshakes);
    let proto = ctx.metrics.protocol.as_str();
    debug!(listener = %ctx.metrics.name, address = %ctx.metrics.address, proto, "listener started");
    while let Some((stream, peer)) = accept_next(&ctx, &listener).await {
        // Admission before work: a client outside the ACL is closed before
        // it holds a connection slot or gets a TLS handshake.
        if !admitted_by_acl(&ctx, peer) {
            ctx.metrics.dropped(DropReason::Acl);
            debug!(listener = %ctx.metrics.name, client = %peer, "client outside the acl closed");
            continue;
        }
        let Some(slot) = admit(&ctx, &limiter, peer) else {
            drop(stream);
            continue;
        };
        let (handshake_timeout, per_client, per_second, prefix) = {
            let s = ctx.shared.load();
            (
                Duration::from_millis(s.config.handshake_timeout_ms),
                s.config.max_handshakes_per_client,
                s.config.max_handshakes_per_second,
                s.config.client_prefix_v6,
            )
        };
        if tls.is_some()
            && !ctx
                .handshake_rate
                .allow(per_second, std::time::Instant::now())
        {
            inc(&ctx.metrics.tls_handshake_rate_limited);
            debug!(listener = %ctx.metrics.name, client = %peer, "over the handshake rate, closed");
            drop(slot);
            continue;
        }
        let handshake_slot = match &tls {
            None => None,
            Some(_) => match handshakes.try_acquire(peer.ip(), prefix, usize::MAX, per_client) {
                Some(h) => Some(h),
                None => {
                    inc(&ctx.metrics.connections_refused);
                    debug!(listener = %ctx.metrics.name, client = %peer, "too many handshakes from one client");
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (ctx2, tls2, handler2) = (Arc::clone(&ctx), tls.clone(), Arc::clone(&handler));
        ctx.tasks.spawn(async move {
            let client = match tls2 {
                None => Some(ClientStream::Plain(stream)),
                Some(tls) => handshake(&ctx2, &tls, stream, peer, handshake_timeout).await,
            };
            drop(handshake_slot);
            if let Some(client) = client {
                handler2(client, peer).await;
            }
            drop(slot);
        });
    }
    info!(listener = %ctx.metrics.name, proto, "listener stopped accepting");
}

/// Runs the server handshake within `limit`; counts failures and timeouts.
async fn handshake(
    ctx: &ListenerCtx,
    tls: &ServerTls,
    stream: TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Option<ClientStream> {
    let m = &ctx.metrics;
    let accept = tls.acceptor().accept(stream);
    let r = tokio::select! {
        r = tokio::time::timeout(limit, accept) => r,
        () = ctx.stop.cancelled() => return None,
    };
    match r {
        Ok(Ok(s)) => {
            if s.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed) {
                inc(&m.tls_resumed);
            }
            Some(ClientStream::Tls(Box::new(s)))
        }
        // A client that closes before or during its ClientHello (a TCP
        // health probe, a client giving up) is not a failed handshake.
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            debug!(listener = %m.name, client = %peer, "closed during the tls handshake");
            None
        }
        Ok(Err(e)) => {
            inc(&m.tls_handshake_failures);
            debug!(listener = %m.name, client = %peer, error = %e, "tls handshake failed");
            None
        }
        Err(_) => {
            inc(&m.tls_handshake_timeouts);
            debug!(listener = %m.name, client = %peer, "tls handshake timed out");
            None
        }
    }
}
