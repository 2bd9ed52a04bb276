//! Round robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Candidates, Policy};

/// Round robin over the eligible backends: with `k` eligible backends, every
/// window of `k` consecutive picks (from one thread) visits each once.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A new round robin starting at the first backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Policy for RoundRobin {
    fn name(&self) -> &str {
        "rr"
    }

    fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
        let eligible = c.eligible().count();
        if eligible == 0 {
            return None;
        }
        let k = self.next.fetch_add(1, Ordering::Relaxed) % eligible;
        c.eligible().nth(k)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::PolicyKind;
    use super::*;
    use crate::clock::Millis;

    #[test]
    fn alternates_evenly() {
        let bs = backends(&[1, 5, 1]);
        let p = RoundRobin::new();
        let seq: Vec<_> = (0..6)
            .map(|_| p.pick(&Candidates::new(&bs, &[], Millis(0))).unwrap())
            .collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn fair_among_remaining_when_one_is_down() {
        let bs = backends(&[1, 1, 1]);
        down(&bs[1]);
        let h = histogram(&RoundRobin::new(), &bs, 1000);
        assert_eq!(h, [500, 0, 500]);
    }

    #[test]
    fn common() {
        common_checks(PolicyKind::RoundRobin);
        concurrent_checks(PolicyKind::RoundRobin);
    }
}
