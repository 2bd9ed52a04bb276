//! Pools: a named set of backends, its policy and its query settings.

use std::fmt;
use std::sync::Arc;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::backend::{Backend, BackendId, FailureKind, InFlight, PassiveLimits, Transition};
use crate::clock::Millis;
use crate::error::{Error, Result};
use crate::policy::{Candidates, HashKey, HashedKey, Policy, PolicyKind};

/// What the client gets when no backend can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnNoBackend {
    /// Answer SERVFAIL (the default).
    #[default]
    Servfail,
    /// Send nothing; the client times out.
    Drop,
}

/// Per-pool query settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    /// Time to wait for one backend's answer before trying another.
    pub timeout_ms: u64,
    /// How many other backends to try after the first one fails.
    pub retries: u32,
    /// What to answer when no backend is left.
    pub on_no_backend: OnNoBackend,
    /// Consecutive failures that mark a backend down (0 disables).
    pub max_fails: u32,
    /// How long a backend marked down by traffic waits before a trial query;
    /// also the window over which failures are weighed against answers.
    pub fail_timeout_ms: u64,
    /// Share of a backend's recent outcomes, in percent, that must be
    /// failures (besides `max_fails` in a row) for traffic to mark it down.
    pub fail_percent: u8,
    /// DNS 0x20: randomize the case of the query name towards the backends
    /// over UDP and require it echoed exactly.
    pub randomize_case: bool,
    /// Connected UDP sockets (source ports) each UDP worker keeps per
    /// backend, used in turn: a backend that spreads its load over threads
    /// by source port gets it spread (dnsdist's `sockets`).
    pub udp_sockets_per_backend: usize,
    /// Most TCP/DoT connections the pool keeps open to one backend.
    pub max_connections_per_backend: usize,
    /// Most queries pipelined at once on one TCP/DoT connection to a backend.
    pub max_in_flight_per_connection: usize,
    /// `chash`: what is hashed.
    pub hash_key: HashKey,
    /// `chash`: the load bound factor in percent (150: a backend takes a
    /// query while under 1.5 × the average outstanding); 0 for none.
    pub hash_balance_percent: u32,
    /// Most queries outstanding on one backend; a backend at the cap takes
    /// no other (the next one does, or `on_no_backend` answers). 0: no cap.
    pub max_outstanding_per_backend: u64,
}

impl PoolSettings {
    /// How live traffic marks a backend of this pool down.
    pub fn passive_limits(&self) -> PassiveLimits {
        PassiveLimits {
            max_fails: self.max_fails,
            fail_timeout_ms: self.fail_timeout_ms,
            fail_percent: self.fail_percent,
        }
    }

    /// Largest accepted [`Self::udp_sockets_per_backend`].
    pub const MAX_UDP_SOCKETS_PER_BACKEND: usize = 64;
    /// Largest accepted [`Self::max_connections_per_backend`].
    pub const MAX_CONNECTIONS_PER_BACKEND: usize = 1024;
    /// Largest accepted [`Self::max_in_flight_per_connection`]: random
    /// upstream IDs stay easy to find among the 65 536 possible.
    pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 30_000;
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            timeout_ms: 1000,
            retries: 1,
            on_no_backend: OnNoBackend::Servfail,
            max_fails: 3,
            fail_timeout_ms: 10_000,
            fail_percent: 50,
            randomize_case: false,
            udp_sockets_per_backend: 2,
            max_connections_per_backend: 8,
            max_in_flight_per_connection: 100,
            hash_key: HashKey::Qname,
            hash_balance_percent: 150,
            max_outstanding_per_backend: 0,
        }
    }
}

/// An immutable snapshot of a pool's backends and the policy built for them.
/// The data path loads it without locks; a reload swaps in a new one.
#[derive(Debug)]
pub struct BackendSet {
    backends: Vec<Arc<Backend>>,
    policy: Arc<dyn Policy>,
    settings: PoolSettings,
}

impl BackendSet {
    /// The backends in configured order.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The policy of this snapshot.
    pub fn policy(&self) -> &dyn Policy {
        &*self.policy
    }

