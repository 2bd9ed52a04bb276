//! Two (and three) routers in simulated time: election, failover,
//! priority-0 takeover, preemption, nopreempt, split-brain healing.

mod sim;

use std::time::Duration;

use dnsha_vrrp::router::skew_time;
use dnsha_vrrp::{Command, Reason, RouterConfig, State, TrackerSpec};
use sim::{config, Net};

const A: usize = 0;
const B: usize = 1;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn mdi(priority: u8) -> Duration {
    Duration::from_secs(3) + skew_time(priority)
}

/// A at 100 and B at 200 started together: B wins after its own
/// Master_Down_Interval and A never becomes master.
#[test]
fn election_higher_priority_wins() {
    let mut net = Net::new(vec![config(1, 100), config(2, 200)]);
    net.start(A);
    net.start(B);
    let t = net.run_until(secs(10.0), |n| n.masters() == [B]).unwrap();
    assert_eq!(t, mdi(200));
    net.run_for(secs(30.0));
    assert_eq!(net.masters(), [B]);
    assert_eq!(net.holders(), [B]);
    assert!(net.nodes[A]
        .transitions
        .iter()
        .all(|(_, _, to, _)| *to != State::Master));
    assert_eq!(net.dual_hold, Duration::ZERO);
}

/// Equal priorities started at the same instant: both time out together,
/// and the higher address keeps mastership one latency later.
#[test]
fn election_equal_priority_higher_address_wins() {
    let mut net = Net::new(vec![config(1, 100), config(2, 100)]);
    net.start(A);
    net.start(B);
    net.run_for(mdi(100));
    assert_eq!(net.masters(), [A, B]);
    net.run_for(secs(0.01));
    assert_eq!(net.masters(), [B]);
    assert_eq!(net.holders(), [B]);
    assert!(net.dual_hold <= net.latency);
    net.run_for(secs(20.0));
    assert_eq!(net.masters(), [B]);
}

/// Master killed (no priority 0): the backup takes over within
/// Master_Down_Interval of the kill, and not before MDI minus one advert
/// interval (its last advert).
#[test]
fn failover_within_master_down_interval() {
    let mut net = Net::new(vec![config(1, 100), config(2, 200)]);
    net.start(A);
    net.start(B);
    net.run_for(secs(10.5));
    assert_eq!(net.masters(), [B]);
    net.kill(B);
    let t = net.run_until(secs(10.0), |n| n.masters() == [A]).unwrap();
    assert!(t <= mdi(100), "{t:?}");
    assert!(t >= mdi(100) - Duration::from_secs(1), "{t:?}");
    assert_eq!(net.holders(), [A]);
    // The new master announces itself with gratuitous ARP.
    assert!(!net.nodes[A].garps.is_empty());
}

/// Master shut down gracefully: priority 0, the backup takes over after
/// Skew_Time (plus one link latency).
#[test]
fn priority_zero_takeover_within_skew_time() {
    let mut net = Net::new(vec![config(1, 100), config(2, 200)]);
    net.start(A);
    net.start(B);
    net.run_for(secs(10.3));
    net.command(B, Command::Shutdown);
    assert_eq!(net.holders(), Vec::<usize>::new());
    let t = net.run_until(secs(5.0), |n| n.masters() == [A]).unwrap();
    assert_eq!(t, skew_time(100) + net.latency);
    let (_, _, _, reason) = net.nodes[A].transitions.last().unwrap().clone();
    assert_eq!(
        reason,
        Reason::MasterDown {
            priority_zero: true
        }
    );
}

/// A higher-priority router joining later preempts the master after its
/// own Master_Down_Interval; the VIP moves without overlap.
#[test]
fn preemption() {
    let mut net = Net::new(vec![config(1, 100), config(2, 200)]);
    net.start(A);
    net.run_for(secs(10.0));
    assert_eq!(net.masters(), [A]);
    net.start(B);
    let t = net.run_until(secs(10.0), |n| n.masters() == [B]).unwrap();
    // B ignores A's lower-priority adverts and times out; A steps down when
    // B's first advert arrives.
    assert!(t <= mdi(200) + net.latency, "{t:?}");
    assert_eq!(net.holders(), [B]);
    assert!(net.dual_hold <= net.latency, "{:?}", net.dual_hold);
    net.run_for(secs(20.0));
    assert_eq!(net.masters(), [B]);
}

