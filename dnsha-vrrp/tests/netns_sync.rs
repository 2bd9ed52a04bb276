//! Sync groups in namespaces (two `vrrpd` nodes, each with two VRRPv3
//! instances at 0.1 s in one `sync_group`): a FAULT of one member moves
//! both addresses to the other node, and back when it clears; a member that
//! loses its election to a third node takes the other member's address off
//! its node too. Skipped (with a printed reason) unless root; failed
//! instead when `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::Duration;

use netns::{vrrpd_instance, Lab, StatusFile, VrrpLab};

const VIP1: &str = "192.168.1.5";
const VIP2: &str = "192.168.1.6";

/// Two instances in sync group `g`; `VI_1` also runs `track` (weight 0)
/// when given.
fn group_conf(priority: u8, track: Option<&str>) -> String {
    let script = track.map_or_else(String::new, |cmd| {
        format!("track_script = [{{ command = \"{cmd}\", interval = 0.1 }}]\n")
    });
    let lines = "version = 3\nadvert_int = 0.1\nsync_group = \"g\"";
    vrrpd_instance("VI_1", 134, priority, VIP1, &format!("{lines}\n{script}"))
        + &vrrpd_instance("VI_2", 135, priority, VIP2, lines)
}

fn holds(lab: &Lab, node: &str) -> [bool; 2] {
    [lab.holds(node, VIP1), lab.holds(node, VIP2)]
}

#[test]
fn a_fault_moves_the_whole_group_and_back() {
    require_lab!();
    let mut lab = Lab::new("sg", &["a", "b"]);
    let flag = lab.dir.path().join("fault");
    let check = format!("test ! -e {}", flag.display());
    let _a = lab.vrrpd("a", &group_conf(150, Some(&check)));
    let _b = lab.vrrpd("b", &group_conf(100, None));
    lab.wait(Duration::from_secs(5), |l| {
        holds(l, "a") == [true, true] && holds(l, "b") == [false, false]
    })
    .unwrap_or_else(|| panic!("A does not hold both\n{}", lab.logs()));
    // VI_1's own tracker fails on A: VI_2 follows it into FAULT, and B
    // takes both addresses.
    std::fs::write(&flag, "").unwrap();
    let t = lab
        .wait(Duration::from_secs(3), |l| {
            holds(l, "b") == [true, true] && holds(l, "a") == [false, false]
        })
        .unwrap_or_else(|| panic!("the group did not move to B\n{}", lab.logs()));
    println!("VI_1 FAULT on A: both addresses on B after {t:?}");
    // Cleared: A preempts with both.
    std::fs::remove_file(&flag).unwrap();
    let t = lab
        .wait(Duration::from_secs(3), |l| {
            holds(l, "a") == [true, true] && holds(l, "b") == [false, false]
        })
        .unwrap_or_else(|| panic!("the group did not come back to A\n{}", lab.logs()));
    println!("fault cleared: both addresses on A after {t:?}");
}

#[test]
fn a_member_that_loses_its_election_takes_the_group_off_its_node() {
    require_lab!();
    let mut lab = Lab::new("sh", &["a", "b", "c"]);
    let a = lab.vrrpd("a", &group_conf(150, None));
    let _b = lab.vrrpd("b", &group_conf(100, None));
    lab.wait(Duration::from_secs(5), |l| holds(l, "a") == [true, true])
        .unwrap_or_else(|| panic!("A does not hold both\n{}", lab.logs()));
    // Node C runs VI_1 only, at 200: A's VI_1 loses to it, and A's VI_2
    // resigns, so B (100) takes VIP2: A keeps nothing.
    let c_conf = vrrpd_instance("VI_1", 134, 200, VIP1, "version = 3\nadvert_int = 0.1");
    let _c = lab.vrrpd("c", &c_conf);
    let t = lab
        .wait(Duration::from_secs(3), |l| {
            l.holds("c", VIP1) && l.holds("b", VIP2) && holds(l, "a") == [false, false]
        })
        .unwrap_or_else(|| panic!("A kept an address\n{}", lab.logs()));
    println!("VI_1 lost to C: A holds nothing after {t:?}");
    // And it stays so: A's VI_2 is held and does not preempt B.
    let moved = lab.wait(Duration::from_secs(2), |l| holds(l, "a") != [false, false]);
    assert!(moved.is_none(), "A took an address back\n{}", lab.logs());
    let st = lab.proc_ref(a).status();
    assert_eq!(st["lost_election"], true, "{st}");
}
