//! Adaptive steering of a UDP listener's datagrams over its workers.
//!
//! A UDP listener with `workers = N` has N SO_REUSEPORT sockets, one per
//! worker thread. Spread evenly by the kernel, every worker sleeps and wakes
//! for the queries it gets; at a moderate rate each wake-up then serves one
//! query, and the wake-ups (scheduler, context switches, a CPU leaving its
//! idle state) are most of the cost of a query. Sent to fewer workers, the
//! same queries share wake-ups: on the bench machine, 30 000 q/s on one
//! worker cost 1.8 CPU seconds per 100 000 queries, on two 2.3.
//!
//! [`Steering`] decides, once per [`WINDOW_MS`], how many workers take new
//! queries (the first `active` sockets of the group, by a classic BPF
//! program the worker attaches to the reuseport group). It is pure: the
//! caller measures each worker's load over the window ([`Load`]) and
//! carries out the decision.
//!
//! - **Spread at once** when a worker falls behind: busy more than
//!   [`SPREAD_BUSY`] of the window, or reading full batches (datagrams were
//!   queued while it worked) [`SPREAD_FULL_BATCHES`] times or more. Every
//!   worker then takes queries again, as without steering.
//! - **Concentrate slowly**: when the load of all workers together would
//!   fit on fewer, at most [`CONCENTRATE_BUSY`] each, for
//!   [`CALM_WINDOWS`] windows in a row. Concentrating lowers the cost of a
//!   query, so the busy share after it is below the figure that caused it
//!   and well below the spread threshold: no flapping.

/// How often the load is measured and a decision taken, in milliseconds.
pub const WINDOW_MS: u64 = 100;

/// A worker busier than this share of a window makes all workers take
/// queries.
pub const SPREAD_BUSY: f64 = 0.85;

/// A worker that read this many full batches in a window (its socket held
/// a backlog: at least this many × 32 datagrams queued while it worked)
/// makes all workers take queries. A few full batches are normal: load
/// generators and resolvers send in bursts (dnsperf at 30 000 q/s gives
/// one worker 2 to 5 per window while it is half busy).
pub const SPREAD_FULL_BATCHES: u64 = 32;

/// Fewer workers take queries when the total load fits on them at this
/// busy share each.
pub const CONCENTRATE_BUSY: f64 = 0.75;

/// Windows in a row the load must fit on fewer workers before they are
/// fewer (one second).
pub const CALM_WINDOWS: u32 = 10;

/// One worker's load over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Share of the window the worker's thread ran (user and system time),
    /// from 0.0; above 1.0 only through measurement skew.
    pub busy: f64,
    /// Receives of client queries that filled the whole batch.
    pub full_batches: u64,
}

/// How many of a listener's workers take new queries.
///
/// ```
/// use dnsha_proxy::frontend::steer::{Load, Steering, CALM_WINDOWS};
///
/// let mut s = Steering::new(4);
/// assert_eq!(s.active(), 4);
/// let light = [Load { busy: 0.1, full_batches: 0 }; 4];
/// // A light load for a second: one worker takes it all.
/// let mut changed = None;
/// for _ in 0..CALM_WINDOWS {
///     changed = s.observe(&light).or(changed);
/// }
/// assert_eq!(changed, Some(1));
/// // That worker falls behind: every worker takes queries again.
/// let behind = [Load { busy: 0.95, full_batches: 0 }, Load::default(), Load::default(), Load::default()];
/// assert_eq!(s.observe(&behind), Some(4));
/// ```
#[derive(Debug, Clone)]
pub struct Steering {
    workers: usize,
    active: usize,
    /// Windows in a row the load fitted on fewer workers.
    calm: u32,
}

impl Steering {
    /// All `workers` take queries, as the kernel spreads them by default.
    pub fn new(workers: usize) -> Self {
        let workers = workers.max(1);
        Self {
            workers,
            active: workers,
            calm: 0,
        }
    }

    /// How many workers take new queries (the first ones).
    pub fn active(&self) -> usize {
        self.active
    }

    /// Takes the load of each worker over the last window (index = worker;
    /// missing workers count as idle) and returns the new number of active
    /// workers when it changes.
    pub fn observe(&mut self, loads: &[Load]) -> Option<usize> {
        // Any worker: which sockets are first in the group is the kernel's
        // order (closing sockets moves the last one into the gap), not the
        // workers' numbers.
        let behind = loads
            .iter()
            .any(|l| l.busy > SPREAD_BUSY || l.full_batches >= SPREAD_FULL_BATCHES);
        if behind {
            self.calm = 0;
            return self.set(self.workers);
        }
        let total: f64 = loads.iter().map(|l| l.busy.max(0.0)).sum();
        let need = needed_workers(total, self.workers);
        if need >= self.active {
            self.calm = 0;
            return None;
        }
        self.calm += 1;
        if self.calm < CALM_WINDOWS {
            return None;
        }
        self.calm = 0;
        self.set(need)
    }

    fn set(&mut self, active: usize) -> Option<usize> {
        (active != self.active).then(|| {
            self.active = active;
            active
        })
    }
}

