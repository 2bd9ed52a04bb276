//! VRRPv3 interop with keepalived 2.2 (Debian's /usr/sbin/keepalived,
//! `version 3`, `advert_int 0.1`) over IPv4, both ways: each side master in
//! turn, graceful stop (priority 0) and node death (link down and kill -9).
//! Skipped (with a printed reason) unless root and keepalived is installed;
//! failed instead when `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::{Duration, Instant};

use netns::{keepalived_v3_conf, skew_v3, vrrpd_v3_conf, Lab, StatusFile, VrrpLab, KEEPALIVED};

/// The advertisement interval of both sides.
const INTERVAL: Duration = Duration::from_millis(100);
/// Scheduling and namespace slack on a shared machine.
const SLACK: Duration = Duration::from_millis(400);

fn keepalived_missing() -> bool {
    if std::path::Path::new(KEEPALIVED).exists() {
        return false;
    }
    test_support::skip(&format!(
        "{KEEPALIVED} not installed (apt-get install keepalived)"
    ));
    true
}

/// Master_Down_Interval of a v3 backup at `INTERVAL`.
fn mdi_v3(priority: u8) -> Duration {
    INTERVAL * 3 + skew_v3(priority, INTERVAL)
}

#[test]
fn keepalived_v3_master_dnsha_backup_at_ten_centiseconds() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    let mut lab = Lab::new("k3", &["ka", "d"]);
    let ka = lab.keepalived("ka", &keepalived_v3_conf(200, "0.1"));
    let d = lab.vrrpd("d", &vrrpd_v3_conf(100, "0.1"));
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived not master\n{}", lab.logs()));
    lab.wait(Duration::from_secs(2), |l| {
        l.proc_ref(d).status()["adverts_received"].as_u64() >= Some(10)
    })
    .unwrap_or_else(|| panic!("our backup hears nothing\n{}", lab.logs()));
    let st = lab.proc_ref(d).status();
    assert_eq!(st["state"], "BACKUP", "{st}");
    assert_eq!(st["dropped_total"].as_u64(), Some(0), "{st}");
    assert!(!lab.holds_vip("d"));

    // keepalived stops gracefully: priority 0, we take over after the v3
    // Skew_Time (61 ms at 10 cs).
    let t0 = Instant::now();
    lab.proc(ka).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(3), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.logs()));
    let t = t0.elapsed();
    println!(
        "keepalived v3 SIGTERM -> dnsha master after {t:?} (Skew_Time {:?})",
        skew_v3(100, INTERVAL)
    );
    assert!(t <= skew_v3(100, INTERVAL) + SLACK, "{t:?}");
    lab.proc(ka).term();

    // keepalived comes back with the higher priority and preempts us.
    let ka2 = lab.keepalived("ka", &keepalived_v3_conf(200, "0.1"));
    lab.wait(Duration::from_secs(8), |l| {
        l.holds_vip("ka") && !l.holds_vip("d")
    })
    .unwrap_or_else(|| panic!("keepalived did not preempt\n{}", lab.logs()));

    // keepalived's node dies: we take over within Master_Down_Interval.
    lab.set_link("ka", false);
    lab.proc(ka2).kill9();
    let t = lab
        .wait(Duration::from_secs(3), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("no failover\n{}", lab.logs()));
    println!(
        "keepalived v3 killed -> dnsha master after {t:?} (Master_Down_Interval {:?})",
        mdi_v3(100)
    );
    assert!(t <= mdi_v3(100) + SLACK, "{t:?}");
}

#[test]
fn dnsha_v3_master_keepalived_backup_at_ten_centiseconds() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    let mut lab = Lab::new("m3", &["d", "ka"]);
    let d = lab.vrrpd("d", &vrrpd_v3_conf(200, "0.1"));
    let ka = lab.keepalived("ka", &keepalived_v3_conf(100, "0.1"));
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("we are not master\n{}", lab.logs()));
    // keepalived accepts our v3 adverts (checksum over the pseudo-header,
    // centisecond interval) and stays backup.
    let took = lab.wait(Duration::from_secs(3), |l| l.holds_vip("ka"));
    assert!(took.is_none(), "keepalived took the VIP\n{}", lab.logs());
    let log = lab.proc_ref(ka).log_text();
    assert!(log.contains("Entering BACKUP STATE"), "{log}");
    assert!(!log.contains("Entering MASTER STATE"), "{log}");

    // We stop gracefully: keepalived takes over after its Skew_Time.
    let t0 = Instant::now();
    lab.proc(d).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(3), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived did not take over\n{}", lab.logs()));
    let t = t0.elapsed();
    println!(
        "dnsha v3 SIGTERM -> keepalived master after {t:?} (Skew_Time {:?})",
        skew_v3(100, INTERVAL)
    );
    assert!(t <= skew_v3(100, INTERVAL) + SLACK, "{t:?}");
    lab.proc(d).term();

    // We come back with the higher priority and preempt keepalived; then
    // our node dies and keepalived takes over within its
    // Master_Down_Interval.
    let d2 = lab.vrrpd("d", &vrrpd_v3_conf(200, "0.1"));
    lab.wait(Duration::from_secs(8), |l| {
        l.holds_vip("d") && !l.holds_vip("ka")
    })
    .unwrap_or_else(|| panic!("we did not preempt\n{}", lab.logs()));
    lab.set_link("d", false);
    lab.proc(d2).kill9();
    let t = lab
        .wait(Duration::from_secs(3), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived did not fail over\n{}", lab.logs()));
    println!(
        "dnsha v3 killed -> keepalived master after {t:?} (Master_Down_Interval {:?})",
        mdi_v3(100)
    );
    assert!(t <= mdi_v3(100) + SLACK, "{t:?}");
}
