//! What the pipeline reads per query: a listener's settings, swapped as one
//! value on reload.

use std::sync::Arc;

use dnsha_core::config::ListenerConfig;
use dnsha_core::Pool;

use crate::accesslog::AccessLog;
use crate::acl::Acl;
use crate::cache::PacketCache;
use crate::upstream::Routes;

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
    /// How queries reach each backend of the pool over streams.
    pub routes: Arc<Routes>,
    /// The pool's packet cache, if it has one.
    pub cache: Option<Arc<PacketCache>>,
}
