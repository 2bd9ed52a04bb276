//! The rise/fall state machine of one backend: a plain value fed with probe
//! results and passive signals, returning transitions with their reasons.
//! No clock, no I/O: the scheduler in [`crate::monitor`] owns those.

use std::fmt;
use std::time::Duration;

use dnsha_core::{FailureKind, PassiveSignal};

/// Why a probe (or a live query) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureReason {
    /// No (valid) answer within the probe timeout.
    Timeout(Duration),
    /// ICMP port unreachable, TCP reset or connection refused.
    Refused,
    /// The backend answered SERVFAIL.
    ServFail,
    /// `must_resolve`: the backend answered with this other RCODE.
    Rcode(u16),
    /// The answer was malformed or did not match the query (ID, question).
    BadAnswer,
    /// `expect_address`: the answer lacks the expected address.
    MissingAddress,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// DoH: the HTTP status was not 200.
    HttpStatus(u16),
    /// `exec`: the command exited non-zero (`None`: killed by a signal).
    Exit(Option<i32>),
    /// The probe could not run (socket, spawn or another local error).
    Local,
    /// A TCP connection closed with the query in flight (live traffic).
    Closed,
    /// The probe could not run for want of local resources (descriptors,
    /// ports, buffers): says nothing of the backend, so it is counted but
    /// changes no state.
    NoResources,
}

impl FailureReason {
    /// Every metric label, in a fixed order.
    pub const LABELS: [&'static str; 12] = [
        "timeout",
        "refused",
        "servfail",
        "rcode",
        "bad_answer",
        "missing_address",
        "tls",
        "http_status",
        "exit_status",
        "local",
        "closed",
        "no_resources",
    ];

    /// A short lowercase name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// The position of [`FailureReason::as_str`] in [`FailureReason::LABELS`].
    pub fn index(self) -> usize {
        match self {
            Self::Timeout(_) => 0,
            Self::Refused => 1,
            Self::ServFail => 2,
            Self::Rcode(_) => 3,
            Self::BadAnswer => 4,
            Self::MissingAddress => 5,
            Self::Tls => 6,
            Self::HttpStatus(_) => 7,
            Self::Exit(_) => 8,
            Self::Local => 9,
            Self::Closed => 10,
            Self::NoResources => 11,
        }
    }

    /// The reason a live query failure counts as.
    pub fn from_failure(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Timeout => Self::Timeout(Duration::ZERO),
            FailureKind::Refused => Self::Refused,
            FailureKind::ServFail => Self::ServFail,
            FailureKind::Closed => Self::Closed,
        }
    }

    /// The plural noun for "N consecutive …".
    fn plural(self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeouts",
            Self::Refused => "refusals",
            Self::ServFail => "SERVFAIL answers",
            Self::Rcode(_) => "unexpected RCODEs",
            Self::BadAnswer => "bad answers",
            Self::MissingAddress => "answers without the expected address",
            Self::Tls => "TLS failures",
            Self::HttpStatus(_) => "HTTP errors",
            Self::Exit(_) => "failed commands",
            Self::Local => "local errors",
            Self::Closed => "closed connections",
            Self::NoResources => "probes without local resources",
        }
    }

    /// The detail shown after the count, if any: `(200 ms)`, `(last: NXDOMAIN)`.
    fn detail(self) -> Option<String> {
        match self {
            Self::Timeout(d) if !d.is_zero() => Some(format!("{} ms", d.as_millis())),
            Self::Rcode(r) => Some(rcode_name(r)),
            Self::HttpStatus(s) => Some(format!("HTTP {s}")),
            Self::Exit(Some(c)) => Some(format!("exit status {c}")),
            Self::Exit(None) => Some("killed by a signal".into()),
            _ => None,
        }
    }

    fn same_kind(self, other: Self) -> bool {
        self.index() == other.index()
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Timeout(_) => "timeout",
            Self::Refused => "refused",
            Self::ServFail => "SERVFAIL",
            Self::Rcode(_) => "RCODE",
            Self::BadAnswer => "bad answer",
            Self::MissingAddress => "expected address missing",
            Self::Tls => "TLS failure",
            Self::HttpStatus(_) => "HTTP error",
            Self::Exit(_) => "command failed",
            Self::Local => "local error",
            Self::Closed => "connection closed",
            Self::NoResources => "no local resources (descriptors, ports)",
        };
        match self.detail() {
            Some(d) => write!(f, "{name} ({d})"),
            None => f.write_str(name),
        }
    }
}

