//! A monotonic millisecond clock shared by the data path and the policies.
//!
//! Time is passed into the sans-IO parts as a [`Millis`] value, so tests use
//! any value they like; [`Millis::now`] reads the process clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Milliseconds since an arbitrary, per-process epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Millis {
    /// The current time of the process clock.
    pub fn now() -> Self {
        let epoch = *EPOCH.get_or_init(Instant::now);
        Self(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The process-clock [`Instant`] of this value.
    pub fn to_instant(self) -> Instant {
        let epoch = *EPOCH.get_or_init(Instant::now);
        epoch + Duration::from_millis(self.0)
    }

    /// This instant plus `ms` milliseconds (saturating).
    pub fn plus(self, ms: u64) -> Self {
        Self(self.0.saturating_add(ms))
    }

    /// Time elapsed from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
