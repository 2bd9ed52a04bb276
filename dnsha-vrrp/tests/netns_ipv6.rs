//! IPv6 virtual addresses over VRRPv3 at 0.1 s in namespaces (DAD off, as
//! the lab's links come up): two `vrrpd` nodes, and keepalived 2.2.7 as
//! the peer. Election, graceful stop (priority 0), node death; adverts from
//! the link-local address to ff02::12 with hop limit 255, the address added
//! without DAD and announced with unsolicited neighbour advertisements.
//! Skipped (with a printed reason) unless root; failed instead when
//! `DNSHA_TEST_REQUIRE_ALL` is set.

mod netns;

use std::time::{Duration, Instant};

use netns::{vrrpd_instance, Lab, StatusFile, VrrpLab, KEEPALIVED};

const VIP6: &str = "fd00::5";

/// Turns DAD off and waits until each node's link-local address is usable.
fn ipv6_ready(lab: &Lab, nodes: &[&str]) {
    for n in nodes {
        for key in ["all", "default", "eth0"] {
            lab.exec(
                n,
                "sysctl",
                &["-qw", &format!("net.ipv6.conf.{key}.accept_dad=0")],
            );
        }
    }
    let ready = lab.wait(Duration::from_secs(5), |l| {
        nodes.iter().all(|n| {
            let out = l.exec(
                n,
                "ip",
                &["-6", "addr", "show", "dev", "eth0", "scope", "link"],
            );
            let text = String::from_utf8_lossy(&out.stdout);
            text.contains("fe80::") && !text.contains("tentative")
        })
    });
    assert!(ready.is_some(), "no usable link-local address");
}