fn rcode_name(r: u16) -> String {
    match r {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        n => format!("RCODE {n}"),
    }
}

/// Up or down, as the health checker sees a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Takes traffic.
    Up,
    /// Taken out of rotation until `rise` good probes.
    Down,
}

impl Health {
    /// `"up"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// `count` consecutive probes failed (the last one refused, or `fall`
    /// of them); `same` when they all failed for
    /// the reason `last`.
    Failures {
        /// How many probes failed in a row.
        count: u32,
        /// The reason of the last one.
        last: FailureReason,
        /// Whether every probe of the run failed for that same reason.
        same: bool,
    },
    /// The first probe since the backend was added failed (a new backend is
    /// up until its first probe says otherwise).
    FirstProbe(FailureReason),
    /// `count` consecutive probes passed.
    Recovered {
        /// How many probes passed in a row (`rise`).
        count: u32,
    },
    /// Live traffic marked the backend down (the pool's `max_fails`).
    Traffic {
        /// The last failure, when known.
        kind: Option<FailureKind>,
        /// Consecutive bad live outcomes at that moment.
        run: u32,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Failures { count: 1, last, .. } => write!(f, "check failed: {last}"),
            Self::Failures {
                count,
                last,
                same: true,
            } => {
                write!(f, "{count} consecutive {}", last.plural())?;
                match last.detail() {
                    Some(d) => write!(f, " ({d})"),
                    None => Ok(()),
                }
            }
            Self::Failures {
                count,
                last,
                same: false,
            } => write!(f, "{count} consecutive failed checks (last: {last})"),
            Self::FirstProbe(r) => write!(f, "first check failed: {r}"),
            Self::Recovered { count: 1 } => f.write_str("check passed"),
            Self::Recovered { count } => write!(f, "{count} consecutive good checks"),
            Self::Traffic { kind, run } => {
                f.write_str("marked down by live traffic")?;
                match kind {
                    Some(k) if run > 1 => write!(
                        f,
                        ": {run} consecutive {}",
                        FailureReason::from_failure(k).plural()
                    ),
                    Some(k) => write!(f, ": {}", FailureReason::from_failure(k)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// A change of [`Health`], with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub to: Health,
    /// Why.
    pub reason: Reason,
}

/// What the state machine is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// An active probe passed.
    ProbeOk,
    /// An active probe failed.
    ProbeFailed(FailureReason),
    /// Live traffic failed or was answered SERVFAIL.
    Passive(PassiveSignal),
    /// The data path marked the backend down by traffic, and the signal
    /// itself was lost (found by looking at the backend's state).
    TrafficDown,
}

/// Rise/fall counters of one backend.
///
/// ```
/// use dnsha_health::state::{Health, HealthState, Input, FailureReason};
///
/// let mut s = HealthState::new(2, 3, 3);
/// assert!(s.observe(Input::ProbeOk).is_none());
/// let servfail = Input::ProbeFailed(FailureReason::ServFail);
/// assert!(s.observe(servfail).is_none());
/// assert!(s.observe(servfail).is_none());
/// let t = s.observe(servfail).unwrap();
/// assert_eq!(t.to, Health::Down);
/// assert_eq!(t.reason.to_string(), "3 consecutive SERVFAIL answers");
/// assert!(s.observe(Input::ProbeOk).is_none());
/// assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthState {
    rise: u32,
    fall: u32,
    passive_threshold: u32,
    health: Health,
    /// No probe has answered since the backend was added.
    provisional: bool,
    good: u32,
    bad: u32,
    last_failure: Option<FailureReason>,
    same: bool,
    suspect: bool,
}

impl HealthState {
    /// A new backend: up, provisionally (its first failed probe takes it
    /// down, as HAProxy does, so a backend dead at start is not kept for
    /// `fall` intervals). `rise` and `fall` of 0 count as 1; a
    /// `passive_threshold` of 0 disables suspicion.
    pub fn new(rise: u32, fall: u32, passive_threshold: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            passive_threshold,
            health: Health::Up,
            provisional: true,
            good: 0,
            bad: 0,
            last_failure: None,
            same: true,
            suspect: false,
        }
    }

    /// A backend already known to be down (for instance marked down by
    /// traffic before its checker started): `rise` good probes bring it up.
    pub fn down(rise: u32, fall: u32, passive_threshold: u32) -> Self {
        Self {
            health: Health::Down,
            provisional: false,
            ..Self::new(rise, fall, passive_threshold)
        }
    }

    /// Changes the thresholds, keeping the state and the current runs.
    pub fn reconfigure(&mut self, rise: u32, fall: u32, passive_threshold: u32) {
        self.rise = rise.max(1);
        self.fall = fall.max(1);
        self.passive_threshold = passive_threshold;
    }

    /// The current state.
    pub fn health(&self) -> Health {
        self.health
    }

    /// Whether the backend is up.
    pub fn is_up(&self) -> bool {
        self.health == Health::Up
    }

    /// Whether live traffic made the backend suspect: probe it now. Cleared
    /// by the next probe result.
    pub fn is_suspect(&self) -> bool {
        self.suspect
    }

    /// Consecutive good probes so far.
    pub fn good_run(&self) -> u32 {
        self.good
    }

    /// Consecutive failed probes so far.
    pub fn bad_run(&self) -> u32 {
        self.bad
    }

    /// The reason of the last failed probe of the current failure run.
    pub fn last_failure(&self) -> Option<FailureReason> {
        self.last_failure
    }

    /// Feeds one input; returns the transition it caused, if any.
    pub fn observe(&mut self, input: Input) -> Option<Transition> {
        match input {
            Input::ProbeOk => self.probe_ok(),
            Input::ProbeFailed(reason) => self.probe_failed(reason),
            Input::Passive(signal) => self.passive(signal),
            Input::TrafficDown => self.traffic_down(None, 0),
        }
    }

    fn probe_ok(&mut self) -> Option<Transition> {
        self.provisional = false;
        self.suspect = false;
        self.bad = 0;
        self.last_failure = None;
        self.same = true;
        self.good = self.good.saturating_add(1);
        if self.health == Health::Down && self.good >= self.rise {
            self.health = Health::Up;
            return Some(Transition {
                to: Health::Up,
                reason: Reason::Recovered { count: self.good },
            });
        }
        None
    }

    fn probe_failed(&mut self, reason: FailureReason) -> Option<Transition> {
        // The probe never reached the backend: no verdict either way.
        if reason == FailureReason::NoResources {
            return None;
        }
        let first = std::mem::replace(&mut self.provisional, false);
        self.suspect = false;
        self.good = 0;
        self.same = match self.last_failure {
            Some(prev) if self.bad > 0 => self.same && prev.same_kind(reason),
            _ => true,
        };
        self.bad = self.bad.saturating_add(1);
        self.last_failure = Some(reason);
        // A refusal (ICMP port unreachable, TCP reset) is certain: nobody
        // listens there, so it does not wait for `fall`.
        let certain = reason == FailureReason::Refused;
        if self.health == Health::Up && (first || certain || self.bad >= self.fall) {
            self.health = Health::Down;
            let reason = if first {
                Reason::FirstProbe(reason)
            } else {
                Reason::Failures {
                    count: self.bad,
                    last: reason,
                    same: self.same,
                }
            };
            return Some(Transition {
                to: Health::Down,
                reason,
            });
        }
        None
    }

    fn passive(&mut self, signal: PassiveSignal) -> Option<Transition> {
        if signal.marked_down {
            return self.traffic_down(Some(signal.kind), signal.run);
        }
        if self.health == Health::Up
            && self.passive_threshold > 0
            && signal.run >= self.passive_threshold
        {
            self.suspect = true;
        }
        None
    }

    fn traffic_down(&mut self, kind: Option<FailureKind>, run: u32) -> Option<Transition> {
        if self.health == Health::Down {
            return None;
        }
        self.health = Health::Down;
        self.provisional = false;
        self.good = 0;
        // Probe at once to learn more.
        self.suspect = true;
        Some(Transition {
            to: Health::Down,
            reason: Reason::Traffic { kind, run },
        })
    }
}

#[cfg(test)]
mod tests;
