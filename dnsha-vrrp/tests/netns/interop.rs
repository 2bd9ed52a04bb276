//! The keepalived interop flows, one per direction, run for VRRPv2 (PASS
//! auth, 1 s) and VRRPv3 (0.1 s) by `netns_keepalived*.rs`.

use std::time::{Duration, Instant};

use super::{Lab, StatusFile, VrrpLab};

/// One protocol setting both sides run with.
pub(crate) struct Flavor {
    /// In the printed figures.
    pub(crate) name: &'static str,
    /// keepalived's configuration at a priority.
    pub(crate) keepalived: fn(u8) -> String,
    /// Ours at a priority.
    pub(crate) ours: fn(u8) -> String,
    /// Skew_Time of the priority-100 backup.
    pub(crate) skew_100: Duration,
    /// Master_Down_Interval of the priority-100 backup.
    pub(crate) mdi_100: Duration,
    /// Longest wait for an election or preemption.
    pub(crate) settle: Duration,
    /// Adverts the backup must have counted before the checks.
    pub(crate) adverts: u64,
    /// Scheduling slack allowed past Skew_Time (graceful stop).
    pub(crate) stop_slack: Duration,
    /// Slack allowed past Master_Down_Interval (node death).
    pub(crate) kill_slack: Duration,
}

fn state(lab: &Lab, i: usize) -> String {
    lab.proc_ref(i).state()
}

/// keepalived (200) is master, we (100) back it up: no drop, its address
/// named as master; its SIGTERM hands the VIP to us within Skew_Time; a
/// restarted keepalived preempts us; its node dying (link down, kill -9)
/// hands the VIP to us within Master_Down_Interval.
pub(crate) fn keepalived_master_dnsha_backup(tag: &str, f: &Flavor) {
    let mut lab = Lab::new(tag, &["ka", "d"]);
    let ka = lab.keepalived("ka", &(f.keepalived)(200));
    let d = lab.vrrpd("d", &(f.ours)(100));
    lab.wait(f.settle, |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived not master\n{}", lab.logs()));
    lab.wait(Duration::from_secs(3), |l| {
        l.proc_ref(d).status()["adverts_received"].as_u64() >= Some(f.adverts)
    })
    .unwrap_or_else(|| panic!("our backup hears nothing\n{}", lab.logs()));
    let st = lab.proc_ref(d).status();
    assert_eq!(st["state"], "BACKUP", "{st}");
    assert_eq!(st["master"], lab.addr(0).to_string().as_str(), "{st}");
    assert_eq!(st["dropped_total"].as_u64(), Some(0), "{st}");
    assert!(!lab.holds_vip("d"));

    let t0 = Instant::now();
    lab.proc(ka).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(4), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.logs()));
    let t = t0.elapsed();
    println!(
        "{}: keepalived SIGTERM -> dnsha master after {t:?} (Skew_Time {:?})",
        f.name, f.skew_100
    );
    assert!(t <= f.skew_100 + f.stop_slack, "{t:?}");
    lab.proc(ka).term();
    assert!(!lab.holds_vip("ka"));

    let ka2 = lab.keepalived("ka", &(f.keepalived)(200));
    let t = lab
        .wait(f.settle, |l| l.holds_vip("ka") && !l.holds_vip("d"))
        .unwrap_or_else(|| panic!("keepalived did not preempt\n{}", lab.logs()));
    println!(
        "{}: keepalived restarted -> preempted us after {t:?}",
        f.name
    );
    lab.wait(Duration::from_secs(1), |l| state(l, d) == "BACKUP")
        .unwrap_or_else(|| panic!("we are not BACKUP\n{}", lab.logs()));

    lab.set_link("ka", false);
    lab.proc(ka2).kill9();
    let t = lab
        .wait(f.mdi_100 + Duration::from_secs(2), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("no failover\n{}", lab.logs()));
    println!(
        "{}: keepalived killed -> dnsha master after {t:?} (Master_Down_Interval {:?})",
        f.name, f.mdi_100
    );
    assert!(t <= f.mdi_100 + f.kill_slack, "{t:?}");
}

/// We (200) are master, keepalived (100) backs us up and never takes the
/// VIP; our SIGTERM hands it over within Skew_Time; we come back and
/// preempt; our node dying hands it over within Master_Down_Interval.
pub(crate) fn dnsha_master_keepalived_backup(tag: &str, f: &Flavor) {
    let mut lab = Lab::new(tag, &["d", "ka"]);
    let d = lab.vrrpd("d", &(f.ours)(200));
    let ka = lab.keepalived("ka", &(f.keepalived)(100));
    lab.wait(f.settle, |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("we are not master\n{}", lab.logs()));
    // keepalived accepts our adverts and stays backup.
    let took = lab.wait(Duration::from_secs(3), |l| l.holds_vip("ka"));
    assert!(took.is_none(), "keepalived took the VIP\n{}", lab.logs());
    let log = lab.proc_ref(ka).log_text();
    assert!(log.contains("Entering BACKUP STATE"), "{log}");
    assert!(!log.contains("Entering MASTER STATE"), "{log}");

    let t0 = Instant::now();
    lab.proc(d).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(4), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived did not take over\n{}", lab.logs()));
    let t = t0.elapsed();
    println!(
        "{}: dnsha SIGTERM -> keepalived master after {t:?} (Skew_Time {:?})",
        f.name, f.skew_100
    );
    assert!(t <= f.skew_100 + f.stop_slack, "{t:?}");
    lab.proc(d).term();
    assert!(!lab.holds_vip("d"));

    let d2 = lab.vrrpd("d", &(f.ours)(200));
    let t = lab
        .wait(f.settle, |l| l.holds_vip("d") && !l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("we did not preempt\n{}", lab.logs()));
    println!(
        "{}: dnsha restarted -> preempted keepalived after {t:?}",
        f.name
    );
    lab.wait(Duration::from_secs(1), |l| state(l, d2) == "MASTER")
        .unwrap_or_else(|| panic!("we are not MASTER\n{}", lab.logs()));

    lab.set_link("d", false);
    lab.proc(d2).kill9();
    let t = lab
        .wait(f.mdi_100 + Duration::from_secs(2), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived did not fail over\n{}", lab.logs()));
    println!(
        "{}: dnsha killed -> keepalived master after {t:?} (Master_Down_Interval {:?})",
        f.name, f.mdi_100
    );
    assert!(t <= f.mdi_100 + f.kill_slack, "{t:?}");
}
