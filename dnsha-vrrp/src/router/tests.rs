//! State machine tests in simulated time: every deadline is computed, never
//! slept on.

use super::*;
use crate::codec::Auth;
use crate::error::Error;
use std::net::IpAddr;

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const LOWER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const HIGHER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const VIP: Vip = Vip {
    addr: IpAddr::V4(Ipv4Addr::new(192, 168, 1, 5)),
    prefix_len: 32,
};
const MS: Duration = Duration::from_millis(1);
const VIP_V4: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 5);

fn cfg(priority: u8) -> RouterConfig {
    RouterConfig {
        auth: Auth::password("dnsvip"),
        vips: vec![VIP],
        ..RouterConfig::new(134, priority, ME)
    }
}

fn adv(priority: u8) -> Vec<u8> {
    Advertisement {
        vrid: 134,
        priority,
        advert_int: 1,
        auth: Auth::password("dnsvip"),
        addresses: vec![VIP_V4],
    }
    .to_bytes()
}

fn drain(r: &mut Router) -> Vec<Output> {
    std::iter::from_fn(|| r.poll_output()).collect()
}

fn started(c: RouterConfig) -> (Router, Instant) {
    let mut r = Router::new(c).unwrap();
    let t0 = Instant::now();
    r.handle_command(t0, Command::Start);
    (r, t0)
}

/// A router that has become master at the returned instant.
fn master(c: RouterConfig) -> (Router, Instant) {
    let (mut r, _) = started(c);
    let t = r.poll_timeout().unwrap();
    r.handle_timeout(t);
    assert_eq!(r.state(), State::Master);
    drain(&mut r);
    (r, t)
}

fn sent_priorities(out: &[Output]) -> Vec<u8> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendAdvert(b) => Some(b.priority),
            _ => None,
        })
        .collect()
}

#[test]
fn skew_and_master_down_interval() {
    assert_eq!(skew_time(255), Duration::from_nanos(3_906_250));
    assert_eq!(skew_time(100), Duration::from_micros(609_375));
    assert_eq!(skew_time(1), Duration::from_nanos(996_093_750));
    let r = Router::new(cfg(100)).unwrap();
    assert_eq!(
        r.master_down_interval(),
        Duration::from_secs(3) + Duration::from_micros(609_375)
    );
    let r = Router::new(RouterConfig {
        advert_int_cs: 200,
        ..cfg(200)
    })
    .unwrap();
    assert_eq!(
        r.master_down_interval(),
        Duration::from_secs(6) + Duration::from_nanos(56 * 3_906_250)
    );
}

#[test]
fn rejects_zero_fields() {
    let Err(Error::Config { errors }) = Router::new(RouterConfig {
        advert_int_cs: 0,
        ..RouterConfig::new(0, 0, ME)
    }) else {
        panic!("accepted");
    };
    assert_eq!(errors.len(), 3);
}

#[test]
fn initialize_until_started() {
    let mut r = Router::new(cfg(100)).unwrap();
    assert_eq!(r.state(), State::Initialize);
    assert_eq!(r.poll_timeout(), None);
    let now = Instant::now();
    r.handle_packet(now, HIGHER_IP, 255, &adv(200));
    assert_eq!(r.stats().ignored, 1);
    assert_eq!(r.state(), State::Initialize);
    assert!(drain(&mut r).is_empty());
}

#[test]
fn start_goes_backup_then_master_after_exactly_master_down_interval() {
    let (mut r, t0) = started(cfg(100));
    assert_eq!(
        drain(&mut r),
        [Output::Transition {
            from: State::Initialize,
            to: State::Backup,
            reason: Reason::Startup
        }]
    );
    let mdi = r.master_down_interval();
    assert_eq!(r.poll_timeout(), Some(t0 + mdi));
    r.handle_timeout(t0 + mdi - Duration::from_nanos(1));
    assert_eq!(r.state(), State::Backup);
    r.handle_timeout(t0 + mdi);
    assert_eq!(r.state(), State::Master);
    let out = drain(&mut r);
    assert_eq!(
        out[0],
        Output::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown {
                priority_zero: false
            }
        }
    );
    assert_eq!(out[1], Output::AddVip(VIP));
    assert_eq!(sent_priorities(&out), [100]);
    assert!(matches!(out[2], Output::SendAdvert(_)));
    assert_eq!(
        out[3],
        Output::GratuitousArp {
            addr: VIP.addr,
            count: 5
        }
    );
    assert_eq!(out.len(), 4);
    assert_eq!(r.stats().became_master, 1);
}

