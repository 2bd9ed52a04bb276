//! Backends: one DNS server behind the balancer, its health state and live counters.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use crate::clock::Millis;

/// A process-unique identity of a [`Backend`] value; survives reloads when the
/// backend is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u64);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Health state of a backend as the data path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendState {
    /// Receives traffic.
    Up,
    /// Marked down by live traffic (consecutive refusals or timeouts). Without
    /// an active health check, one trial query is let through after the pool's
    /// `fail_timeout_ms`, as nginx does with `max_fails`/`fail_timeout`.
    DownByTraffic,
    /// Marked down by an active health check; only the checker brings it back.
    DownByCheck,
}

impl BackendState {
    fn to_u8(self) -> u8 {
        match self {
            Self::Up => 0,
            Self::DownByTraffic => 1,
            Self::DownByCheck => 2,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Up,
            1 => Self::DownByTraffic,
            _ => Self::DownByCheck,
        }
    }

    /// `"up"` or `"down"`, as `/status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::DownByTraffic | Self::DownByCheck => "down",
        }
    }
}

/// What a query outcome did to a backend's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The backend went from down to up.
    Up,
    /// The backend went from up to down.
    Down,
}

/// Why a query to a backend failed, as the passive health logic counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer within the pool timeout.
    Timeout,
    /// ICMP port unreachable, TCP reset or connection refused.
    Refused,
    /// The TCP connection closed with the query in flight.
    Closed,
    /// The backend answered SERVFAIL.
    ServFail,
}

impl FailureKind {
    /// A short lowercase name, used in logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Closed => "closed",
            Self::ServFail => "servfail",
        }
    }
}

/// How live traffic marks a backend down: a pool's `max_fails`,
/// `fail_timeout_ms` and `fail_percent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveLimits {
    /// Consecutive failures needed (0 disables marking down by traffic).
    pub max_fails: u32,
    /// The window over which failures are weighed against answers, and the
    /// wait before a trial query once marked down.
    pub fail_timeout_ms: u64,
    /// Share of the outcomes in the window (failures against answers, in
    /// percent) that must be failures too.
    pub fail_percent: u8,
}

/// Outcomes of live queries counted in one window: the window's number (low
/// 16 bits), answers and failures (24 bits each, saturating), packed in one
/// atomic word so that every worker updates it without a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Outcomes {
    epoch: u16,
    ok: u32,
    fail: u32,
}

const COUNT_MAX: u32 = (1 << 24) - 1;

impl Outcomes {
    fn pack(self) -> u64 {
        (u64::from(self.epoch) << 48)
            | (u64::from(self.ok.min(COUNT_MAX)) << 24)
            | u64::from(self.fail.min(COUNT_MAX))
    }

    fn unpack(v: u64) -> Self {
        Self {
            epoch: (v >> 48) as u16,
            ok: ((v >> 24) as u32) & COUNT_MAX,
            fail: (v as u32) & COUNT_MAX,
        }
    }
}

/// One backend DNS server.
///
/// Counters are atomics so that every worker updates them without locks. A
/// backend is shared as `Arc<Backend>` between the pool snapshot and the
/// queries in flight.
pub struct Backend {
    id: BackendId,
    name: String,
    address: SocketAddr,
    weight: u32,
    state: AtomicU8,
    /// Drained by the operator ([`Backend::set_drained`]).
    drained: std::sync::atomic::AtomicBool,
    retry_at: AtomicU64,
    outstanding: AtomicU64,
    queries: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU32,
    passive_run: AtomicU32,
    /// [`Outcomes`] of the current window.
    window: AtomicU64,
    /// [`Outcomes`] of the window before it.
    previous: AtomicU64,
    /// Time from a query's send to its answer.
    latency: crate::latency::LatencyHistogram,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("weight", &self.weight)
            .field("state", &self.state())
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

impl Backend {
    /// A new backend, up, with zeroed counters. A weight of 0 is raised to 1.
    pub fn new(name: impl Into<String>, address: SocketAddr, weight: u32) -> Self {
        Self {
            id: BackendId(NEXT_ID.fetch_add(1, Ordering::Relaxed)),
            name: name.into(),
            address,
            weight: weight.max(1),
            state: AtomicU8::new(BackendState::Up.to_u8()),
            drained: std::sync::atomic::AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            outstanding: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            passive_run: AtomicU32::new(0),
            window: AtomicU64::new(0),
            previous: AtomicU64::new(0),
            latency: crate::latency::LatencyHistogram::default(),
        }
    }

