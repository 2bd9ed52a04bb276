//! Per-backend counters of the health checker, rendered in the Prometheus
//! text format by [`crate::HealthMonitor::prometheus`].

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::state::FailureReason;

/// Upper bounds of the check latency histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters of one backend's checks.
#[derive(Debug, Default)]
pub struct CheckMetrics {
    ok: AtomicU64,
    failed: AtomicU64,
    by_reason: [AtomicU64; FailureReason::LABELS.len()],
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_sum_us: AtomicU64,
    last_latency_us: AtomicU64,
    up_transitions: AtomicU64,
    down_transitions: AtomicU64,
    suspect: AtomicU64,
}

impl CheckMetrics {
    /// Counts one probe and its latency.
    pub fn probe(&self, failure: Option<FailureReason>, latency: Duration) {
        match failure {
            None => self.ok.fetch_add(1, Ordering::Relaxed),
            Some(r) => {
                if let Some(c) = self.by_reason.get(r.index()) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
        let secs = latency.as_secs_f64();
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.last_latency_us.store(us, Ordering::Relaxed);
    }

    /// Counts a transition.
    pub fn transition(&self, up: bool) {
        if up {
            self.up_transitions.fetch_add(1, Ordering::Relaxed);
        } else {
            self.down_transitions.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a passive suspicion (an early probe).
    pub fn suspect(&self) {
        self.suspect.fetch_add(1, Ordering::Relaxed);
    }

    /// Probes that passed.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Probes that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Failed probes for `reason`.
    pub fn failures(&self, reason: FailureReason) -> u64 {
        self.by_reason
            .get(reason.index())
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Latency of the last probe.
    pub fn last_latency(&self) -> Duration {
        Duration::from_micros(self.last_latency_us.load(Ordering::Relaxed))
    }

    /// Transitions to up and to down.
    pub fn transitions(&self) -> (u64, u64) {
        (
            self.up_transitions.load(Ordering::Relaxed),
            self.down_transitions.load(Ordering::Relaxed),
        )
    }

    /// Early probes caused by live traffic.
    pub fn suspicions(&self) -> u64 {
        self.suspect.load(Ordering::Relaxed)
    }
}

/// One labelled series set, written family by family.
#[derive(Debug, Default)]
pub(crate) struct Families {
    out: String,
}

impl Families {
    pub(crate) fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(
            self.out,
            "# HELP dnsha_{name} {help}\n# TYPE dnsha_{name} {kind}"
        );
    }

    pub(crate) fn line(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.out, "dnsha_{name}{{{labels}}} {value}");
    }

    /// The histogram of `m` under `labels` (cumulative buckets).
    pub(crate) fn histogram(&mut self, name: &str, labels: &str, m: &CheckMetrics) {
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&m.buckets) {
            self.line(
                &format!("{name}_bucket"),
                &format!("{labels},le=\"{bound}\""),
                count.load(Ordering::Relaxed),
            );
        }
        let total = m.ok() + m.failed();
        self.line(
            &format!("{name}_bucket"),
            &format!("{labels},le=\"+Inf\""),
            total,
        );
        let sum = m.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        self.line(&format!("{name}_sum"), labels, sum);
        self.line(&format!("{name}_count"), labels, total);
    }

    pub(crate) fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = CheckMetrics::default();
        m.probe(None, Duration::from_micros(800));
        m.probe(Some(FailureReason::Refused), Duration::from_millis(30));
        m.probe(
            Some(FailureReason::Timeout(Duration::from_secs(5))),
            Duration::from_secs(5),
        );
        assert_eq!((m.ok(), m.failed()), (1, 2));
        assert_eq!(m.failures(FailureReason::Refused), 1);
        let mut f = Families::default();
        f.histogram("h", "b=\"x\"", &m);
        let text = f.finish();
        assert!(
            text.contains("dnsha_h_bucket{b=\"x\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("dnsha_h_bucket{b=\"x\",le=\"0.05\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("dnsha_h_bucket{b=\"x\",le=\"2.5\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("dnsha_h_bucket{b=\"x\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(text.contains("dnsha_h_count{b=\"x\"} 3\n"), "{text}");
        assert_eq!(m.last_latency(), Duration::from_secs(5));
    }
}