#[test]
fn master_advertises_every_interval_and_repeats_garp() {
    let c = RouterConfig {
        garp: GarpConfig {
            delay: Duration::from_millis(2500),
            repeat: 2,
            refresh: Some(Duration::from_secs(10)),
            refresh_repeat: 1,
            ..GarpConfig::default()
        },
        ..cfg(100)
    };
    let (mut r, t) = master(c);
    let mut adverts = 0;
    let mut garps = Vec::new();
    let mut now = t;
    while let Some(next) = r.poll_timeout() {
        if next > t + Duration::from_secs(21) {
            break;
        }
        now = next;
        r.handle_timeout(now);
        for o in drain(&mut r) {
            match o {
                Output::SendAdvert(_) => adverts += 1,
                Output::GratuitousArp { count, .. } => garps.push((now - t, count)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(now <= t + Duration::from_secs(21));
    assert_eq!(adverts, 21);
    assert_eq!(
        garps,
        [
            (Duration::from_millis(2500), 2),
            (Duration::from_secs(10), 1),
            (Duration::from_secs(20), 1)
        ]
    );
}

#[test]
fn address_owner_is_master_at_start() {
    let (mut r, t0) = started(cfg(255));
    assert_eq!(r.state(), State::Master);
    let out = drain(&mut r);
    assert_eq!(
        out[0],
        Output::Transition {
            from: State::Initialize,
            to: State::Master,
            reason: Reason::AddressOwner
        }
    );
    assert_eq!(sent_priorities(&out), [255]);
    assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(1)));
}

#[test]
fn backup_resets_timer_on_higher_or_equal_priority() {
    for prio in [100, 150, 255] {
        let (mut r, t0) = started(cfg(100));
        drain(&mut r);
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(r.handle_packet(t1, LOWER_IP, 255, &adv(prio)), None);
        assert_eq!(r.poll_timeout(), Some(t1 + r.master_down_interval()));
        assert_eq!(r.current_master(), Some((LOWER_IP.into(), prio)));
        assert_eq!(r.stats().adverts_received, 1);
        assert!(drain(&mut r).is_empty());
    }
}

#[test]
fn backup_preempts_lower_priority_master() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    let deadline = r.poll_timeout().unwrap();
    for i in 0..3 {
        r.handle_packet(t0 + Duration::from_secs(i), HIGHER_IP, 255, &adv(50));
        assert_eq!(r.poll_timeout(), Some(deadline));
    }
    r.handle_timeout(deadline);
    assert_eq!(r.state(), State::Master);
}

#[test]
fn nopreempt_backup_keeps_lower_priority_master() {
    let (mut r, t0) = started(RouterConfig {
        preempt: false,
        ..cfg(200)
    });
    drain(&mut r);
    for i in 0..100 {
        let now = t0 + Duration::from_secs(i);
        r.handle_timeout(now);
        r.handle_packet(now, HIGHER_IP, 255, &adv(50));
    }
    assert_eq!(r.state(), State::Backup);
    // The master stops sending: we take over after Master_Down_Interval.
    let last = t0 + Duration::from_secs(99);
    assert_eq!(r.poll_timeout(), Some(last + r.master_down_interval()));
}

#[test]
fn preempt_delay_holds_preemption_back() {
    let (mut r, t0) = started(RouterConfig {
        preempt_delay: Duration::from_secs(10),
        ..cfg(200)
    });
    drain(&mut r);
    let mut became = None;
    for ms in (0..20_000).step_by(100) {
        let now = t0 + MS * ms;
        if ms % 1000 == 0 {
            r.handle_packet(now, LOWER_IP, 255, &adv(100));
        }
        r.handle_timeout(now);
        if r.state() == State::Master && became.is_none() {
            became = Some(now - t0);
        }
    }
    let became = became.unwrap();
    // Adverts are accepted until t0 + 10 s, then ignored: takeover follows
    // Master_Down_Interval after the last accepted one (t = 9 s).
    let expected = Duration::from_secs(9) + r.master_down_interval();
    assert!(
        became >= expected && became < expected + MS * 100,
        "{became:?} vs {expected:?}"
    );
}

#[test]
fn priority_zero_makes_backup_take_over_after_skew_time() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    let t1 = t0 + Duration::from_secs(1);
    r.handle_packet(t1, HIGHER_IP, 255, &adv(200));
    let t2 = t1 + Duration::from_millis(500);
    r.handle_packet(t2, HIGHER_IP, 255, &adv(0));
    assert_eq!(r.stats().priority_zero_received, 1);
    assert_eq!(r.poll_timeout(), Some(t2 + skew_time(100)));
    r.handle_timeout(t2 + skew_time(100));
    assert_eq!(r.state(), State::Master);
    assert_eq!(
        drain(&mut r)[0],
        Output::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::MasterDown {
                priority_zero: true
            }
        }
    );
}

#[test]
fn master_steps_down_for_higher_priority() {
    let (mut r, t) = master(cfg(100));
    let now = t + MS * 300;
    r.handle_packet(now, LOWER_IP, 255, &adv(101));
    assert_eq!(r.state(), State::Backup);
    let out = drain(&mut r);
    assert_eq!(
        out,
        [
            Output::DelVip(VIP),
            Output::Transition {
                from: State::Master,
                to: State::Backup,
                reason: Reason::HigherPriority {
                    from: LOWER_IP.into(),
                    priority: 101
                }
            }
        ]
    );
    assert_eq!(r.poll_timeout(), Some(now + r.master_down_interval()));
}

#[test]
fn equal_priority_is_resolved_by_higher_address() {
    let (mut r, t) = master(cfg(100));
    r.handle_packet(t + MS, LOWER_IP, 255, &adv(100));
    assert_eq!(r.state(), State::Master);
    // The lower address is told at once.
    assert_eq!(sent_priorities(&drain(&mut r)), [100]);
    r.handle_packet(t + MS * 2, HIGHER_IP, 255, &adv(100));
    assert_eq!(r.state(), State::Backup);
}

#[test]
fn master_answers_priority_zero_and_lower_priority_at_once() {
    let (mut r, t) = master(cfg(100));
    r.handle_packet(t + MS * 100, HIGHER_IP, 255, &adv(0));
    assert_eq!(sent_priorities(&drain(&mut r)), [100]);
    assert_eq!(r.poll_timeout(), Some(t + MS * 1100));
    r.handle_packet(t + MS * 200, HIGHER_IP, 255, &adv(99));
    assert_eq!(sent_priorities(&drain(&mut r)), [100]);
    assert_eq!(r.state(), State::Master);
}