    /// A new backend that takes over the state and counters of `old`
    /// (used on reload when only the weight changed).
    pub fn with_state_of(old: &Self, weight: u32) -> Self {
        let new = Self::new(old.name.clone(), old.address, weight);
        new.state
            .store(old.state.load(Ordering::Relaxed), Ordering::Relaxed);
        new.set_drained(old.is_drained());
        new.retry_at
            .store(old.retry_at.load(Ordering::Relaxed), Ordering::Relaxed);
        new.queries.store(old.queries(), Ordering::Relaxed);
        new.failures.store(old.failures(), Ordering::Relaxed);
        new.consecutive_failures.store(
            old.consecutive_failures.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        new.passive_run.store(old.passive_run(), Ordering::Relaxed);
        new.window
            .store(old.window.load(Ordering::Relaxed), Ordering::Relaxed);
        new.previous
            .store(old.previous.load(Ordering::Relaxed), Ordering::Relaxed);
        new.latency.add(&old.latency());
        new
    }

    /// Counts an answer that came `ms` whole milliseconds after its query
    /// was sent (see [`crate::latency`]).
    pub fn record_latency(&self, ms: u64) {
        self.latency.record_ms(ms);
    }

    /// Its answer times so far.
    pub fn latency(&self) -> crate::latency::LatencySnapshot {
        self.latency.snapshot()
    }

    /// Process-unique identity.
    pub fn id(&self) -> BackendId {
        self.id
    }

    /// Configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Address queries are sent to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Weight for `wrr` and `lc` (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Current health state.
    pub fn state(&self) -> BackendState {
        BackendState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// True when the state is [`BackendState::Up`].
    pub fn is_up(&self) -> bool {
        self.state() == BackendState::Up
    }

    /// Whether the operator drained it: no new query goes to it, those in
    /// flight finish, health checks go on (`ipvsadm -e -w 0`, HAProxy's
    /// `disable server`).
    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Acquire)
    }

    /// Drains it (`true`) or puts it back (`false`); returns whether it was
    /// drained before.
    pub fn set_drained(&self, drained: bool) -> bool {
        self.drained.swap(drained, Ordering::AcqRel)
    }

    /// Whether it takes new queries: up and not drained.
    pub fn serves(&self) -> bool {
        self.is_up() && !self.is_drained()
    }

    /// Whether a policy may send a query here at `now`: not drained, and the
    /// backend is up, or it was marked down by traffic and its retry time
    /// has come (one trial).
    pub fn is_available(&self, now: Millis) -> bool {
        if self.is_drained() {
            return false;
        }
        match self.state() {
            BackendState::Up => true,
            BackendState::DownByCheck => false,
            BackendState::DownByTraffic => now.0 >= self.retry_at.load(Ordering::Relaxed),
        }
    }

    /// Sets the state (used by health checkers); returns the transition, if any.
    pub fn set_state(&self, state: BackendState) -> Option<Transition> {
        let old = BackendState::from_u8(self.state.swap(state.to_u8(), Ordering::AcqRel));
        if state == BackendState::Up {
            self.consecutive_failures.store(0, Ordering::Relaxed);
            self.passive_run.store(0, Ordering::Relaxed);
            self.window.store(0, Ordering::Relaxed);
            self.previous.store(0, Ordering::Relaxed);
        }
        match (old == BackendState::Up, state == BackendState::Up) {
            (true, false) => Some(Transition::Down),
            (false, true) => Some(Transition::Up),
            _ => None,
        }
    }

    /// Queries in flight right now.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    /// Queries sent since start.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Failed queries (timeouts, refusals, closed connections) since start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Consecutive failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Consecutive bad outcomes of live queries (failures and SERVFAIL
    /// answers) since the last good answer; what passive health checking
    /// compares with its threshold.
    pub fn passive_run(&self) -> u32 {
        self.passive_run.load(Ordering::Relaxed)
    }

    /// Starts a query: counts it and returns a guard that holds one
    /// outstanding slot until it is dropped.
    pub fn start_query(self: &Arc<Self>) -> InFlight {
        self.queries.fetch_add(1, Ordering::Relaxed);
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        InFlight {
            backend: Arc::clone(self),
        }
    }

