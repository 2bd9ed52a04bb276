//! Two `vrrpd` (examples/vrrpd.rs) nodes on a bridge in network namespaces:
//! election, failover on kill, priority-0 handover, preemption, nopreempt,
//! trackers, and bad adverts. Skipped (with a printed reason) unless root;
//! failed instead when `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::Duration;

use netns::{mdi, skew, vrrpd_conf, Lab, StatusFile, VrrpLab};

const SLACK: Duration = Duration::from_millis(500);

/// Exactly one holder after the election; kill -9 + link down moves the VIP
/// within Master_Down_Interval + 1 s; the restarted higher-priority node
/// preempts; SIGTERM (priority 0) moves it within Skew_Time + 0.5 s. At no
/// point do both hold the VIP for longer than one advert interval.
#[test]
fn two_nodes_election_failover_and_graceful_stop() {
    require_lab!();
    let mut lab = Lab::new("e", &["a", "b"]);
    let a = lab.vrrpd("a", &vrrpd_conf(100, ""));
    let b = lab.vrrpd("b", &vrrpd_conf(200, ""));

    let t = lab
        .wait(Duration::from_secs(8), |l| l.holds_vip("b"))
        .unwrap_or_else(|| panic!("no master\n{}", lab.logs()));
    println!("election: B holds the VIP after {t:?}");
    // Watch for two seconds: exactly one holder.
    let overlap = lab.wait(Duration::from_secs(2), |l| l.holds_vip("a"));
    assert!(overlap.is_none(), "both hold the VIP\n{}", lab.logs());
    lab.expect_state(a, "BACKUP");
    lab.expect_state(b, "MASTER");

    // Kill the master: process and link.
    lab.proc(b).kill9();
    lab.set_link("b", false);
    let t = lab
        .wait(mdi(100) + Duration::from_secs(2), |l| l.holds_vip("a"))
        .unwrap_or_else(|| panic!("A never took over\n{}", lab.logs()));
    println!(
        "failover after kill -9: {t:?} (Master_Down_Interval {:?})",
        mdi(100)
    );
    assert!(t <= mdi(100) + Duration::from_secs(1), "{t:?}");

    // B comes back (its stale VIP is still configured) and preempts.
    lab.set_link("b", true);
    let b2 = lab.vrrpd("b", &vrrpd_conf(200, ""));
    let mut both = Duration::ZERO;
    let step = Duration::from_millis(20);
    let t = lab
        .wait(mdi(200) + Duration::from_secs(3), |l| {
            let (ha, hb) = (l.holds_vip("a"), l.holds_vip("b"));
            if ha && hb {
                both += step;
            }
            hb && !ha
        })
        .unwrap_or_else(|| panic!("B never preempted\n{}", lab.logs()));
    println!("preemption by restarted B: {t:?}, both held ~{both:?}");
    assert!(
        both <= Duration::from_secs(1),
        "both held the VIP for {both:?}"
    );
    lab.expect_state(b2, "MASTER");
    lab.expect_state(a, "BACKUP");

    // Graceful stop: priority 0, A takes over after its Skew_Time.
    let stopped = std::time::Instant::now();
    lab.proc(b2).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(4), |l| l.holds_vip("a"))
        .unwrap_or_else(|| panic!("A never took over\n{}", lab.logs()));
    let t = stopped.elapsed();
    lab.proc(b2).term();
    assert!(!lab.holds_vip("b"), "VIP left behind on shutdown");
    println!("handover after SIGTERM: {t:?} (Skew_Time {:?})", skew(100));
    assert!(t <= skew(100) + SLACK, "{t:?}");
    let st = lab.proc(a).status();
    assert!(
        st["priority_zero_received"].as_u64().unwrap_or(0) >= 1,
        "{st}"
    );
}