#[test]
fn a_flood_of_lower_priority_adverts_gets_a_few_answers_per_interval() {
    let (mut r, t) = master(cfg(100));
    drain(&mut r);
    let sent_before = r.stats().adverts_sent;
    // 1000 spoofed adverts within one second.
    for i in 0..1000u32 {
        r.handle_packet(
            t + MS * (1 + i / 2),
            LOWER_IP,
            255,
            &adv(if i % 2 == 0 { 0 } else { 99 }),
        );
    }
    let sent = r.stats().adverts_sent - sent_before;
    assert_eq!(
        sent,
        u64::from(REASSERTS_PER_INTERVAL),
        "answers in the first interval"
    );
    assert_eq!(
        r.stats().reasserts_held,
        1000 - u64::from(REASSERTS_PER_INTERVAL)
    );
    assert_eq!(r.state(), State::Master);
    // The next interval gets its own answers.
    r.handle_packet(t + MS * 1600, LOWER_IP, 255, &adv(99));
    assert_eq!(r.stats().adverts_sent - sent_before, sent + 1);
}

/// Master bursts off, so only the lower-priority ones show: 3 ARPs now,
/// 3 more 2 s later.
fn lower_prio_garp_cfg(priority: u8) -> RouterConfig {
    RouterConfig {
        garp: GarpConfig {
            delay: Duration::ZERO,
            lower_prio_delay: Duration::from_secs(2),
            lower_prio_repeat: 3,
            ..GarpConfig::default()
        },
        ..cfg(priority)
    }
}

fn garps(out: &[Output]) -> Vec<(IpAddr, u32)> {
    out.iter()
        .filter_map(|o| match o {
            Output::GratuitousArp { addr, count } => Some((*addr, *count)),
            _ => None,
        })
        .collect()
}

/// Case 25: after a partition heals, the master hears the other side's
/// master, of lower priority (or equal with a lower address). As
/// keepalived 2.2 (`vrrp_state_master_rx`, `garp_lower_prio_repeat`,
/// `garp_lower_prio_delay`), it answers with an advert and gratuitous ARPs
/// now, and again after the delay.
#[test]
fn master_re_sends_gratuitous_arp_to_a_lower_priority_master() {
    for (from, priority) in [(HIGHER_IP, 99), (LOWER_IP, 100)] {
        let (mut r, t) = master(lower_prio_garp_cfg(100));
        let now = t + MS * 300;
        r.handle_packet(now, from, 255, &adv(priority));
        assert_eq!(r.state(), State::Master);
        let out = drain(&mut r);
        assert!(
            matches!(out[0], Output::SendAdvert(ref a) if a.priority == 100),
            "{out:?}"
        );
        assert_eq!(
            out[1..],
            [Output::GratuitousArp {
                addr: VIP.addr,
                count: 3
            }]
        );
        // The adverts go on; the second burst comes 2 s later, once.
        let mut later = Vec::new();
        while let Some(next) = r.poll_timeout().filter(|n| *n <= now + MS * 4000) {
            r.handle_timeout(next);
            later.extend(garps(&drain(&mut r)).into_iter().map(|g| (next - now, g)));
        }
        assert_eq!(later, [(Duration::from_secs(2), (VIP.addr, 3))]);
        assert_eq!(r.stats().lower_prio_garps_held, 0);
    }
}

/// A better master (higher priority, or equal with a higher address) still
/// takes over without any ARP from us, and a pending second burst is
/// cancelled with the mastership; a priority 0 gets an advert only; a
/// backup hearing a lower priority sends nothing; repeat 0 turns it off.
#[test]
fn only_a_lower_priority_master_gets_gratuitous_arp() {
    for (from, priority) in [(LOWER_IP, 101), (HIGHER_IP, 100)] {
        let (mut r, t) = master(lower_prio_garp_cfg(100));
        r.handle_packet(t + MS, LOWER_IP, 255, &adv(50));
        assert_eq!(garps(&drain(&mut r)).len(), 1);
        let now = t + MS * 2;
        r.handle_packet(now, from, 255, &adv(priority));
        assert_eq!(r.state(), State::Backup);
        let out = drain(&mut r);
        assert_eq!(garps(&out), []);
        assert_eq!(sent_priorities(&out), []);
        assert_eq!(r.poll_timeout(), Some(now + r.master_down_interval()));
    }

    let (mut r, t) = master(lower_prio_garp_cfg(100));
    r.handle_packet(t + MS, LOWER_IP, 255, &adv(0));
    let out = drain(&mut r);
    assert_eq!((sent_priorities(&out), garps(&out)), (vec![100], vec![]));

    let (mut r, t) = started(lower_prio_garp_cfg(100));
    drain(&mut r);
    r.handle_packet(t + MS, LOWER_IP, 255, &adv(99));
    assert_eq!(drain(&mut r), []);

    let off = RouterConfig {
        garp: GarpConfig {
            lower_prio_repeat: 0,
            ..lower_prio_garp_cfg(100).garp
        },
        ..cfg(100)
    };
    let (mut r, t) = master(off);
    r.handle_packet(t + MS, LOWER_IP, 255, &adv(99));
    let out = drain(&mut r);
    assert_eq!((sent_priorities(&out), garps(&out)), (vec![100], vec![]));
    assert_eq!(r.poll_timeout(), Some(t + MS + r.advert_interval()));
}

