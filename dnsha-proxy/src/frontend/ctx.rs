//! What a listener's tasks share: its settings (swapped on reload), its
//! counters, its connection limits and its shutdown signal.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{ConnLimiter, RateLimit};
use crate::metrics::ListenerMetrics;
use crate::pipeline::ListenerShared;

/// Everything a listener's tasks need.
#[derive(Debug)]
pub struct ListenerCtx {
    /// Current settings.
    pub shared: ArcSwap<ListenerShared>,
    /// Counters.
    pub metrics: Arc<ListenerMetrics>,
    /// Cancelled when the listener must stop accepting new work.
    pub stop: CancellationToken,
    /// Tracks every task of the listener so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Client connections open, per client address (stream listeners),
    /// shared by the listener's workers.
    pub conns: Arc<ConnLimiter>,
    /// TLS handshakes under way, per client address.
    pub handshakes: Arc<ConnLimiter>,
    /// Queries in flight over streams, per client address, shared by the
    /// listener's workers and connections.
    pub client_queries: Arc<ConnLimiter>,
    /// TLS handshakes started, against `max_handshakes_per_second`.
    pub handshake_rate: RateLimit,
}

impl ListenerCtx {
    /// A context for a listener about to start.
    pub fn new(shared: ListenerShared, metrics: Arc<ListenerMetrics>) -> Self {
        Self {
            shared: ArcSwap::from_pointee(shared),
            metrics,
            stop: CancellationToken::new(),
            tasks: TaskTracker::new(),
            conns: Arc::new(ConnLimiter::new()),
            handshakes: Arc::new(ConnLimiter::new()),
            client_queries: Arc::new(ConnLimiter::new()),
            handshake_rate: RateLimit::default(),
        }
    }
}
