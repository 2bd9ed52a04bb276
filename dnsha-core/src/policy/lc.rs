//! Least outstanding queries, weighted (as LVS `wlc`).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidates, Policy};

/// The eligible backend with the fewest queries in flight relative to its
/// weight: `outstanding / weight` is compared without division. Ties are
/// broken by a rotating start so that idle backends share the load evenly.
#[derive(Debug, Default)]
pub struct LeastOutstanding {
    rotate: AtomicUsize,
}

impl LeastOutstanding {
    /// A new least-outstanding policy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for LeastOutstanding {
    fn name(&self) -> &str {
        "lc"
    }

    fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
        let n = c.len();
        if n == 0 {
            return None;
        }
        let start = self.rotate.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u128, u128)> = None;
        for off in 0..n {
            let i = (start + off) % n;
            if !c.is_eligible(i) {
                continue;
            }
            let Some(b) = c.get(i) else { continue };
            let load = u128::from(b.outstanding());
            let weight = u128::from(b.weight());
            let better = match best {
                None => true,
                // load/weight < best_load/best_weight
                Some((_, bl, bw)) => load * bw < bl * weight,
            };
            if better {
                best = Some((i, load, weight));
            }
        }
        best.map(|(i, _, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_util::*;
    use super::super::PolicyKind;
    use super::*;
    use crate::clock::Millis;

    #[test]
    fn prefers_the_least_loaded() {
        let bs = backends(&[1, 1, 1]);
        let _held: Vec<_> = vec![
            bs[0].start_query(),
            bs[0].start_query(),
            bs[2].start_query(),
        ];
        let p = LeastOutstanding::new();
        for _ in 0..10 {
            assert_eq!(p.pick(&Candidates::new(&bs, &[], Millis(0))), Some(1));
        }
    }

    #[test]
    fn weights_scale_the_load_like_wlc() {
        // With queries held open, a weight-3 backend carries 3 for every 1 on
        // a weight-1 backend.
        let bs = backends(&[3, 1]);
        let p = LeastOutstanding::new();
        let mut held = Vec::new();
        for _ in 0..40 {
            let i = p.pick(&Candidates::new(&bs, &[], Millis(0))).unwrap();
            held.push(bs[i].start_query());
        }
        assert_eq!(bs[0].outstanding(), 30);
        assert_eq!(bs[1].outstanding(), 10);
    }

    #[test]
    fn idle_backends_share_evenly() {
        let bs = backends(&[1, 1]);
        assert_eq!(histogram(&LeastOutstanding::new(), &bs, 100), [50, 50]);
    }

    #[test]
    fn released_slots_count_again() {
        let bs: Vec<Arc<_>> = backends(&[1, 1]);
        let g = bs[0].start_query();
        let p = LeastOutstanding::new();
        assert_eq!(p.pick(&Candidates::new(&bs, &[], Millis(0))), Some(1));
        drop(g);
        assert_eq!(bs[0].outstanding(), 0);
    }

    #[test]
    fn common() {
        common_checks(PolicyKind::LeastOutstanding);
        concurrent_checks(PolicyKind::LeastOutstanding);
    }
}
