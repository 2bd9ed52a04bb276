//! Interop with keepalived 2.2 (Debian's /usr/sbin/keepalived) using
//! `auth_type PASS`, both ways: keepalived master with our backup, our
//! master with keepalived backup; graceful stop (priority 0), preemption
//! and kill -9 + link down in each direction. Skipped (with a printed
//! reason) unless root and keepalived is installed; failed instead when
//! `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::Duration;

use netns::interop::{self, Flavor};
use netns::{keepalived_conf, mdi, skew, vrrpd_conf, KEEPALIVED};

fn keepalived_missing() -> bool {
    if std::path::Path::new(KEEPALIVED).exists() {
        return false;
    }
    test_support::skip(&format!(
        "{KEEPALIVED} not installed (apt-get install keepalived)"
    ));
    true
}

/// VRRPv2 at 1 s with PASS authentication, as the seed's keepalived.
fn v2() -> Flavor {
    Flavor {
        name: "VRRPv2",
        keepalived: |p| keepalived_conf(p, ""),
        ours: |p| vrrpd_conf(p, ""),
        skew_100: skew(100),
        mdi_100: mdi(100),
        settle: Duration::from_secs(8),
        adverts: 2,
        stop_slack: Duration::from_millis(500),
        kill_slack: Duration::from_secs(1),
    }
}

#[test]
fn keepalived_master_dnsha_backup() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    interop::keepalived_master_dnsha_backup("k", &v2());
}

#[test]
fn dnsha_master_keepalived_backup() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    interop::dnsha_master_keepalived_backup("m", &v2());
}
