//! The `tcp-passthrough` frontend: an L4 stream proxy, like nginx `stream`
//! or HAProxy `mode tcp`. Each client connection goes to one backend chosen
//! by the pool's policy, and bytes are copied both ways untouched.
//!
//! The connection holds its backend's [`InFlight`]
//! guard for its whole life, so `lc` balances open connections. A backend
//! that refuses or does not accept within the pool timeout is marked with a
//! failure and the next one is tried (up to the pool's `retries`). A
//! connection without traffic in either direction for `idle_timeout_ms`
//! is closed. Connection limits and the ACL apply as on the TCP frontend; a
//! client outside the ACL is closed at once.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dnsha_core::config::Protocol;
use dnsha_core::policy::hash_client;
use dnsha_core::{FailureKind, HashKey, InFlight, Millis};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::debug;

use super::accept::{accept_loop, ClientStream};
use super::ctx::ListenerCtx;
use crate::accesslog::LogRecord;
use crate::pipeline::{record_connected, Attempts};
use crate::upstream::failure_kind;
use crate::wire::dns::DropReason;

/// Accepts client connections until `ctx.stop` is cancelled and proxies each
/// to a backend, in a task tracked by `ctx.tasks`. Connections already open
/// at stop run until either side closes or they go idle.
pub async fn serve(ctx: Arc<ListenerCtx>, listener: TcpListener) {
    let ctx2 = Arc::clone(&ctx);
    accept_loop(ctx, listener, None, move |stream, peer| {
        let ctx = Arc::clone(&ctx2);
        async move { proxy(&ctx, stream, peer).await }
    })
    .await;
}

/// Connects to a backend of the pool, trying others on failure (the same
/// pick-retry-record loop as a query, [`Attempts`]). Returns the stream
/// with the guard that keeps the connection counted on its backend, or
/// `None` when no backend is left.
///
/// A `chash` pool hashing clients sends each client address to its
/// backend (LVS `sh`); one hashing names, having no name to hash, takes
/// the least loaded backend.
async fn connect_backend(ctx: &ListenerCtx, peer: SocketAddr) -> Option<(TcpStream, InFlight)> {
    let shared = ctx.shared.load_full();
    let m = &*ctx.metrics;
    let pool = &shared.target.pool;
    let key = pool
        .with_snapshot(|s| s.hash_key())
        .filter(|k| *k == HashKey::Client)
        .map(|_| hash_client(peer.ip()));
    let mut attempts = Attempts::keyed(key);
    let mut next = attempts.first(pool, Millis::now());
    while let Some(a) = next {
        let limit = Duration::from_millis(a.timeout_ms);
        let (kind, blame) = match timeout(limit, TcpStream::connect(a.backend.address())).await {
            Ok(Ok(stream)) => {
                record_connected(pool, &a.backend, Millis::now());
                return attempts.succeeded().map(|f| (stream, f));
            }
            Ok(Err(e)) => {
                debug!(backend = %a.backend.name(), error = %e, "passthrough connect failed");
                // Out of descriptors or ports here is not the backend's fault.
                (
                    FailureKind::Refused,
                    failure_kind(&e) == FailureKind::Refused,
                )
            }
            Err(_) => {
                debug!(backend = %a.backend.name(), "passthrough connect timed out");
                (FailureKind::Timeout, true)
            }
        };
        let now = Millis::now();
        attempts.failed(pool, m, kind, blame, now);
        next = attempts.next(pool, m, now);
    }
    None
}

async fn proxy(ctx: &ListenerCtx, mut client: ClientStream, peer: SocketAddr) {
    let started = Millis::now();
    let (idle, access_log) = {
        let s = ctx.shared.load();
        (
            Duration::from_millis(s.config.idle_timeout_ms),
            s.access_log.clone(),
        )
    };
    let connected = connect_backend(ctx, peer).await;
    let backend = connected.as_ref().map(|(_, f)| f.backend().address());
    match connected {
        None => {
            ctx.metrics.dropped(DropReason::NoBackend);
            debug!(client = %peer, "no backend for passthrough connection");
        }
        Some((mut upstream, _flight)) => {
            let _ = upstream.set_nodelay(true);
            let activity = Activity::new();
            let mut a = Tracked::new(&mut client, &activity);
            let mut b = Tracked::new(&mut upstream, &activity);
            tokio::select! {
                r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
                    Ok((up, down)) => debug!(client = %peer, to_backend = up, to_client = down, "passthrough closed"),
                    Err(e) => debug!(client = %peer, error = %e, "passthrough failed"),
                },
                () = activity.idle(idle) => debug!(client = %peer, "passthrough idle, closed"),
            }
        }
    }
    if let Some(log) = access_log {
        log.log(LogRecord {
            client: peer,
            backend,
            protocol: Protocol::TcpPassthrough,
            rcode: "-".to_string(),
            duration: Millis::now().since(started),
            qname: "-".to_string(),
            qtype: "-".to_string(),
        });
    }
}

