//! Counters of the data path, read by `/status` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use dnsha_core::config::Protocol;

use crate::dns::DropReason;

/// Counters of one listener. Every field is updated with relaxed atomics.
#[derive(Debug)]
pub struct ListenerMetrics {
    /// Listener name.
    pub name: String,
    /// Listener protocol.
    pub protocol: Protocol,
    /// Bound address.
    pub address: SocketAddr,
    /// Valid queries received.
    pub queries: AtomicU64,
    /// Answers relayed from backends to clients.
    pub answers: AtomicU64,
    /// SERVFAIL answers made by the balancer (no backend answered).
    pub servfail: AtomicU64,
    /// REFUSED answers made by the balancer (ACL).
    pub refused: AtomicU64,
    /// Queries re-sent to another backend.
    pub retries: AtomicU64,
    /// Backend timeouts seen by this listener's queries.
    pub timeouts: AtomicU64,
    /// Client connections open now (TCP).
    pub connections: AtomicU64,
    /// Client connections accepted since start (TCP).
    pub connections_total: AtomicU64,
    /// Client connections refused by the connection limits (TCP).
    pub connections_refused: AtomicU64,
    /// Access log lines lost because the writer lagged.
    pub log_dropped: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl ListenerMetrics {
    /// Zeroed counters for a listener.
    pub fn new(name: impl Into<String>, protocol: Protocol, address: SocketAddr) -> Self {
        Self {
            name: name.into(),
            protocol,
            address,
            queries: AtomicU64::new(0),
            answers: AtomicU64::new(0),
            servfail: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
            drops: Default::default(),
        }
    }

    /// Counts one dropped message.
    pub fn dropped(&self, reason: DropReason) {
        if let Some(c) = self.drops.get(reason.index()) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Messages dropped for `reason` since start.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Sum of all drops.
    pub fn drops_total(&self) -> u64 {
        self.drops.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

/// Increments a counter by one.
pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Reads a counter.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}