    /// The settings of this snapshot.
    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    /// Picks a backend for a query, skipping `exclude`, and starts the query
    /// on it. Returns `None` when no backend is available.
    pub fn pick(&self, exclude: &[BackendId], now: Millis) -> Option<InFlight> {
        self.pick_keyed(exclude, now, None)
    }

    /// The same for a query whose key `hash` a hashing policy places (see
    /// [`Self::hash_key`]).
    pub fn pick_keyed(
        &self,
        exclude: &[BackendId],
        now: Millis,
        hash: Option<u64>,
    ) -> Option<InFlight> {
        let key = hash.map(|hash| HashedKey {
            hash,
            balance_percent: self.settings.hash_balance_percent,
        });
        let cap = Some(self.settings.max_outstanding_per_backend).filter(|&c| c > 0);
        let c = Candidates::new(&self.backends, exclude, now)
            .with_key(key)
            .with_cap(cap);
        let i = self.policy.pick(&c)?;
        self.backends.get(i).map(Backend::start_query)
    }

    /// What a query's key is made of, when the policy hashes one (`chash`);
    /// `None` for the other policies, whose picks need no key.
    pub fn hash_key(&self) -> Option<HashKey> {
        (self.policy.name() == PolicyKind::ConsistentHash.as_str())
            .then_some(self.settings.hash_key)
    }

    /// True when at least one backend takes queries: up and not drained.
    pub fn any_up(&self) -> bool {
        self.backends.iter().any(|b| b.serves())
    }
}

/// A passive health signal: what one live query told about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveSignal {
    /// What went wrong.
    pub kind: FailureKind,
    /// The backend's [`Backend::passive_run`] after this outcome.
    pub run: u32,
    /// Whether this outcome marked the backend down by traffic.
    pub marked_down: bool,
}

/// Receives passive health signals from the data path (for instance a health
/// monitor that probes a suspect backend at once); see [`Pool::set_observer`].
///
/// It is called on the data path, so it must return at once: no I/O, no
/// blocking lock, no allocation it can avoid.
pub trait PassiveObserver: Send + Sync {
    /// A live query to `backend` failed or was answered SERVFAIL.
    fn observe(&self, backend: &Backend, signal: PassiveSignal);
}

/// Holds the observer trait object so that [`ArcSwapOption`] can swap it.
struct ObserverSlot(Arc<dyn PassiveObserver>);

/// Builds a policy for a snapshot; see [`Pool::with_policy`].
pub type PolicyFactory = Arc<dyn Fn(&[Arc<Backend>]) -> Arc<dyn Policy> + Send + Sync>;

/// A named pool of backends.
///
/// ```
/// use std::sync::Arc;
/// use dnsha_core::{Backend, Millis, Pool, PolicyKind, PoolSettings};
///
/// let pool = Pool::new("coredns", PolicyKind::RoundRobin, PoolSettings::default(), vec![
///     Arc::new(Backend::new("coredns-001", "192.168.1.1:53".parse().unwrap(), 1)),
///     Arc::new(Backend::new("coredns-002", "192.168.1.2:53".parse().unwrap(), 1)),
/// ]);
/// let first = pool.pick(&[], Millis(0)).unwrap();
/// let second = pool.pick(&[], Millis(0)).unwrap();
/// assert_eq!(first.backend().name(), "coredns-001");
/// assert_eq!(second.backend().name(), "coredns-002");
/// // The outstanding slot is released when the guard is dropped.
/// assert_eq!(first.backend().outstanding(), 1);
/// drop(first);
/// assert_eq!(pool.snapshot().backends()[0].outstanding(), 0);
/// ```
pub struct Pool {
    name: String,
    kind: Option<PolicyKind>,
    factory: PolicyFactory,
    set: ArcSwap<BackendSet>,
    observer: ArcSwapOption<ObserverSlot>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name)
            .field("set", &self.set.load())
            .finish()
    }
}

impl Pool {
    /// A pool using one of the built-in policies.
    pub fn new(
        name: impl Into<String>,
        kind: PolicyKind,
        settings: PoolSettings,
        backends: Vec<Arc<Backend>>,
    ) -> Self {
        let factory: PolicyFactory = Arc::new(move |bs: &[Arc<Backend>]| kind.build(bs));
        let mut pool = Self::with_policy(name, factory, settings, backends);
        pool.kind = Some(kind);
        pool
    }

