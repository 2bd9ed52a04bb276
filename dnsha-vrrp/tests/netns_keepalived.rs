//! Interop with keepalived 2.2 (Debian's /usr/sbin/keepalived), both
//! ways, with VRRPv2 (`auth_type PASS`, 1 s) and VRRPv3 (`version 3`,
//! `advert_int 0.1`): keepalived master with our backup, our master with
//! keepalived backup; graceful stop (priority 0), preemption and kill -9 +
//! link down in each direction. Skipped (with a printed
//! reason) unless root and keepalived is installed; failed instead when
//! `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::Duration;

use netns::interop::{self, Flavor};
use netns::{
    keepalived_conf, keepalived_v3_conf, mdi, skew, skew_v3, vrrpd_conf, vrrpd_v3_conf, KEEPALIVED,
};

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

/// VRRPv3 at 10 centiseconds, no authentication.
fn v3() -> Flavor {
    let interval = Duration::from_millis(100);
    Flavor {
        name: "VRRPv3 0.1 s",
        keepalived: |p| keepalived_v3_conf(p, "0.1"),
        ours: |p| vrrpd_v3_conf(p, "0.1"),
        skew_100: skew_v3(100, interval),
        mdi_100: interval * 3 + skew_v3(100, interval),
        settle: Duration::from_secs(8),
        adverts: 10,
        // Scheduling and namespace slack on a shared machine.
        stop_slack: Duration::from_millis(400),
        kill_slack: Duration::from_millis(400),
    }
}

#[test]
fn keepalived_v3_master_dnsha_backup_at_ten_centiseconds() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    interop::keepalived_master_dnsha_backup("k3", &v3());
}

#[test]
fn dnsha_v3_master_keepalived_backup_at_ten_centiseconds() {
    require_lab!();
    if keepalived_missing() {
        return;
    }
    interop::dnsha_master_keepalived_backup("m3", &v3());
}
