//! When a node announces its anycast addresses, sans-IO: the daemon looks
//! at its pools every `interval_ms` and feeds the verdict to an
//! [`Announcer`], which says when to announce (after `rise` healthy looks
//! in a row, and not within `hold_down_ms` of a failure) and when to
//! withdraw (at the first unhealthy look, or for a stop, for good).
//!
//! ```
//! use dnsha_core::anycast::{Announcer, State};
//! use dnsha_core::Millis;
//!
//! let mut a = Announcer::new(2, 5_000);
//! assert_eq!(a.observe(Millis(0), Ok(())), None);
//! let t = a.observe(Millis(500), Ok(())).unwrap();
//! assert_eq!(t.to, State::Announced);
//! // A pool fails: withdrawn at once, and held down for 5 s.
//! let t = a.observe(Millis(1_000), Err("pool p: no backend up".into())).unwrap();
//! assert_eq!((t.to, t.reason.as_str()), (State::Withdrawn, "pool p: no backend up"));
//! assert_eq!(a.observe(Millis(1_500), Ok(())), None);
//! assert_eq!(a.observe(Millis(2_000), Ok(())), None);
//! assert_eq!(a.observe(Millis(6_000), Ok(())).unwrap().to, State::Announced);
//! ```

use crate::Millis;

/// Whether the addresses are announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not on the interface: the routers send nothing here.
    Withdrawn,
    /// On the interface, exported by BIRD.
    Announced,
}

impl State {
    /// `ANNOUNCED` or `WITHDRAWN`, as `notify` gets it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Withdrawn => "WITHDRAWN",
            Self::Announced => "ANNOUNCED",
        }
    }
}

/// A change the daemon carries out: the addresses added or removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: State,
    /// Why, for the log, `/status` and `notify`.
    pub reason: String,
}

/// The announce/withdraw decisions of one `[[anycast]]` section.
#[derive(Debug, Clone)]
pub struct Announcer {
    rise: u32,
    hold_down_ms: u64,
    state: State,
    /// Healthy looks in a row while withdrawn.
    good: u32,
    /// No announce before this (after a failure).
    held_until: Option<Millis>,
    stopped: bool,
}

impl Announcer {
    /// Withdrawn, announcing after `rise` healthy looks (at least 1), and
    /// not within `hold_down_ms` of a failure.
    pub fn new(rise: u32, hold_down_ms: u64) -> Self {
        Self {
            rise: rise.max(1),
            hold_down_ms,
            state: State::Withdrawn,
            good: 0,
            held_until: None,
            stopped: false,
        }
    }

    /// Announced already (a restart found the addresses in place): the
    /// first failing look withdraws.
    pub fn announced(rise: u32, hold_down_ms: u64) -> Self {
        Self {
            state: State::Announced,
            ..Self::new(rise, hold_down_ms)
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// Until when a failure holds the announce back, if it does at `now`.
    pub fn held_until(&self, now: Millis) -> Option<Millis> {
        self.held_until.filter(|&t| t > now)
    }

    /// One look at `now`: `Ok` when every tracked pool can answer, else
    /// why not. The transition to carry out, if any.
    pub fn observe(&mut self, now: Millis, verdict: Result<(), String>) -> Option<Transition> {
        if self.stopped {
            return None;
        }
        match (self.state, verdict) {
            (State::Announced, Ok(())) => None,
            (State::Announced, Err(why)) => {
                self.good = 0;
                self.held_until = Some(now.plus(self.hold_down_ms));
                self.state = State::Withdrawn;
                Some(Transition {
                    to: State::Withdrawn,
                    reason: why,
                })
            }
            (State::Withdrawn, Err(_)) => {
                self.good = 0;
                None
            }
            (State::Withdrawn, Ok(())) => {
                self.good = self.good.saturating_add(1);
                if self.good < self.rise || self.held_until(now).is_some() {
                    return None;
                }
                self.state = State::Announced;
                let held = self.held_until.take().is_some();
                Some(Transition {
                    to: State::Announced,
                    reason: format!(
                        "{} healthy check(s) in a row{}",
                        self.good,
                        if held { ", hold-down over" } else { "" }
                    ),
                })
            }
        }
    }

    /// The daemon stops: withdrawn for good (nothing announces again).
    pub fn stop(&mut self) -> Option<Transition> {
        self.stopped = true;
        self.good = 0;
        if self.state == State::Withdrawn {
            return None;
        }
        self.state = State::Withdrawn;
        Some(Transition {
            to: State::Withdrawn,
            reason: "dnsha stopping".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<(), String> {
        Ok(())
    }

    fn bad() -> Result<(), String> {
        Err("pool p: no backend up".into())
    }

    #[test]
    fn announces_after_rise_healthy_looks_in_a_row_only() {
        let mut a = Announcer::new(3, 0);
        assert_eq!(a.observe(Millis(0), ok()), None);
        assert_eq!(a.observe(Millis(1), ok()), None);
        // A bad look starts the count again.
        assert_eq!(a.observe(Millis(2), bad()), None);
        assert_eq!(a.observe(Millis(3), ok()), None);
        assert_eq!(a.observe(Millis(4), ok()), None);
        let t = a.observe(Millis(5), ok()).unwrap();
        assert_eq!(t.to, State::Announced);
        assert_eq!(t.reason, "3 healthy check(s) in a row");
        assert_eq!(a.observe(Millis(6), ok()), None);
        assert_eq!(a.state(), State::Announced);
    }

    #[test]
    fn a_failure_withdraws_at_once_and_a_flapping_pool_is_held_down() {
        let mut a = Announcer::new(1, 10_000);
        assert_eq!(a.observe(Millis(0), ok()).unwrap().to, State::Announced);
        let t = a.observe(Millis(100), bad()).unwrap();
        assert_eq!(t.to, State::Withdrawn);
        // Healthy again and again: held until 10 100.
        for at in (200..10_100).step_by(500) {
            assert_eq!(a.observe(Millis(at), ok()), None, "at {at}");
        }
        assert_eq!(a.held_until(Millis(10_000)), Some(Millis(10_100)));
        // Failing again during the hold-down restarts nothing: the hold
        // counts from the withdraw.
        let t = a.observe(Millis(10_100), ok()).unwrap();
        assert_eq!(t.to, State::Announced);
        assert!(t.reason.ends_with("hold-down over"), "{}", t.reason);
        assert_eq!(a.held_until(Millis(10_100)), None);
    }

    #[test]
    fn a_stop_withdraws_for_good() {
        let mut a = Announcer::new(1, 0);
        assert_eq!(a.stop(), None);
        let mut a = Announcer::new(1, 0);
        a.observe(Millis(0), ok());
        let t = a.stop().unwrap();
        assert_eq!(
            (t.to, t.reason.as_str()),
            (State::Withdrawn, "dnsha stopping")
        );
        assert_eq!(a.observe(Millis(1), ok()), None);
        assert_eq!(a.stop(), None);
        assert_eq!(a.state(), State::Withdrawn);
    }
}