/// When a connection last moved bytes, in milliseconds since `base`.
#[derive(Debug)]
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once no bytes moved for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let until = self.last() + idle;
            if Instant::now() >= until {
                return;
            }
            sleep_until(until).await;
        }
    }
}

/// A stream that records its traffic in an [`Activity`].
struct Tracked<'a, S> {
    inner: &'a mut S,
    activity: &'a Activity,
}

impl<'a, S> Tracked<'a, S> {
    fn new(inner: &'a mut S, activity: &'a Activity) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut *this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::get;
    use crate::testing::{closed_port, ctx};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend that greets with its tag, then echoes. Counts connections.
    async fn echo_backend(tag: u8) -> (SocketAddr, Arc<AtomicU64>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let open = Arc::new(AtomicU64::new(0));
        let o = Arc::clone(&open);
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let o = Arc::clone(&o);
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = s.write_all(&[tag]).await;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    async fn front(
        listener_extra: &str,
        pool_extra: &str,
        backends: &[SocketAddr],
    ) -> (Arc<ListenerCtx>, SocketAddr) {
        let ctx = ctx("tcp-passthrough", listener_extra, pool_extra, backends);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        ctx.tasks.spawn(serve(Arc::clone(&ctx), listener));
        (ctx, addr)
    }

    async fn greet_and_echo(addr: SocketAddr, payload: &[u8]) -> (u8, TcpStream) {
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut tag = [0u8; 1];
        timeout(Duration::from_secs(2), c.read_exact(&mut tag))
            .await
            .unwrap()
            .unwrap();
        c.write_all(payload).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        timeout(Duration::from_secs(2), c.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, payload);
        (tag[0], c)
    }

    #[tokio::test]
    async fn copies_both_ways_and_spreads_connections() {
        let (b1, open1) = echo_backend(1).await;
        let (b2, open2) = echo_backend(2).await;
        let (ctx, addr) = front("", "", &[b1, b2]).await;
        let (t1, c1) = greet_and_echo(addr, b"hello").await;
        let (t2, c2) = greet_and_echo(addr, &[7u8; 5000]).await;
        let mut tags = [t1, t2];
        tags.sort_unstable();
        assert_eq!(tags, [1, 2]);
        let snap = ctx.shared.load().target.pool.snapshot();
        assert_eq!(
            snap.backends()[0].outstanding(),
            1,
            "guard held for the connection"
        );
        assert_eq!(snap.backends()[1].outstanding(), 1);
        assert_eq!(get(&ctx.metrics.connections), 2);
        drop(c1);
        drop(c2);
        for _ in 0..100 {
            if snap.backends().iter().all(|b| b.outstanding() == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(snap.backends().iter().all(|b| b.outstanding() == 0));
        assert_eq!(get(&ctx.metrics.connections), 0);
        assert_eq!(
            open1.load(Ordering::SeqCst) + open2.load(Ordering::SeqCst),
            0
        );
    }

    #[tokio::test]
    async fn refused_backend_is_skipped() {
        let dead = closed_port().await;
        let (good, _) = echo_backend(2).await;
        let (ctx, addr) = front("", "max_fails = 0", &[dead, good]).await;
        for _ in 0..3 {
            let (tag, _c) = greet_and_echo(addr, b"x").await;
            assert_eq!(tag, 2);
        }
        assert!(ctx.shared.load().target.pool.snapshot().backends()[0].failures() >= 1);
    }

    #[tokio::test]
    async fn no_backend_closes_the_client() {
        let d1 = closed_port().await;
        let (ctx, addr) = front("", "", &[d1]).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let n = timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(ctx.metrics.drops(DropReason::NoBackend), 1);
    }

    #[tokio::test]
    async fn idle_connection_is_closed() {
        let (b, open) = echo_backend(1).await;
        let (_ctx, addr) = front("idle_timeout_ms = 200", "", &[b]).await;
        let (_, mut c) = greet_and_echo(addr, b"ping").await;
        let start = Instant::now();
        let mut buf = [0u8; 8];
        let n = timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert!(start.elapsed() >= Duration::from_millis(150));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(open.load(Ordering::SeqCst), 0, "backend side closed too");
    }

    #[tokio::test]
    async fn acl_and_limits_close_at_once() {
        let (b, _) = echo_backend(1).await;
        let (ctx, addr) = front("allow = [\"10.0.0.0/8\"]", "", &[b]).await;
        let mut c = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 8];
        let n = timeout(Duration::from_secs(2), c.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(ctx.metrics.drops(DropReason::Acl), 1);

        let (ctx, addr) = front("max_connections_per_client = 1", "", &[b]).await;
        let (_, _c1) = greet_and_echo(addr, b"a").await;
        let mut c2 = TcpStream::connect(addr).await.unwrap();
        let n = timeout(Duration::from_secs(2), c2.read(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(get(&ctx.metrics.connections_refused), 1);
    }
}
