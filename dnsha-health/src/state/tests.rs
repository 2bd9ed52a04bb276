//! Every transition of the state machine, flapping included.

use proptest::prelude::*;

use super::*;

const T200: FailureReason = FailureReason::Timeout(Duration::from_millis(200));

fn fail(r: FailureReason) -> Input {
    Input::ProbeFailed(r)
}

fn confirmed(rise: u32, fall: u32) -> HealthState {
    let mut s = HealthState::new(rise, fall, 3);
    assert_eq!(s.observe(Input::ProbeOk), None);
    s
}

fn signal(kind: FailureKind, run: u32, marked_down: bool) -> Input {
    Input::Passive(PassiveSignal {
        kind,
        run,
        marked_down,
    })
}

#[test]
fn probes_without_local_resources_give_no_verdict() {
    // A first probe that could not run does not take a new backend down.
    let mut s = HealthState::new(2, 3, 3);
    for _ in 0..10 {
        assert_eq!(s.observe(fail(FailureReason::NoResources)), None);
    }
    assert!(s.is_up());
    // Nor do they lengthen a run of failures, or break a run of successes.
    let mut s = confirmed(2, 3);
    s.observe(fail(T200));
    s.observe(fail(FailureReason::NoResources));
    s.observe(fail(T200));
    assert!(s.is_up());
    assert_eq!(s.observe(fail(T200)).unwrap().to, Health::Down);
    s.observe(Input::ProbeOk);
    s.observe(fail(FailureReason::NoResources));
    assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
}

#[test]
fn new_backend_is_up_until_its_first_probe_fails() {
    let mut s = HealthState::new(2, 3, 3);
    assert!(s.is_up());
    let t = s.observe(fail(FailureReason::Refused)).unwrap();
    assert_eq!(t.to, Health::Down);
    assert_eq!(t.reason, Reason::FirstProbe(FailureReason::Refused));
    assert_eq!(t.reason.to_string(), "first check failed: refused");
}

#[test]
fn first_good_probe_confirms_and_then_fall_applies() {
    let mut s = confirmed(2, 3);
    assert_eq!(s.observe(fail(T200)), None);
    assert_eq!(s.observe(fail(T200)), None);
    assert_eq!(s.bad_run(), 2);
    let t = s.observe(fail(T200)).unwrap();
    assert_eq!(t.to, Health::Down);
    assert_eq!(
        t.reason.to_string(),
        "3 consecutive timeouts (200 ms)",
        "the wording of the issue"
    );
    // Further failures while down change nothing.
    assert_eq!(s.observe(fail(T200)), None);
    assert!(!s.is_up());
}

#[test]
fn a_good_probe_resets_the_failure_run() {
    let mut s = confirmed(2, 3);
    for _ in 0..10 {
        assert_eq!(s.observe(fail(FailureReason::ServFail)), None);
        assert_eq!(s.observe(fail(FailureReason::ServFail)), None);
        assert_eq!(s.observe(Input::ProbeOk), None);
    }
    assert!(s.is_up());
    assert_eq!(s.last_failure(), None);
}

#[test]
fn rise_good_probes_bring_it_back_and_a_failure_resets_the_run() {
    let mut s = HealthState::new(3, 1, 3);
    s.observe(fail(FailureReason::Refused));
    assert_eq!(s.observe(Input::ProbeOk), None);
    assert_eq!(s.observe(Input::ProbeOk), None);
    assert_eq!(s.observe(fail(FailureReason::BadAnswer)), None);
    assert_eq!(s.good_run(), 0);
    assert_eq!(s.observe(Input::ProbeOk), None);
    assert_eq!(s.observe(Input::ProbeOk), None);
    let t = s.observe(Input::ProbeOk).unwrap();
    assert_eq!(t.to, Health::Up);
    assert_eq!(t.reason, Reason::Recovered { count: 3 });
    assert_eq!(t.reason.to_string(), "3 consecutive good checks");
    // fall = 1: one failure is enough once confirmed.
    let t = s.observe(fail(FailureReason::Tls)).unwrap();
    assert_eq!(t.reason.to_string(), "check failed: TLS failure");
}

