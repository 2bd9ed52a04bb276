//! The web console's recent past, sans-IO: the admin endpoint samples the
//! balancer's counters every [`SAMPLE_MS`] into a [`History`] of the last
//! five minutes, which turns consecutive samples into rates and latency
//! percentiles per pool (the page's charts) and over the last minute per
//! backend and listener (its tables).

use std::collections::VecDeque;

use dnsha_core::latency::LatencySnapshot;
use dnsha_core::Millis;
use serde::Serialize;

/// Time between two samples.
pub const SAMPLE_MS: u64 = 5_000;

/// How far back the charts go.
pub const SPAN_MS: u64 = 5 * 60 * 1000;

/// The window of the tables' recent rates and percentiles.
pub const RECENT_MS: u64 = 60 * 1000;

/// One backend's counters at a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSample {
    /// Backend name.
    pub name: String,
    /// Queries sent since start.
    pub queries: u64,
    /// Its answer times since start.
    pub latency: LatencySnapshot,
}

/// One pool's backends at a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSample {
    /// Pool name.
    pub name: String,
    /// Its backends.
    pub backends: Vec<BackendSample>,
}

/// One listener's counters at a sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSample {
    /// Listener name.
    pub name: String,
    /// Queries received since start.
    pub queries: u64,
    /// Its reply times since start.
    pub latency: LatencySnapshot,
}

/// The balancer's counters at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When, on the process clock.
    pub at: Millis,
    /// When, in seconds since the Unix epoch (the charts' axis).
    pub wall: u64,
    /// Every pool.
    pub pools: Vec<PoolSample>,
    /// Every listener.
    pub listeners: Vec<ListenerSample>,
}

/// The samples of the last [`SPAN_MS`] (one more, the start of the first
/// interval).
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

/// `/history`: what the page draws.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct View {
    /// Seconds between two points.
    pub interval_s: u64,
    /// Per pool, one point per interval, oldest first.
    pub pools: Vec<PoolSeries>,
    /// Per backend, over the last minute.
    pub backends: Vec<Recent>,
    /// Per listener, over the last minute.
    pub listeners: Vec<Recent>,
}

/// One pool's chart.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PoolSeries {
    /// Pool name.
    pub name: String,
    /// Oldest first.
    pub points: Vec<Point>,
}

/// One interval of a pool.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// End of the interval, seconds since the Unix epoch.
    pub t: u64,
    /// Queries per second sent to the pool's backends.
    pub qps: f64,
    /// Median answer time, ms (none without answers).
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
}

