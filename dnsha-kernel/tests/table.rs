//! The table as the kernel holds it, read back with `nft`, in a network
//! namespace of the test's own (root; skipped otherwise, failed instead
//! when `DNSHA_TEST_REQUIRE_ALL` is set): installed, updated by health,
//! replaced, counted, removed.

use std::net::SocketAddr;
use std::process::Command;

use dnsha_kernel::plan::{BackendSpec, Layout, ListenerSpec, Proto};
use dnsha_kernel::KernelPath;

/// Runs `f` on a thread in a new network namespace, with a runtime of its
/// own (netlink sockets and `nft` run there belong to that namespace).
fn in_netns<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F + Send + 'static) {
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(f());
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn nft_list() -> String {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "dnsha"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn layout(weights: [u32; 2]) -> Layout {
    let backend = |n: u8, weight| BackendSpec {
        name: format!("ns{n}"),
        addr: SocketAddr::from(([10, 0, 0, n], 5300)),
        weight,
    };
    let v6 = ListenerSpec {
        name: "dns6".into(),
        proto: Proto::Udp,
        addr: "[2001:db8::5]:53".parse().expect("addr"),
        pool: "p6".into(),
    };
    let v6_backend = BackendSpec {
        name: "ns6".into(),
        addr: "[2001:db8::1]:53".parse().expect("addr"),
        weight: 1,
    };
    Layout {
        listeners: vec![
            (
                ListenerSpec {
                    name: "dns".into(),
                    proto: Proto::Udp,
                    addr: SocketAddr::from(([192, 168, 1, 5], 53)),
                    pool: "p".into(),
                },
                vec![backend(1, weights[0]), backend(2, weights[1])],
            ),
            (
                ListenerSpec {
                    name: "dns-tcp".into(),
                    proto: Proto::Tcp,
                    addr: SocketAddr::from(([192, 168, 1, 5], 53)),
                    pool: "p".into(),
                },
                vec![backend(1, 1)],
            ),
            (v6, vec![v6_backend]),
        ],
    }
}

fn skip() -> bool {
    if let Some(why) = test_support::netns::skip_reason(&["/usr/sbin/nft"]) {
        test_support::skip(&why);
        return true;
    }
    false
}

#[test]
fn the_table_follows_health_and_reloads_and_goes_at_exit() {
    if skip() {
        return;
    }
    in_netns(|| async {
        let l = layout([3, 1]);
        let mut path = KernelPath::start(l.clone(), l.plan(|_, _| true))
            .await
            .expect("install");
        let text = nft_list();
        println!("{text}");
        for want in [
            "ip daddr 192.168.1.5 udp dport 53 dnat ip to numgen inc mod 4 map @l0",
            "ip daddr 192.168.1.5 tcp dport 53 dnat ip to numgen inc mod 1 map @l1",
            "ip6 daddr 2001:db8::5 udp dport 53 dnat ip6 to numgen inc mod 1 map @l2",
            "10.0.0.1 . 5300",
            "10.0.0.2 . 5300",
            "2001:db8::1 . 53",
            "masquerade",
            "counter name \"l0b1q\"",
            "counter name \"l0b1a\"",
            "type nat hook output priority -100",
            "ct direction original ct status dnat jump count_queries",
            "ct direction reply ct status dnat jump count_answers",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // ns1 down: the UDP listener's map holds only ns2, the TCP
        // listener (only ns1) has no rule left.
        path.update(l.plan(|_, b| b.name != "ns1"))
            .await
            .expect("update");
        let text = nft_list();
        assert!(text.contains("numgen inc mod 1 map @l0"), "{text}");
        assert!(!text.contains("map @l1"), "{text}");
        assert!(!text.contains("10.0.0.1 . 5300"), "{text}");
        assert!(
            text.contains("counter name \"l0b0q\""),
            "counters stay: {text}"
        );
        // Back, then a reload with other weights replaces the table: one
        // table, new weights.
        path.update(l.plan(|_, _| true)).await.expect("update");
        let l2 = layout([1, 1]);
        path.install(l2.clone(), l2.plan(|_, _| true))
            .await
            .expect("reinstall");
        let text = nft_list();
        assert!(text.contains("numgen inc mod 2 map @l0"), "{text}");
        let counters = path.counters().await.expect("counters");
        assert_eq!(counters.len(), 4, "{counters:?}");
        assert!(counters.iter().all(|c| c.queries.packets == 0));
        // A second start (a crash left the table) replaces it.
        let again = KernelPath::start(l2.clone(), l2.plan(|_, _| true))
            .await
            .expect("start over a left table");
        drop(again);
        let out = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .expect("nft");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .matches("dnsha")
                .count(),
            1
        );
        path.remove().await.expect("remove");
        assert!(!nft_list().contains("table inet dnsha {"), "{}", nft_list());
    });
}
