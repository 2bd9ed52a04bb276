//! What the monitor publishes: events on a broadcast channel, per-pool
//! counts on a watch channel, and per-backend reports.

use std::net::SocketAddr;

use dnsha_core::config::CheckKind;

use crate::state::{Health, Reason};

/// A change seen by the health checker.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthEvent {
    /// A backend was taken out of rotation.
    BackendDown {
        /// Pool name.
        pool: String,
        /// Backend name.
        backend: String,
        /// Backend address.
        address: SocketAddr,
        /// Why.
        reason: Reason,
    },
    /// A backend came back.
    BackendUp {
        /// Pool name.
        pool: String,
        /// Backend name.
        backend: String,
        /// Backend address.
        address: SocketAddr,
        /// Why.
        reason: Reason,
    },
    /// The last healthy backend of the pool went down: queries now get the
    /// pool's `on_no_backend` answer.
    PoolDown {
        /// Pool name.
        pool: String,
    },
    /// A pool without a healthy backend has one again.
    PoolUp {
        /// Pool name.
        pool: String,
        /// Backends up now.
        up: usize,
    },
}

/// Backends of one pool that are up, as published on
/// [`crate::HealthMonitor::pools`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolHealth {
    /// Backends up.
    pub up: usize,
    /// Backends in the pool.
    pub total: usize,
}

/// What the checker knows of one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendHealth {
    /// The check kind.
    pub check: CheckKind,
    /// The checker's verdict.
    pub health: Health,
    /// The reason of the last transition, if any.
    pub reason: Option<String>,
    /// The reason of the last probe, if it failed.
    pub last_failure: Option<String>,
    /// Consecutive good probes.
    pub good_run: u32,
    /// Consecutive failed probes.
    pub bad_run: u32,
}
