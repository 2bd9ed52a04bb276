//! VRRPv3 interop with keepalived 2.2 (Debian's /usr/sbin/keepalived,
//! `version 3`, `advert_int 0.1`) over IPv4, both ways: each side master in
//! turn, graceful stop (priority 0) and node death (link down and kill -9).
//! Skipped (with a printed reason) unless root and keepalived is installed;
//! failed instead when `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::Duration;

use netns::interop::{self, Flavor};
use netns::{keepalived_v3_conf, skew_v3, vrrpd_v3_conf, KEEPALIVED};

/// The advertisement interval of both sides.
const INTERVAL: Duration = Duration::from_millis(100);

fn keepalived_missing() -> bool {
    if std::path::Path::new(KEEPALIVED).exists() {
        return false;
    }
    test_support::skip(&format!(
        "{KEEPALIVED} not installed (apt-get install keepalived)"
    ));
    true
}

/// VRRPv3 at 10 centiseconds, no authentication.
fn v3() -> Flavor {
    Flavor {
        name: "VRRPv3 0.1 s",
        keepalived: |p| keepalived_v3_conf(p, "0.1"),
        ours: |p| vrrpd_v3_conf(p, "0.1"),
        skew_100: skew_v3(100, INTERVAL),
        mdi_100: INTERVAL * 3 + skew_v3(100, INTERVAL),
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