fn holds6(lab: &Lab, node: &str) -> bool {
    let out = lab.exec(node, "ip", &["-6", "addr", "show", "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout).contains(&format!(" {VIP6}/"))
}

fn ours(priority: u8) -> String {
    vrrpd_instance("VI_6", 136, priority, VIP6, "version = 3\nadvert_int = 0.1")
        .replace(&format!("{VIP6}/32"), &format!("{VIP6}/64"))
}

#[test]
fn two_nodes_hold_an_ipv6_address_over_vrrpv3() {
    require_lab!();
    let mut lab = Lab::new("v6", &["a", "b"]);
    ipv6_ready(&lab, &["a", "b"]);
    // B's view of the link: A's neighbour advertisements for the address.
    let tcpdump = std::path::Path::new("/usr/bin/tcpdump");
    let capture = tcpdump.exists().then(|| {
        lab.spawn(
            "b",
            tcpdump,
            &["-i", "eth0", "-n", "-l", "-vv", "icmp6 and ip6[40] == 136"],
            false,
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let a = lab.vrrpd("a", &ours(150));
    let b = lab.vrrpd("b", &ours(100));
    lab.wait(Duration::from_secs(5), |l| {
        holds6(l, "a") && !holds6(l, "b")
    })
    .unwrap_or_else(|| panic!("A does not hold {VIP6}\n{}", lab.logs()));
    lab.wait(Duration::from_secs(2), |l| {
        l.proc_ref(b).status()["adverts_received"].as_u64() >= Some(10)
    })
    .unwrap_or_else(|| panic!("B hears nothing\n{}", lab.logs()));
    let st = lab.proc_ref(b).status();
    assert_eq!(st["state"], "BACKUP", "{st}");
    assert_eq!(st["family"], "ipv6", "{st}");
    assert_eq!(st["dropped_total"].as_u64(), Some(0), "{st}");
    assert!(
        st["master"]
            .as_str()
            .is_some_and(|m| m.starts_with("fe80::")),
        "{st}"
    );
    // The address is usable at once (no DAD): not tentative.
    let out = lab.exec("a", "ip", &["-6", "addr", "show", "dev", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.contains(VIP6)).unwrap_or_default();
    assert!(!line.contains("tentative"), "{text}");
    match capture {
        Some(c) => {
            let seen = lab.wait(Duration::from_secs(2), |l| {
                l.proc_ref(c).log_text().contains(&format!(
                    "neighbor advertisement, length 32, tgt is {VIP6}, Flags [override]"
                ))
            });
            assert!(
                seen.is_some(),
                "no unsolicited NA
{}",
                lab.proc_ref(c).log_text()
            );
        }
        None => test_support::skip("tcpdump not installed: neighbour advertisements not observed"),
    }
    // Graceful stop: B within Skew_Time (61 ms) plus slack.
    let t0 = Instant::now();
    lab.proc(a).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(3), |l| holds6(l, "b"))
        .unwrap_or_else(|| panic!("B did not take over\n{}", lab.logs()));
    println!("IPv6 SIGTERM: B holds {VIP6} after {:?}", t0.elapsed());
    assert!(t0.elapsed() <= Duration::from_millis(500));
    assert!(!holds6(&lab, "a"));
}

#[test]
fn keepalived_v3_over_ipv6_both_ways() {
    require_lab!();
    if !std::path::Path::new(KEEPALIVED).exists() {
        test_support::skip(&format!("{KEEPALIVED} not installed"));
        return;
    }
    let mut lab = Lab::new("k6", &["ka", "d"]);
    ipv6_ready(&lab, &["ka", "d"]);
    let ka_conf = |priority: u8| {
        test_support::netns::keepalived_conf_with(
            "VI_6",
            136,
            priority,
            &format!("{VIP6}/64"),
            "version 3\n  advert_int 0.1",
            "",
        )
    };
    // keepalived master, we back it up and hear it without a drop.
    let ka = lab.keepalived("ka", &ka_conf(200));
    let d = lab.vrrpd("d", &ours(100));
    lab.wait(Duration::from_secs(8), |l| holds6(l, "ka"))
        .unwrap_or_else(|| panic!("keepalived not master\n{}", lab.logs()));
    lab.wait(Duration::from_secs(3), |l| {
        l.proc_ref(d).status()["adverts_received"].as_u64() >= Some(10)
    })
    .unwrap_or_else(|| panic!("we hear nothing from keepalived\n{}", lab.logs()));
    let st = lab.proc_ref(d).status();
    assert_eq!(
        (st["state"].as_str(), st["dropped_total"].as_u64()),
        (Some("BACKUP"), Some(0)),
        "{st}"
    );
    // Its SIGTERM: we take over.
    let t0 = Instant::now();
    lab.proc(ka).signal(nix::sys::signal::Signal::SIGTERM);
    lab.wait(Duration::from_secs(3), |l| holds6(l, "d"))
        .unwrap_or_else(|| panic!("no takeover\n{}", lab.logs()));
    println!(
        "keepalived v3 IPv6 SIGTERM -> dnsha after {:?}",
        t0.elapsed()
    );
    lab.proc(ka).term();
    // keepalived back at 50: it accepts our adverts and stays backup.
    let ka2 = lab.keepalived("ka", &ka_conf(50));
    let took = lab.wait(Duration::from_secs(3), |l| holds6(l, "ka"));
    assert!(
        took.is_none(),
        "keepalived took the address; our status: {}\n{}",
        lab.proc_ref(d).status(),
        lab.logs()
    );
    let log = lab.proc_ref(ka2).log_text();
    assert!(log.contains("Entering BACKUP STATE"), "{log}");
    // Our node dies: keepalived takes over within its Master_Down_Interval.
    lab.set_link("d", false);
    lab.proc(d).kill9();
    let t0 = Instant::now();
    lab.wait(Duration::from_secs(3), |l| holds6(l, "ka"))
        .unwrap_or_else(|| panic!("keepalived did not fail over\n{}", lab.logs()));
    println!(
        "dnsha killed -> keepalived holds the IPv6 address after {:?}",
        t0.elapsed()
    );
}

/// A node whose link is down when it starts has no link-local address to
/// send from: its instance waits in FAULT (the other node holds the
/// address), and starts, here preempting, once the link is up.
#[test]
fn an_ipv6_instance_waits_for_its_link_local_address() {
    require_lab!();
    let mut lab = Lab::new("w6", &["a", "b"]);
    ipv6_ready(&lab, &["a", "b"]);
    lab.set_link("a", false);
    let a = lab.vrrpd("a", &ours(150));
    let _b = lab.vrrpd("b", &ours(100));
    lab.wait(Duration::from_secs(5), |l| holds6(l, "b"))
        .unwrap_or_else(|| panic!("B does not hold {VIP6}\n{}", lab.logs()));
    let st = lab.proc_ref(a).status();
    assert_eq!(st["state"], "FAULT", "{st}");
    assert!(lab
        .proc_ref(a)
        .log_text()
        .contains("no IPv6 link-local address yet"));
    lab.set_link("a", true);
    let t = lab
        .wait(Duration::from_secs(5), |l| {
            holds6(l, "a") && !holds6(l, "b")
        })
        .unwrap_or_else(|| panic!("A did not start and preempt\n{}", lab.logs()));
    println!("link up: A holds {VIP6} after {t:?}");
    lab.wait(Duration::from_secs(1), |l| {
        l.proc_ref(a).status()["state"] == "MASTER"
    })
    .unwrap_or_else(|| panic!("A's status is not MASTER\n{}", lab.logs()));
}