/// nopreempt: the higher-priority router stays backup while the lower one
/// is alive, and takes over when it dies.
#[test]
fn nopreempt_keeps_current_master() {
    let b = RouterConfig {
        preempt: false,
        ..config(2, 200)
    };
    let mut net = Net::new(vec![config(1, 100), b]);
    net.start(A);
    net.run_for(secs(10.0));
    net.start(B);
    net.run_for(secs(60.0));
    assert_eq!(net.masters(), [A]);
    assert_eq!(net.state(B), State::Backup);
    net.kill(A);
    let t = net.run_until(secs(10.0), |n| n.masters() == [B]).unwrap();
    assert!(t <= mdi(200));
}

/// preempt_delay: the higher-priority router waits the delay before it
/// preempts.
#[test]
fn preempt_delay_postpones_preemption() {
    let b = RouterConfig {
        preempt_delay: Duration::from_secs(15),
        ..config(2, 200)
    };
    let mut net = Net::new(vec![config(1, 100), b]);
    net.start(A);
    net.run_for(secs(10.0));
    net.start(B);
    let t = net.run_until(secs(30.0), |n| n.masters() == [B]).unwrap();
    assert!(t >= secs(15.0) && t <= secs(15.0) + mdi(200), "{t:?}");
}

/// Partition: both become master; heal: exactly one master within one
/// advert interval, the higher priority one (the loser drops the VIP).
/// Healed just after the loser advertised, so that its advert is the first
/// to cross: the winner answers it with gratuitous ARPs at once and again
/// after `garp_lower_prio_delay` (5 s), as keepalived does (case 25).
#[test]
fn split_brain_heals_to_one_master() {
    for (pa, pb, winner) in [(100, 200, B), (200, 100, A), (150, 150, B)] {
        let mut net = Net::new(vec![config(1, pa), config(2, pb)]);
        net.start(A);
        net.start(B);
        net.run_for(secs(10.0));
        net.partitioned = true;
        net.run_for(secs(10.0));
        assert_eq!(net.masters(), [A, B], "both master while partitioned");
        let loser = 1 - winner;
        let sent = net.nodes[loser].adverts_sent;
        net.run_until(secs(2.0), |n| n.nodes[loser].adverts_sent > sent)
            .unwrap();
        net.partitioned = false;
        let healed = net.elapsed();
        let garps_before = net.nodes[winner].garps.len();
        net.dual_hold = Duration::ZERO;
        let t = net
            .run_until(secs(5.0), |n| n.masters() == [winner])
            .unwrap();
        assert!(t <= Duration::from_secs(1) + net.latency, "{t:?}");
        assert_eq!(net.holders(), [winner]);
        assert!(net.dual_hold <= Duration::from_secs(1) + net.latency);
        net.run_for(secs(30.0));
        assert_eq!(net.masters(), [winner]);
        let resent: Vec<Duration> = net.nodes[winner].garps[garps_before..]
            .iter()
            .map(|t| *t - healed)
            .collect();
        assert_eq!(resent, [net.latency, net.latency + secs(5.0)]);
    }
}

/// A failing tracker lowers the master's priority below the backup's: the
/// backup takes over; when it recovers, the original master preempts back.
#[test]
fn tracker_weight_moves_the_vip_and_back() {
    let b = RouterConfig {
        trackers: vec![TrackerSpec {
            name: "pool:coredns".into(),
            weight: -150,
        }],
        ..config(2, 200)
    };
    let mut net = Net::new(vec![config(1, 100), b]);
    net.start(A);
    net.start(B);
    net.run_for(secs(10.0));
    assert_eq!(net.masters(), [B]);
    let down = Command::TrackerChanged {
        name: "pool:coredns".into(),
        up: false,
    };
    net.command(B, down);
    assert_eq!(net.nodes[B].router.effective_priority(), 50);
    let t = net.run_until(secs(10.0), |n| n.masters() == [A]).unwrap();
    assert!(t <= mdi(100) + net.latency, "{t:?}");
    net.command(
        B,
        Command::TrackerChanged {
            name: "pool:coredns".into(),
            up: true,
        },
    );
    // B's Master_Down_Timer was last armed while its priority was 50.
    let t = net.run_until(secs(10.0), |n| n.masters() == [B]).unwrap();
    assert!(t <= mdi(50) + net.latency, "{t:?}");
    assert_eq!(net.holders(), [B]);
}