    /// Records an answered query at `now` (`window_ms`: the pool's
    /// `fail_timeout_ms`). A backend down by traffic comes back up.
    pub fn record_success(&self, now: Millis, window_ms: u64) -> Option<Transition> {
        // Written only when they change: every worker answers through here,
        // and a store to a shared line costs more than a load.
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        if self.passive_run.load(Ordering::Relaxed) != 0 {
            self.passive_run.store(0, Ordering::Relaxed);
        }
        self.count_answer(now, window_ms);
        if self.state() == BackendState::DownByTraffic {
            return self.set_state(BackendState::Up);
        }
        None
    }

    /// Records a SERVFAIL answer: the backend is alive (as for
    /// [`Backend::record_success`], a backend down by traffic comes back, the
    /// failure run ends and the answer counts against failures in the
    /// window), but it counts as a bad outcome for passive health
    /// ([`Backend::passive_run`]).
    pub fn record_servfail(&self, now: Millis, window_ms: u64) -> Option<Transition> {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        self.count(now, window_ms, 1, 0);
        let transition = if self.state() == BackendState::DownByTraffic {
            self.set_state(BackendState::Up)
        } else {
            None
        };
        self.passive_run.fetch_add(1, Ordering::Relaxed);
        transition
    }

    /// Records a failed query. An up backend is marked down by traffic, to
    /// get a trial query after `fail_timeout_ms`, when both hold:
    /// `max_fails` failures in a row, and failures are at least
    /// `fail_percent` % of its outcomes over the last `fail_timeout_ms`
    /// (the current window, plus the previous one weighed by how much of it
    /// is still within that time). So a backend that keeps answering other
    /// queries is not marked down by a burst of failures an outsider can
    /// cause (queries for a name the backend never answers, a spoofed ICMP
    /// error), while a dead one is at its `max_fails`-th failure. A
    /// `max_fails` of 0 disables passive marking.
    pub fn record_failure(
        &self,
        _kind: FailureKind,
        limits: &PassiveLimits,
        now: Millis,
    ) -> Option<Transition> {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.passive_run.fetch_add(1, Ordering::Relaxed);
        let n = self
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let (ok, fail) = self.count(now, limits.fail_timeout_ms, 0, 1);
        let share = fail * 100 >= (ok + fail) * u64::from(limits.fail_percent.min(100));
        match self.state() {
            BackendState::Up if limits.max_fails > 0 && n >= limits.max_fails && share => {
                self.retry_at
                    .store(now.plus(limits.fail_timeout_ms).0, Ordering::Relaxed);
                self.set_state(BackendState::DownByTraffic)
            }
            BackendState::DownByTraffic => {
                // A failed trial: wait another period.
                self.retry_at
                    .store(now.plus(limits.fail_timeout_ms).0, Ordering::Relaxed);
                None
            }
            _ => None,
        }
    }

    /// Answers and failures over the last `window_ms` at `now`, as the
    /// passive logic weighs them (answers, failures).
    pub fn recent_outcomes(&self, now: Millis, window_ms: u64) -> (u64, u64) {
        self.count(now, window_ms, 0, 0)
    }

    /// Adds one answer to the window of `now`: one atomic add while the
    /// window is current (the data path's case), the general update at a
    /// window's turn or near saturation.
    fn count_answer(&self, now: Millis, window_ms: u64) {
        let epoch = (now.0 / window_ms.max(1)) as u16;
        let cur = Outcomes::unpack(self.window.load(Ordering::Relaxed));
        if cur.epoch == epoch && cur.ok < COUNT_MAX / 2 {
            self.window.fetch_add(1 << 24, Ordering::Relaxed);
        } else {
            self.count(now, window_ms, 1, 0);
        }
    }