/// nopreempt: a higher-priority node joining a running master stays backup.
/// Then the master's tracked pool fails (FAULT by default, fed through the
/// generic tracker input): the backup takes over after Skew_Time because
/// FAULT sends priority 0; when the pool recovers, the old master comes
/// back as BACKUP.
#[test]
fn nopreempt_and_track_pools() {
    require_lab!();
    let mut lab = Lab::new("n", &["a", "b"]);
    let a = lab.vrrpd("a", &vrrpd_conf(100, "track_pools = [\"coredns\"]"));
    lab.wait(mdi(100) + SLACK, |l| l.holds_vip("a"))
        .unwrap_or_else(|| panic!("A not master\n{}", lab.logs()));
    let b = lab.vrrpd("b", &vrrpd_conf(200, "nopreempt = true"));
    let took = lab.wait(mdi(200) + Duration::from_secs(2), |l| l.holds_vip("b"));
    assert!(took.is_none(), "nopreempt B took over\n{}", lab.logs());
    lab.expect_state(b, "BACKUP");
    assert!(lab.holds_vip("a"));

    lab.proc(a).send_line("pool coredns down");
    let t = lab
        .wait(Duration::from_secs(3), |l| l.holds_vip("b"))
        .unwrap_or_else(|| panic!("B never took over\n{}", lab.logs()));
    println!("pool down on master (FAULT): B holds the VIP after {t:?}");
    assert!(t <= skew(200) + SLACK, "{t:?}");
    assert!(!lab.holds_vip("a"));
    lab.expect_state(a, "FAULT");

    lab.proc(a).send_line("pool coredns up");
    lab.wait(Duration::from_secs(2), |l| l.proc_state_is(0, "BACKUP"))
        .unwrap_or_else(|| panic!("A not back to BACKUP\n{}", lab.logs()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(lab.holds_vip("b") && !lab.holds_vip("a"));
}

/// A check script with a negative weight lowers the master's priority under
/// the backup's: the VIP moves; when the check passes again, it moves back
/// (preempt).
#[test]
fn track_script_weight_moves_vip() {
    require_lab!();
    let mut lab = Lab::new("s", &["a", "b"]);
    let flag = lab.dir.path().join("broken");
    let script = format!(
        "track_script = [{{ name = \"chk\", command = \"test ! -e {}\", interval = 0.2, weight = -100, fall = 2, rise = 2 }}]",
        flag.display()
    );
    let _a = lab.vrrpd("a", &vrrpd_conf(150, &script));
    let _b = lab.vrrpd("b", &vrrpd_conf(100, ""));
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("a"))
        .unwrap_or_else(|| panic!("A not master\n{}", lab.logs()));
    std::fs::write(&flag, b"").expect("flag");
    let t = lab
        .wait(mdi(100) + Duration::from_secs(2), |l| l.holds_vip("b"))
        .unwrap_or_else(|| panic!("B never took over\n{}", lab.logs()));
    println!("check failing on master (weight -100): VIP moved after {t:?}");
    assert!(lab
        .wait(Duration::from_secs(1), |l| !l.holds_vip("a"))
        .is_some());
    std::fs::remove_file(&flag).expect("flag");
    let t = lab
        .wait(mdi(150) + Duration::from_secs(2), |l| {
            l.holds_vip("a") && !l.holds_vip("b")
        })
        .unwrap_or_else(|| panic!("A never preempted back\n{}", lab.logs()));
    println!("check passing again: VIP back after {t:?}");
}

/// TTL 254, wrong checksum, wrong password, truncated, count mismatch,
/// VRRPv3 and interval mismatch, each sent 5 times as priority-0 adverts
/// from a third namespace: all dropped and counted by reason, no state
/// change. The same advert unbroken does make the backup take over.
#[test]
fn bad_adverts_are_dropped_and_counted() {
    require_lab!();
    let mut lab = Lab::new("x", &["a", "b", "c"]);
    let a = lab.vrrpd("a", &vrrpd_conf(100, ""));
    let _b = lab.vrrpd("b", &vrrpd_conf(200, ""));
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("b"))
        .unwrap_or_else(|| panic!("B not master\n{}", lab.logs()));
    std::thread::sleep(Duration::from_millis(300));
    let before = lab.proc(a).status();
    let kinds = [
        ("ttl254", "ttl"),
        ("checksum", "checksum"),
        ("password", "password"),
        ("truncated", "truncated"),
        ("count", "count_mismatch"),
        ("v3", "version"),
        ("interval", "interval"),
    ];
    let src = lab.addr(2).to_string();
    for (kind, _) in kinds {
        lab.inject(
            "c",
            &[
                "--iface", "eth0", "--src", &src, "--vrid", "134", "--prio", "0", "--pass",
                "dnsvip", "--kind", kind, "--repeat", "5", "--gap-ms", "10",
            ],
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let after = lab.proc(a).status();
    println!("drops by reason: {}", after["dropped"]);
    for (_, reason) in kinds {
        assert_eq!(
            after["dropped"][reason].as_u64(),
            Some(5),
            "{reason}: {after}\n{}",
            lab.logs()
        );
    }
    assert_eq!(after["dropped_total"].as_u64(), Some(35));
    assert_eq!(after["state"], "BACKUP");
    assert_eq!(after["transitions"], before["transitions"]);
    assert_eq!(after["priority_zero_received"].as_u64(), Some(0));
    assert!(lab.holds_vip("b") && !lab.holds_vip("a"));

    let b_after = lab.proc_status(1);
    assert_eq!(b_after["dropped_total"].as_u64(), Some(35), "{b_after}");
    assert_eq!(b_after["state"], "MASTER");

    // Control: a well-formed advert from the same sender is acted upon: at
    // priority 250 it makes the master step down and A follow the sender.
    lab.inject(
        "c",
        &[
            "--iface", "eth0", "--src", &src, "--vrid", "134", "--prio", "250", "--pass", "dnsvip",
            "--kind", "good",
        ],
    );
    lab.wait(Duration::from_secs(2), |l| l.proc_state_is(1, "BACKUP"))
        .unwrap_or_else(|| panic!("good advert ignored\n{}", lab.logs()));
    // A may still be handling B's last advert when B steps down: wait for
    // it to name the sender as master rather than reading it at once.
    lab.wait(Duration::from_secs(2), |l| {
        l.proc_status(0)["master"] == src.as_str()
    })
    .unwrap_or_else(|| {
        panic!(
            "A does not follow the sender: {}\n{}",
            lab.proc_status(0),
            lab.logs()
        )
    });
    // The sender is silent afterwards: B takes the VIP back.
    lab.wait(mdi(200) + Duration::from_secs(2), |l| {
        l.proc_state_is(1, "MASTER") && l.holds_vip("b") && !l.holds_vip("a")
    })
    .unwrap_or_else(|| panic!("did not settle back\n{}", lab.logs()));
}

trait LabExt {
    /// The status file lags the kernel by up to one write period.
    fn expect_state(&self, i: usize, state: &str);
    fn proc_status(&self, i: usize) -> serde_json::Value;
    fn proc_state_is(&self, i: usize, state: &str) -> bool;
}

impl LabExt for Lab {
    fn expect_state(&self, i: usize, state: &str) {
        if self
            .wait(Duration::from_secs(1), |l| l.proc_state_is(i, state))
            .is_none()
        {
            panic!(
                "process {i} not {state}: {}\n{}",
                self.proc_status(i),
                self.logs()
            );
        }
    }
    fn proc_status(&self, i: usize) -> serde_json::Value {
        self.proc_ref(i).status()
    }
    fn proc_state_is(&self, i: usize, state: &str) -> bool {
        self.proc_ref(i).state() == state
    }
}

/// Two instances per process, active-active (VI_1 master on A, VI_2 master
/// on B); the notify command runs for every change, in order, never two at
/// once (the script sleeps 0.2 s, and its start/end marks never interleave).
#[test]
fn two_instances_active_active_with_notify_queue() {
    require_lab!();
    let mut lab = Lab::new("i", &["a", "b"]);
    let script = |node: &str| {
        let path = lab.dir.path().join(format!("notify-{node}.sh"));
        std::fs::write(
            &path,
            "#!/bin/sh\necho \"start $2 $3 $4\" >> \"$0.log\"\nsleep 0.2\necho \"end $2 $3 $4\" >> \"$0.log\"\n",
        )
        .expect("script");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        path
    };
    let (sa, sb) = (script("a"), script("b"));
    let conf = |p1: u8, p2: u8, s: &std::path::Path| {
        format!(
            "[[vrrp]]
name = \"VI_1\"
interface = \"eth0\"
virtual_router_id = 1
priority = {p1}
auth_pass = \"dnsvip\"
virtual_ipaddress = [\"192.168.1.5\"]
notify = \"{s}\"

[[vrrp]]
name = \"VI_2\"
interface = \"eth0\"
virtual_router_id = 2
priority = {p2}
virtual_ipaddress = [\"192.168.1.6\"]
notify = \"{s}\"
",
            s = s.display()
        )
    };
    let a = lab.vrrpd("a", &conf(200, 100, &sa));
    let _b = lab.vrrpd("b", &conf(100, 200, &sb));
    lab.wait(Duration::from_secs(8), |l| {
        l.holds("a", "192.168.1.5") && l.holds("b", "192.168.1.6")
    })
    .unwrap_or_else(|| panic!("not active-active\n{}", lab.logs()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(!lab.holds("a", "192.168.1.6") && !lab.holds("b", "192.168.1.5"));

    // A stops: B takes VI_1 too; A's queue finishes before it exits.
    lab.proc(a).term();
    lab.wait(Duration::from_secs(3), |l| l.holds("b", "192.168.1.5"))
        .unwrap_or_else(|| panic!("B did not take VI_1\n{}", lab.logs()));
    std::thread::sleep(Duration::from_millis(800));
    let read = |s: &std::path::Path| {
        std::fs::read_to_string(format!("{}.log", s.display())).expect("notify log")
    };
    let (la, lb) = (read(&sa), read(&sb));
    println!("notify on A:\n{la}notify on B:\n{lb}");
    for log in [&la, &lb] {
        // Strictly one at a time: start, end, start, end...
        for (i, line) in log.lines().enumerate() {
            let want = if i % 2 == 0 { "start " } else { "end " };
            assert!(line.starts_with(want), "overlapping notify runs:\n{log}");
        }
    }
    let seq = |log: &str, inst: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.starts_with("start") && l.contains(inst))
            .map(|l| l.split(' ').nth(2).unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(seq(&la, "VI_1"), ["BACKUP", "MASTER", "STOP"], "{la}");
    assert_eq!(seq(&la, "VI_2"), ["BACKUP", "STOP"], "{la}");
    assert_eq!(seq(&lb, "VI_1"), ["BACKUP", "MASTER"], "{lb}");
    assert_eq!(seq(&lb, "VI_2"), ["BACKUP", "MASTER"], "{lb}");
    assert!(la.contains("start VI_1 MASTER 200"), "{la}");
}

/// Unicast mode (`unicast_src_ip` + `unicast_peer`): election and priority-0
/// handover work without multicast; gratuitous ARP announces the VIP (seen
/// with tcpdump on the other node, when tcpdump is installed).
#[test]
fn unicast_peers_and_gratuitous_arp() {
    require_lab!();
    let mut lab = Lab::new("u", &["a", "b"]);
    let tcpdump = std::path::Path::new("/usr/bin/tcpdump");
    let capture = tcpdump
        .exists()
        .then(|| lab.spawn("a", tcpdump, &["-i", "eth0", "-n", "-l", "arp"], false));
    let (ip_a, ip_b) = (lab.addr(0).to_string(), lab.addr(1).to_string());
    let a = lab.vrrpd(
        "a",
        &vrrpd_conf(
            100,
            &format!("unicast_src_ip = \"{ip_a}\"\nunicast_peer = [\"{ip_b}\"]"),
        ),
    );
    let b = lab.vrrpd(
        "b",
        &vrrpd_conf(
            200,
            &format!(
                "unicast_src_ip = \"{ip_b}\"\nunicast_peer = [\"{ip_a}\"]\ngarp_master_delay = 1"
            ),
        ),
    );
    lab.wait(Duration::from_secs(8), |l| l.holds_vip("b"))
        .unwrap_or_else(|| panic!("no master\n{}", lab.logs()));
    lab.wait(Duration::from_secs(2), |l| {
        l.proc_status(a)["adverts_received"].as_u64() >= Some(2)
    })
    .unwrap_or_else(|| panic!("A hears no unicast adverts\n{}", lab.logs()));
    assert!(!lab.holds_vip("a"));
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(c) = capture {
        let text = lab.proc_ref(c).log_text();
        let garps = text
            .lines()
            .filter(|l| l.contains("who-has 192.168.1.5 ") && l.contains("tell 192.168.1.5,"))
            .count();
        println!("gratuitous ARPs seen on A: {garps}");
        // 5 on becoming master, 5 more after garp_master_delay.
        assert!(garps >= 10, "{text}");
    } else {
        test_support::skip("tcpdump not installed: gratuitous ARP not observed");
    }
    let t0 = std::time::Instant::now();
    lab.proc(b).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(4), |l| l.holds_vip("a"))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.logs()));
    let t = t0.elapsed();
    println!("unicast handover after SIGTERM: {t:?}");
    assert!(t <= skew(100) + SLACK, "{t:?}");
    lab.expect_state(a, "MASTER");
}