/// keepalived sends a burst per lower-priority advert; here a spoofed
/// flood gets one burst per advert interval (plus its delayed second
/// burst), not an ARP storm.
#[test]
fn lower_priority_garp_is_one_burst_per_advert_interval() {
    let (mut r, t) = master(lower_prio_garp_cfg(100));
    let mut bursts = 0;
    for i in 0..1000u32 {
        r.handle_packet(t + MS * (1 + i), LOWER_IP, 255, &adv(99));
        bursts += garps(&drain(&mut r)).len();
    }
    assert_eq!(bursts, 1);
    assert_eq!(r.stats().lower_prio_garps_held, 999);
    assert_eq!(r.state(), State::Master);
    r.handle_packet(t + MS * 1001, LOWER_IP, 255, &adv(99));
    assert_eq!(garps(&drain(&mut r)), [(VIP.addr, 3)]);
}

#[test]
fn unicast_adverts_from_anyone_but_a_peer_are_dropped() {
    let c = RouterConfig {
        peers: vec![HIGHER_IP.into()],
        ..cfg(100)
    };
    let (mut r, t) = started(c);
    assert_eq!(r.state(), State::Backup);
    // A higher priority from a stranger changes nothing.
    assert_eq!(
        r.handle_packet(t + MS, LOWER_IP, 255, &adv(0)),
        Some(DropReason::NotPeer)
    );
    assert_eq!(r.stats().dropped(DropReason::NotPeer), 1);
    assert_eq!(r.stats().priority_zero_received, 0);
    // The peer is heard.
    assert_eq!(r.handle_packet(t + MS * 2, HIGHER_IP, 255, &adv(200)), None);
    assert_eq!(r.stats().adverts_received, 1);
}

#[test]
fn bad_adverts_are_dropped_counted_and_change_nothing() {
    let good = adv(200);
    let mut bad_checksum = good.clone();
    bad_checksum[7] ^= 1;
    let mut count_mismatch = good.clone();
    count_mismatch.extend_from_slice(&[0; 4]);
    let other_pass = Advertisement {
        auth: Auth::password("wrong"),
        ..Advertisement::decode(&good).unwrap()
    }
    .to_bytes();
    let other_int = Advertisement {
        advert_int: 2,
        ..Advertisement::decode(&good).unwrap()
    }
    .to_bytes();
    let no_auth = Advertisement {
        auth: Auth::None,
        ..Advertisement::decode(&good).unwrap()
    }
    .to_bytes();
    let mut v3 = good.clone();
    v3[0] = 0x31;
    let cases: Vec<(Ipv4Addr, u8, Vec<u8>, DropReason)> = vec![
        (HIGHER_IP, 254, good.clone(), DropReason::Ttl),
        (HIGHER_IP, 1, good.clone(), DropReason::Ttl),
        (HIGHER_IP, 255, bad_checksum, DropReason::Checksum),
        (HIGHER_IP, 255, good[..10].to_vec(), DropReason::Truncated),
        (
            HIGHER_IP,
            255,
            good[..19].to_vec(),
            DropReason::CountMismatch,
        ),
        (HIGHER_IP, 255, count_mismatch, DropReason::CountMismatch),
        (HIGHER_IP, 255, other_pass, DropReason::Password),
        (HIGHER_IP, 255, other_int, DropReason::Interval),
        (HIGHER_IP, 255, no_auth, DropReason::AuthType),
        (HIGHER_IP, 255, v3, DropReason::Version),
        (ME, 255, good.clone(), DropReason::OwnAddress),
    ];
    for st in [State::Backup, State::Master] {
        let (mut r, t) = if st == State::Master {
            master(cfg(100))
        } else {
            let (mut r, t) = started(cfg(100));
            drain(&mut r);
            (r, t)
        };
        let deadline = r.poll_timeout();
        for (i, (src, ttl, bytes, reason)) in cases.iter().enumerate() {
            assert_eq!(
                r.handle_packet(t + MS * i as u32, *src, *ttl, bytes),
                Some(*reason)
            );
            assert!(r.stats().dropped(*reason) > 0);
        }
        assert_eq!(r.state(), st);
        assert_eq!(r.poll_timeout(), deadline);
        assert!(drain(&mut r).is_empty());
        assert_eq!(r.stats().dropped_total(), cases.len() as u64);
        assert_eq!(r.stats().dropped(DropReason::Ttl), 2);
        assert_eq!(r.stats().adverts_received, 0);
    }
}

#[test]
fn other_vrid_is_ignored_quietly() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    let deadline = r.poll_timeout();
    let other = Advertisement {
        vrid: 7,
        priority: 200,
        advert_int: 3,
        auth: Auth::None,
        addresses: vec![],
    }
    .to_bytes();
    assert_eq!(r.handle_packet(t0, HIGHER_IP, 255, &other), None);
    assert_eq!(r.stats().other_vrid, 1);
    assert_eq!(r.stats().dropped_total(), 0);
    assert_eq!(r.poll_timeout(), deadline);
}

#[test]
fn address_list_mismatch_is_counted_but_accepted() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    let other = Advertisement {
        addresses: vec![Ipv4Addr::new(192, 168, 1, 99)],
        ..Advertisement::decode(&adv(200)).unwrap()
    }
    .to_bytes();
    r.handle_packet(t0 + MS, HIGHER_IP, 255, &other);
    assert_eq!(r.stats().address_list_mismatch, 1);
    assert_eq!(r.current_master(), Some((HIGHER_IP.into(), 200)));
}

fn tracked(priority: u8, weights: &[i32]) -> RouterConfig {
    RouterConfig {
        trackers: weights
            .iter()
            .enumerate()
            .map(|(i, w)| TrackerSpec {
                name: format!("t{i}"),
                weight: *w,
            })
            .collect(),
        ..cfg(priority)
    }
}

fn set(r: &mut Router, now: Instant, i: usize, up: bool) {
    r.handle_command(
        now,
        Command::TrackerChanged {
            name: format!("t{i}"),
            up,
        },
    );
}

