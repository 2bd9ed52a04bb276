//! Balancing policies: pure selection over an immutable snapshot of backends.
//!
//! A [`Policy`] is built for one snapshot of a pool's backends (see
//! [`PolicyKind::build`]) and picks an index into it. Policies never block and
//! never allocate on a pick; eligibility (health, backends already tried for
//! this query) is decided by [`Candidates`].

use std::fmt;
use std::sync::Arc;

use crate::backend::{Backend, BackendId};
use crate::clock::Millis;

mod chash;
mod first;
mod lc;
mod rr;
mod wrr;

pub use chash::{
    hash_client, hash_labels, ConsistentHash, HashKey, LOAD_BOUND_FLOOR, POINTS_PER_WEIGHT,
};
pub use first::FirstAvailable;
pub use lc::LeastOutstanding;
pub use rr::RoundRobin;
pub use wrr::WeightedRoundRobin;

/// A query's hashed key, for the `chash` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashedKey {
    /// The hash of the query's name or client ([`hash_labels`],
    /// [`hash_client`]).
    pub hash: u64,
    /// The pool's load bound factor, in percent (0: none).
    pub balance_percent: u32,
}

/// The backends a policy may choose from for one query.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    backends: &'a [Arc<Backend>],
    exclude: &'a [BackendId],
    now: Millis,
    key: Option<HashedKey>,
    /// Most outstanding queries a backend may hold and still take one.
    cap: Option<u64>,
}

impl<'a> Candidates<'a> {
    /// Candidates out of `backends`, skipping those in `exclude` (already
    /// tried for this query) and those not available at `now`.
    pub fn new(backends: &'a [Arc<Backend>], exclude: &'a [BackendId], now: Millis) -> Self {
        Self {
            backends,
            exclude,
            now,
            key: None,
            cap: None,
        }
    }

    /// The same, where a backend holding `cap` outstanding queries or more
    /// takes no other (the pool's `max_outstanding_per_backend`).
    pub fn with_cap(mut self, cap: Option<u64>) -> Self {
        self.cap = cap;
        self
    }

    /// The same, with the query's hashed key (policies that do not hash
    /// ignore it).
    pub fn with_key(mut self, key: Option<HashedKey>) -> Self {
        self.key = key;
        self
    }

    /// The query's hashed key, if the pool hashes.
    pub fn key(&self) -> Option<HashedKey> {
        self.key
    }

    /// Number of backends in the snapshot (eligible or not).
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// True when the snapshot holds no backend.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
    }

    /// The backend at index `i`.
    pub fn get(&self, i: usize) -> Option<&'a Arc<Backend>> {
        self.backends.get(i)
    }

    /// All backends of the snapshot, in configured order.
    pub fn backends(&self) -> &'a [Arc<Backend>] {
        self.backends
    }

    /// Whether backend `i` may receive this query: available, not tried
    /// yet, and under the pool's cap of outstanding queries.
    pub fn is_eligible(&self, i: usize) -> bool {
        self.backends.get(i).is_some_and(|b| {
            b.is_available(self.now)
                && !self.exclude.contains(&b.id())
                && self.cap.is_none_or(|cap| b.outstanding() < cap)
        })
    }

    /// Indexes of the eligible backends, in configured order.
    pub fn eligible(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.backends.len()).filter(|&i| self.is_eligible(i))
    }
}

/// A balancing policy. Implement it to plug your own selection into a
/// [`Pool`](crate::Pool).
///
/// ```
/// use std::sync::Arc;
/// use dnsha_core::{Backend, Candidates, Millis, Policy};
///
/// /// Always the eligible backend with the lowest failure count.
/// #[derive(Debug)]
/// struct FewestFailures;
///
/// impl Policy for FewestFailures {
///     fn name(&self) -> &str { "fewest-failures" }
///     fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
///         c.eligible().min_by_key(|&i| c.get(i).map_or(u64::MAX, |b| b.failures()))
///     }
/// }
///
/// let backends = vec![
///     Arc::new(Backend::new("a", "192.0.2.1:53".parse().unwrap(), 1)),
///     Arc::new(Backend::new("b", "192.0.2.2:53".parse().unwrap(), 1)),
/// ];
/// let pick = FewestFailures.pick(&Candidates::new(&backends, &[], Millis(0)));
/// assert_eq!(pick, Some(0));
/// ```
pub trait Policy: Send + Sync + fmt::Debug {
    /// Short name shown in `/status` (`rr`, `wrr`, ...).
    fn name(&self) -> &str;

