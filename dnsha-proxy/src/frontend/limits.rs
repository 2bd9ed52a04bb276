//! Connection limits of a listener, in total and per client, shared by its
//! workers. A client is an IPv4 address, or an IPv6 prefix (the listener's
//! `client_prefix_v6`, /64 by default): one host usually holds a whole /64,
//! and counting its addresses apart would multiply its share by 2^64.

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

/// A rate shared by a listener's workers: a token bucket that holds one
/// second's worth.
#[derive(Debug)]
pub struct RateLimit {
    state: Mutex<(f64, std::time::Instant)>,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            state: Mutex::new((f64::MAX, std::time::Instant::now())),
        }
    }
}

impl RateLimit {
    /// Whether one more event fits `per_second` at `now` (0: no limit).
    pub fn allow(&self, per_second: u32, now: std::time::Instant) -> bool {
        if per_second == 0 {
            return true;
        }
        let rate = f64::from(per_second);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(st.1).as_secs_f64();
        let tokens = (st.0.min(rate) + elapsed * rate).min(rate);
        st.1 = now;
        if tokens >= 1.0 {
            st.0 = tokens - 1.0;
            true
        } else {
            st.0 = tokens;
            false
        }
    }
}

/// The client an address counts as: an IPv4 address (IPv4-mapped IPv6
/// addresses included), or the first `prefix_v6` bits (up to 128) of an
/// IPv6 address.
pub fn client_of(ip: IpAddr, prefix_v6: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let keep = u32::from(prefix_v6.min(128));
            let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
        v4 => v4,
    }
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
    /// exceed `max_total` connections or `max_per_client` from one client
    /// ([`client_of`] with `prefix_v6`).
    pub fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        prefix_v6: u8,
        max_total: usize,
        max_per_client: usize,
    ) -> Option<ConnSlot> {
        let ip = client_of(ip, prefix_v6);
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

    /// Connections counted now from the client of `ip` ([`client_of`]).
    pub fn from_ip(&self, ip: IpAddr, prefix_v6: u8) -> usize {
        self.state()
            .per_ip
            .get(&client_of(ip, prefix_v6))
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
        let s1 = l.try_acquire(a, 64, 3, 2).unwrap();
        let _s2 = l.try_acquire(mapped, 64, 3, 2).unwrap();
        assert!(l.try_acquire(a, 64, 3, 2).is_none());
        let _s3 = l.try_acquire(b, 64, 3, 2).unwrap();
        assert!(l.try_acquire(b, 64, 3, 2).is_none(), "total limit");
        drop(s1);
        assert_eq!(l.from_ip(a, 64), 1);
        assert!(l.try_acquire(a, 64, 3, 2).is_some());
        assert_eq!(l.total(), 2);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let l = Arc::new(ConnLimiter::new());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _s = l.try_acquire(a, 64, 100, 1).unwrap();
        assert!(l.try_acquire(b, 64, 100, 1).is_none(), "same /64");
        assert!(l.try_acquire(other, 64, 100, 1).is_some());
        assert_eq!(
            client_of(b, 64),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_of(b, 48), "2001:db8:1::".parse::<IpAddr>().unwrap());
        assert_eq!(client_of(b, 128), b);
        let wide = Arc::new(ConnLimiter::new());
        let _w = wide.try_acquire(a, 48, 100, 1).unwrap();
        assert!(wide.try_acquire(other, 48, 100, 1).is_none(), "same /48");
        assert_eq!(l.from_ip(b, 64), 1);
    }

    #[test]
    fn the_rate_allows_a_second_worth_then_refills() {
        let r = RateLimit::default();
        let t0 = std::time::Instant::now();
        let allowed = (0..150).filter(|_| r.allow(100, t0)).count();
        assert_eq!(allowed, 100);
        assert!(!r.allow(100, t0));
        // Half a second later: fifty more.
        let t1 = t0 + std::time::Duration::from_millis(500);
        let allowed = (0..150).filter(|_| r.allow(100, t1)).count();
        assert_eq!(allowed, 50);
        assert!(RateLimit::default().allow(0, t0), "0: no limit");
    }
}