#[test]
fn effective_priority_follows_keepalived_weights() {
    let mut r = Router::new(tracked(100, &[-20, -30, 10])).unwrap();
    let now = Instant::now();
    // Positive weights count while up: 100 + 10.
    assert_eq!(r.effective_priority(), 110);
    set(&mut r, now, 0, false);
    assert_eq!(r.effective_priority(), 90);
    set(&mut r, now, 1, false);
    assert_eq!(r.effective_priority(), 60);
    set(&mut r, now, 2, false);
    assert_eq!(r.effective_priority(), 50);
    set(&mut r, now, 0, true);
    assert_eq!(r.effective_priority(), 70);
    assert_eq!(r.base_priority(), 100);
    // Unknown names change nothing.
    r.handle_command(
        now,
        Command::TrackerChanged {
            name: "nope".into(),
            up: false,
        },
    );
    assert_eq!(r.effective_priority(), 70);
}

#[test]
fn effective_priority_is_clamped_and_owner_ignores_weights() {
    let now = Instant::now();
    let mut r = Router::new(tracked(10, &[-50])).unwrap();
    set(&mut r, now, 0, false);
    assert_eq!(r.effective_priority(), 1);
    let r = Router::new(tracked(250, &[50])).unwrap();
    assert_eq!(r.effective_priority(), 254);
    let mut r = Router::new(tracked(255, &[-50])).unwrap();
    set(&mut r, now, 0, false);
    assert_eq!(r.effective_priority(), 255);
}

#[test]
fn lower_effective_priority_is_advertised_at_once() {
    let (mut r, t) = master(tracked(100, &[-20]));
    set(&mut r, t + MS * 10, 0, false);
    assert_eq!(sent_priorities(&drain(&mut r)), [80]);
    assert_eq!(r.state(), State::Master);
    // A backup at 90 receiving 80 preempts; when it advertises, we step down.
    r.handle_packet(t + Duration::from_secs(4), HIGHER_IP, 255, &adv(90));
    assert_eq!(r.state(), State::Backup);
}

#[test]
fn backup_skew_uses_effective_priority() {
    let (mut r, t0) = started(tracked(200, &[-100]));
    drain(&mut r);
    set(&mut r, t0, 0, false);
    r.handle_packet(t0 + MS, HIGHER_IP, 255, &adv(0));
    assert_eq!(r.poll_timeout(), Some(t0 + MS + skew_time(100)));
}

#[test]
fn weight_zero_tracker_means_fault() {
    let (mut r, t) = master(tracked(100, &[0, -10]));
    set(&mut r, t + MS, 0, false);
    assert_eq!(r.state(), State::Fault);
    let out = drain(&mut r);
    assert_eq!(out[0], Output::DelVip(VIP));
    assert_eq!(sent_priorities(&out), [0]);
    assert_eq!(
        out.last(),
        Some(&Output::Transition {
            from: State::Master,
            to: State::Fault,
            reason: Reason::Fault {
                tracker: "t0".into()
            }
        })
    );
    assert_eq!(r.poll_timeout(), None);
    // Adverts are ignored in FAULT; weighted trackers don't clear it.
    r.handle_packet(t + MS * 2, HIGHER_IP, 255, &adv(0));
    assert_eq!(r.stats().ignored, 1);
    set(&mut r, t + MS * 3, 1, false);
    assert_eq!(r.state(), State::Fault);
    assert!(drain(&mut r).is_empty());
    // Back up: BACKUP, then master after Master_Down_Interval.
    let back = t + MS * 4;
    set(&mut r, back, 0, true);
    assert_eq!(r.state(), State::Backup);
    assert_eq!(
        drain(&mut r),
        [Output::Transition {
            from: State::Fault,
            to: State::Backup,
            reason: Reason::FaultCleared
        }]
    );
    assert_eq!(r.poll_timeout(), Some(back + r.master_down_interval()));
}

#[test]
fn start_in_fault_and_fault_in_backup() {
    let mut r = Router::new(tracked(100, &[0])).unwrap();
    let t0 = Instant::now();
    set(&mut r, t0, 0, false);
    r.handle_command(t0, Command::Start);
    assert_eq!(r.state(), State::Fault);
    assert_eq!(r.poll_timeout(), None);
    set(&mut r, t0, 0, true);
    assert_eq!(r.state(), State::Backup);
    drain(&mut r);
    set(&mut r, t0, 0, false);
    assert_eq!(r.state(), State::Fault);
    // No VIP to remove and no advert from a backup.
    assert_eq!(drain(&mut r).len(), 1);
}

#[test]
fn owner_leaves_fault_as_master() {
    let mut r = Router::new(tracked(255, &[0])).unwrap();
    let t0 = Instant::now();
    set(&mut r, t0, 0, false);
    r.handle_command(t0, Command::Start);
    assert_eq!(r.state(), State::Fault);
    set(&mut r, t0, 0, true);
    assert_eq!(r.state(), State::Master);
}

#[test]
fn shutdown_as_master_sends_priority_zero_and_removes_vips() {
    let (mut r, t) = master(cfg(100));
    r.handle_command(t + MS, Command::Shutdown);
    let out = drain(&mut r);
    assert_eq!(out[0], Output::DelVip(VIP));
    assert_eq!(sent_priorities(&out), [0]);
    assert_eq!(
        out.last(),
        Some(&Output::Transition {
            from: State::Master,
            to: State::Initialize,
            reason: Reason::Shutdown
        })
    );
    assert_eq!(r.stats().priority_zero_sent, 1);
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.state(), State::Initialize);
    // Idempotent.
    r.handle_command(t + MS, Command::Shutdown);
    assert!(drain(&mut r).is_empty());
    // And restartable.
    r.handle_command(t + MS * 2, Command::Start);
    assert_eq!(r.state(), State::Backup);
}