#[test]
fn a_refusal_is_certain_and_does_not_wait_for_fall() {
    let mut s = confirmed(2, 3);
    let t = s.observe(fail(FailureReason::Refused)).unwrap();
    assert_eq!(t.reason.to_string(), "check failed: refused");
    let mut s = confirmed(2, 3);
    s.observe(fail(T200));
    let t = s.observe(fail(FailureReason::Refused)).unwrap();
    assert_eq!(
        t.reason.to_string(),
        "2 consecutive failed checks (last: refused)"
    );
}

#[test]
fn mixed_failures_are_named_by_the_last() {
    let mut s = confirmed(2, 3);
    s.observe(fail(T200));
    s.observe(fail(FailureReason::BadAnswer));
    let t = s.observe(fail(FailureReason::Rcode(3))).unwrap();
    assert_eq!(
        t.reason,
        Reason::Failures {
            count: 3,
            last: FailureReason::Rcode(3),
            same: false
        }
    );
    assert_eq!(
        t.reason.to_string(),
        "3 consecutive failed checks (last: RCODE (NXDOMAIN))"
    );
    let mut s = confirmed(2, 2);
    s.observe(fail(FailureReason::HttpStatus(503)));
    let t = s.observe(fail(FailureReason::HttpStatus(502))).unwrap();
    assert_eq!(t.reason.to_string(), "2 consecutive HTTP errors (HTTP 502)");
}

#[test]
fn traffic_down_needs_rise_good_probes() {
    let mut s = confirmed(2, 3);
    let t = s.observe(signal(FailureKind::Timeout, 3, true)).unwrap();
    assert_eq!(t.to, Health::Down);
    assert_eq!(
        t.reason.to_string(),
        "marked down by live traffic: 3 consecutive timeouts"
    );
    assert!(s.is_suspect(), "probe at once after a traffic mark");
    assert_eq!(s.observe(Input::ProbeOk), None);
    assert!(!s.is_suspect());
    assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
    // Lost signal, found from the backend's state.
    let t = s.observe(Input::TrafficDown).unwrap();
    assert_eq!(t.reason.to_string(), "marked down by live traffic");
    // Already down: no second transition.
    assert_eq!(s.observe(signal(FailureKind::Refused, 5, true)), None);
    assert_eq!(s.observe(Input::TrafficDown), None);
}

#[test]
fn traffic_down_of_a_new_backend_is_final_until_rise() {
    let mut s = HealthState::new(2, 3, 3);
    let t = s.observe(signal(FailureKind::Refused, 1, true)).unwrap();
    assert_eq!(t.reason.to_string(), "marked down by live traffic: refused");
    assert_eq!(s.observe(Input::ProbeOk), None);
    assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
}

#[test]
fn passive_runs_make_it_suspect_at_the_threshold() {
    let mut s = confirmed(2, 3);
    assert_eq!(s.observe(signal(FailureKind::ServFail, 1, false)), None);
    assert_eq!(s.observe(signal(FailureKind::ServFail, 2, false)), None);
    assert!(!s.is_suspect());
    assert_eq!(s.observe(signal(FailureKind::ServFail, 3, false)), None);
    assert!(s.is_suspect());
    assert!(s.is_up(), "suspicion alone takes nothing down");
    // The probe decides; a failed one counts towards fall like any other.
    assert_eq!(s.observe(fail(FailureReason::ServFail)), None);
    assert!(!s.is_suspect());
    // Threshold 0 disables suspicion.
    let mut s = HealthState::new(2, 3, 0);
    s.observe(signal(FailureKind::Timeout, 100, false));
    assert!(!s.is_suspect());
    // A down backend is not made suspect (it is probed anyway).
    let mut s = HealthState::new(2, 3, 1);
    s.observe(fail(FailureReason::Refused));
    s.observe(signal(FailureKind::Timeout, 5, false));
    assert!(!s.is_suspect());
}

#[test]
fn reconfigure_keeps_state_and_runs() {
    let mut s = confirmed(2, 3);
    s.observe(fail(FailureReason::ServFail));
    s.observe(fail(FailureReason::ServFail));
    s.reconfigure(5, 2, 0);
    // The run of 2 meets the new fall of 2 at the next failure.
    let t = s.observe(fail(FailureReason::ServFail)).unwrap();
    assert_eq!(t.reason.to_string(), "3 consecutive SERVFAIL answers");
    for _ in 0..4 {
        assert_eq!(s.observe(Input::ProbeOk), None);
    }
    assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
}