    /// A pool with a custom policy: `factory` builds it for every snapshot.
    pub fn with_policy(
        name: impl Into<String>,
        factory: PolicyFactory,
        settings: PoolSettings,
        backends: Vec<Arc<Backend>>,
    ) -> Self {
        let policy = factory(&backends);
        Self {
            name: name.into(),
            kind: None,
            factory,
            set: ArcSwap::from_pointee(BackendSet {
                backends,
                policy,
                settings,
            }),
            observer: ArcSwapOption::empty(),
        }
    }

    /// The pool name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The built-in policy kind, if the pool uses one.
    pub fn policy_kind(&self) -> Option<PolicyKind> {
        self.kind
    }

    /// Runs `f` on the current snapshot without taking a reference count
    /// (the cheapest read, for the data path).
    pub fn with_snapshot<R>(&self, f: impl FnOnce(&BackendSet) -> R) -> R {
        f(&self.set.load())
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<BackendSet> {
        self.set.load_full()
    }

    /// Picks a backend from the current snapshot; see [`BackendSet::pick`].
    pub fn pick(&self, exclude: &[BackendId], now: Millis) -> Result<InFlight> {
        self.set
            .load()
            .pick(exclude, now)
            .ok_or_else(|| Error::NoBackend {
                pool: self.name.clone(),
            })
    }

    /// Replaces backends and settings atomically. Backends that keep their
    /// name and address keep their state and counters (the same `Arc` when the
    /// weight is unchanged); queries in flight are not disturbed.
    pub fn update(
        &self,
        settings: PoolSettings,
        backends: Vec<(String, std::net::SocketAddr, u32)>,
    ) {
        let old = self.set.load();
        let merged: Vec<Arc<Backend>> = backends
            .into_iter()
            .map(|(name, addr, weight)| {
                match old
                    .backends
                    .iter()
                    .find(|b| b.name() == name && b.address() == addr)
                {
                    Some(b) if b.weight() == weight.max(1) => Arc::clone(b),
                    Some(b) => Arc::new(Backend::with_state_of(b, weight)),
                    None => Arc::new(Backend::new(name, addr, weight)),
                }
            })
            .collect();
        self.replace(settings, merged);
    }

    /// Replaces the snapshot with exactly these backends.
    pub fn replace(&self, settings: PoolSettings, backends: Vec<Arc<Backend>>) {
        let policy = (self.factory)(&backends);
        self.set.store(Arc::new(BackendSet {
            backends,
            policy,
            settings,
        }));
    }

    /// Records an answer from `backend` (see [`Backend::record_success`]).
    pub fn record_success(&self, backend: &Backend, now: Millis) -> Option<Transition> {
        let window = self.set.load().settings.fail_timeout_ms;
        backend.record_success(now, window)
    }

    /// Records a failed query for passive health, with the pool's `max_fails`,
    /// `fail_timeout_ms` and `fail_percent` (see [`Backend::record_failure`]).
    pub fn record_failure(
        &self,
        backend: &Backend,
        kind: FailureKind,
        now: Millis,
    ) -> Option<Transition> {
        let limits = self.set.load().settings.passive_limits();
        let transition = backend.record_failure(kind, &limits, now);
        self.notify(
            backend,
            PassiveSignal {
                kind,
                run: backend.passive_run(),
                marked_down: transition == Some(Transition::Down),
            },
        );
        transition
    }

    /// Records a SERVFAIL answer (see [`Backend::record_servfail`]) and tells
    /// the observer, if any.
    pub fn record_servfail(&self, backend: &Backend, now: Millis) -> Option<Transition> {
        let window = self.set.load().settings.fail_timeout_ms;
        let transition = backend.record_servfail(now, window);
        self.notify(
            backend,
            PassiveSignal {
                kind: FailureKind::ServFail,
                run: backend.passive_run(),
                marked_down: false,
            },
        );
        transition
    }

    /// Sets (or with `None` removes) the observer of passive health signals:
    /// it hears of every failed or SERVFAIL live query recorded through this
    /// pool. Without one, failures only count towards `max_fails`.
    pub fn set_observer(&self, observer: Option<Arc<dyn PassiveObserver>>) {
        self.observer
            .store(observer.map(|o| Arc::new(ObserverSlot(o))));
    }

    /// Whether an observer is set.
    pub fn has_observer(&self) -> bool {
        self.observer.load().is_some()
    }

    fn notify(&self, backend: &Backend, signal: PassiveSignal) {
        if let Some(slot) = &*self.observer.load() {
            slot.0.observe(backend, signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(kind: PolicyKind) -> Pool {
        Pool::new(
            "p",
            kind,
            PoolSettings::default(),
            vec![
                Arc::new(Backend::new("a", "192.0.2.1:53".parse().unwrap(), 1)),
                Arc::new(Backend::new("b", "192.0.2.2:53".parse().unwrap(), 1)),
            ],
        )
    }

    #[test]
    fn a_backend_at_its_cap_of_outstanding_queries_takes_no_other() {
        for kind in [
            PolicyKind::RoundRobin,
            PolicyKind::WeightedRoundRobin,
            PolicyKind::LeastOutstanding,
            PolicyKind::FirstAvailable,
            PolicyKind::ConsistentHash,
        ] {
            let p = pool(kind);
            p.update(
                PoolSettings {
                    max_outstanding_per_backend: 2,
                    ..PoolSettings::default()
                },
                vec![
                    ("a".into(), "192.0.2.1:53".parse().unwrap(), 1),
                    ("b".into(), "192.0.2.2:53".parse().unwrap(), 1),
                ],
            );
            // Four queries fill both backends to their cap...
            let held: Vec<InFlight> = (0..4)
                .map(|_| {
                    p.with_snapshot(|s| s.pick_keyed(&[], Millis(0), Some(7)))
                        .unwrap()
                })
                .collect();
            for b in p.snapshot().backends() {
                assert_eq!(b.outstanding(), 2, "{kind}");
            }
            // ...and the fifth finds none.
            assert!(
                p.with_snapshot(|s| s.pick_keyed(&[], Millis(0), Some(7)))
                    .is_none(),
                "{kind}"
            );
            // One answered: room again.
            drop(held);
            assert!(p.pick(&[], Millis(0)).is_ok(), "{kind}");
        }
    }

    #[test]
    fn all_down_says_so() {
        let p = pool(PolicyKind::RoundRobin);
        for b in p.snapshot().backends() {
            b.set_state(crate::BackendState::DownByCheck);
        }
        assert!(matches!(
            p.pick(&[], Millis(0)),
            Err(Error::NoBackend { .. })
        ));
    }

    #[test]
    fn retry_excludes_tried() {
        let p = pool(PolicyKind::FirstAvailable);
        let first = p.pick(&[], Millis(0)).unwrap();
        let second = p.pick(&[first.backend().id()], Millis(0)).unwrap();
        assert_eq!(second.backend().name(), "b");
        let none = p.pick(&[first.backend().id(), second.backend().id()], Millis(0));
        assert!(none.is_err());
    }

    #[test]
    fn drained_backends_get_no_pick_under_any_policy_and_a_fully_drained_pool_is_down() {
        for kind in [
            PolicyKind::RoundRobin,
            PolicyKind::WeightedRoundRobin,
            PolicyKind::LeastOutstanding,
            PolicyKind::FirstAvailable,
            PolicyKind::ConsistentHash,
        ] {
            let p = pool(kind);
            p.snapshot().backends()[0].set_drained(true);
            for _ in 0..10 {
                let f = p.pick(&[], Millis(0)).unwrap();
                assert_eq!(f.backend().name(), "b", "{kind:?}");
            }
            assert!(p.snapshot().any_up());
            p.snapshot().backends()[1].set_drained(true);
            assert!(p.pick(&[], Millis(0)).is_err(), "{kind:?}");
            assert!(!p.snapshot().any_up());
            // Kept across a reload of the same backends.
            p.update(
                PoolSettings::default(),
                vec![
                    ("a".into(), "192.0.2.1:53".parse().unwrap(), 3),
                    ("b".into(), "192.0.2.2:53".parse().unwrap(), 1),
                ],
            );
            assert!(p.snapshot().backends().iter().all(|b| b.is_drained()));
        }
    }

    #[test]
    fn update_keeps_state_of_kept_backends() {
        let p = pool(PolicyKind::RoundRobin);
        let a = Arc::clone(&p.snapshot().backends()[0]);
        let held = a.start_query();
        a.set_state(crate::BackendState::DownByCheck);
        p.update(
            PoolSettings::default(),
            vec![
                ("a".into(), "192.0.2.1:53".parse().unwrap(), 1),
                ("c".into(), "192.0.2.3:53".parse().unwrap(), 1),
            ],
        );
        let snap = p.snapshot();
        assert!(Arc::ptr_eq(&snap.backends()[0], &a));
        assert!(!snap.backends()[0].is_up());
        assert_eq!(snap.backends()[1].name(), "c");
        drop(held);
        assert_eq!(a.outstanding(), 0);
        // weight change keeps counters
        p.update(
            PoolSettings::default(),
            vec![("a".into(), "192.0.2.1:53".parse().unwrap(), 5)],
        );
        let snap = p.snapshot();
        let b = &snap.backends()[0];
        assert_eq!(b.weight(), 5);
        assert_eq!(b.queries(), 1);
        assert!(!b.is_up());
    }

    #[test]
    fn observer_hears_failures_and_servfail() {
        use std::sync::Mutex;
        #[derive(Default)]
        struct Seen(Mutex<Vec<(String, PassiveSignal)>>);
        impl PassiveObserver for Seen {
            fn observe(&self, backend: &Backend, signal: PassiveSignal) {
                self.0
                    .lock()
                    .unwrap()
                    .push((backend.name().to_string(), signal));
            }
        }
        let p = pool(PolicyKind::RoundRobin);
        let a = Arc::clone(&p.snapshot().backends()[0]);
        // Without an observer nothing is called.
        p.record_failure(&a, FailureKind::Timeout, Millis(0));
        let seen = Arc::new(Seen::default());
        p.set_observer(Some(Arc::clone(&seen) as Arc<dyn PassiveObserver>));
        assert!(p.has_observer());
        p.record_servfail(&a, Millis(0));
        p.record_failure(&a, FailureKind::Refused, Millis(0));
        p.record_failure(&a, FailureKind::Refused, Millis(0));
        let got = seen.0.lock().unwrap().clone();
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0].1,
            PassiveSignal {
                kind: FailureKind::ServFail,
                run: 2,
                marked_down: false
            }
        );
        // The SERVFAIL answer ended the failure run: the third failure in a
        // row is only the second since.
        assert!(!got[1].1.marked_down);
        assert_eq!(got[2].1.run, 4);
        p.record_failure(&a, FailureKind::Refused, Millis(0));
        assert!(seen.0.lock().unwrap()[3].1.marked_down);
        p.set_observer(None);
        assert!(!p.has_observer());
    }

    #[test]
    fn picks_during_swap_stay_consistent() {
        let p = Arc::new(pool(PolicyKind::RoundRobin));
        std::thread::scope(|s| {
            let p2 = Arc::clone(&p);
            s.spawn(move || {
                for i in 0..200 {
                    let n = 1 + i % 3;
                    let bs = (0..n)
                        .map(|j| {
                            (
                                format!("x{j}"),
                                format!("192.0.2.{}:53", j + 1).parse().unwrap(),
                                1,
                            )
                        })
                        .collect();
                    p2.update(PoolSettings::default(), bs);
                }
            });
            for _ in 0..4 {
                let p3 = Arc::clone(&p);
                s.spawn(move || {
                    for _ in 0..5000 {
                        let g = p3.pick(&[], Millis(0)).unwrap();
                        assert!(g.backend().is_up());
                    }
                });
            }
        });
        for b in p.snapshot().backends() {
            assert_eq!(b.outstanding(), 0);
        }
    }
}