    /// The index of the chosen backend, or `None` when no candidate is
    /// eligible.
    fn pick(&self, candidates: &Candidates<'_>) -> Option<usize>;
}

/// The built-in policies, by their configuration names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// `rr`: round robin over available backends.
    #[default]
    #[serde(rename = "rr")]
    RoundRobin,
    /// `wrr`: smooth weighted round robin.
    #[serde(rename = "wrr")]
    WeightedRoundRobin,
    /// `lc`: least outstanding queries, relative to weight (as LVS `wlc`).
    #[serde(rename = "lc")]
    LeastOutstanding,
    /// `first`: the first available backend in configured order.
    #[serde(rename = "first")]
    FirstAvailable,
    /// `chash`: consistent hashing of the query name or the client, with
    /// bounded load.
    #[serde(rename = "chash")]
    ConsistentHash,
}

impl PolicyKind {
    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "rr",
            Self::WeightedRoundRobin => "wrr",
            Self::LeastOutstanding => "lc",
            Self::FirstAvailable => "first",
            Self::ConsistentHash => "chash",
        }
    }

    /// Builds the policy for a snapshot of backends.
    pub fn build(self, backends: &[Arc<Backend>]) -> Arc<dyn Policy> {
        match self {
            Self::RoundRobin => Arc::new(RoundRobin::new()),
            Self::WeightedRoundRobin => Arc::new(WeightedRoundRobin::new(backends)),
            Self::LeastOutstanding => Arc::new(LeastOutstanding::new()),
            Self::FirstAvailable => Arc::new(FirstAvailable),
            Self::ConsistentHash => Arc::new(ConsistentHash::new(backends)),
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use crate::backend::BackendState;

    pub(crate) fn backends(weights: &[u32]) -> Vec<Arc<Backend>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("192.0.2.{}:53", i + 1).parse().unwrap();
                Arc::new(Backend::new(format!("b{i}"), addr, w))
            })
            .collect()
    }

    pub(crate) fn down(b: &Backend) {
        b.set_state(BackendState::DownByCheck);
    }

    /// Picks `n` times and counts picks per backend index.
    pub(crate) fn histogram(p: &dyn Policy, bs: &[Arc<Backend>], n: usize) -> Vec<usize> {
        let mut h = vec![0; bs.len()];
        for _ in 0..n {
            let i = p.pick(&Candidates::new(bs, &[], Millis(0))).unwrap();
            h[i] += 1;
        }
        h
    }

    /// Every policy: none eligible gives None; excluded backends are skipped.
    pub(crate) fn common_checks(kind: PolicyKind) {
        let bs = backends(&[1, 2, 3]);
        let p = kind.build(&bs);
        for b in &bs {
            down(b);
        }
        assert_eq!(
            p.pick(&Candidates::new(&bs, &[], Millis(0))),
            None,
            "{kind}: all down"
        );
        let bs = backends(&[1, 2, 3]);
        let p = kind.build(&bs);
        down(&bs[1]);
        let ex = [bs[0].id()];
        for _ in 0..20 {
            assert_eq!(
                p.pick(&Candidates::new(&bs, &ex, Millis(0))),
                Some(2),
                "{kind}: skip"
            );
        }
        let empty: Vec<Arc<Backend>> = Vec::new();
        let p = kind.build(&empty);
        assert_eq!(p.pick(&Candidates::new(&empty, &[], Millis(0))), None);
    }

    /// Concurrent picks from several threads all land on eligible backends and
    /// the total is exact.
    pub(crate) fn concurrent_checks(kind: PolicyKind) {
        let bs = backends(&[1, 1, 1, 1]);
        down(&bs[3]);
        let p = kind.build(&bs);
        let per_thread = 10_000;
        let counts: Vec<Vec<usize>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| histogram(&*p, &bs, per_thread)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut total = [0; 4];
        for c in counts {
            for (t, x) in total.iter_mut().zip(c) {
                *t += x;
            }
        }
        assert_eq!(total[3], 0, "{kind}: down backend picked");
        assert_eq!(total.iter().sum::<usize>(), 4 * per_thread);
    }
}
