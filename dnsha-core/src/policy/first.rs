//! First available, for primary/backup setups.

use super::{Candidates, Policy};

/// The first eligible backend in configured order: the others only receive
/// queries while the ones before them are down.
#[derive(Debug, Default, Clone, Copy)]
pub struct FirstAvailable;

impl Policy for FirstAvailable {
    fn name(&self) -> &str {
        "first"
    }

    fn pick(&self, c: &Candidates<'_>) -> Option<usize> {
        c.eligible().next()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::super::PolicyKind;
    use super::*;
    use crate::backend::BackendState;

    #[test]
    fn primary_then_backup() {
        let bs = backends(&[1, 1, 1]);
        assert_eq!(histogram(&FirstAvailable, &bs, 100), [100, 0, 0]);
        down(&bs[0]);
        assert_eq!(histogram(&FirstAvailable, &bs, 100), [0, 100, 0]);
        bs[0].set_state(BackendState::Up);
        assert_eq!(histogram(&FirstAvailable, &bs, 100), [100, 0, 0]);
    }

    #[test]
    fn common() {
        common_checks(PolicyKind::FirstAvailable);
        concurrent_checks(PolicyKind::FirstAvailable);
    }
}