#[test]
fn known_down_needs_rise() {
    let mut s = HealthState::down(2, 3, 3);
    assert!(!s.is_up());
    assert_eq!(s.observe(fail(FailureReason::Refused)), None);
    assert_eq!(s.observe(Input::ProbeOk), None);
    assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
}

#[test]
fn zero_thresholds_count_as_one() {
    let mut s = HealthState::new(0, 0, 0);
    s.observe(Input::ProbeOk);
    assert_eq!(
        s.observe(fail(FailureReason::Local)).unwrap().to,
        Health::Down
    );
    assert_eq!(s.observe(Input::ProbeOk).unwrap().to, Health::Up);
}

#[test]
fn reasons_read_well() {
    let cases = [
        (
            FailureReason::Exit(Some(2)),
            "check failed: command failed (exit status 2)",
        ),
        (
            FailureReason::Exit(None),
            "check failed: command failed (killed by a signal)",
        ),
        (
            FailureReason::MissingAddress,
            "check failed: expected address missing",
        ),
        (FailureReason::BadAnswer, "check failed: bad answer"),
    ];
    for (r, text) in cases {
        let reason = Reason::Failures {
            count: 1,
            last: r,
            same: true,
        };
        assert_eq!(reason.to_string(), text);
    }
    for (i, label) in FailureReason::LABELS.iter().enumerate() {
        assert!(!label.is_empty(), "{i}");
    }
    assert_eq!(
        FailureReason::from_failure(FailureKind::Closed).as_str(),
        "closed"
    );
    assert_eq!(Reason::Recovered { count: 1 }.to_string(), "check passed");
}

/// Flapping every probe: with rise = fall = 1 every probe flips, with
/// larger thresholds nothing does.
#[test]
fn flapping_is_bounded_by_rise_and_fall() {
    let pattern = |n: usize| {
        (0..n).map(|i| {
            if i % 2 == 0 {
                Input::ProbeOk
            } else {
                fail(T200)
            }
        })
    };
    let mut s = HealthState::new(1, 1, 3);
    let flips = pattern(100).filter_map(|i| s.observe(i)).count();
    assert_eq!(flips, 99);
    let mut s = HealthState::new(2, 2, 3);
    assert_eq!(pattern(100).filter_map(|i| s.observe(i)).count(), 0);
    // Three up, three down (a 300 ms flap probed every 100 ms): fall = 3
    // follows it, fall = 4 does not.
    let flap = |n: usize| {
        (0..n).map(|i| {
            if (i / 3) % 2 == 0 {
                Input::ProbeOk
            } else {
                fail(T200)
            }
        })
    };
    let mut s = HealthState::new(2, 3, 3);
    let t: Vec<_> = flap(60).filter_map(|i| s.observe(i)).collect();
    assert_eq!(t.len(), 19);
    let mut s = HealthState::new(4, 4, 3);
    assert_eq!(flap(60).filter_map(|i| s.observe(i)).count(), 0);
}

proptest! {
    /// However the probes go, transitions alternate, each down comes
    /// after `fall` failures in a row (the first probe excepted) and each
    /// up after `rise` successes in a row; so n probes cause at most
    /// 2n / (rise + fall) + 2 transitions.
    #[test]
    fn transitions_are_bounded(
        rise in 1u32..6,
        fall in 1u32..6,
        probes in proptest::collection::vec(any::<bool>(), 0..300),
    ) {
        let mut s = HealthState::new(rise, fall, 3);
        let mut transitions = Vec::new();
        let (mut ok_run, mut bad_run) = (0u32, 0u32);
        for (i, ok) in probes.iter().enumerate() {
            if *ok { ok_run += 1; bad_run = 0 } else { bad_run += 1; ok_run = 0 }
            let input = if *ok { Input::ProbeOk } else { fail(FailureReason::BadAnswer) };
            if let Some(t) = s.observe(input) {
                match t.to {
                    Health::Up => prop_assert!(ok_run >= rise),
                    Health::Down => prop_assert!(bad_run >= fall || i == 0),
                }
                if let Some(prev) = transitions.last() {
                    prop_assert_ne!(*prev, t.to);
                }
                transitions.push(t.to);
            }
        }
        let bound = 2 * probes.len() / (rise + fall) as usize + 2;
        prop_assert!(transitions.len() <= bound, "{} > {}", transitions.len(), bound);
    }
}
