//! Latency histograms: fixed buckets of atomic counters, shared by the
//! workers that record into them, read as [`LatencySnapshot`]s for
//! `/metrics` (a Prometheus histogram) and `/status` (percentiles).
//!
//! Durations come from the data path's millisecond clock ([`crate::Millis`]),
//! so a duration of `d` whole milliseconds may really be anything below
//! `d + 1`: it is counted in the first bucket whose bound is at least
//! `d + 1` (an answer within the same millisecond lands in `le="1"`), which
//! never reports a query as faster than it was.
//!
//! ```
//! use dnsha_core::latency::LatencyHistogram;
//!
//! let h = LatencyHistogram::default();
//! for ms in [0, 0, 0, 3, 40] {
//!     h.record_ms(ms);
//! }
//! let s = h.snapshot();
//! assert_eq!(s.count(), 5);
//! // Three of five within the first millisecond: the median is below 1 ms.
//! assert!(s.quantile_ms(0.5).unwrap() <= 1.0);
//! // The slowest is in the (20, 50] bucket.
//! let p99 = s.quantile_ms(0.99).unwrap();
//! assert!(p99 > 20.0 && p99 <= 50.0);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in milliseconds; one more bucket holds
/// everything slower (`+Inf`).
pub const BUCKETS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

const SLOTS: usize = BUCKETS_MS.len() + 1;

/// A latency histogram that workers record into concurrently.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; SLOTS],
    /// Sum of the recorded durations, in milliseconds.
    sum_ms: AtomicU64,
}

impl LatencyHistogram {
    /// Counts one duration of `ms` whole milliseconds.
    pub fn record_ms(&self, ms: u64) {
        let slot = BUCKETS_MS
            .iter()
            .position(|&le| ms < le)
            .unwrap_or(BUCKETS_MS.len());
        if let Some(c) = self.counts.get(slot) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| {
                self.counts.get(i).map_or(0, |c| c.load(Ordering::Relaxed))
            }),
            sum_ms: self.sum_ms.load(Ordering::Relaxed),
        }
    }

    /// Adds `s` to the counts (a backend that takes over another's
    /// counters on reload).
    pub fn add(&self, s: &LatencySnapshot) {
        for (c, n) in self.counts.iter().zip(s.counts) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        self.sum_ms.fetch_add(s.sum_ms, Ordering::Relaxed);
    }
}

/// The counts of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySnapshot {
    /// Per bucket (not cumulative), the last one `+Inf`.
    counts: [u64; SLOTS],
    sum_ms: u64,
}

impl LatencySnapshot {
    /// Durations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Their sum, in milliseconds.
    pub fn sum_ms(&self) -> u64 {
        self.sum_ms
    }

    /// `(upper bound in ms, cumulative count)` per bucket, as Prometheus
    /// writes them; `None` is `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let bounds = BUCKETS_MS.iter().copied().map(Some).chain([None]);
        bounds.zip(self.counts.iter().scan(0u64, |acc, &n| {
            *acc += n;
            Some(*acc)
        }))
    }

    /// Each count and the sum of `self` and `other` through `f`.
    fn zip_with(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            counts: std::array::from_fn(|i| {
                f(
                    self.counts.get(i).copied().unwrap_or(0),
                    other.counts.get(i).copied().unwrap_or(0),
                )
            }),
            sum_ms: f(self.sum_ms, other.sum_ms),
        }
    }

    /// The counts of both (histograms of several backends, merged).
    pub fn plus(&self, other: &Self) -> Self {
        self.zip_with(other, u64::saturating_add)
    }

    /// What was counted since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &Self) -> Self {
        self.zip_with(earlier, u64::saturating_sub)
    }

    /// The `q` quantile (0–1) in milliseconds, interpolated within its
    /// bucket as Prometheus' `histogram_quantile` does (the `+Inf` bucket
    /// answers its lower bound); `None` when nothing was counted.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            let lower = if i == 0 {
                0.0
            } else {
                BUCKETS_MS.get(i - 1).copied().unwrap_or(0) as f64
            };
            let Some(&upper) = BUCKETS_MS.get(i) else {
                return Some(lower);
            };
            if n > 0 && (below + n) as f64 >= rank {
                let within = (rank - below as f64) / n as f64;
                return Some(lower + (upper as f64 - lower) * within.clamp(0.0, 1.0));
            }
            below += n;
        }
        BUCKETS_MS.last().map(|&b| b as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_the_first_bucket_they_cannot_exceed() {
        let h = LatencyHistogram::default();
        for ms in [0, 1, 4, 5, 4999, 5000, 90_000] {
            h.record_ms(ms);
        }
        let s = h.snapshot();
        let cum: Vec<_> = s.cumulative().collect();
        // 0 → le 1; 1 → le 2; 4 → le 5; 5 → le 10; 4999 → le 5000;
        // 5000 and 90 000 → +Inf.
        assert_eq!(cum[0], (Some(1), 1));
        assert_eq!(cum[1], (Some(2), 2));
        assert_eq!(cum[2], (Some(5), 3));
        assert_eq!(cum[3], (Some(10), 4));
        assert_eq!(cum[11], (Some(5000), 5));
        assert_eq!(cum[12], (None, 7));
        assert_eq!(s.count(), 7);
        assert_eq!(s.sum_ms(), 1 + 4 + 5 + 4999 + 5000 + 90_000);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let h = LatencyHistogram::default();
        assert_eq!(h.snapshot().quantile_ms(0.5), None);
        for _ in 0..50 {
            h.record_ms(0);
        }
        for _ in 0..50 {
            h.record_ms(12);
        }
        let s = h.snapshot();
        assert_eq!(s.quantile_ms(0.5), Some(1.0));
        // 90th: 40 of the 50 in (10, 20].
        assert_eq!(s.quantile_ms(0.9), Some(18.0));
        assert_eq!(s.quantile_ms(1.5), None);
        h.record_ms(60_000);
        assert_eq!(h.snapshot().quantile_ms(1.0), Some(5000.0));
    }

    #[test]
    fn a_window_is_the_difference_of_two_snapshots_and_counters_carry_over() {
        let h = LatencyHistogram::default();
        h.record_ms(3);
        let before = h.snapshot();
        h.record_ms(150);
        h.record_ms(150);
        let window = h.snapshot().since(&before);
        assert_eq!(window.count(), 2);
        assert_eq!(window.sum_ms(), 300);
        assert!(window.quantile_ms(0.5).unwrap() > 100.0);
        let next = LatencyHistogram::default();
        next.add(&h.snapshot());
        assert_eq!(next.snapshot(), h.snapshot());
    }
}
