//! Connection limits of a listener, in total and per client address,
//! shared by its workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::metrics::ListenerMetrics;

/// Counts client connections, in total and per client address, against a
/// listener's limits. Shared by the TCP and passthrough frontends.
#[derive(Debug, Default)]
pub struct ConnLimiter {
    state: Mutex<LimiterState>,
}

#[derive(Debug, Default)]
struct LimiterState {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One admitted connection; releases its place in the [`ConnLimiter`] (and
/// the listener's `connections` gauge) when dropped.
#[derive(Debug)]
pub struct ConnSlot {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
    metrics: Option<Arc<ListenerMetrics>>,
}

impl ConnLimiter {
    /// A limiter with no connection counted.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for a connection from `ip`, or `None` when that would
    /// exceed `max_total` connections or `max_per_client` from one address.
    /// IPv4-mapped IPv6 addresses count as their IPv4 address.
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_client: usize,
    ) -> Option<ConnSlot> {
        let ip = ip.to_canonical();
        let mut st = self.state();
        let from_ip = st.per_ip.get(&ip).copied().unwrap_or(0);
        if st.total >= max_total || from_ip >= max_per_client {
            return None;
        }
        st.total += 1;
        st.per_ip.insert(ip, from_ip + 1);
        Some(ConnSlot {
            limiter: Arc::clone(self),
            ip,
            metrics: None,
        })
    }

    /// Connections counted now.
    pub fn total(&self) -> usize {
        self.state().total
    }

    /// Connections counted now from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.state()
            .per_ip
            .get(&ip.to_canonical())
            .copied()
            .unwrap_or(0)
    }
}

impl ConnSlot {
    /// This slot, releasing the listener's `connections` gauge too when
    /// dropped.
    pub fn counted_in(mut self, metrics: Arc<ListenerMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(m) = &self.metrics {
            m.connections
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        let mut st = self.limiter.state();
        st.total = st.total.saturating_sub(1);
        if let Some(n) = st.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn limiter_counts_per_client_and_total() {
        let l = Arc::new(ConnLimiter::new());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = l.try_acquire(a, 3, 2).unwrap();
        let _s2 = l.try_acquire(mapped, 3, 2).unwrap();
        assert!(l.try_acquire(a, 3, 2).is_none());
        let _s3 = l.try_acquire(b, 3, 2).unwrap();
        assert!(l.try_acquire(b, 3, 2).is_none(), "total limit");
        drop(s1);
        assert_eq!(l.from_ip(a), 1);
        assert!(l.try_acquire(a, 3, 2).is_some());
        assert_eq!(l.total(), 2);
    }
}