/// A weight-0 tracker on the master: FAULT sends priority 0, so the backup
/// takes over after Skew_Time.
#[test]
fn fault_hands_over_after_skew_time() {
    let b = RouterConfig {
        trackers: vec![TrackerSpec {
            name: "interface:eth0".into(),
            weight: 0,
        }],
        ..config(2, 200)
    };
    let mut net = Net::new(vec![config(1, 100), b]);
    net.start(A);
    net.start(B);
    net.run_for(secs(10.0));
    net.command(
        B,
        Command::TrackerChanged {
            name: "interface:eth0".into(),
            up: false,
        },
    );
    assert_eq!(net.state(B), State::Fault);
    let t = net.run_until(secs(5.0), |n| n.masters() == [A]).unwrap();
    assert_eq!(t, skew_time(100) + net.latency);
}

/// Three routers: the priorities order the failovers.
#[test]
fn three_routers_fail_over_in_priority_order() {
    let mut net = Net::new(vec![config(1, 100), config(2, 200), config(3, 150)]);
    for i in 0..3 {
        net.start(i);
    }
    net.run_for(secs(10.0));
    assert_eq!(net.masters(), [1]);
    net.kill(1);
    net.run_until(secs(10.0), |n| !n.masters().is_empty())
        .unwrap();
    assert_eq!(net.masters(), [2]);
    net.kill(2);
    net.run_until(secs(10.0), |n| !n.masters().is_empty())
        .unwrap();
    assert_eq!(net.masters(), [0]);
    assert_eq!(net.holders(), [0]);
}

/// A VRRPv3 router at `advert_int_cs` centiseconds (no authentication).
fn v3(last_octet: u8, priority: u8, advert_int_cs: u16) -> RouterConfig {
    RouterConfig {
        version: dnsha_vrrp::Version::V3,
        advert_int_cs,
        auth: dnsha_vrrp::Auth::None,
        ..config(last_octet, priority)
    }
}

/// VRRPv3 at 10 cs: the backup takes over from a killed master within
/// 3 × 0.1 s + Skew_Time (((256 − 100) × 0.1 s) / 256), ten times sooner
/// than VRRPv2 can.
#[test]
fn v3_failover_at_ten_centiseconds() {
    let mut net = Net::new(vec![v3(1, 100, 10), v3(2, 200, 10)]);
    net.start(A);
    net.start(B);
    net.run_for(secs(2.0));
    assert_eq!(net.masters(), [B]);
    net.kill(B);
    let t = net.run_until(secs(5.0), |n| n.masters() == [A]).unwrap();
    let mdi = secs(0.3) + secs(0.1) * (256 - 100) / 256;
    assert!(t <= mdi, "{t:?}");
    assert!(t >= mdi - secs(0.1), "{t:?}");
    assert_eq!(net.holders(), [A]);
    // A clean stop: priority 0, takeover after the v3 Skew_Time.
    net.start(B);
    net.run_for(secs(2.0));
    assert_eq!(net.masters(), [B]);
    net.command(B, Command::Shutdown);
    let t = net.run_until(secs(5.0), |n| n.masters() == [A]).unwrap();
    assert_eq!(t, secs(0.1) * (256 - 100) / 256 + net.latency);
}

/// A VRRPv3 backup counts with the interval the master advertises, not its
/// own (RFC 5798 section 6.4.2): a backup configured at 10 cs behind a
/// master at 100 cs does not take over between the master's adverts.
#[test]
fn v3_backup_learns_the_masters_interval() {
    let mut net = Net::new(vec![v3(1, 100, 10), v3(2, 200, 100)]);
    net.start(B);
    net.run_for(secs(4.0));
    net.start(A);
    net.run_for(secs(30.0));
    assert_eq!(net.masters(), [B]);
    assert!(net.nodes[A]
        .transitions
        .iter()
        .all(|(_, _, to, _)| *to != State::Master));
    assert_eq!(
        net.nodes[A].router.master_adver_interval(),
        Duration::from_secs(1)
    );
    // The master dies: the backup waits 3 × 1 s + Skew_Time of 1 s.
    net.kill(B);
    let t = net.run_until(secs(10.0), |n| n.masters() == [A]).unwrap();
    let mdi = secs(3.0) + secs(1.0) * (256 - 100) / 256;
    assert!(t <= mdi && t >= mdi - secs(1.0), "{t:?}");
}