/// Workers needed to carry `total` busy share at [`CONCENTRATE_BUSY`] each,
/// between 1 and `workers`.
fn needed_workers(total: f64, workers: usize) -> usize {
    let need = (total / CONCENTRATE_BUSY).ceil();
    if need.is_nan() || need < 1.0 {
        return 1;
    }
    // `need` is finite and at least 1 here; a float above any worker count
    // saturates the conversion.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let need = need as usize;
    need.min(workers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loads(busy: &[f64]) -> Vec<Load> {
        busy.iter()
            .map(|&busy| Load {
                busy,
                full_batches: 0,
            })
            .collect()
    }

    fn calm_second(s: &mut Steering, l: &[Load]) -> Option<usize> {
        let mut changed = None;
        for _ in 0..CALM_WINDOWS {
            changed = s.observe(l).or(changed);
        }
        changed
    }

    #[test]
    fn starts_spread_over_every_worker() {
        assert_eq!(Steering::new(3).active(), 3);
        assert_eq!(Steering::new(0).active(), 1);
    }

    #[test]
    fn a_light_load_concentrates_only_after_a_calm_second() {
        let mut s = Steering::new(2);
        let light = loads(&[0.3, 0.3]);
        for _ in 1..CALM_WINDOWS {
            assert_eq!(s.observe(&light), None);
        }
        assert_eq!(s.observe(&light), Some(1));
        assert_eq!(s.active(), 1);
        // Staying light changes nothing more.
        assert_eq!(calm_second(&mut s, &loads(&[0.5, 0.0])), None);
    }

    #[test]
    fn one_busy_window_restarts_the_calm_count() {
        let mut s = Steering::new(2);
        let light = loads(&[0.2, 0.2]);
        for _ in 1..CALM_WINDOWS {
            s.observe(&light);
        }
        // Together 1.0: needs both workers.
        assert_eq!(s.observe(&loads(&[0.5, 0.5])), None);
        for _ in 1..CALM_WINDOWS {
            assert_eq!(s.observe(&light), None);
        }
        assert_eq!(s.observe(&light), Some(1));
    }

    #[test]
    fn concentrates_to_as_many_workers_as_the_load_needs() {
        let mut s = Steering::new(8);
        // 1.6 in all: 3 workers at 0.75 each carry it.
        assert_eq!(calm_second(&mut s, &loads(&[0.2; 8])), Some(3));
        assert_eq!(s.active(), 3);
        // Less load later: fewer still.
        assert_eq!(calm_second(&mut s, &loads(&[0.3, 0.3, 0.0])), Some(1));
    }

    #[test]
    fn a_worker_falling_behind_spreads_at_once() {
        let mut s = Steering::new(4);
        calm_second(&mut s, &loads(&[0.1; 4]));
        assert_eq!(s.active(), 1);
        assert_eq!(s.observe(&loads(&[0.9, 0.0, 0.0, 0.0])), Some(4));
        // A backlog seen as full batches does the same, busy or not.
        calm_second(&mut s, &loads(&[0.1; 4]));
        let backlog = [Load {
            busy: 0.5,
            full_batches: SPREAD_FULL_BATCHES,
        }];
        assert_eq!(s.observe(&backlog), Some(4));
    }

    #[test]
    fn any_worker_falling_behind_spreads() {
        // Which sockets the first ones of the group are is the kernel's
        // business (closing sockets reorders it): a backlog anywhere counts.
        let mut s = Steering::new(2);
        calm_second(&mut s, &loads(&[0.1, 0.1]));
        assert_eq!(s.active(), 1);
        let l = [
            Load::default(),
            Load {
                busy: 0.2,
                full_batches: SPREAD_FULL_BATCHES,
            },
        ];
        assert_eq!(s.observe(&l), Some(2));
    }

    #[test]
    fn the_threshold_gap_keeps_a_steady_load_from_flapping() {
        // A load that concentrates (total at most CONCENTRATE_BUSY) cannot
        // make the one worker exceed SPREAD_BUSY unless it grows by more
        // than the gap between the two.
        const { assert!(CONCENTRATE_BUSY < SPREAD_BUSY) };
        let mut s = Steering::new(2);
        let l = loads(&[CONCENTRATE_BUSY / 2.0, CONCENTRATE_BUSY / 2.0]);
        assert_eq!(calm_second(&mut s, &l), Some(1));
        assert_eq!(calm_second(&mut s, &loads(&[CONCENTRATE_BUSY, 0.0])), None);
        assert_eq!(s.active(), 1);
    }

    #[test]
    fn odd_measurements_are_bounded() {
        let mut s = Steering::new(3);
        assert_eq!(calm_second(&mut s, &loads(&[f64::NAN, -1.0, 0.0])), Some(1));
        assert_eq!(s.observe(&loads(&[f64::INFINITY])), Some(3));
        assert_eq!(s.observe(&[]), None);
        assert_eq!(needed_workers(f64::INFINITY, 3), 3);
        assert_eq!(needed_workers(f64::NAN, 3), 1);
    }
}
