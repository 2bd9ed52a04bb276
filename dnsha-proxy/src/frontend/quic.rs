//! The one accept loop of the QUIC frontends (DoQ, DoH3): what to do with
//! each connection attempt before any handshake work, then the handshake
//! bounded in time, then the protocol's connection handler.
//!
//! The decision is [`verdict`], pure: a client outside the ACL is ignored
//! (no packet sent back); an attempt whose address is not yet validated is
//! sent a stateless Retry (RFC 9000 §8.1) when the listener asks for it
//! always (`quic_retry = "always"`), when [`QUIC_RETRY_HANDSHAKES`]
//! handshakes are already under way, or past `max_handshakes_per_second`.
//! So a flood of Initial packets from spoofed addresses costs one Retry
//! packet each and no connection state: only a client that receives the
//! Retry can come back with its token. A validated attempt is refused over
//! the handshake rate, over `max_handshakes_per_client`, or over the
//! connection limits. quinn itself bounds the attempts not yet decided
//! ([`crate::tls::QUIC_MAX_INCOMING`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dnsha_core::config::{QuicRetry, QUIC_RETRY_HANDSHAKES};
use tracing::debug;

use super::accept::admit as admit_connection;
use super::ctx::ListenerCtx;
use crate::metrics::inc;
use crate::wire::dns::DropReason;

/// What is known of a connection attempt when it arrives.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    /// The listener's ACL lets the client in.
    pub allowed: bool,
    /// The client already proved its address (it came back with a Retry
    /// token).
    pub validated: bool,
    /// A Retry may still be sent (not after one already was).
    pub may_retry: bool,
    /// Handshakes under way on the listener.
    pub handshakes: usize,
    /// The listener's `quic_retry`.
    pub retry: QuicRetry,
}

/// What to do with a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on: the handshake rate and the per-client limits decide.
    Admit,
    /// Ask the client to prove its address first.
    Retry,
    /// Drop the packet, answer nothing (outside the ACL).
    Ignore,
    /// Refuse (CONNECTION_REFUSED): over the handshake rate.
    OverRate,
}

/// Decides an attempt. `rate` is asked (and so counts a handshake against
/// `max_handshakes_per_second`) only for an attempt that would otherwise
/// start a handshake, so Retries sent under a flood spend none of it.
///
/// ```
/// use dnsha_core::config::QuicRetry;
/// use dnsha_proxy::frontend::quic::{verdict, Attempt, Verdict};
///
/// let quiet = Attempt { allowed: true, validated: false, may_retry: true, handshakes: 0, retry: QuicRetry::Auto };
/// assert_eq!(verdict(&quiet, || true), Verdict::Admit);
/// let busy = Attempt { handshakes: 1000, ..quiet };
/// assert_eq!(verdict(&busy, || true), Verdict::Retry);
/// let proven = Attempt { validated: true, may_retry: false, ..busy };
/// assert_eq!(verdict(&proven, || true), Verdict::Admit);
/// ```
pub fn verdict(a: &Attempt, rate: impl FnOnce() -> bool) -> Verdict {
    if !a.allowed {
        return Verdict::Ignore;
    }
    let can_retry = !a.validated && a.may_retry;
    if can_retry && (a.retry == QuicRetry::Always || a.handshakes >= QUIC_RETRY_HANDSHAKES) {
        return Verdict::Retry;
    }
    if rate() {
        Verdict::Admit
    } else if can_retry {
        Verdict::Retry
    } else {
        Verdict::OverRate
    }
}

/// Accepts connection attempts on `endpoint` until `ctx.stop` is
/// cancelled; each admitted one is handshaken (within
/// `handshake_timeout_ms`) and handed to `handler` in a task tracked by
/// `ctx.tasks`. Then the endpoint takes no new connections and waits for
/// the open ones, which watch `ctx.stop` themselves, to close.
pub async fn accept_loop<F, Fut>(ctx: Arc<ListenerCtx>, endpoint: quinn::Endpoint, handler: F)
where
    F: Fn(quinn::Connection, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let incoming = tokio::select! {
            () = ctx.stop.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        if let Some(started) = admit(&ctx, incoming) {
            let (ctx2, handler2) = (Arc::clone(&ctx), Arc::clone(&handler));
            ctx.tasks.spawn(started.run(ctx2, handler2));
        }
    }
    // Stop taking connections; those open finish what they have and close.
    endpoint.set_server_config(None);
    endpoint.wait_idle().await;
}

/// An admitted attempt and the slots it holds.
struct Started {
    connecting: quinn::Connecting,
    peer: SocketAddr,
    slot: super::accept::ConnSlot,
    handshake: super::accept::ConnSlot,
    limit: Duration,
}

