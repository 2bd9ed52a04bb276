//! What the pipeline reads per query: a listener's settings, swapped as one
//! value on reload.

use std::sync::Arc;

use dnsha_core::config::ListenerConfig;
use dnsha_core::Pool;

use super::{DynBlocks, Limit, Rules};
use crate::accesslog::AccessLog;
use crate::acl::Acl;
use crate::cache::PacketCache;
use crate::upstream::Routes;

/// Where a query goes: a pool, how its backends are reached, and its
/// cache. The listener's own pool is one; a rule routing to another pool
/// ([`super::Rules`]) names another.
#[derive(Debug)]
pub struct Target {
    /// The pool.
    pub pool: Arc<Pool>,
    /// How queries reach each backend of the pool over streams.
    pub routes: Arc<Routes>,
    /// The pool's packet cache, if it has one.
    pub cache: Option<Arc<PacketCache>>,
}

/// Settings a listener reads per query; a reload swaps in a new value
/// without restarting the listener's sockets.
#[derive(Debug)]
pub struct ListenerShared {
    /// The listener's configuration.
    pub config: ListenerConfig,
    /// The listener's pool: where its queries go unless a rule says
    /// otherwise.
    pub target: Arc<Target>,
    /// The configuration's `[[rule]]`s, shared by every listener.
    pub rules: Arc<Rules>,
    /// The `[[limit]]`s that apply to this listener.
    pub limits: Vec<Arc<Limit>>,
    /// The `[[dynamic_block]]`s, when the configuration has any.
    pub dynblocks: Option<Arc<DynBlocks>>,
    /// Client ACL.
    pub acl: Acl,
    /// Access log, if enabled.
    pub access_log: Option<AccessLog>,
}
