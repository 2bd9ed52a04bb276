//! Counters of the data path, read by `/status` and `/metrics`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use dnsha_core::config::Protocol;

use crate::wire::dns::DropReason;

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
    /// Time from a query's receipt to the reply the balancer sent (a
    /// backend's answer, a cached one, its own SERVFAIL); dropped queries
    /// are not counted.
    pub latency: dnsha_core::latency::LatencyHistogram,
    /// Answers relayed from backends to clients.
    pub answers: AtomicU64,
    /// Answers served from the pool's packet cache (stale ones included).
    pub cache_hits: AtomicU64,
    /// SERVFAIL answers made by the balancer (no backend answered).
    pub servfail: AtomicU64,
    /// REFUSED answers made by the balancer (ACL).
    pub refused: AtomicU64,
    /// Queries re-sent to another backend.
    pub retries: AtomicU64,
    /// Queries sent once more to the same backend on a new socket, after
    /// their upstream socket was refused (an ICMP error).
    pub resent: AtomicU64,
    /// UDP answers replaced by an empty one with TC=1: larger than the
    /// listener's `max_udp_size` or the client's EDNS size.
    pub udp_truncated: AtomicU64,
    /// Backend timeouts seen by this listener's queries.
    pub timeouts: AtomicU64,
    /// DoH: answers from `udp` backends that were truncated (TC) or too
    /// large, asked again over TCP.
    pub tcp_fallbacks: AtomicU64,
    /// Client connections open now (TCP).
    pub connections: AtomicU64,
    /// Client connections accepted since start (TCP).
    pub connections_total: AtomicU64,
    /// Client connections refused by the connection limits (TCP).
    pub connections_refused: AtomicU64,
    /// Access log lines lost because the writer lagged.
    pub log_dropped: AtomicU64,
    /// UDP: workers taking new queries now (`adaptive_workers`).
    pub udp_active_workers: AtomicU64,
    /// UDP: times the number of workers taking queries changed.
    pub udp_steering_changes: AtomicU64,
    /// DoT/DoH: TLS handshakes that failed (not TLS, no common ALPN or
    /// cipher, client gave up).
    pub tls_handshake_failures: AtomicU64,
    /// DoT/DoH: TLS handshakes not finished within `handshake_timeout_ms`.
    pub tls_handshake_timeouts: AtomicU64,
    /// DoT/DoH: TLS handshakes that resumed a session.
    pub tls_resumed: AtomicU64,
    /// TLS connections closed at accept: over `max_handshakes_per_second`.
    pub tls_handshake_rate_limited: AtomicU64,
    /// DoQ/DoH3: connection attempts sent a QUIC Retry to prove their
    /// address.
    pub quic_retries: AtomicU64,
    /// DoH: requests over the per-client rate, answered 429.
    pub rate_limited: AtomicU64,
    /// DoH: requests the client abandoned (stream reset, connection closed)
    /// before their answer.
    pub http_cancelled: AtomicU64,
    /// DoH: connections closed for abuse (too many reset or refused
    /// requests).
    pub http_abusive_closed: AtomicU64,
    /// DoH: connections ended by an HTTP protocol error (headers too large,
    /// malformed or flooding frames).
    pub http_protocol_errors: AtomicU64,
    /// DoH: responses by status, indexed like [`HTTP_STATUSES`].
    pub http_responses: [AtomicU64; HTTP_STATUSES.len()],
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
            latency: dnsha_core::latency::LatencyHistogram::default(),
            answers: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            servfail: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            resent: AtomicU64::new(0),
            udp_truncated: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            tcp_fallbacks: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            log_dropped: AtomicU64::new(0),
            udp_active_workers: AtomicU64::new(0),
            udp_steering_changes: AtomicU64::new(0),
            tls_handshake_failures: AtomicU64::new(0),
            tls_handshake_timeouts: AtomicU64::new(0),
            tls_resumed: AtomicU64::new(0),
            tls_handshake_rate_limited: AtomicU64::new(0),
            quic_retries: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            http_cancelled: AtomicU64::new(0),
            http_abusive_closed: AtomicU64::new(0),
            http_protocol_errors: AtomicU64::new(0),
            http_responses: Default::default(),
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

/// The HTTP statuses a DoH listener counts; any other is counted as the last.
pub const HTTP_STATUSES: [u16; 12] = [200, 400, 404, 405, 408, 413, 415, 429, 431, 500, 503, 0];

impl ListenerMetrics {
    /// Counts one DoH response with `status`.
    pub fn http_response(&self, status: u16) {
        let i = HTTP_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(HTTP_STATUSES.len() - 1);
        if let Some(c) = self.http_responses.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// DoH responses sent with `status` since start.
    pub fn http_responses_with(&self, status: u16) -> u64 {
        HTTP_STATUSES
            .iter()
            .position(|&s| s == status)
            .and_then(|i| self.http_responses.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
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
