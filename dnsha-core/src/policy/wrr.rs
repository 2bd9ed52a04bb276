//! Smooth weighted round robin (the nginx algorithm), precomputed per snapshot.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{Candidates, Policy};
use crate::backend::Backend;

/// Longest precomputed sequence; larger weight sums are scaled down.
const MAX_SEQUENCE: u64 = 1 << 16;

/// Smooth weighted round robin: weights 3:1 give `a a b a`-style interleaving,
/// exactly 3:1 in every window of 4 picks.
///
/// The interleaved order is computed once per snapshot (nginx's smooth
/// algorithm), so a pick is one atomic increment. When some backends are not
/// eligible the pick falls back to a weighted rotation over the eligible ones,
/// which keeps their ratio exact over each cycle.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    sequence: Vec<usize>,
    weights: Vec<u64>,
    next: AtomicUsize,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WeightedRoundRobin {
    /// Builds the sequence for `backends` (their weights, in order).
    pub fn new(backends: &[Arc<Backend>]) -> Self {
        Self::from_weights(backends.iter().map(|b| u64::from(b.weight())).collect())
    }

    fn from_weights(mut weights: Vec<u64>) -> Self {
        for w in &mut weights {
            *w = (*w).max(1);
        }
        let g = weights.iter().copied().fold(0, gcd).max(1);
        for w in &mut weights {
            *w /= g;
        }
        let sum: u64 = weights.iter().sum();
        if sum > MAX_SEQUENCE {
            for w in &mut weights {
                *w = (*w * MAX_SEQUENCE / sum).max(1);
            }
        }
        let total: i64 = weights.iter().map(|&w| w as i64).sum();
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
        for _ in 0..total {
            for (c, &w) in current.iter_mut().zip(&weights) {
                *c += w as i64;
            }
            let Some((best, _)) = current
                .iter()
                .enumerate()
                .max_by(|(i, a), (j, b)| a.cmp(b).then(j.cmp(i)))
            else {
                break;
            };
            current[best] -= total;
            sequence.push(best);
        }
        Self {
            sequence,
            weights,
            next: AtomicUsize::new(0),
        }
    }
}

impl Policy for WeightedRoundRobin {
    fn name(&self) -> &str {
        "wrr"
    }

    fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
        if self.sequence.is_empty() || c.len() != self.weights.len() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let slot = self.sequence[n % self.sequence.len()];
        if c.is_eligible(slot) {
            return Some(slot);
        }
        // Some backend is not eligible: weighted rotation over the others.
        let total: u64 = c.eligible().map(|i| self.weights[i]).sum();
        if total == 0 {
            return None;
        }
        let mut k = (n as u64) % total;
        for i in c.eligible() {
            if k < self.weights[i] {
                return Some(i);
            }
            k -= self.weights[i];
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::PolicyKind;
    use super::*;
    use crate::clock::Millis;

    fn picks(p: &WeightedRoundRobin, bs: &[Arc<Backend>], n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| p.pick(&Candidates::new(bs, &[], Millis(0))).unwrap())
            .collect()
    }

    #[test]
    fn three_to_one_in_every_window_of_four() {
        let bs = backends(&[3, 1]);
        let p = WeightedRoundRobin::new(&bs);
        let seq = picks(&p, &bs, 40);
        for w in seq.chunks(4) {
            assert_eq!(w.iter().filter(|&&i| i == 0).count(), 3, "{seq:?}");
        }
        // interleaved: the weight-1 backend is not last-in-a-block
        assert_eq!(&seq[..4], &[0, 0, 1, 0]);
    }

    #[test]
    fn smooth_five_one_one() {
        let bs = backends(&[5, 1, 1]);
        let p = WeightedRoundRobin::new(&bs);
        assert_eq!(picks(&p, &bs, 7), [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn ratios_hold_with_a_backend_down() {
        let bs = backends(&[3, 1, 2]);
        down(&bs[1]);
        let p = WeightedRoundRobin::new(&bs);
        let h = histogram(&p, &bs, 6000);
        assert_eq!(h[1], 0);
        assert_eq!(h[0] * 2, h[2] * 3, "{h:?}");
    }

    #[test]
    fn huge_weights_are_scaled() {
        let p = WeightedRoundRobin::from_weights(vec![1_000_000, 3_000_000, 7]);
        assert!(p.sequence.len() as u64 <= MAX_SEQUENCE + 3);
        assert!(p.weights.iter().all(|&w| w >= 1));
    }

    #[test]
    fn common() {
        common_checks(PolicyKind::WeightedRoundRobin);
        concurrent_checks(PolicyKind::WeightedRoundRobin);
    }

    proptest::proptest! {
        #[test]
        fn every_cycle_is_exact(weights in proptest::collection::vec(1u32..20, 1..6)) {
            let bs = backends(&weights);
            let p = WeightedRoundRobin::new(&bs);
            let g = weights.iter().map(|&w| u64::from(w)).fold(0, gcd);
            let cycle: u64 = weights.iter().map(|&w| u64::from(w) / g).sum();
            let seq = picks(&p, &bs, cycle as usize * 3);
            for chunk in seq.chunks(cycle as usize) {
                for (i, &w) in weights.iter().enumerate() {
                    let got = chunk.iter().filter(|&&x| x == i).count() as u64;
                    proptest::prop_assert_eq!(got, u64::from(w) / g);
                }
            }
        }
    }
}