#[test]
fn shutdown_as_backup_is_silent() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    r.handle_command(t0, Command::Shutdown);
    let out = drain(&mut r);
    assert_eq!(out.len(), 1);
    assert!(sent_priorities(&out).is_empty());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn start_is_idempotent() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    let deadline = r.poll_timeout();
    r.handle_command(t0 + Duration::from_secs(1), Command::Start);
    assert_eq!(r.poll_timeout(), deadline);
    assert!(drain(&mut r).is_empty());
}

#[test]
fn late_timeout_does_not_burst_adverts() {
    let (mut r, t) = master(cfg(100));
    // The loop was stalled for 10 s: one advert, not ten.
    r.handle_timeout(t + Duration::from_secs(10));
    assert_eq!(sent_priorities(&drain(&mut r)), [100]);
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(11)));
}

/// keepalived 2.2.7's VRRPv3 advert (VRID 134, priority 100, 10 cs, VIPs
/// 192.168.1.5 and .6) from 10.66.0.3 to 224.0.0.18, after the IP header.
const KEEPALIVED_V3_10CS: [u8; 16] = [
    0x31, 0x86, 0x64, 0x02, 0x00, 0x0a, 0xfc, 0x38, 0xc0, 0xa8, 0x01, 0x05, 0xc0, 0xa8, 0x01, 0x06,
];
const KEEPALIVED: Ipv4Addr = Ipv4Addr::new(10, 66, 0, 3);

fn v3(priority: u8, advert_int_cs: u16) -> RouterConfig {
    RouterConfig {
        version: Version::V3,
        advert_int_cs,
        vips: vec![VIP],
        ..RouterConfig::new(134, priority, ME)
    }
}

#[test]
fn v3_timers_are_in_centiseconds() {
    let r = Router::new(v3(100, 10)).unwrap();
    assert_eq!(r.advert_interval(), Duration::from_millis(100));
    // Skew_Time = ((256 - 100) × 10 cs) / 256 = 60.9375 ms.
    assert_eq!(
        r.skew_time(),
        Duration::from_micros(60_937) + Duration::from_nanos(500)
    );
    assert_eq!(
        r.master_down_interval(),
        Duration::from_millis(300) + r.skew_time()
    );
    let (mut r, t) = master(v3(100, 10));
    let out = drain(&mut r);
    assert!(out.is_empty());
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_millis(100)));
    r.handle_timeout(t + Duration::from_millis(100));
    let out = drain(&mut r);
    let Some(Output::SendAdvert(adv)) = out.first() else {
        panic!("{out:?}");
    };
    assert_eq!((adv.version, adv.interval_cs), (Version::V3, 10));
    // Encoded as keepalived encodes it (from its address, to the group).
    let keepalived = Outgoing {
        addresses: vec![VIP.addr, Ipv4Addr::new(192, 168, 1, 6).into()],
        ..adv.clone()
    };
    assert_eq!(
        keepalived.encode(KEEPALIVED.into(), VRRP_GROUP.into()),
        KEEPALIVED_V3_10CS
    );
}

#[test]
fn v3_backup_follows_keepalived_and_learns_its_interval() {
    let (mut r, t0) = started(v3(90, 100));
    let t = t0 + Duration::from_millis(500);
    assert_eq!(
        r.handle_packet(t, KEEPALIVED, 255, &KEEPALIVED_V3_10CS),
        None
    );
    assert_eq!(r.state(), State::Backup);
    assert_eq!(r.current_master(), Some((KEEPALIVED.into(), 100)));
    assert_eq!(r.master_adver_interval(), Duration::from_millis(100));
    // Master_Down_Interval from the master's 10 cs, not our 100 cs.
    let mdi = Duration::from_millis(300) + Duration::from_millis(100) * (256 - 90) / 256;
    assert_eq!(r.poll_timeout(), Some(t + mdi));
    // The addresses a v3 checksum covers: the same bytes to another
    // destination are dropped.
    let unicast = r.handle_packet_to(t, KEEPALIVED.into(), ME.into(), 255, &KEEPALIVED_V3_10CS);
    assert_eq!(unicast, Some(DropReason::Checksum));
    // A VRRPv2 advert is not for a v3 instance.
    assert_eq!(
        r.handle_packet(t, KEEPALIVED, 255, &adv(100)),
        Some(DropReason::Version)
    );
    assert_eq!(r.state(), State::Backup);
}

#[test]
fn v3_and_v2_interval_and_auth_rules() {
    let bad = |c: RouterConfig| match Router::new(c) {
        Err(Error::Config { errors }) => errors[0].to_string(),
        other => panic!("{other:?}"),
    };
    assert!(bad(v3(100, 0)).contains("0.01..40.95"));
    assert!(bad(v3(100, 4096)).contains("0.01..40.95"));
    assert!(bad(RouterConfig {
        auth: Auth::password("x"),
        ..v3(100, 100)
    })
    .contains("no authentication"));
    assert!(bad(RouterConfig {
        advert_int_cs: 50,
        ..cfg(100)
    })
    .contains("whole seconds"));
    assert!(Router::new(v3(100, 4095)).is_ok());
}