/// A backend's or listener's last minute.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Recent {
    /// The pool, for a backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Backend or listener name.
    pub name: String,
    /// Queries per second.
    pub qps: f64,
    /// Median time, ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `s` and forgets what is older than [`SPAN_MS`] before it.
    pub fn push(&mut self, s: Sample) {
        let horizon = s.at.0.saturating_sub(SPAN_MS);
        self.samples.push_back(s);
        // Keep one sample at or before the horizon: the start of the
        // oldest interval.
        while self.samples.len() > 2 && self.samples.get(1).is_some_and(|n| n.at.0 <= horizon) {
            self.samples.pop_front();
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether nothing was sampled yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Rates and percentiles of what is held: the charts from the held
    /// samples, the tables from `now` (a sample taken for this view, not
    /// kept) back to about a minute before it, so that they move at every
    /// refresh of the page, not once per sample.
    pub fn view_with(&self, now: &Sample) -> View {
        let mut v = self.view();
        if let Some(first) = self.window_start(now.at) {
            let (backends, listeners) = recent_between(first, now);
            v.backends = backends;
            v.listeners = listeners;
        }
        v
    }

    /// The sample that starts the window of the tables ending at `end`:
    /// the last one at least [`RECENT_MS`] before it, or the oldest when
    /// the history is younger.
    fn window_start(&self, end: Millis) -> Option<&Sample> {
        let since = end.0.saturating_sub(RECENT_MS);
        self.samples
            .iter()
            .rev()
            .find(|s| s.at.0 <= since)
            .or_else(|| self.samples.front())
    }

    /// Rates and percentiles of what is held.
    pub fn view(&self) -> View {
        let Some(last) = self.samples.back() else {
            return View {
                interval_s: SAMPLE_MS / 1000,
                pools: Vec::new(),
                backends: Vec::new(),
                listeners: Vec::new(),
            };
        };
        let pools = last
            .pools
            .iter()
            .map(|p| PoolSeries {
                name: p.name.clone(),
                points: self
                    .samples
                    .iter()
                    .zip(self.samples.iter().skip(1))
                    .filter_map(|(a, b)| pool_point(&p.name, a, b))
                    .collect(),
            })
            .collect();
        let first = self.window_start(last.at).unwrap_or(last);
        let (backends, listeners) = recent_between(first, last);
        View {
            interval_s: SAMPLE_MS / 1000,
            pools,
            backends,
            listeners,
        }
    }
}

/// Each backend's and listener's rate and percentiles from `first` to
/// `last`.
fn recent_between(first: &Sample, last: &Sample) -> (Vec<Recent>, Vec<Recent>) {
    let secs = secs_between(first, last);
    let backends = last
        .pools
        .iter()
        .flat_map(|p| {
            let earlier = first.pools.iter().find(|q| q.name == p.name);
            p.backends.iter().map(move |b| {
                let e = earlier.and_then(|q| q.backends.iter().find(|x| x.name == b.name));
                let (queries, latency) = e.map_or((b.queries, b.latency), |e| {
                    (
                        b.queries.saturating_sub(e.queries),
                        b.latency.since(&e.latency),
                    )
                });
                recent(Some(p.name.clone()), &b.name, queries, &latency, secs)
            })
        })
        .collect();
    let listeners = last
        .listeners
        .iter()
        .map(|l| {
            let e = first.listeners.iter().find(|x| x.name == l.name);
            let (queries, latency) = e.map_or((l.queries, l.latency), |e| {
                (
                    l.queries.saturating_sub(e.queries),
                    l.latency.since(&e.latency),
                )
            });
            recent(None, &l.name, queries, &latency, secs)
        })
        .collect();
    (backends, listeners)
}

/// Seconds from `a` to `b`; `None` when they are the same moment.
fn secs_between(a: &Sample, b: &Sample) -> Option<f64> {
    let ms = b.at.0.saturating_sub(a.at.0);
    (ms > 0).then(|| ms as f64 / 1000.0)
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn recent(
    pool: Option<String>,
    name: &str,
    queries: u64,
    latency: &LatencySnapshot,
    secs: Option<f64>,
) -> Recent {
    Recent {
        pool,
        name: name.to_string(),
        qps: secs.map_or(0.0, |s| round(queries as f64 / s)),
        p50_ms: latency.quantile_ms(0.5).map(round),
        p90_ms: latency.quantile_ms(0.9).map(round),
        p99_ms: latency.quantile_ms(0.99).map(round),
    }
}

/// Pool `name` from sample `a` to `b`: the sum over the backends present
/// in both (a backend added or removed by a reload counts from the first
/// sample that has it; a counter that went back counts as 0).
fn pool_point(name: &str, a: &Sample, b: &Sample) -> Option<Point> {
    let secs = secs_between(a, b)?;
    let (pa, pb) = (
        a.pools.iter().find(|p| p.name == name)?,
        b.pools.iter().find(|p| p.name == name)?,
    );
    let mut queries = 0u64;
    let latency = merged(pb.backends.iter().filter_map(|bb| {
        let ba = pa.backends.iter().find(|x| x.name == bb.name)?;
        queries += bb.queries.saturating_sub(ba.queries);
        Some(bb.latency.since(&ba.latency))
    }));
    Some(Point {
        t: b.wall,
        qps: round(queries as f64 / secs),
        p50_ms: latency.quantile_ms(0.5).map(round),
        p90_ms: latency.quantile_ms(0.9).map(round),
    })
}

/// The sum of several histograms' counts.
fn merged(parts: impl Iterator<Item = LatencySnapshot>) -> LatencySnapshot {
    parts.fold(LatencySnapshot::default(), |acc, s| acc.plus(&s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dnsha_core::latency::LatencyHistogram;

    fn hist(ms: &[(u64, usize)]) -> LatencySnapshot {
        let h = LatencyHistogram::default();
        for &(v, n) in ms {
            for _ in 0..n {
                h.record_ms(v);
            }
        }
        h.snapshot()
    }

    /// A backend: name, queries, and (duration in ms, how many) answers.
    type Figures<'a> = (&'a str, u64, &'a [(u64, usize)]);

    fn sample(at_s: u64, backends: &[Figures<'_>]) -> Sample {
        Sample {
            at: Millis(at_s * 1000),
            wall: 1_700_000_000 + at_s,
            pools: vec![PoolSample {
                name: "p".into(),
                backends: backends
                    .iter()
                    .map(|(n, q, l)| BackendSample {
                        name: (*n).into(),
                        queries: *q,
                        latency: hist(l),
                    })
                    .collect(),
            }],
            listeners: vec![ListenerSample {
                name: "udp".into(),
                queries: backends.iter().map(|b| b.1).sum(),
                latency: hist(&[]),
            }],
        }
    }

    #[test]
    fn rates_and_percentiles_come_from_consecutive_samples() {
        let mut h = History::new();
        assert!(h.view().pools.is_empty());
        h.push(sample(0, &[("a", 0, &[]), ("b", 0, &[])]));
        h.push(sample(
            5,
            &[("a", 500, &[(0, 500)]), ("b", 500, &[(0, 500)])],
        ));
        h.push(sample(
            10,
            &[("a", 1000, &[(0, 500), (30, 500)]), ("b", 500, &[(0, 500)])],
        ));
        let v = h.view();
        let pts = &v.pools[0].points;
        assert_eq!(pts.len(), 2);
        assert_eq!(pts[0].qps, 200.0);
        assert_eq!(pts[0].t, 1_700_000_005);
        assert!(pts[0].p90_ms.unwrap() <= 1.0);
        // Second interval: only a, and all its answers slow.
        assert_eq!(pts[1].qps, 100.0);
        assert!(pts[1].p50_ms.unwrap() > 20.0);
        // The last minute is all the history: a 100 q/s, b 50 q/s.
        let a = v.backends.iter().find(|b| b.name == "a").unwrap();
        assert_eq!((a.pool.as_deref(), a.qps), (Some("p"), 100.0));
        assert_eq!(v.backends.iter().find(|b| b.name == "b").unwrap().qps, 50.0);
        assert_eq!(v.listeners[0].qps, 150.0);
        // No answer timed in the window: no percentile, not 0.
        assert_eq!(v.listeners[0].p50_ms, None);
    }

    #[test]
    fn the_tables_run_up_to_the_sample_taken_for_the_view() {
        let mut h = History::new();
        h.push(sample(0, &[("a", 0, &[])]));
        // Two seconds later, not kept: the tables already count them.
        let now = sample(2, &[("a", 40, &[(3, 40)])]);
        let v = h.view_with(&now);
        assert!(v.pools[0].points.is_empty());
        assert_eq!(v.backends[0].qps, 20.0);
        assert!(v.backends[0].p50_ms.unwrap() > 2.0);
        assert_eq!(h.len(), 1);
        assert_eq!(History::new().view_with(&now).backends, Vec::new());
    }

    #[test]
    fn five_minutes_are_kept_and_a_minute_is_recent() {
        let mut h = History::new();
        for i in 0..200u64 {
            h.push(sample(i * 5, &[("a", i * 50, &[])]));
        }
        // 300 s of intervals: 60 of them, from 61 samples.
        assert_eq!(h.len(), 61);
        let v = h.view();
        assert_eq!(v.pools[0].points.len(), 60);
        assert!(v.pools[0].points.iter().all(|p| p.qps == 10.0));
        assert_eq!(v.backends[0].qps, 10.0);
    }

    #[test]
    fn backends_that_come_or_go_and_counters_that_go_back_do_not_skew_rates() {
        let mut h = History::new();
        h.push(sample(0, &[("a", 100, &[])]));
        // A reload added c and replaced a (counters restarted).
        h.push(sample(5, &[("a", 10, &[]), ("c", 50, &[])]));
        let v = h.view();
        assert_eq!(v.pools[0].points[0].qps, 0.0);
        // c has no earlier sample: its whole count over the window.
        assert_eq!(v.backends.iter().find(|b| b.name == "c").unwrap().qps, 10.0);
        // One sample: no interval, rates 0.
        let mut one = History::new();
        one.push(sample(0, &[("a", 100, &[])]));
        assert!(one.view().pools[0].points.is_empty());
        assert_eq!(one.view().backends[0].qps, 0.0);
    }
}