impl Started {
    async fn run<F, Fut>(self, ctx: Arc<ListenerCtx>, handler: Arc<F>)
    where
        F: Fn(quinn::Connection, SocketAddr) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Self {
            connecting,
            peer,
            slot,
            handshake,
            limit,
        } = self;
        let m = &ctx.metrics;
        let done = tokio::select! {
            r = tokio::time::timeout(limit, connecting) => r,
            () = ctx.stop.cancelled() => return,
        };
        drop(handshake);
        match done {
            Ok(Ok(conn)) => handler(conn, peer).await,
            Ok(Err(e)) => {
                inc(&m.tls_handshake_failures);
                debug!(listener = %m.name, client = %peer, error = %e, "quic handshake failed");
            }
            Err(_) => {
                // Dropping the Connecting abandons the connection.
                inc(&m.tls_handshake_timeouts);
                debug!(listener = %m.name, client = %peer, "quic handshake timed out");
            }
        }
        drop(slot);
    }
}

/// Applies [`verdict`], the per-client handshake limit and the connection
/// limits to one attempt; counts what it refuses.
fn admit(ctx: &ListenerCtx, incoming: quinn::Incoming) -> Option<Started> {
    let peer = incoming.remote_address();
    let m = &ctx.metrics;
    let (retry, per_client, per_second, prefix, limit, allowed) = {
        let s = ctx.shared.load();
        let c = &s.config;
        (
            c.quic_retry,
            c.max_handshakes_per_client,
            c.max_handshakes_per_second,
            c.client_prefix_v6,
            Duration::from_millis(c.handshake_timeout_ms),
            s.acl.allows(peer.ip().to_canonical()),
        )
    };
    let attempt = Attempt {
        allowed,
        validated: incoming.remote_address_validated(),
        may_retry: incoming.may_retry(),
        handshakes: ctx.handshakes.total(),
        retry,
    };
    let rate = || {
        ctx.handshake_rate
            .allow(per_second, std::time::Instant::now())
    };
    match verdict(&attempt, rate) {
        Verdict::Admit => {}
        Verdict::Ignore => {
            m.dropped(DropReason::Acl);
            incoming.ignore();
            return None;
        }
        Verdict::Retry => {
            inc(&m.quic_retries);
            // Only fails when a Retry was already sent; may_retry said not.
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            return None;
        }
        Verdict::OverRate => {
            inc(&m.tls_handshake_rate_limited);
            incoming.refuse();
            return None;
        }
    }
    let Some(handshake) = ctx
        .handshakes
        .try_acquire(peer.ip(), prefix, usize::MAX, per_client)
    else {
        inc(&m.connections_refused);
        debug!(listener = %m.name, client = %peer, "too many handshakes from one client");
        incoming.refuse();
        return None;
    };
    let Some(slot) = admit_connection(ctx, &ctx.conns, peer) else {
        incoming.refuse();
        return None;
    };
    match incoming.accept() {
        Ok(connecting) => Some(Started {
            connecting,
            peer,
            slot,
            handshake,
            limit,
        }),
        Err(e) => {
            inc(&m.tls_handshake_failures);
            debug!(listener = %m.name, client = %peer, error = %e, "quic connection not accepted");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt() -> Attempt {
        Attempt {
            allowed: true,
            validated: false,
            may_retry: true,
            handshakes: 0,
            retry: QuicRetry::Auto,
        }
    }

    #[test]
    fn a_quiet_listener_handshakes_at_once() {
        assert_eq!(verdict(&attempt(), || true), Verdict::Admit);
        let almost = Attempt {
            handshakes: QUIC_RETRY_HANDSHAKES - 1,
            ..attempt()
        };
        assert_eq!(verdict(&almost, || true), Verdict::Admit);
    }

    #[test]
    fn under_load_an_unproven_address_gets_a_retry_and_spends_no_rate() {
        let busy = Attempt {
            handshakes: QUIC_RETRY_HANDSHAKES,
            ..attempt()
        };
        let mut asked = false;
        assert_eq!(
            verdict(&busy, || {
                asked = true;
                true
            }),
            Verdict::Retry
        );
        assert!(!asked, "a Retry must not count against the handshake rate");
    }

    #[test]
    fn a_proven_address_is_never_sent_another_retry() {
        let proven = Attempt {
            validated: true,
            may_retry: false,
            handshakes: 10_000,
            retry: QuicRetry::Always,
            ..attempt()
        };
        assert_eq!(verdict(&proven, || true), Verdict::Admit);
        assert_eq!(verdict(&proven, || false), Verdict::OverRate);
        // quinn says a Retry may not be sent (one already was).
        let retried = Attempt {
            may_retry: false,
            ..proven
        };
        assert_eq!(verdict(&retried, || true), Verdict::Admit);
    }

    #[test]
    fn always_retries_every_new_address() {
        let a = Attempt {
            retry: QuicRetry::Always,
            ..attempt()
        };
        assert_eq!(verdict(&a, || true), Verdict::Retry);
    }

    #[test]
    fn over_the_rate_an_unproven_address_is_retried_a_proven_one_refused() {
        assert_eq!(verdict(&attempt(), || false), Verdict::Retry);
        let proven = Attempt {
            validated: true,
            ..attempt()
        };
        assert_eq!(verdict(&proven, || false), Verdict::OverRate);
    }

    #[test]
    fn outside_the_acl_nothing_is_sent() {
        let a = Attempt {
            allowed: false,
            retry: QuicRetry::Always,
            ..attempt()
        };
        assert_eq!(verdict(&a, || true), Verdict::Ignore);
    }
}