#[test]
fn reconfigure_unchanged_sends_nothing_and_keeps_timers() {
    let (mut r, t) = master(cfg(200));
    let deadline = r.poll_timeout();
    r.reconfigure(t + 10 * MS, cfg(200)).unwrap();
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.poll_timeout(), deadline);
    assert_eq!(r.state(), State::Master);
    let (mut b, t) = started(cfg(100));
    drain(&mut b);
    let deadline = b.poll_timeout();
    b.reconfigure(t + 10 * MS, cfg(100)).unwrap();
    assert!(drain(&mut b).is_empty());
    assert_eq!((b.state(), b.poll_timeout()), (State::Backup, deadline));
}

#[test]
fn reconfigure_a_master_in_place() {
    let (mut r, t) = master(cfg(200));
    // A lower priority: advertised at once, still master until a backup
    // with a higher priority preempts.
    r.reconfigure(t + 10 * MS, cfg(50)).unwrap();
    let out = drain(&mut r);
    assert_eq!(sent_priorities(&out), [50]);
    assert_eq!(r.state(), State::Master);
    r.handle_packet(t + 20 * MS, HIGHER_IP, 255, &adv(100));
    assert_eq!(r.state(), State::Backup);
    // VIPs changed on a master: the old one removed, the new one added and
    // announced, one advert.
    let (mut r, t) = master(cfg(200));
    let other = Vip {
        addr: Ipv4Addr::new(192, 168, 1, 9).into(),
        prefix_len: 32,
    };
    r.reconfigure(
        t + 10 * MS,
        RouterConfig {
            vips: vec![other],
            ..cfg(200)
        },
    )
    .unwrap();
    let out = drain(&mut r);
    assert!(out.contains(&Output::DelVip(VIP)), "{out:?}");
    assert!(out.contains(&Output::AddVip(other)), "{out:?}");
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::GratuitousArp { addr, .. } if *addr == other.addr)));
    assert_eq!(sent_priorities(&out), [200]);
    // A new tracker that is down with weight 0: FAULT, priority 0 sent.
    let (mut r, t) = master(cfg(200));
    r.reconfigure(
        t + 10 * MS,
        RouterConfig {
            trackers: vec![TrackerSpec {
                name: "pool".into(),
                weight: 0,
            }],
            ..cfg(200)
        },
    )
    .unwrap();
    assert!(drain(&mut r).is_empty(), "new trackers start up");
    r.handle_command(
        t + 20 * MS,
        Command::TrackerChanged {
            name: "pool".into(),
            up: false,
        },
    );
    assert_eq!(r.state(), State::Fault);
    assert_eq!(sent_priorities(&drain(&mut r)), [0]);
    // A new VRID is not a change in place.
    let (mut r, t) = master(cfg(200));
    let e = r.reconfigure(
        t,
        RouterConfig {
            vrid: 9,
            ..cfg(200)
        },
    );
    assert!(e.is_err());
    assert_eq!(r.config().vrid, 134);
}

#[test]
fn bad_v3_adverts_are_counted_by_reason_and_change_nothing() {
    let (mut r, t0) = started(v3(90, 10));
    drain(&mut r);
    let deadline = r.poll_timeout();
    let good = KEEPALIVED_V3_10CS;
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.to_vec();
        edit(&mut b);
        b
    };
    let cases: [(Vec<u8>, u8, DropReason); 5] = [
        // The checksum no longer matches (a flipped address bit).
        (with(&|b| b[9] ^= 1), 255, DropReason::Checksum),
        // Sent across a router.
        (good.to_vec(), 64, DropReason::Ttl),
        // An interval of 0, its checksum right: the interval word goes down
        // by one, so the one's complement checksum goes up by one.
        (
            {
                let mut b = Outgoing {
                    interval_cs: 1,
                    ..outgoing_from(&good)
                }
                .encode(KEEPALIVED.into(), VRRP_GROUP.into());
                b[5] = 0;
                let sum = u16::from_be_bytes([b[6], b[7]]);
                assert_ne!(sum, 0xffff);
                b[6..8].copy_from_slice(&(sum + 1).to_be_bytes());
                b
            },
            255,
            DropReason::ZeroInterval,
        ),
        // A count that does not match the length.
        (with(&|b| b[3] = 3), 255, DropReason::CountMismatch),
        // Truncated.
        (good[..6].to_vec(), 255, DropReason::Truncated),
    ];
    for (bytes, ttl, reason) in cases {
        assert_eq!(
            r.handle_packet(t0 + MS, KEEPALIVED, ttl, &bytes),
            Some(reason)
        );
        assert_eq!(r.stats().dropped(reason), 1);
    }
    assert_eq!(r.state(), State::Backup);
    assert_eq!(r.poll_timeout(), deadline);
    assert_eq!(r.current_master(), None);
    assert!(drain(&mut r).is_empty());
}

/// The advert of `bytes` (keepalived's) as an [`Outgoing`].
fn outgoing_from(bytes: &[u8]) -> Outgoing {
    let adv = AdvertisementV3::decode(bytes, &PseudoHeader::v4(KEEPALIVED)).unwrap();
    let addresses = adv.addresses.to_ip_addrs();
    Outgoing {
        version: Version::V3,
        vrid: adv.vrid,
        priority: adv.priority,
        interval_cs: adv.interval_cs,
        auth: Auth::None,
        addresses,
    }
}

/// keepalived 2.2.7's VRRPv3 advert over IPv6 (VRID 135, priority 100,
/// 10 cs, fe80::5 and 2001:db8::5) from fe80::683a:94ff:fe56:b9a4 to
/// ff02::12, after the IPv6 header.
const KEEPALIVED_V6_10CS: [u8; 40] = [
    0x31, 0x87, 0x64, 0x02, 0x00, 0x0a, 0x8a, 0xc4, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0x05, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x05,
];