    /// Adds `ok` answers and `fail` failures to the window of `now` and
    /// returns the weighted totals over the last `window_ms`.
    fn count(&self, now: Millis, window_ms: u64, ok: u32, fail: u32) -> (u64, u64) {
        let w = window_ms.max(1);
        let epoch = (now.0 / w) as u16;
        let mut cur = self.window.load(Ordering::Relaxed);
        let (this, rolled_from) = loop {
            let old = Outcomes::unpack(cur);
            let (base, rolled) = if old.epoch == epoch {
                (old, None)
            } else {
                (
                    Outcomes {
                        epoch,
                        ..Outcomes::default()
                    },
                    Some(old),
                )
            };
            let new = Outcomes {
                epoch,
                ok: base.ok.saturating_add(ok),
                fail: base.fail.saturating_add(fail),
            };
            if ok == 0 && fail == 0 && rolled.is_none() {
                break (new, None);
            }
            match self.window.compare_exchange_weak(
                cur,
                new.pack(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break (new, rolled),
                Err(now_there) => cur = now_there,
            }
        };
        if let Some(old) = rolled_from {
            // The window that just ended becomes the previous one.
            self.previous.store(old.pack(), Ordering::Relaxed);
        }
        // Only the window right before this one counts (after a whole window
        // without traffic, nothing does).
        let prev = Outcomes::unpack(self.previous.load(Ordering::Relaxed));
        let prev = if prev.epoch.wrapping_add(1) == epoch {
            prev
        } else {
            Outcomes::default()
        };
        // The previous window, weighed by the part of it still within the
        // last `window_ms`.
        let left = w - now.0 % w;
        let ok_total = u64::from(this.ok) + u64::from(prev.ok) * left / w;
        let fail_total = u64::from(this.fail) + u64::from(prev.fail) * left / w;
        (ok_total, fail_total)
    }
}

/// A query in flight to a backend. Holds one outstanding slot until dropped,
/// so no path can leak a count.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<Backend>,
}

impl InFlight {
    /// The backend the query went to.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.outstanding.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend() -> Arc<Backend> {
        Arc::new(Backend::new("b", "127.0.0.1:53".parse().unwrap(), 1))
    }

    #[test]
    fn guard_releases_outstanding_on_every_path() {
        let b = backend();
        {
            let _g1 = b.start_query();
            let g2 = b.start_query();
            assert_eq!(b.outstanding(), 2);
            drop(g2);
            assert_eq!(b.outstanding(), 1);
        }
        assert_eq!(b.outstanding(), 0);
        assert_eq!(b.queries(), 2);
        let r = std::panic::catch_unwind(|| {
            let _g = b.start_query();
            panic!("boom");
        });
        assert!(r.is_err());
        assert_eq!(b.outstanding(), 0);
    }

    fn limits(max_fails: u32) -> PassiveLimits {
        PassiveLimits {
            max_fails,
            fail_timeout_ms: 500,
            fail_percent: 50,
        }
    }

    #[test]
    fn consecutive_failures_mark_down_then_trial_then_up() {
        let b = backend();
        let t0 = Millis(1000);
        let l = limits(3);
        assert_eq!(b.record_failure(FailureKind::Timeout, &l, t0), None);
        assert_eq!(b.record_failure(FailureKind::Timeout, &l, t0), None);
        assert_eq!(
            b.record_failure(FailureKind::Refused, &l, t0),
            Some(Transition::Down)
        );
        assert_eq!(b.state(), BackendState::DownByTraffic);
        assert!(!b.is_available(Millis(1499)));
        assert!(b.is_available(Millis(1500)));
        // failed trial pushes the retry time
        assert_eq!(
            b.record_failure(FailureKind::Timeout, &l, Millis(1500)),
            None
        );
        assert!(!b.is_available(Millis(1999)));
        assert_eq!(b.record_success(Millis(2000), 500), Some(Transition::Up));
        assert!(b.is_up());
        assert_eq!(b.failures(), 4);
    }

    #[test]
    fn success_resets_the_run() {
        let b = backend();
        b.record_failure(FailureKind::Timeout, &limits(2), Millis(0));
        b.record_success(Millis(0), 500);
        assert_eq!(
            b.record_failure(FailureKind::Timeout, &limits(2), Millis(0)),
            None
        );
        assert!(b.is_up());
    }

    #[test]
    fn a_burst_of_failures_does_not_mark_down_a_backend_that_answers() {
        let b = backend();
        let l = PassiveLimits {
            max_fails: 3,
            fail_timeout_ms: 10_000,
            fail_percent: 50,
        };
        // 200 answers over the last seconds, then 150 queries that all time
        // out in one timer pass (a name the backend never answers).
        for i in 0..200 {
            b.record_success(Millis(5_000 + i * 20), l.fail_timeout_ms);
        }
        for _ in 0..150 {
            assert_eq!(
                b.record_failure(FailureKind::Timeout, &l, Millis(9_100)),
                None
            );
        }
        assert!(b.is_up());
        assert_eq!(b.consecutive_failures(), 150);
        assert_eq!(
            b.recent_outcomes(Millis(9_100), l.fail_timeout_ms),
            (200, 150)
        );
        // Once the failures are the larger share, it goes down.
        for _ in 0..50 {
            b.record_failure(FailureKind::Timeout, &l, Millis(9_200));
        }
        assert!(!b.is_up());
    }

