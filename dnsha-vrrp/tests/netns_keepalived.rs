//! Interop with keepalived 2.2 (Debian's /usr/sbin/keepalived) using
//! `auth_type PASS`, both ways: keepalived master with our backup, our
//! master with keepalived backup; graceful stop (priority 0), preemption
//! and kill -9 + link down in each direction. Skipped (with a printed
//! reason) unless root and keepalived is installed; failed instead when
//! `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::{Duration, Instant};

use netns::{keepalived_conf, mdi, skew, vrrpd_conf, Lab, StatusFile, VrrpLab, KEEPALIVED};

const SLACK: Duration = Duration::from_millis(500);

fn keepalived_missing() -> bool {
    if std::path::Path::new(KEEPALIVED).exists() {
        return false;
    }
    test_support::skip(&format!(
        "{KEEPALIVED} not installed (apt-get install keepalived)"
    ));
    true
}

fn state(lab: &Lab, i: usize) -> String {
    lab.proc_ref(i).state()
}

#[test]
fn keepalived_master_dnsha_backup() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    let mut lab = Lab::new("k", &["ka", "d"]);
    let ka = lab.keepalived("ka", &keepalived_conf(200, ""));
    let d = lab.vrrpd("d", &vrrpd_conf(100, ""));
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived not master\n{}", lab.logs()));
    lab.wait(Duration::from_secs(2), |l| {
        l.proc_ref(d).status()["adverts_received"].as_u64() >= Some(2)
    })
    .unwrap_or_else(|| panic!("our backup hears nothing\n{}", lab.logs()));
    let st = lab.proc_ref(d).status();
    assert_eq!(st["state"], "BACKUP", "{st}");
    assert_eq!(st["master"], lab.addr(0).to_string().as_str(), "{st}");
    assert_eq!(st["dropped_total"].as_u64(), Some(0), "{st}");
    assert!(!lab.holds_vip("d"));

    // keepalived stops gracefully: priority 0, we take over after Skew_Time.
    let t0 = Instant::now();
    lab.proc(ka).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(4), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.logs()));
    let t = t0.elapsed();
    println!(
        "keepalived SIGTERM -> dnsha master after {t:?} (Skew_Time {:?})",
        skew(100)
    );
    assert!(t <= skew(100) + SLACK, "{t:?}");
    lab.proc(ka).term();
    assert!(!lab.holds_vip("ka"));

    // keepalived comes back with a higher priority and preempts us.
    let ka2 = lab.keepalived("ka", &keepalived_conf(200, ""));
    let t = lab
        .wait(mdi(200) + Duration::from_secs(3), |l| {
            l.holds_vip("ka") && !l.holds_vip("d")
        })
        .unwrap_or_else(|| panic!("keepalived did not preempt\n{}", lab.logs()));
    println!("keepalived restarted -> preempted us after {t:?}");
    lab.wait(Duration::from_secs(1), |l| state(l, d) == "BACKUP")
        .unwrap_or_else(|| panic!("we are not BACKUP\n{}", lab.logs()));

    // keepalived's node dies: link down and processes killed.
    lab.set_link("ka", false);
    lab.proc(ka2).kill9();
    let t = lab
        .wait(mdi(100) + Duration::from_secs(2), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("no failover\n{}", lab.logs()));
    println!(
        "keepalived killed -> dnsha master after {t:?} (Master_Down_Interval {:?})",
        mdi(100)
    );
    assert!(t <= mdi(100) + Duration::from_secs(1), "{t:?}");
}

#[test]
fn dnsha_master_keepalived_backup() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    let mut lab = Lab::new("m", &["d", "ka"]);
    let d = lab.vrrpd("d", &vrrpd_conf(200, ""));
    let ka = lab.keepalived("ka", &keepalived_conf(100, ""));
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("d"))
        .unwrap_or_else(|| panic!("we are not master\n{}", lab.logs()));
    // keepalived accepts our adverts (PASS auth, checksum, interval) and
    // stays backup.
    let took = lab.wait(Duration::from_secs(5), |l| l.holds_vip("ka"));
    assert!(took.is_none(), "keepalived took the VIP\n{}", lab.logs());
    let log = lab.proc_ref(ka).log_text();
    assert!(log.contains("Entering BACKUP STATE"), "{log}");
    assert!(!log.contains("Entering MASTER STATE"), "{log}");

    // We stop gracefully: keepalived takes over after its Skew_Time.
    let t0 = Instant::now();
    lab.proc(d).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(4), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived did not take over\n{}", lab.logs()));
    let t = t0.elapsed();
    println!(
        "dnsha SIGTERM -> keepalived master after {t:?} (Skew_Time {:?})",
        skew(100)
    );
    assert!(t <= skew(100) + SLACK, "{t:?}");
    lab.proc(d).term();
    assert!(!lab.holds_vip("d"));

    // We come back with the higher priority and preempt keepalived.
    let d2 = lab.vrrpd("d", &vrrpd_conf(200, ""));
    let t = lab
        .wait(mdi(200) + Duration::from_secs(3), |l| {
            l.holds_vip("d") && !l.holds_vip("ka")
        })
        .unwrap_or_else(|| panic!("we did not preempt\n{}", lab.logs()));
    println!("dnsha restarted -> preempted keepalived after {t:?}");
    lab.wait(Duration::from_secs(1), |l| state(l, d2) == "MASTER")
        .unwrap_or_else(|| panic!("we are not MASTER\n{}", lab.logs()));

    // Our node dies: link down and process killed.
    lab.set_link("d", false);
    lab.proc(d2).kill9();
    let t = lab
        .wait(mdi(100) + Duration::from_secs(2), |l| l.holds_vip("ka"))
        .unwrap_or_else(|| panic!("keepalived did not fail over\n{}", lab.logs()));
    println!(
        "dnsha killed -> keepalived master after {t:?} (Master_Down_Interval {:?})",
        mdi(100)
    );
    assert!(t <= mdi(100) + Duration::from_secs(1), "{t:?}");
}