#[test]
fn v3_over_ipv6_follows_keepalived_and_encodes_as_it_does() {
    let keepalived: IpAddr = "fe80::683a:94ff:fe56:b9a4".parse().unwrap();
    let group: IpAddr = crate::codec::v3::VRRP_GROUP_V6.into();
    let vips = ["fe80::5", "2001:db8::5"].map(|a| Vip {
        addr: a.parse().unwrap(),
        prefix_len: 64,
    });
    let me: IpAddr = "fe80::2".parse().unwrap();
    let cfg = RouterConfig {
        version: Version::V3,
        advert_int_cs: 10,
        vips: vips.to_vec(),
        ..RouterConfig::new(135, 90, me)
    };
    let (mut r, t0) = started(cfg.clone());
    drain(&mut r);
    let t = t0 + 5 * MS;
    let got = r.handle_packet_to(t, keepalived, group, 255, &KEEPALIVED_V6_10CS);
    assert_eq!(got, None);
    assert_eq!(r.current_master(), Some((keepalived, 100)));
    assert_eq!(r.stats().address_list_mismatch, 0);
    // An IPv4 advert is of the other family.
    let v4 = r.handle_packet(t, KEEPALIVED, 255, &KEEPALIVED_V3_10CS);
    assert_eq!(v4, Some(DropReason::AddressFamily));
    // Our adverts, from keepalived's address at its priority, are its bytes.
    let out = Outgoing {
        version: Version::V3,
        vrid: 135,
        priority: 100,
        interval_cs: 10,
        auth: Auth::None,
        addresses: vips.iter().map(|v| v.addr).collect(),
    };
    assert_eq!(out.encode(keepalived, group), KEEPALIVED_V6_10CS);
    // Master, it announces its IPv6 addresses.
    let (mut m, _) = master(cfg);
    let (_, t) = (drain(&mut m), m.poll_timeout().unwrap());
    m.handle_timeout(t);
    let Some(Output::SendAdvert(adv)) = drain(&mut m).into_iter().next() else {
        panic!("no advert");
    };
    let bytes = adv.encode(me, group);
    let back = AdvertisementV3::decode(
        &bytes,
        &PseudoHeader::V6 {
            src: fe80_2(),
            dst: crate::codec::v3::VRRP_GROUP_V6,
        },
    )
    .unwrap();
    assert_eq!(back.addresses.to_ip_addrs(), vips.map(|v| v.addr));
}

fn fe80_2() -> std::net::Ipv6Addr {
    "fe80::2".parse().unwrap()
}

#[test]
fn a_free_backup_follows_its_sync_group_at_once() {
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    r.handle_command(t0 + MS, Command::SyncMaster);
    assert_eq!(r.state(), State::Master);
    assert_eq!(
        drain(&mut r)[0],
        Output::Transition {
            from: State::Backup,
            to: State::Master,
            reason: Reason::SyncGroup
        }
    );
}

#[test]
fn a_stale_follow_order_does_not_take_a_better_masters_place() {
    // The group saw this router as a free backup, but before the order
    // arrived it heard a master that beats it: following would split the
    // group until that master preempted it back.
    let (mut r, t0) = started(cfg(100));
    drain(&mut r);
    let t1 = t0 + MS * 10;
    r.handle_packet(t1, HIGHER_IP, 255, &adv(150));
    assert!(r.backs_up_a_better_master());
    r.handle_command(t1 + MS, Command::SyncMaster);
    assert_eq!(r.state(), State::Backup);
    assert!(drain(&mut r).is_empty());
    assert_eq!(r.stats().sync_master_ignored, 1);
    // A held backup does not follow either.
    let (mut held, t0) = started(cfg(100));
    held.handle_command(t0, Command::SyncHold(true));
    held.handle_command(t0 + MS, Command::SyncMaster);
    assert_eq!(held.state(), State::Backup);
    assert_eq!(held.stats().sync_master_ignored, 1);
}

#[test]
fn a_restart_hands_over_silently_and_the_next_process_resumes_as_master() {
    let (mut r, t) = master(cfg(100));
    r.handle_command(t + MS, Command::HandOver);
    assert_eq!(r.state(), State::Initialize);
    // No priority-0 advert and the address stays for the next process.
    assert_eq!(
        drain(&mut r),
        [Output::Transition {
            from: State::Master,
            to: State::Initialize,
            reason: Reason::HandedOver
        }]
    );
    assert_eq!(r.poll_timeout(), None);
    assert_eq!(r.stats().priority_zero_sent, 0);

    let mut next = Router::new(cfg(100)).unwrap();
    let t0 = Instant::now();
    next.handle_command(t0, Command::Resume);
    assert_eq!(next.state(), State::Master);
    let out = drain(&mut next);
    assert_eq!(
        out[0],
        Output::Transition {
            from: State::Initialize,
            to: State::Master,
            reason: Reason::Resumed
        }
    );
    assert!(out.contains(&Output::AddVip(VIP)), "{out:?}");
    assert_eq!(sent_priorities(&out), [100]);
    // A better master heard afterwards still wins.
    next.handle_packet(t0 + MS, HIGHER_IP, 255, &adv(200));
    assert_eq!(next.state(), State::Backup);
}

#[test]
fn a_resume_with_a_failing_fault_tracker_starts_in_fault() {
    let mut r = Router::new(tracked(100, &[0])).unwrap();
    let t0 = Instant::now();
    set(&mut r, t0, 0, false);
    r.handle_command(t0, Command::Resume);
    assert_eq!(r.state(), State::Fault);
    assert!(!drain(&mut r).contains(&Output::AddVip(VIP)));
}