    #[test]
    fn answers_of_the_previous_window_still_count_while_recent() {
        let b = backend();
        let l = PassiveLimits {
            max_fails: 3,
            fail_timeout_ms: 1_000,
            fail_percent: 50,
        };
        for _ in 0..100 {
            b.record_success(Millis(1_900), l.fail_timeout_ms);
        }
        // Just after the window turned: the previous window's answers weigh
        // almost fully.
        for _ in 0..40 {
            b.record_failure(FailureKind::Timeout, &l, Millis(2_050));
        }
        assert!(b.is_up());
        let (ok, fail) = b.recent_outcomes(Millis(2_050), l.fail_timeout_ms);
        assert_eq!((ok, fail), (95, 40));
        // A whole window later they are gone, and a dead backend is down at
        // its max_fails-th failure.
        let c = backend();
        for _ in 0..100 {
            c.record_success(Millis(1_900), l.fail_timeout_ms);
        }
        for i in 0..3 {
            c.record_failure(FailureKind::Timeout, &l, Millis(3_100 + i));
        }
        assert!(!c.is_up());
    }

    #[test]
    fn a_drained_backend_takes_no_new_query_and_keeps_its_health() {
        let b = backend();
        assert!(!b.set_drained(true));
        assert!(!b.is_available(Millis(0)));
        assert!(!b.serves());
        // Its health is its own: checks still move it.
        assert!(b.is_up());
        assert_eq!(
            b.set_state(BackendState::DownByCheck),
            Some(Transition::Down)
        );
        assert_eq!(b.set_state(BackendState::Up), Some(Transition::Up));
        // A reload that changes its weight keeps the drain.
        let c = Backend::with_state_of(&b, 5);
        assert!(c.is_drained());
        assert!(c.set_drained(false));
        assert!(c.is_available(Millis(0)) && c.serves());
    }

    #[test]
    fn checker_down_is_not_retried_by_traffic() {
        let b = backend();
        assert_eq!(
            b.set_state(BackendState::DownByCheck),
            Some(Transition::Down)
        );
        assert!(!b.is_available(Millis(u64::MAX)));
        assert_eq!(b.record_success(Millis(0), 500), None);
        assert_eq!(b.set_state(BackendState::Up), Some(Transition::Up));
    }

    #[test]
    fn servfail_is_alive_but_extends_the_passive_run() {
        let b = backend();
        let l = limits(3);
        b.record_failure(FailureKind::Timeout, &l, Millis(0));
        assert_eq!(b.passive_run(), 1);
        assert_eq!(b.record_servfail(Millis(0), 500), None);
        assert_eq!(b.record_servfail(Millis(0), 500), None);
        assert_eq!(b.passive_run(), 3);
        assert_eq!(b.consecutive_failures(), 0);
        b.record_success(Millis(0), 500);
        assert_eq!(b.passive_run(), 0);
        // A SERVFAIL answer to a trial query still proves the backend alive.
        for _ in 0..3 {
            b.record_failure(FailureKind::Refused, &l, Millis(600));
        }
        assert_eq!(b.state(), BackendState::DownByTraffic);
        assert_eq!(b.record_servfail(Millis(700), 500), Some(Transition::Up));
        assert_eq!(b.passive_run(), 1);
    }

    #[test]
    fn zero_max_fails_never_marks_down() {
        let b = backend();
        for _ in 0..10 {
            assert_eq!(
                b.record_failure(FailureKind::Timeout, &limits(0), Millis(0)),
                None
            );
        }
        assert!(b.is_up());
    }

    #[test]
    fn outcome_counts_saturate() {
        let o = Outcomes {
            epoch: 7,
            ok: u32::MAX,
            fail: 3,
        };
        let back = Outcomes::unpack(o.pack());
        assert_eq!(
            back,
            Outcomes {
                epoch: 7,
                ok: COUNT_MAX,
                fail: 3
            }
        );
    }
}
