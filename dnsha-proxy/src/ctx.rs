//! What a listener's tasks share: its settings (swapped on reload), its
//! counters and its shutdown signal.

use std::sync::Arc;

use arc_swap::ArcSwap;
use dnsha_core::config::ListenerConfig;
use dnsha_core::Pool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accesslog::AccessLog;
use crate::acl::Acl;
use crate::metrics::ListenerMetrics;
use crate::tcp::ConnLimiter;

/// Settings a listener reads per query; a reload swaps in a new value
/// without restarting the listener's sockets.
#[derive(Debug)]
pub struct ListenerShared {
    /// The listener's configuration.
    pub config: ListenerConfig,
    /// The pool its queries go to.
    pub pool: Arc<Pool>,
    /// Client ACL.
    pub acl: Acl,
    /// Access log, if enabled.
    pub access_log: Option<AccessLog>,
    /// How stream queries reach each backend (TCP or TLS).
    pub routes: Arc<crate::routes::Routes>,
}

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
        }
    }
}
